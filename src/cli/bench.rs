//! `gptsan bench ...`: throughput measurements (targets live here, never in timed tests).

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use rayon::prelude::*;

use super::tokenize::VocabArgs;

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Tokenizer throughput: chars/s and tokens/s on one core and on all cores.
    Tokenizer(TokenizerArgs),
    /// Train-step tokens/s and compile time (default: configs/small.toml, 8x256).
    Train(super::bench_model::ModelArgs),
    /// Forward-pass tokens/s and compile time.
    Forward(super::bench_model::ModelArgs),
    /// Greedy KV-cache generation: tokens/s and per-token cost over the generation.
    Generate(super::bench_model::ModelArgs),
    /// The completion server on loopback: requests/s and tokens/s at 1, 4 and 16
    /// concurrent clients, and the batching speed-up.
    Serve(super::bench_serve::Args),
}

#[derive(clap::Args, Debug)]
pub struct TokenizerArgs {
    #[command(flatten)]
    pub vocab: VocabArgs,
    /// Text file, one document per line (e.g. ../shared/corpus/large-ja.txt).
    /// Default: the built-in corpus.
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// Also measure the `clean` path.
    #[arg(long)]
    pub clean: bool,
    /// Repetitions (the best one is reported).
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
}

pub fn run(cmd: Command) -> Result<()> {
    match cmd {
        Command::Tokenizer(a) => tokenizer(a),
        Command::Train(a) => super::bench_model::train(a),
        Command::Forward(a) => super::bench_model::forward(a),
        Command::Generate(a) => super::bench_model::generate(a),
        Command::Serve(a) => super::bench_serve::run(a),
    }
}

fn tokenizer(a: TokenizerArgs) -> Result<()> {
    let mut out = std::io::stdout().lock();
    let tok = a.vocab.load()?;
    let docs: Vec<String> = match &a.input {
        Some(p) => crate::corpus::read_lines(p, 0)
            .with_context(|| format!("benchmark input {}", p.display()))?
            .into_iter()
            .map(|d| d.text)
            .collect(),
        None => crate::corpus::builtin()
            .into_iter()
            .map(|d| d.text)
            .collect(),
    };
    let chars: usize = docs.par_iter().map(|d| d.chars().count()).sum();
    let bytes: usize = docs.iter().map(String::len).sum();
    writeln!(
        out,
        "input: {} documents, {} chars, {:.1} MB; vocabulary: {} ids",
        docs.len(),
        chars,
        bytes as f64 / 1e6,
        tok.vocab_size()
    )?;
    let threads = rayon::current_num_threads();
    let modes: &[bool] = if a.clean { &[false, true] } else { &[false] };
    for &clean in modes {
        let one = best_of(a.repeat, || {
            docs.iter().map(|d| tok.encode(d, clean).len()).sum()
        });
        let all = best_of(a.repeat, || {
            docs.par_iter().map(|d| tok.encode(d, clean).len()).sum()
        });
        for (label, (secs, tokens)) in [("1 core", one), (&*format!("{threads} cores"), all)] {
            writeln!(
                out,
                "encode{} {label:>9}: {:>8.2} M chars/s {:>8.2} M tokens/s ({:.3} s, {} tokens)",
                if clean { " --clean" } else { "" },
                chars as f64 / secs / 1e6,
                tokens as f64 / secs / 1e6,
                secs,
                tokens
            )?;
        }
    }
    // One call on about 1 MB of text, the way the reference encoder was measured
    // (SPEC section 9: 478k chars/s for `encode_swe.py` on one 1 MB text).
    let mut one_mb = String::new();
    for d in &docs {
        if one_mb.len() >= 1_000_000 {
            break;
        }
        one_mb.push_str(d);
        one_mb.push('\n');
    }
    let mb_chars = one_mb.chars().count();
    let (secs, tokens) = best_of(a.repeat, || tok.encode(&one_mb, false).len());
    writeln!(
        out,
        "encode one {:.1} MB text, 1 core: {:>8.2} M chars/s {:>8.2} M tokens/s",
        one_mb.len() as f64 / 1e6,
        mb_chars as f64 / secs / 1e6,
        tokens as f64 / secs / 1e6
    )?;
    // Decode throughput (one core), for completeness.
    let encoded: Vec<Vec<u32>> = tok.encode_batch(&docs, false);
    let (secs, out_chars) = best_of(a.repeat, || {
        encoded
            .iter()
            .map(|ids| tok.decode(ids).map(|s| s.len()).unwrap_or(0))
            .sum()
    });
    let tokens: usize = encoded.iter().map(Vec::len).sum();
    writeln!(
        out,
        "decode    1 core: {:>8.2} M tokens/s ({:.3} s, {} bytes out)",
        tokens as f64 / secs / 1e6,
        secs,
        out_chars
    )?;
    Ok(())
}

/// Runs `f` `n` times; the fastest wall time and its result.
fn best_of(n: usize, mut f: impl FnMut() -> usize) -> (f64, usize) {
    let mut best = (f64::INFINITY, 0);
    for _ in 0..n.max(1) {
        let t = Instant::now();
        let r = f();
        let s = t.elapsed().as_secs_f64();
        if s < best.0 {
            best = (s, r);
        }
    }
    best
}
