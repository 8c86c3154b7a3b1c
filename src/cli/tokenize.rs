//! `gptsan tokenize encode|decode`: JSONL (or plain text) in, JSONL (or plain text) out.
//!
//! The whole input is read and validated first (UTF-8, JSON, ids in range) so an error
//! never leaves partial output; `--output` files are written to a temporary file and
//! renamed into place.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use indicatif::{ParallelProgressIterator, ProgressBar, ProgressStyle};
use rayon::prelude::*;

use crate::tokenizer::{DecodeOptions, Tokenizer};

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Encode text to ids: JSONL `{"text": ...}` lines in, `{"ids": [...]}` lines out.
    Encode(EncodeArgs),
    /// Decode ids to text: JSONL `{"ids": [...]}` lines in, `{"text": ...}` lines out.
    Decode(DecodeArgs),
}

/// Which vocabulary to use (the built-in default when none is given).
#[derive(clap::Args, Debug, Clone)]
pub struct VocabArgs {
    /// Vocabulary file (`ja-swe36k.txt` or `vocab.txt`). Default: the built-in vocabulary.
    #[arg(long)]
    pub vocab: Option<PathBuf>,
    /// Emoji table (`emoji.json`). Default: `emoji.json` next to --vocab.
    #[arg(long)]
    pub emoji: Option<PathBuf>,
}

impl VocabArgs {
    /// Loads the tokenizer these arguments name.
    pub fn load(&self) -> Result<Tokenizer> {
        let started = std::time::Instant::now();
        let tok = self.load_inner()?;
        tracing::info!(
            vocab = ?self.vocab,
            ids = tok.vocab_size(),
            ms = started.elapsed().as_millis() as u64,
            "tokenizer loaded"
        );
        Ok(tok)
    }

    fn load_inner(&self) -> Result<Tokenizer> {
        match (&self.vocab, &self.emoji) {
            (None, None) => Ok(Tokenizer::builtin().clone()),
            (None, Some(_)) => bail!("--emoji needs --vocab"),
            (Some(v), e) => {
                let emoji = match e {
                    Some(e) => e.clone(),
                    None => v.parent().unwrap_or(Path::new(".")).join("emoji.json"),
                };
                Tokenizer::from_files(v, &emoji)
            }
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct EncodeArgs {
    #[command(flatten)]
    pub vocab: VocabArgs,
    /// Replace URLs, e-mail, phone numbers, dates, prices and box drawing by placeholders.
    #[arg(long)]
    pub clean: bool,
    /// Input file (default: stdin).
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// Output file (default: stdout), written atomically.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Plain text: one text per input line, space-separated ids per output line.
    #[arg(long)]
    pub plain: bool,
}

#[derive(clap::Args, Debug)]
pub struct DecodeArgs {
    #[command(flatten)]
    pub vocab: VocabArgs,
    /// Input file (default: stdin).
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// Output file (default: stdout), written atomically.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Plain text: space-separated ids per input line, one text per output line.
    #[arg(long)]
    pub plain: bool,
    /// Decode as generated text: expand `<|bagoftoken|>`, drop other special tokens.
    #[arg(long)]
    pub generated: bool,
}

pub fn run(cmd: Command) -> Result<()> {
    match cmd {
        Command::Encode(a) => encode(a),
        Command::Decode(a) => decode(a),
    }
}

/// Input lines: (1-based line number, byte range in the input text).
type Lines = Vec<(usize, std::ops::Range<usize>)>;

/// The input text and its lines, checked for UTF-8 (errors name the line). A final line
/// end does not start a new line; a CR before LF is dropped.
fn read_lines(input: &Option<PathBuf>) -> Result<(String, Lines)> {
    let name = input
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "stdin".to_string());
    let mut bytes = Vec::new();
    match input {
        Some(p) => {
            bytes = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
        }
        None => {
            std::io::stdin()
                .read_to_end(&mut bytes)
                .context("reading stdin")?;
        }
    }
    let text = crate::corpus::utf8_text(bytes, &name)?;
    let mut ranges = Vec::new();
    let mut start = 0;
    let mut n = 0;
    while start < text.len() {
        n += 1;
        let end = text[start..].find('\n').map_or(text.len(), |i| start + i);
        let mut line_end = end;
        if text[start..line_end].ends_with('\r') {
            line_end -= 1;
        }
        ranges.push((n, start..line_end));
        start = end + 1;
    }
    Ok((text, ranges))
}

fn progress(n: usize) -> ProgressBar {
    if n < 10_000 {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(n as u64);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} lines {per_sec} {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// Writes the finished output (its parts in order): to stdout, or atomically to a file.
fn write_output(output: &Option<PathBuf>, parts: &[Vec<u8>]) -> Result<()> {
    match output {
        None => {
            let mut out = std::io::stdout().lock();
            for p in parts {
                out.write_all(p).context("writing stdout")?;
            }
            out.flush().context("writing stdout")
        }
        Some(p) => write_atomic_parts(p, parts),
    }
}

pub use crate::atomic_file::{write_atomic, write_atomic_parts};

#[derive(serde::Deserialize)]
struct TextLine {
    text: String,
}

#[derive(serde::Deserialize)]
struct IdsLine {
    ids: Vec<u32>,
}

fn encode(a: EncodeArgs) -> Result<()> {
    let tok = a.vocab.load()?;
    let (text, lines) = read_lines(&a.input)?;
    let name = a
        .input
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "stdin".into());
    // Parse (and validate) everything first.
    let texts: Vec<std::borrow::Cow<str>> = if a.plain {
        lines
            .iter()
            .map(|(_, r)| std::borrow::Cow::Borrowed(&text[r.clone()]))
            .collect()
    } else {
        lines
            .par_iter()
            .map(|(n, r)| {
                serde_json::from_str::<TextLine>(&text[r.clone()])
                    .map(|t| std::borrow::Cow::Owned(t.text))
                    .map_err(|e| {
                        anyhow::anyhow!(
                            "{name}: line {n}: expected a JSON object with a \"text\" string: {e}"
                        )
                    })
            })
            .collect::<Result<_>>()?
    };
    let bar = progress(texts.len());
    bar.set_message("encoding");
    let chunks: Vec<Vec<u8>> = texts
        .par_chunks(RENDER_CHUNK)
        .map(|chunk| {
            let out = render_ids(&tok, chunk, a.clean, a.plain);
            bar.inc(chunk.len() as u64);
            out
        })
        .collect();
    bar.finish_and_clear();
    write_output(&a.output, &chunks)
}

/// Lines rendered per parallel task: large enough that the per-task buffer amortizes,
/// small enough to balance the cores.
const RENDER_CHUNK: usize = 2048;

/// The ids of each text as one output line (`1 2 3` or `{"ids": [1, 2, 3]}`), appended to
/// one buffer with `itoa`: no allocation per line or number.
fn render_ids<T: AsRef<str>>(tok: &Tokenizer, texts: &[T], clean: bool, plain: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(texts.iter().map(|t| t.as_ref().len()).sum::<usize>() * 2);
    let mut ids = Vec::new();
    let mut num = itoa::Buffer::new();
    let sep: &[u8] = if plain { b" " } else { b", " };
    for t in texts {
        ids.clear();
        tok.encode_into(t.as_ref(), clean, &mut ids);
        if !plain {
            out.extend_from_slice(b"{\"ids\": [");
        }
        for (i, &id) in ids.iter().enumerate() {
            if i > 0 {
                out.extend_from_slice(sep);
            }
            out.extend_from_slice(num.format(id).as_bytes());
        }
        if !plain {
            out.extend_from_slice(b"]}");
        }
        out.push(b'\n');
    }
    out
}

fn decode(a: DecodeArgs) -> Result<()> {
    let tok = a.vocab.load()?;
    let (text, lines) = read_lines(&a.input)?;
    let name = a
        .input
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "stdin".into());
    let opts = if a.generated {
        DecodeOptions::generated()
    } else {
        DecodeOptions::default()
    };
    let bar = progress(lines.len());
    bar.set_message("decoding");
    let rendered: Vec<String> = lines
        .par_iter()
        .progress_with(bar.clone())
        .map(|(n, r)| {
            let line = &text[r.clone()];
            let ids: Vec<u32> = if a.plain {
                line.split_whitespace()
                    .map(|w| {
                        w.parse::<u32>().map_err(|_| {
                            anyhow::anyhow!("{name}: line {n}: {w:?} is not a token id")
                        })
                    })
                    .collect::<Result<_>>()?
            } else {
                serde_json::from_str::<IdsLine>(line)
                    .map_err(|e| {
                        anyhow::anyhow!(
                            "{name}: line {n}: expected a JSON object with an \"ids\" array of \
                             non-negative integers: {e}"
                        )
                    })?
                    .ids
            };
            let decoded = tok
                .decode_with(&ids, &opts)
                .map_err(|e| anyhow::anyhow!("{name}: line {n}: {e}"))?;
            Ok(if a.plain {
                decoded
            } else {
                format!("{{\"text\": {}}}", serde_json::Value::String(decoded))
            })
        })
        .collect::<Result<_>>()?;
    bar.finish_and_clear();
    let mut out = String::new();
    for r in rendered {
        out.push_str(&r);
        out.push('\n');
    }
    write_output(&a.output, &[out.into_bytes()])
}
