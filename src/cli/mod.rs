//! Command-line interface: argument definitions and dispatch. One module per subcommand.

use anyhow::Result;
use clap::{Parser, Subcommand};

pub mod batch_input;
pub mod bench;
pub mod bench_model;
pub mod bench_serve;
pub mod convert;
pub mod data;
pub mod devices;
pub mod export;
pub mod fill_mask;
pub mod forward;
pub mod generate;
pub mod model_args;
pub mod params;
pub mod plot;
pub mod serve;
pub mod tokenize;
pub mod train;
pub mod vector;
pub mod vocab;

#[derive(Parser, Debug)]
#[command(
    name = "gptsan",
    version,
    about = "GPTSAN Japanese Switch Transformer on XLA"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Show the PJRT plugin in use, its devices, and why other plugins were skipped.
    Devices(devices::Args),
    /// Encode text to token ids or decode ids to text with the SWE tokenizer.
    #[command(subcommand)]
    Tokenize(tokenize::Command),
    /// Build a vocabulary from a corpus.
    #[command(subcommand)]
    Vocab(vocab::Command),
    /// Run a checkpoint on token ids; write logits, hidden states, router choices, loss
    /// and optionally gradients to safetensors.
    Forward(forward::Args),
    /// Generate text with a KV cache (greedy, top-k, top-p), optionally steered by spout.
    Generate(generate::Args),
    /// Fill `[MASK]`s in a text with the original's shifted-MLM rule (one forward pass).
    FillMask(fill_mask::Args),
    /// Every layer's output at one token position, concatenated (the original's vector).
    Vector(vector::Args),
    /// Serve OpenAI-style completions over HTTP, batching concurrent requests.
    Serve(serve::Args),
    /// Prepare training data (lm, mlm, hybrid; classes) as token shards, or inspect it.
    #[command(subcommand)]
    Data(data::Command),
    /// Train a model (default: configs/tiny.toml on the built-in corpus), then print samples.
    Train(train::Args),
    /// Change a model folder for fine-tuning: append ext layers.
    Convert(convert::Args),
    /// Redraw the loss plot (train and held-out loss against step) of a run folder.
    Plot(plot::Args),
    /// Export the StableHLO text and executables of every program, with a manifest.
    Export(export::Args),
    /// Parameter counts per group for a model config (nothing is allocated).
    Params(params::Args),
    /// Benchmarks (tokenizer, ...).
    #[command(subcommand)]
    Bench(bench::Command),
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Devices(args) => devices::run(args),
        Command::Tokenize(cmd) => tokenize::run(cmd),
        Command::Vocab(cmd) => vocab::run(cmd),
        Command::Forward(args) => forward::run(args),
        Command::Generate(args) => generate::run(args),
        Command::FillMask(args) => fill_mask::run(args),
        Command::Vector(args) => vector::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Export(args) => export::run(args),
        Command::Params(args) => params::run(args),
        Command::Data(cmd) => data::run(cmd),
        Command::Train(args) => train::run(args),
        Command::Plot(args) => plot::run(args),
        Command::Convert(args) => convert::run(args),
        Command::Bench(cmd) => bench::run(cmd),
    }
}

/// Logs go to stderr through `tracing`; `RUST_LOG` selects the level (default: warn, and
/// info for the server's one line per request).
pub fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("warn,gptsan::serve=info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
