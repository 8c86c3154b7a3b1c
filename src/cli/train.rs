//! `gptsan train`: train a model on the built-in corpus, text files or prepared data.

use crate::train::run::{run as run_training, RunOptions};
use anyhow::Result;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model + training config (TOML with a [train] table). Default: configs/tiny.toml,
    /// built into the binary.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// `built-in`, or text files (one document per line).
    #[arg(long, num_args = 1.., default_value = "built-in")]
    pub corpus: Vec<String>,
    /// A folder made by `gptsan data prepare` (its vocabulary and sequence length are used).
    #[arg(long, conflicts_with = "corpus")]
    pub data: Option<PathBuf>,
    /// Number of steps (overrides the config).
    #[arg(long)]
    pub steps: Option<u64>,
    /// Examples per step (overrides the config).
    #[arg(long)]
    pub batch_size: Option<i64>,
    /// Tokens per example (overrides the config; with --data it must match the data).
    #[arg(long)]
    pub seq_len: Option<i64>,
    /// Peak learning rate of the schedule (overrides the config).
    #[arg(long)]
    pub lr: Option<f64>,
    /// `bf16`/`f16`: forward and backward in 16 bits from f32 master weights, f16 with
    /// dynamic loss scaling (overrides the config).
    #[arg(long, value_enum)]
    pub precision: Option<crate::model::precision::Precision>,
    /// Fraction of the examples held out for evaluation (overrides the config; 0: none).
    #[arg(long)]
    pub eval_fraction: Option<f64>,
    /// Evaluate the held-out loss every K steps (overrides the config; 0: at checkpoints).
    #[arg(long)]
    pub eval_every: Option<u64>,
    /// Start from this model folder (ours, a Hugging Face GPTSAN one, or a run) with its
    /// config; --config then only gives the [train] table.
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// Train only the parameters matching this glob on the port's names (repeatable),
    /// e.g. 'model.blocks.2.*'.
    #[arg(long = "train-only")]
    pub train_only: Vec<String>,
    /// Do not train the parameters matching this glob (repeatable).
    #[arg(long)]
    pub freeze: Vec<String>,
    /// Run folder: checkpoints, metrics.jsonl, vocabulary (default runs/<config name>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue the run in --out from its latest checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Checkpoint every K steps (overrides the config).
    #[arg(long)]
    pub checkpoint_every: Option<u64>,
    /// SPMD device mesh, e.g. data=2,model=2.
    #[arg(long)]
    pub mesh: Option<String>,
    /// Number of (virtual CPU) devices of the client.
    #[arg(long)]
    pub devices: Option<i64>,
    /// PJRT plugin (path or cpu|cuda|tpu).
    #[arg(long)]
    pub plugin: Option<String>,
    /// Generated samples printed at the end (overrides the config).
    #[arg(long)]
    pub samples: Option<usize>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

pub fn run(args: Args) -> Result<()> {
    let out = args.out.clone().unwrap_or_else(|| {
        let stem = match &args.config {
            Some(c) => c
                .file_stem()
                .map(|s| s.to_string_lossy().to_string())
                .unwrap_or("run".into()),
            None => "tiny".into(),
        };
        PathBuf::from("runs").join(stem)
    });
    let opts = RunOptions {
        config: args.config,
        corpus: args.corpus,
        data: args.data,
        out,
        resume: args.resume,
        steps: args.steps,
        checkpoint_every: args.checkpoint_every,
        mesh: args.mesh,
        devices: args.devices,
        plugin: args.plugin,
        progress: !args.quiet && std::io::IsTerminal::is_terminal(&std::io::stderr()),
        samples: args.samples,
        batch_size: args.batch_size,
        seq_len: args.seq_len,
        lr: args.lr,
        eval_fraction: args.eval_fraction,
        eval_every: args.eval_every,
        init: args.init,
        train_only: args.train_only,
        freeze: args.freeze,
        precision: args.precision,
    };
    let summary = run_training(&opts)?;
    if let (Some(first), Some(last)) = (summary.metrics.first(), summary.metrics.last()) {
        println!(
            "trained steps {}..{}: loss {:.3} -> {:.3}; checkpoint in {}",
            first.step,
            last.step,
            first.loss,
            last.loss,
            summary.out.display()
        );
    }
    for (i, s) in summary.samples.iter().enumerate() {
        println!("sample {}: {}", i + 1, s);
    }
    Ok(())
}
