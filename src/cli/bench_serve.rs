//! `gptsan bench serve`: requests/s and tokens/s of the completion server on loopback
//! with 1, 4 and 16 concurrent clients, each request a fixed number of greedy tokens
//! (`ignore_eos`), and the batching speed-up over one client.

use super::serve::{load, model_name};
use crate::serve::engine::Model;
use crate::serve::{client, ServeOptions};
use crate::train::run::{init_params, load_configs};
use anyhow::{bail, Result};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model folder; without it, random weights for --config.
    #[arg(long)]
    pub model: Option<PathBuf>,
    #[arg(long, default_value = "configs/tiny.toml")]
    pub config: PathBuf,
    #[command(flatten)]
    pub run: super::model_args::ModelRunArgs,
    /// Concurrent client counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16")]
    pub clients: Vec<usize>,
    /// Requests each client sends, one after another.
    #[arg(long, default_value_t = 4)]
    pub requests: usize,
    /// Prompt length in tokens.
    #[arg(long, default_value_t = 8)]
    pub prompt_tokens: usize,
    /// Tokens generated per request.
    #[arg(long, default_value_t = 32)]
    pub max_tokens: usize,
    /// Server batch rows (default: the largest client count).
    #[arg(long)]
    pub max_batch: Option<usize>,
}

/// One measured client count.
struct Figures {
    clients: usize,
    requests: usize,
    tokens: usize,
    secs: f64,
}

pub fn run(a: Args) -> Result<()> {
    let model = match &a.model {
        Some(dir) => load(dir, &a.run)?,
        None => random_model(&a)?,
    };
    let vocab = model.cfg.vocab_size;
    if a.prompt_tokens == 0 || a.prompt_tokens + a.max_tokens > model.cfg.context as usize {
        bail!(
            "--prompt-tokens {} + --max-tokens {} must fit the context of {}",
            a.prompt_tokens,
            a.max_tokens,
            model.cfg.context
        );
    }
    let max_clients = a.clients.iter().copied().max().unwrap_or(1);
    let opts = ServeOptions {
        host: "127.0.0.1".into(),
        port: 0,
        max_batch: a.max_batch.unwrap_or(max_clients).max(1),
        max_queue: max_clients * 2,
        plugin: a.run.plugin.clone(),
        model_name: a.model.as_deref().map_or("random".into(), model_name),
    };
    let server = crate::serve::start(model, &opts)?;
    let body = request_body(vocab, a.prompt_tokens, a.max_tokens);
    println!(
        "bench serve: {} prompt + {} new tokens per request, {} requests per client, max batch {}",
        a.prompt_tokens, a.max_tokens, a.requests, opts.max_batch
    );
    // Compiles the prompt's prefill bucket before timing.
    send(server.addr, &body)?;
    let mut figures = Vec::new();
    for &c in &a.clients {
        let f = measure(server.addr, &body, c.max(1), a.requests.max(1))?;
        println!(
            "  {:>3} clients: {:>7.2} requests/s {:>9.1} tokens/s ({} requests, {} tokens, {:.2} s)",
            f.clients,
            f.requests as f64 / f.secs,
            f.tokens as f64 / f.secs,
            f.requests,
            f.tokens,
            f.secs
        );
        figures.push(f);
    }
    if let Some(one) = figures.iter().find(|f| f.clients == 1) {
        let base = one.tokens as f64 / one.secs;
        for f in figures.iter().filter(|f| f.clients > 1) {
            println!(
                "  batching speed-up at {} clients: {:.2}x tokens/s over 1 client",
                f.clients,
                f.tokens as f64 / f.secs / base
            );
        }
    }
    server.stop()
}

fn random_model(a: &Args) -> Result<Model> {
    let (cfg, _) = load_configs(&a.config)?;
    let params = init_params(&crate::model::params::param_specs(&cfg), 1);
    Ok(Model {
        cfg,
        params,
        tok: Arc::new(crate::tokenizer::Tokenizer::builtin().clone()),
        weights: hlo::DType::F32,
    })
}

/// A greedy request of fixed length with a fixed id prompt.
fn request_body(vocab: i64, prompt_tokens: usize, max_tokens: usize) -> serde_json::Value {
    let ids: Vec<i64> = (0..prompt_tokens as i64)
        .map(|i| (i * 7919 + 11) % (vocab - 8))
        .collect();
    serde_json::json!({
        "prompt": ids,
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": true,
    })
}

/// One request; its completion tokens.
fn send(addr: SocketAddr, body: &serde_json::Value) -> Result<usize> {
    let (status, reply) =
        client::post_json(addr, "/v1/completions", body, Duration::from_secs(600))?;
    if status != 200 {
        bail!("the server answered {status}: {reply}");
    }
    Ok(reply["usage"]["completion_tokens"].as_u64().unwrap_or(0) as usize)
}

/// `clients` threads each sending `requests` requests back to back.
fn measure(
    addr: SocketAddr,
    body: &serde_json::Value,
    clients: usize,
    requests: usize,
) -> Result<Figures> {
    let t = Instant::now();
    let tokens = std::thread::scope(|s| -> Result<usize> {
        let workers: Vec<_> = (0..clients)
            .map(|_| {
                s.spawn(move || -> Result<usize> { (0..requests).map(|_| send(addr, body)).sum() })
            })
            .collect();
        let mut total = 0;
        for w in workers {
            total += w
                .join()
                .map_err(|_| anyhow::anyhow!("a client thread panicked"))??;
        }
        Ok(total)
    })?;
    Ok(Figures {
        clients,
        requests: clients * requests,
        tokens,
        secs: t.elapsed().as_secs_f64(),
    })
}
