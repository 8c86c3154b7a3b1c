//! Prepared data on disk: memory-mappable shards, their index and `manifest.json`.
//!
//! A shard `shard-NNNNN.bin` holds `n` examples of `T` tokens as column blocks, all little
//! endian, so that an example is a few slices of the memory map:
//!
//! | bytes | what |
//! |---|---|
//! | 64 | header: magic `GPTSANDS`, format u32, `T` u32, `n` u64, zeros |
//! | 4 n T | input ids, u32 |
//! | 4 n T | targets, i32 (-100: not trained) |
//! | n T | token types, u8 (1: visible prefix) |
//! | 4 n | class ids, u32 |
//!
//! `manifest.json` names the shards in order with their example counts (the index), and
//! the mode, vocabulary (size and SHA-256 of `vocab.txt`), sequence length, counts and
//! classes. It is written last, so a folder without it is not data.

use super::windows::Mode;
use super::Example;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"GPTSANDS";
pub const FORMAT: u32 = 1;
const HEADER: usize = 64;
pub const MANIFEST: &str = "manifest.json";

/// One shard of the index.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShardEntry {
    pub file: String,
    pub examples: u64,
}

/// One class: its id, how many examples and which files it came from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassEntry {
    pub id: u32,
    pub examples: u64,
    pub files: Vec<String>,
}

/// What `data prepare` made and how.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub mode: Mode,
    pub seq_len: usize,
    pub vocab_size: usize,
    /// `sha256:<hex>` of the `vocab.txt` written beside the manifest.
    pub vocab_hash: String,
    pub seed: u64,
    pub hybrid_rate: f64,
    pub examples: u64,
    /// Text tokens (prefix and LM parts, without SOT/SEG/EOT/padding).
    pub tokens: u64,
    /// Positions with a target.
    pub targets: u64,
    /// Examples with a prefix.
    pub prefixed_examples: u64,
    /// Corrupted prefix positions.
    pub corrupted: u64,
    pub classes: Vec<ClassEntry>,
    pub inputs: Vec<String>,
    pub shards: Vec<ShardEntry>,
}

impl Manifest {
    pub fn read(dir: &Path) -> Result<Manifest> {
        let path = dir.join(MANIFEST);
        if !path.is_file() {
            bail!(
                "{} has no {MANIFEST}: it is not prepared data (or `gptsan data prepare` did not finish)",
                dir.display()
            );
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let m: Manifest = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a gptsan data manifest", path.display()))?;
        if m.format != FORMAT {
            bail!(
                "{}: data format {} is not the supported {FORMAT}",
                path.display(),
                m.format
            );
        }
        Ok(m)
    }
}

/// SHA-256 of a text, as the manifest writes it.
pub fn text_hash(text: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(text.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// Examples laid out the way a shard stores them, one column per field: `data prepare`
/// assembles examples straight into these and writes shards from them, with no
/// allocation per example.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Columns {
    /// Tokens per example.
    pub seq_len: usize,
    pub input_ids: Vec<u32>,
    pub labels: Vec<i32>,
    pub token_types: Vec<u8>,
    pub class_ids: Vec<u32>,
}

impl Columns {
    pub fn new(seq_len: usize) -> Self {
        Columns {
            seq_len,
            ..Columns::default()
        }
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.class_ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.class_ids.is_empty()
    }

    /// Example `k < len()`.
    pub fn example(&self, k: usize) -> Example {
        let span = k * self.seq_len..(k + 1) * self.seq_len;
        Example {
            input_ids: self.input_ids[span.clone()]
                .iter()
                .map(|&x| x as i32)
                .collect(),
            labels: self.labels[span.clone()].to_vec(),
            token_types: self.token_types[span].iter().map(|&x| x as i32).collect(),
            class_id: self.class_ids[k],
        }
    }

    /// Every example.
    pub fn examples(&self) -> Vec<Example> {
        (0..self.len()).map(|k| self.example(k)).collect()
    }

    /// Makes room for `n` more examples.
    pub fn reserve(&mut self, n: usize) {
        let t = self.seq_len;
        self.input_ids.reserve(n * t);
        self.labels.reserve(n * t);
        self.token_types.reserve(n * t);
        self.class_ids.reserve(n);
    }

    /// Appends one example of `seq_len` tokens.
    pub fn push(&mut self, e: &Example) {
        self.input_ids.extend(e.input_ids.iter().map(|&x| x as u32));
        self.labels.extend_from_slice(&e.labels);
        self.token_types
            .extend(e.token_types.iter().map(|&x| x as u8));
        self.class_ids.push(e.class_id);
    }

    /// Appends `other`'s examples (taking its buffers when this holds none).
    pub fn append(&mut self, mut other: Columns) {
        if self.is_empty() {
            other.seq_len = self.seq_len;
            *self = other;
            return;
        }
        self.input_ids.extend_from_slice(&other.input_ids);
        self.labels.extend_from_slice(&other.labels);
        self.token_types.extend_from_slice(&other.token_types);
        self.class_ids.extend_from_slice(&other.class_ids);
    }

    /// Drops the first `n` examples.
    pub fn drain_front(&mut self, n: usize) {
        let t = self.seq_len;
        self.input_ids.drain(..n * t);
        self.labels.drain(..n * t);
        self.token_types.drain(..n * t);
        self.class_ids.drain(..n);
    }

    /// Writes the first `n` examples as a shard (see the module docs for the layout).
    pub fn write_shard(&self, n: usize, w: &mut dyn Write) -> std::io::Result<()> {
        let t = self.seq_len;
        let mut header = Vec::with_capacity(HEADER);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&FORMAT.to_le_bytes());
        header.extend_from_slice(&(t as u32).to_le_bytes());
        header.extend_from_slice(&(n as u64).to_le_bytes());
        header.resize(HEADER, 0);
        w.write_all(&header)?;
        write_le(w, &self.input_ids[..n * t], |x| x.to_le_bytes())?;
        write_le(w, &self.labels[..n * t], |x| x.to_le_bytes())?;
        w.write_all(&self.token_types[..n * t])?;
        write_le(w, &self.class_ids[..n], |x| x.to_le_bytes())
    }
}

/// Writes 4-byte values little endian, a cache-sized piece at a time.
fn write_le<T: Copy>(
    w: &mut dyn Write,
    values: &[T],
    bytes: impl Fn(T) -> [u8; 4],
) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(4 * LE_PIECE);
    for piece in values.chunks(LE_PIECE) {
        buf.clear();
        buf.extend(piece.iter().flat_map(|&x| bytes(x)));
        w.write_all(&buf)?;
    }
    Ok(())
}

/// Values converted per [`write_le`] piece: 1 MB, so a `BufWriter` of 1 MB passes them on
/// without copying.
const LE_PIECE: usize = 256 * 1024;

/// The bytes of one shard.
pub fn encode_shard(examples: &[Example], seq_len: usize) -> Vec<u8> {
    let mut cols = Columns::new(seq_len);
    for e in examples {
        cols.push(e);
    }
    let mut out = Vec::with_capacity(shard_size(examples.len(), seq_len));
    cols.write_shard(examples.len(), &mut out)
        .expect("writing to memory cannot fail");
    out
}

fn shard_size(n: usize, t: usize) -> usize {
    HEADER + n * t * 9 + 4 * n
}

/// One memory-mapped shard.
struct Shard {
    map: memmap2::Mmap,
    examples: usize,
}

/// The shards of a prepared folder, memory-mapped: examples are read on demand, the
/// corpus is never loaded whole.
pub struct ShardSet {
    pub dir: PathBuf,
    pub manifest: Manifest,
    shards: Vec<Shard>,
    /// Global index of each shard's first example.
    starts: Vec<usize>,
}

impl ShardSet {
    /// Opens the manifest and maps every shard it lists, checking their headers and sizes.
    pub fn open(dir: &Path) -> Result<ShardSet> {
        let manifest = Manifest::read(dir)?;
        let t = manifest.seq_len;
        let mut shards = Vec::new();
        let mut starts = Vec::new();
        let mut total = 0;
        for entry in &manifest.shards {
            let path = dir.join(&entry.file);
            let file = std::fs::File::open(&path)
                .with_context(|| format!("cannot open shard {}", path.display()))?;
            // SAFETY: the shard is read only; prepared folders are written once, by
            // renaming complete files into place, and never modified afterwards.
            let map = unsafe { memmap2::Mmap::map(&file) }
                .with_context(|| format!("cannot map shard {}", path.display()))?;
            let n = entry.examples as usize;
            if map.len() != shard_size(n, t)
                || &map[..8] != MAGIC
                || u32::from_le_bytes(map[12..16].try_into()?) as usize != t
                || u64::from_le_bytes(map[16..24].try_into()?) as usize != n
            {
                bail!(
                    "shard {} does not match the manifest ({n} examples of {t} tokens): the data folder is damaged",
                    path.display()
                );
            }
            starts.push(total);
            total += n;
            shards.push(Shard { map, examples: n });
        }
        if total as u64 != manifest.examples {
            bail!(
                "{}: the shards hold {total} examples, the manifest says {}",
                dir.display(),
                manifest.examples
            );
        }
        Ok(ShardSet {
            dir: dir.to_path_buf(),
            manifest,
            shards,
            starts,
        })
    }

    pub fn len(&self) -> usize {
        self.manifest.examples as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Example `i` (0-based over all shards), copied out of the map.
    pub fn example(&self, i: usize) -> Example {
        let s = self.starts.partition_point(|&start| start <= i) - 1;
        let shard = &self.shards[s];
        let k = i - self.starts[s];
        let (n, t) = (shard.examples, self.manifest.seq_len);
        let m = &shard.map[..];
        let words = |base: usize| {
            m[base + 4 * k * t..base + 4 * (k + 1) * t]
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect::<Vec<i32>>()
        };
        let ids_at = HEADER;
        let labels_at = ids_at + 4 * n * t;
        let types_at = labels_at + 4 * n * t;
        let class_at = types_at + n * t + 4 * k;
        Example {
            input_ids: words(ids_at),
            labels: words(labels_at),
            token_types: m[types_at + k * t..types_at + (k + 1) * t]
                .iter()
                .map(|&x| x as i32)
                .collect(),
            class_id: u32::from_le_bytes([
                m[class_at],
                m[class_at + 1],
                m[class_at + 2],
                m[class_at + 3],
            ]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(k: i32, t: usize) -> Example {
        Example {
            input_ids: (0..t as i32).map(|i| k * 100 + i).collect(),
            labels: (0..t as i32)
                .map(|i| if i % 2 == 0 { -100 } else { k })
                .collect(),
            token_types: (0..t as i32).map(|i| (i < k) as i32).collect(),
            class_id: k as u32 + 7,
        }
    }

    #[test]
    fn shards_round_trip_through_the_memory_map() {
        let dir = tempfile::tempdir().unwrap();
        let t = 6;
        let all: Vec<Example> = (0..5).map(|k| example(k, t)).collect();
        std::fs::write(dir.path().join("s0.bin"), encode_shard(&all[..3], t)).unwrap();
        std::fs::write(dir.path().join("s1.bin"), encode_shard(&all[3..], t)).unwrap();
        let m = Manifest {
            format: FORMAT,
            mode: Mode::Lm,
            seq_len: t,
            vocab_size: 10,
            vocab_hash: text_hash("x"),
            seed: 0,
            hybrid_rate: 0.0,
            examples: 5,
            tokens: 0,
            targets: 0,
            prefixed_examples: 0,
            corrupted: 0,
            classes: vec![],
            inputs: vec![],
            shards: vec![
                ShardEntry {
                    file: "s0.bin".into(),
                    examples: 3,
                },
                ShardEntry {
                    file: "s1.bin".into(),
                    examples: 2,
                },
            ],
        };
        std::fs::write(
            dir.path().join(MANIFEST),
            serde_json::to_string(&m).unwrap(),
        )
        .unwrap();
        let set = ShardSet::open(dir.path()).unwrap();
        assert_eq!(set.len(), 5);
        for (k, e) in all.iter().enumerate() {
            assert_eq!(&set.example(k), e);
        }
        // A truncated shard is refused.
        let bytes = encode_shard(&all[3..], t);
        std::fs::write(dir.path().join("s1.bin"), &bytes[..bytes.len() - 1]).unwrap();
        let err = ShardSet::open(dir.path()).err().unwrap().to_string();
        assert!(err.contains("damaged"), "{err}");
    }
}
