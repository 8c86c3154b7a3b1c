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

use super::inputs::{read_documents, resolve, InputFile};
use super::rules::RuleTokens;
use super::shards::{encode_shard, text_hash, ClassEntry, Manifest, ShardEntry, FORMAT, MANIFEST};
use super::windows::{document_examples, encode_line, EncodedLine, Mode, WindowSpec};
use super::{Example, IGNORE};
use crate::model::checkpoint::write_atomic;
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
        not: tok.special().not as i32,
        ..Stats::default()
    };
    for group in file_groups(files) {
        let per_file = group_examples(files, group.clone(), &spec, opts.seed, tok, rules)?;
        for (file, examples) in files[group].iter().zip(per_file) {
            for e in &examples {
                stats.add(e, &file.path);
            }
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
/// then all their lines encoded in parallel, then all their documents cut in parallel.
fn group_examples(
    files: &[InputFile],
    group: std::ops::Range<usize>,
    spec: &WindowSpec,
    seed: u64,
    tok: &Tokenizer,
    rules: &RuleTokens,
) -> Result<Vec<Vec<Example>>> {
    let docs: Vec<Vec<Vec<String>>> = files[group.clone()]
        .par_iter()
        .map(|f| read_documents(&f.path))
        .collect::<Result<_>>()?;
    // (file in group, document) of every line, in order.
    let flat: Vec<((usize, usize), String)> = docs
        .into_iter()
        .enumerate()
        .flat_map(|(f, file_docs)| {
            file_docs
                .into_iter()
                .enumerate()
                .flat_map(move |(d, lines)| lines.into_iter().map(move |l| ((f, d), l)))
        })
        .collect();
    let encoded: Vec<((usize, usize), EncodedLine)> = flat
        .into_par_iter()
        .map(|(key, l)| (key, encode_line(l, spec.mode, tok, rules)))
        .collect();
    let mut by_doc: Vec<((usize, usize), Vec<EncodedLine>)> = Vec::new();
    for (key, line) in encoded {
        match by_doc.last_mut() {
            Some((k, lines)) if *k == key => lines.push(line),
            _ => by_doc.push((key, vec![line])),
        }
    }
    let per_doc: Vec<(usize, Vec<Example>)> = by_doc
        .par_iter()
        .map(|&((f, d), ref lines)| {
            let file = &files[group.start + f];
            let mut rng = document_rng(seed, group.start + f, d);
            let ex = document_examples(lines, file.class_id, spec, tok, rules, &mut rng);
            (f, ex)
        })
        .collect();
    let mut out: Vec<Vec<Example>> = vec![Vec::new(); group.len()];
    for (f, ex) in per_doc {
        out[f].extend(ex);
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
    seq_len: usize,
    per_shard: usize,
    pending: Vec<Example>,
    written: Vec<ShardEntry>,
}

impl ShardWriter {
    fn new(dir: &Path, seq_len: usize, per_shard: usize) -> Self {
        ShardWriter {
            dir: dir.to_path_buf(),
            seq_len,
            per_shard,
            pending: Vec::new(),
            written: Vec::new(),
        }
    }

    fn push(&mut self, examples: Vec<Example>) -> Result<()> {
        self.pending.extend(examples);
        while self.pending.len() >= self.per_shard {
            let rest = self.pending.split_off(self.per_shard);
            let full = std::mem::replace(&mut self.pending, rest);
            self.write(&full)?;
        }
        Ok(())
    }

    fn finish(mut self) -> Result<Vec<ShardEntry>> {
        if !self.pending.is_empty() {
            let last = std::mem::take(&mut self.pending);
            self.write(&last)?;
        }
        Ok(self.written)
    }

    /// One shard, written under a temporary name and renamed (write_atomic).
    fn write(&mut self, examples: &[Example]) -> Result<()> {
        let file = format!("shard-{:05}.bin", self.written.len());
        write_atomic(&self.dir.join(&file), &encode_shard(examples, self.seq_len))?;
        self.written.push(ShardEntry {
            file,
            examples: examples.len() as u64,
        });
        Ok(())
    }
}

/// Counts for the manifest.
#[derive(Default)]
struct Stats {
    /// The padding id.
    not: i32,
    examples: u64,
    tokens: u64,
    targets: u64,
    prefixed: u64,
    corrupted: u64,
    /// class id -> (examples, files)
    classes: BTreeMap<u32, (u64, Vec<String>)>,
}

impl Stats {
    fn add(&mut self, e: &Example, file: &Path) {
        let real = e.input_ids.iter().filter(|&&x| x != self.not).count();
        let prefix = e.token_types.iter().filter(|&&x| x == 1).count();
        self.examples += 1;
        self.tokens += real.saturating_sub(3) as u64;
        self.targets += e.labels.iter().filter(|&&x| x != IGNORE).count() as u64;
        self.prefixed += (prefix > 1) as u64;
        self.corrupted += (0..prefix.saturating_sub(1))
            .filter(|&p| e.labels[p] != IGNORE)
            .count() as u64;
        let name = file.display().to_string();
        let entry = self.classes.entry(e.class_id).or_default();
        entry.0 += 1;
        if entry.1.last() != Some(&name) {
            entry.1.push(name);
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
