//! `gptsan serve`: the OpenAI-style completion server (see `crate::serve`).

use crate::cli::batch_input::check_tokenizer;
use crate::serve::engine::Model;
use crate::serve::ServeOptions;
use crate::train::checkpoint::load_model_or_run;
use anyhow::Result;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model folder (a training run's output, or a Hugging Face model folder).
    #[arg(long)]
    pub model: PathBuf,
    #[command(flatten)]
    pub run: super::model_args::ModelRunArgs,
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// 0 picks a free port; the bound address is printed either way.
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// Requests decoded together in one batch.
    #[arg(long, default_value_t = 8)]
    pub max_batch: usize,
    /// Prompts that may wait for a free row; more get HTTP 503.
    #[arg(long, default_value_t = 64)]
    pub max_queue: usize,
    /// Keep the weights on the device as bf16 or f16 (half the memory; every operation
    /// still computes in f32).
    #[arg(long, value_enum, default_value_t = crate::model::precision::Precision::F32)]
    pub precision: crate::model::precision::Precision,
}

pub fn run(args: Args) -> Result<()> {
    let mut model = load(&args.model, &args.run)?;
    model.weights = args.precision.weights();
    let opts = ServeOptions {
        host: args.host,
        port: args.port,
        max_batch: args.max_batch,
        max_queue: args.max_queue,
        plugin: args.run.plugin.clone(),
        model_name: model_name(&args.model),
    };
    crate::serve::run(model, &opts)
}

/// The model, its parameters and its tokenizer (which must fit its vocabulary).
pub fn load(dir: &Path, run: &super::model_args::ModelRunArgs) -> Result<Model> {
    let (cfg, params) = load_model_or_run(dir)?;
    let tok = run.tokenizer(dir)?;
    check_tokenizer(&tok, &cfg)?;
    Ok(Model {
        cfg,
        params,
        tok: Arc::new(tok),
        weights: hlo::DType::F32,
    })
}

/// The name responses report: the model folder's last component.
pub fn model_name(dir: &Path) -> String {
    dir.canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "gptsan".into())
}
