//! `gptsan vocab build`: learn a vocabulary; `gptsan vocab build-corpus` (hidden):
//! regenerate the built-in corpus file `data/corpus.tsv.zst`.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::corpus;
use crate::tokenizer::builder::{self, BuildOptions};
use crate::tokenizer::{EmojiTable, Tokenizer};

use super::tokenize::write_atomic;

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Learn a vocabulary from a corpus (writes DIR/vocab.txt and DIR/emoji.json).
    Build(BuildArgs),
    /// Regenerate the built-in corpus file (data/corpus.tsv.zst) from its sources.
    #[command(hide = true)]
    BuildCorpus(BuildCorpusArgs),
}

#[derive(clap::Args, Debug)]
pub struct BuildArgs {
    /// Corpus text files, one document per line. Default: the built-in corpus.
    #[arg(long, num_args = 1..)]
    pub corpus: Vec<PathBuf>,
    /// Total number of ids (layout, emoji, byte and special tokens included).
    #[arg(long, default_value_t = 8000)]
    pub size: usize,
    /// Output folder.
    #[arg(long)]
    pub output: PathBuf,
    /// Emoji table to copy (default: a small generated table).
    #[arg(long)]
    pub emoji: Option<PathBuf>,
    /// Minimum count of a learned 2-3 character entry.
    #[arg(long, default_value_t = 3)]
    pub min_count: u32,
    /// Re-scoring rounds.
    #[arg(long, default_value_t = 6)]
    pub rounds: usize,
    /// Every K-th document is held out (not learned from) to measure compression; 0: none.
    #[arg(long, default_value_t = 20)]
    pub heldout_every: usize,
    /// Another vocabulary to compare compression with (e.g. ja-swe36k.txt).
    #[arg(long)]
    pub compare_vocab: Option<PathBuf>,
    /// Its emoji table (default: emoji.json next to --compare-vocab).
    #[arg(long)]
    pub compare_emoji: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct BuildCorpusArgs {
    /// 吾輩は猫である, one paragraph per line (../shared/corpus/wagahai.txt).
    #[arg(long)]
    pub wagahai: PathBuf,
    /// Tatoeba sentences, one per line (../shared/corpus/tatoeba-ja.txt).
    #[arg(long)]
    pub tatoeba: PathBuf,
    /// Output file (data/corpus.tsv.zst).
    #[arg(long)]
    pub output: PathBuf,
}

pub fn run(cmd: Command) -> Result<()> {
    match cmd {
        Command::Build(a) => build(a),
        Command::BuildCorpus(a) => {
            let mut out = std::io::stdout().lock();
            let bytes = corpus::build_builtin(&a.wagahai, &a.tatoeba)?;
            write_atomic(&a.output, &bytes)?;
            let docs = corpus::decode_compressed(&bytes)?;
            writeln!(
                out,
                "wrote {} ({} documents, {} bytes compressed)",
                a.output.display(),
                docs.len(),
                bytes.len()
            )?;
            Ok(())
        }
    }
}

fn build(a: BuildArgs) -> Result<()> {
    let mut out = std::io::stdout().lock();
    let started = Instant::now();
    let docs: Vec<String> = if a.corpus.is_empty() {
        corpus::builtin().into_iter().map(|d| d.text).collect()
    } else {
        let mut v = Vec::new();
        for p in &a.corpus {
            v.extend(corpus::read_lines(p, 0)?.into_iter().map(|d| d.text));
        }
        v
    };
    if docs.is_empty() {
        bail!("the corpus is empty");
    }
    let (train, heldout): (Vec<&String>, Vec<&String>) = if a.heldout_every > 0 {
        let (t, h): (Vec<_>, Vec<_>) = docs
            .iter()
            .enumerate()
            .partition(|(i, _)| (i + 1) % a.heldout_every != 0);
        (
            t.into_iter().map(|(_, d)| d).collect(),
            h.into_iter().map(|(_, d)| d).collect(),
        )
    } else {
        (docs.iter().collect(), Vec::new())
    };
    let emoji = match &a.emoji {
        Some(p) => EmojiTable::from_file(p)?,
        None => builder::default_emoji_table(),
    };
    let opts = BuildOptions {
        size: a.size,
        min_count: a.min_count,
        rounds: a.rounds,
        progress: true,
    };
    let built = builder::build(&train, emoji, &opts)?;
    std::fs::create_dir_all(&a.output)
        .with_context(|| format!("creating {}", a.output.display()))?;
    write_atomic(
        &a.output.join("vocab.txt"),
        built.vocab.to_text().as_bytes(),
    )?;
    write_atomic(
        &a.output.join("emoji.json"),
        built.emoji.to_json().as_bytes(),
    )?;
    let secs = started.elapsed().as_secs_f64();
    writeln!(
        out,
        "wrote {}/vocab.txt ({} ids) and emoji.json in {secs:.1} s from {} documents",
        a.output.display(),
        built.vocab.len(),
        train.len()
    )?;
    if !heldout.is_empty() {
        let ours = builder::tokens_per_char(&built.tokenizer(), &heldout);
        writeln!(
            out,
            "held-out compression ({} documents): {ours:.4} tokens/char with the new vocabulary",
            heldout.len()
        )?;
        if let Some(v) = &a.compare_vocab {
            let e = a.compare_emoji.clone().unwrap_or_else(|| {
                v.parent()
                    .unwrap_or(std::path::Path::new("."))
                    .join("emoji.json")
            });
            let other = Tokenizer::from_files(v, &e)?;
            let theirs = builder::tokens_per_char(&other, &heldout);
            writeln!(
                out,
                "held-out compression: {theirs:.4} tokens/char with {} ({} ids)",
                v.display(),
                other.vocab_size()
            )?;
        }
    }
    Ok(())
}
