//! `gptsan data prepare`: input files -> examples (SPEC section 5) -> shards + manifest.
//!
//! Files are read in groups of about 32 MB; the files of a group are read in parallel,
//! their lines encoded in parallel and their documents cut into examples in parallel
//! (rayon), each document with its own random stream derived from the seed and its place,
//! so the output is the same for a seed whatever the number of threads.
//!
//! Atomic: everything is written into `<out>.partial` (each shard itself under a temporary
//! name, then renamed), the manifest last, and the folder is renamed to `<out>` at the end.
//! A killed prepare leaves at most a `.partial` folder, which training never reads and
//! the next prepare to the same `--out` replaces; a failed one removes it.

use super::inputs::{read_documents, resolve, FileDocuments, InputFile};
use super::rules::RuleTokens;
use super::shards::{text_hash, ClassEntry, Columns, Manifest, ShardEntry, FORMAT, MANIFEST};
use super::windows::{document_columns, Mode, WindowSpec};
use super::IGNORE;
use crate::atomic_file::{write_atomic, write_atomic_with};
use crate::rng::Rng;
use crate::tokenizer::Tokenizer;
use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Examples per shard unless told otherwise (about 37 MB at 64 tokens).
pub const DEFAULT_SHARD_EXAMPLES: usize = 65_536;

/// The shortest sequence `prepare` accepts (SOT, SEG, EOT and a few text tokens).
pub const MIN_SEQ_LEN: usize = 8;

/// What `data prepare` was asked to do.
#[derive(Clone, Debug)]
pub struct PrepareOptions {
    pub mode: Mode,
    pub seq_len: usize,
    pub hybrid_rate: f64,
    pub seed: u64,
    pub inputs: Vec<String>,
    pub out: PathBuf,
    pub shard_examples: usize,
    pub progress: bool,
}

/// Prepares the data; returns its manifest.
pub fn prepare(opts: &PrepareOptions, tok: &Tokenizer) -> Result<Manifest> {
    check_options(opts)?;
    let files = resolve(&opts.inputs)?;
    let rules = RuleTokens::new(tok)?;
    let partial = partial_dir(&opts.out)?;
    if partial.exists() {
        std::fs::remove_dir_all(&partial)
            .with_context(|| format!("cannot remove the stale {}", partial.display()))?;
    }
    std::fs::create_dir_all(&partial)
        .with_context(|| format!("cannot create {}", partial.display()))?;
    let result = write_all(opts, tok, &rules, &files, &partial);
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&partial);
    }
    let manifest = result?;
    if opts.out.is_dir() {
        // Checked empty above; rename cannot replace a folder on every platform.
        std::fs::remove_dir(&opts.out)
            .with_context(|| format!("cannot replace {}", opts.out.display()))?;
    }
    std::fs::rename(&partial, &opts.out).with_context(|| {
        format!(
            "cannot move {} to {}",
            partial.display(),
            opts.out.display()
        )
    })?;
    Ok(manifest)
}

fn check_options(opts: &PrepareOptions) -> Result<()> {
    if opts.seq_len < MIN_SEQ_LEN {
        bail!(
            "--seq-len {} is too short: examples need at least {MIN_SEQ_LEN} tokens",
            opts.seq_len
        );
    }
    if !(0.0..=1.0).contains(&opts.hybrid_rate) {
        bail!(
            "--hybrid-rate {} is not a probability between 0 and 1",
            opts.hybrid_rate
        );
    }
    if opts.shard_examples == 0 {
        bail!("--shard-examples must be at least 1");
    }
    let out = &opts.out;
    if out.is_file() || (out.is_dir() && std::fs::read_dir(out)?.next().is_some()) {
        bail!(
            "{} already exists and is not empty; choose another --out",
            out.display()
        );
    }
    Ok(())
}

/// `<out>.partial`, beside `<out>`.
fn partial_dir(out: &Path) -> Result<PathBuf> {
    let name = out
        .file_name()
        .with_context(|| format!("--out {}: not a folder name", out.display()))?;
    let mut partial = name.to_os_string();
    partial.push(".partial");
    Ok(out.with_file_name(partial))
}

/// Writes shards, vocabulary and manifest (last) into `dir`.
fn write_all(
    opts: &PrepareOptions,
    tok: &Tokenizer,
    rules: &RuleTokens,
    files: &[InputFile],
    dir: &Path,
) -> Result<Manifest> {
    let spec = WindowSpec {
        mode: opts.mode,
        seq_len: opts.seq_len,
        hybrid_rate: opts.hybrid_rate,
    };
    let total: u64 = files.iter().map(|f| file_size(&f.path)).sum();
    let bar = progress_bar(opts.progress, total);
    let mut shards = ShardWriter::new(dir, opts.seq_len, opts.shard_examples);
    let mut stats = Stats {
        not: tok.special().not,
        ..Stats::default()
    };
    for group in file_groups(files) {
        let per_file = group_examples(files, group.clone(), &spec, opts.seed, tok, rules)?;
        for (file, examples) in files[group].iter().zip(per_file) {
            stats.add(&examples, &file.path);
            shards.push(examples)?;
            bar.inc(file_size(&file.path));
        }
    }
    let shard_index = shards.finish()?;
    bar.finish_and_clear();
    if stats.examples == 0 {
        bail!("the inputs hold no text: nothing to prepare");
    }
    let vocab_text = tok.vocab().to_text();
    write_atomic(&dir.join("vocab.txt"), vocab_text.as_bytes())?;
    write_atomic(&dir.join("emoji.json"), tok.emoji().to_json().as_bytes())?;
    let manifest = Manifest {
        format: FORMAT,
        mode: opts.mode,
        seq_len: opts.seq_len,
        vocab_size: tok.vocab_size(),
        vocab_hash: text_hash(&vocab_text),
        seed: opts.seed,
        hybrid_rate: opts.hybrid_rate,
        examples: stats.examples,
        tokens: stats.tokens,
        targets: stats.targets,
        prefixed_examples: stats.prefixed,
        corrupted: stats.corrupted,
        classes: stats.classes(),
        inputs: files.iter().map(|f| f.path.display().to_string()).collect(),
        shards: shard_index,
    };
    write_atomic(
        &dir.join(MANIFEST),
        serde_json::to_string_pretty(&manifest)?.as_bytes(),
    )?;
    Ok(manifest)
}

/// Files are read and encoded in groups of about this many bytes: many small files keep
/// every core busy, and memory stays bounded by the group (or by one large file).
const GROUP_BYTES: u64 = 32 << 20;

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Consecutive ranges of files of about [`GROUP_BYTES`] each (at least one file).
fn file_groups(files: &[InputFile]) -> Vec<std::ops::Range<usize>> {
    let mut groups = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, f) in files.iter().enumerate() {
        bytes += file_size(&f.path);
        if bytes >= GROUP_BYTES {
            groups.push(start..i + 1);
            (start, bytes) = (i + 1, 0);
        }
    }
    if start < files.len() {
        groups.push(start..files.len());
    }
    groups
}

/// The examples of each file of a group (documents in order): files read in parallel,
/// then their documents cut in parallel (each document encodes its lines in parallel
/// batches as the cut reaches them).
fn group_examples(
    files: &[InputFile],
    group: std::ops::Range<usize>,
    spec: &WindowSpec,
    seed: u64,
    tok: &Tokenizer,
    rules: &RuleTokens,
) -> Result<Vec<Columns>> {
    let docs: Vec<FileDocuments> = files[group.clone()]
        .par_iter()
        .map(|f| read_documents(&f.path))
        .collect::<Result<_>>()?;
    // (file in group, document) of every document, in order.
    let keys: Vec<(usize, usize)> = docs
        .iter()
        .enumerate()
        .flat_map(|(f, file_docs)| (0..file_docs.len()).map(move |d| (f, d)))
        .collect();
    let per_doc: Vec<(usize, Columns)> = keys
        .into_par_iter()
        .map(|(f, d)| {
            let file = &files[group.start + f];
            let mut rng = document_rng(seed, group.start + f, d);
            let mut out = Columns::new(spec.seq_len);
            document_columns(
                &docs[f].lines(d),
                file.class_id,
                spec,
                tok,
                rules,
                &mut rng,
                &mut out,
            );
            (f, out)
        })
        .collect();
    let mut out: Vec<Columns> = vec![Columns::new(spec.seq_len); group.len()];
    for (f, ex) in per_doc {
        out[f].append(ex);
    }
    Ok(out)
}

/// The random stream of one document: depends on the seed and the document's place only.
fn document_rng(seed: u64, file: usize, doc: usize) -> Rng {
    let place = ((file as u64) << 40) ^ doc as u64;
    let mut mix = Rng::new(place.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seed);
    Rng::new(mix.next_u64())
}

/// Collects examples and writes full shards as they fill.
struct ShardWriter {
    dir: PathBuf,
    per_shard: usize,
    pending: Columns,
    written: Vec<ShardEntry>,
}

impl ShardWriter {
    fn new(dir: &Path, seq_len: usize, per_shard: usize) -> Self {
        ShardWriter {
            dir: dir.to_path_buf(),
            per_shard,
            pending: Columns::new(seq_len),
            written: Vec::new(),
        }
    }

    fn push(&mut self, examples: Columns) -> Result<()> {
        self.pending.append(examples);
        while self.pending.len() >= self.per_shard {
            self.write(self.per_shard)?;
            self.pending.drain_front(self.per_shard);
        }
        Ok(())
    }

    fn finish(mut self) -> Result<Vec<ShardEntry>> {
        if !self.pending.is_empty() {
            self.write(self.pending.len())?;
        }
        Ok(self.written)
    }

    /// The first `n` pending examples as one shard, written under a temporary name and
    /// renamed (so a shard is whole or absent).
    fn write(&mut self, n: usize) -> Result<()> {
        let file = format!("shard-{:05}.bin", self.written.len());
        let pending = &self.pending;
        write_atomic_with(&self.dir.join(&file), |w| pending.write_shard(n, w))?;
        self.written.push(ShardEntry {
            file,
            examples: n as u64,
        });
        Ok(())
    }
}

/// Counts for the manifest.
#[derive(Default)]
struct Stats {
    /// The padding id.
    not: u32,
    examples: u64,
    tokens: u64,
    targets: u64,
    prefixed: u64,
    corrupted: u64,
    /// class id -> (examples, files)
    classes: BTreeMap<u32, (u64, Vec<String>)>,
}

impl Stats {
    /// Counts the examples of one file.
    fn add(&mut self, cols: &Columns, file: &Path) {
        let t = cols.seq_len;
        let name = file.display().to_string();
        for k in 0..cols.len() {
            let span = k * t..(k + 1) * t;
            let labels = &cols.labels[span.clone()];
            let real = cols.input_ids[span.clone()]
                .iter()
                .filter(|&&x| x != self.not)
                .count();
            let prefix = cols.token_types[span].iter().filter(|&&x| x == 1).count();
            self.examples += 1;
            self.tokens += real.saturating_sub(3) as u64;
            self.targets += labels.iter().filter(|&&x| x != IGNORE).count() as u64;
            self.prefixed += (prefix > 1) as u64;
            self.corrupted += labels[..prefix.saturating_sub(1)]
                .iter()
                .filter(|&&x| x != IGNORE)
                .count() as u64;
            let entry = self.classes.entry(cols.class_ids[k]).or_default();
            entry.0 += 1;
            if entry.1.last() != Some(&name) {
                entry.1.push(name.clone());
            }
        }
    }

    fn classes(&self) -> Vec<ClassEntry> {
        self.classes
            .iter()
            .map(|(&id, (examples, files))| ClassEntry {
                id,
                examples: *examples,
                files: files.clone(),
            })
            .collect()
    }
}

fn progress_bar(show: bool, bytes: u64) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(bytes);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}
