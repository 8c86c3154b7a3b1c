//! `gptsan data prepare|inspect`: training data as the original prepared it (SPEC section
//! 5), written to memory-mappable shards for `gptsan train --data`.

use crate::cli::tokenize::VocabArgs;
use crate::data::inspect::{inspect, render};
use crate::data::prepare::{prepare, PrepareOptions, DEFAULT_SHARD_EXAMPLES};
use crate::data::shards::ShardSet;
use crate::data::windows::Mode;
use crate::tokenizer::Tokenizer;
use anyhow::{Context, Result};
use std::path::PathBuf;

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Turn text files into token shards (lm, mlm or hybrid examples) with a manifest.
    Prepare(PrepareArgs),
    /// Show prepared examples decoded: input, targets, visible prefix, class.
    Inspect(InspectArgs),
}

#[derive(clap::Args, Debug)]
pub struct PrepareArgs {
    /// Training objective: lm, mlm, or hybrid (a random MLM prefix per example).
    #[arg(long, value_enum)]
    pub mode: Mode,
    #[command(flatten)]
    pub vocab: VocabArgs,
    /// Tokens per example (SOT, SEG and EOT included). Default: the built-in config's.
    #[arg(long)]
    pub seq_len: Option<usize>,
    /// In hybrid mode, the probability that an example has a prefix.
    #[arg(long, default_value_t = 0.5)]
    pub hybrid_rate: f64,
    /// Seed of the hybrid choices and the MLM corruption.
    #[arg(long, default_value_t = 1234)]
    pub seed: u64,
    /// Text files, folders (recursively), globs, or a CSV of `filename,fileid` lines whose
    /// ids become class ids.
    #[arg(long, num_args = 1.., required = true)]
    pub input: Vec<String>,
    /// Output folder (must not exist, or be empty).
    #[arg(long)]
    pub out: PathBuf,
    /// Examples per shard file.
    #[arg(long, default_value_t = DEFAULT_SHARD_EXAMPLES)]
    pub shard_examples: usize,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    /// A folder made by `gptsan data prepare`.
    pub dir: PathBuf,
    /// How many examples to show.
    #[arg(long, default_value_t = 5)]
    pub limit: usize,
    /// One JSON object per line (with the ids, targets and token types).
    #[arg(long)]
    pub json: bool,
}

pub fn run(cmd: Command) -> Result<()> {
    match cmd {
        Command::Prepare(a) => run_prepare(a),
        Command::Inspect(a) => run_inspect(a),
    }
}

fn run_prepare(a: PrepareArgs) -> Result<()> {
    let tok = a.vocab.load()?;
    let seq_len = match a.seq_len {
        Some(n) => n,
        None => default_seq_len()?,
    };
    let opts = PrepareOptions {
        mode: a.mode,
        seq_len,
        hybrid_rate: a.hybrid_rate,
        seed: a.seed,
        inputs: a.input,
        out: a.out,
        shard_examples: a.shard_examples,
        progress: !a.quiet && std::io::IsTerminal::is_terminal(&std::io::stderr()),
    };
    let m = prepare(&opts, &tok)?;
    println!(
        "prepared {} {} examples of {} tokens ({} text tokens, {} targets, {} with a prefix, {} classes) in {} shard(s) in {}",
        m.examples,
        m.mode.name(),
        m.seq_len,
        m.tokens,
        m.targets,
        m.prefixed_examples,
        m.classes.len(),
        m.shards.len(),
        opts.out.display()
    );
    Ok(())
}

/// The sequence length of the built-in training config.
fn default_seq_len() -> Result<usize> {
    let (_, train) = crate::train::run::configs_from_toml(
        crate::train::run::DEFAULT_CONFIG,
        "the built-in configs/tiny.toml",
    )?;
    Ok(train.seq_len as usize)
}

fn run_inspect(a: InspectArgs) -> Result<()> {
    let set = ShardSet::open(&a.dir)?;
    let tok = Tokenizer::from_dir(&a.dir)
        .with_context(|| format!("loading the vocabulary of {}", a.dir.display()))?;
    let rows = inspect(&set, &tok, a.limit)?;
    if a.json {
        for r in &rows {
            println!("{}", serde_json::to_string(r)?);
        }
        return Ok(());
    }
    let m = &set.manifest;
    println!(
        "{}: {} {} examples of {} tokens, vocabulary of {} ({}), {} classes",
        a.dir.display(),
        m.examples,
        m.mode.name(),
        m.seq_len,
        m.vocab_size,
        m.vocab_hash,
        m.classes.len()
    );
    for r in &rows {
        print!("{}", render(r));
    }
    Ok(())
}
