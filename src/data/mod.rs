//! Training data: reading corpora and packing token streams into fixed-length examples.
//!
//! Prepared data (`gptsan data prepare`, SPEC section 5): [`inputs`] (which files, which
//! class), [`rules`] (the token rules of one example), [`windows`] (a document cut into
//! examples), [`shards`] (the on-disk format and its memory-mapped reader), [`prepare`]
//! (the parallel, atomic pipeline), [`inspect`] (examples decoded for people) and
//! [`source`] (what training reads examples from).
//!
//! Raw text for `train --corpus`:
//! `lm` mode (SPEC section 5): every example is `[SOT, SEG] + tokens + [EOT]`, padded with
//! NOT; the target of position t is the token at t+1, and padding is not a target. Lines of
//! one class are joined with line breaks into one stream and cut into windows, so short
//! sentences share an example instead of being mostly padding.

use anyhow::{bail, Result};
use rayon::prelude::*;

pub mod inputs;
pub mod inspect;
pub mod prepare;
pub mod rules;
pub mod shards;
pub mod source;
pub mod windows;

/// Ignored target (PyTorch's `ignore_index`).
pub const IGNORE: i32 = -100;

pub use crate::corpus::Document;

/// The special tokens packing needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackTokens {
    pub sot: u32,
    pub seg: u32,
    pub eot: u32,
    pub not: u32,
    /// The line break `<BR>`.
    pub br: u32,
}

/// One training example of fixed length.
#[derive(Clone, Debug, PartialEq)]
pub struct Example {
    pub input_ids: Vec<i32>,
    pub labels: Vec<i32>,
    /// 1: the position is in the visible prefix (SOT and an MLM prefix), else 0.
    pub token_types: Vec<i32>,
    pub class_id: u32,
}

/// Reads text files, one document per non-empty line (class 0). Invalid UTF-8 is an error
/// naming the file, the line and the byte offset.
pub fn read_text_files(paths: &[std::path::PathBuf]) -> Result<Vec<Document>> {
    let mut docs = Vec::new();
    for path in paths {
        docs.extend(crate::corpus::read_lines(path, 0)?);
    }
    Ok(docs)
}

/// Tokenizes documents in parallel and packs them into examples of `len` tokens.
pub fn pack_lm(
    docs: &[Document],
    len: usize,
    tokens: PackTokens,
    encode: impl Fn(&str) -> Vec<u32> + Sync,
) -> Result<Vec<Example>> {
    if len < 4 {
        bail!("examples need at least 4 tokens, got {len}");
    }
    let encoded: Vec<Vec<u32>> = docs.par_iter().map(|d| encode(&d.text)).collect();
    let window = len - 3;
    let mut examples = Vec::new();
    let mut classes: Vec<u32> = docs.iter().map(|d| d.class_id).collect();
    classes.sort_unstable();
    classes.dedup();
    for class in classes {
        let mut stream: Vec<u32> = Vec::new();
        for (d, ids) in docs.iter().zip(&encoded) {
            if d.class_id != class || ids.is_empty() {
                continue;
            }
            if !stream.is_empty() {
                stream.push(tokens.br);
            }
            stream.extend_from_slice(ids);
        }
        for chunk in stream.chunks(window) {
            examples.push(make_example(chunk, len, tokens, class));
        }
    }
    Ok(examples)
}

fn make_example(chunk: &[u32], len: usize, tokens: PackTokens, class_id: u32) -> Example {
    let mut seq: Vec<i32> = Vec::with_capacity(len);
    seq.push(tokens.sot as i32);
    seq.push(tokens.seg as i32);
    seq.extend(chunk.iter().map(|&t| t as i32));
    seq.push(tokens.eot as i32);
    let real = seq.len();
    seq.resize(len, tokens.not as i32);
    let mut labels = vec![IGNORE; len];
    // The target of position t is the token at t+1 (SOT predicts SEG, ... EOT ends).
    labels[..real - 1].copy_from_slice(&seq[1..real]);
    Example {
        input_ids: seq,
        labels,
        token_types: vec![0; len],
        class_id,
    }
}

/// A deterministic permutation of `0..n` (Fisher-Yates driven by [`crate::rng::Rng`]).
pub fn shuffled_order(n: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = crate::rng::Rng::new(seed);
    for i in (1..n).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOK: PackTokens = PackTokens {
        sot: 90,
        seg: 91,
        eot: 92,
        not: 93,
        br: 94,
    };

    #[test]
    fn packs_lines_of_a_class_into_windows() {
        let docs = vec![
            Document {
                text: "ab".into(),
                class_id: 0,
            },
            Document {
                text: "cde".into(),
                class_id: 0,
            },
            Document {
                text: "x".into(),
                class_id: 1,
            },
        ];
        let enc = |s: &str| s.chars().map(|c| c as u32 - 'a' as u32).collect::<Vec<_>>();
        let ex = pack_lm(&docs, 8, TOK, enc).unwrap();
        // class 0 stream: a b BR c d e (6 tokens) -> one window of 5 and one of 1.
        assert_eq!(ex.len(), 3);
        assert_eq!(ex[0].input_ids, vec![90, 91, 0, 1, 94, 2, 3, 92]);
        assert_eq!(ex[0].labels, vec![91, 0, 1, 94, 2, 3, 92, IGNORE]);
        assert_eq!(ex[1].input_ids, vec![90, 91, 4, 92, 93, 93, 93, 93]);
        assert_eq!(
            ex[1].labels,
            vec![91, 4, 92, IGNORE, IGNORE, IGNORE, IGNORE, IGNORE]
        );
        assert_eq!(ex[2].class_id, 1);
    }

    #[test]
    fn shuffle_is_a_deterministic_permutation() {
        let a = shuffled_order(100, 7);
        assert_eq!(a, shuffled_order(100, 7));
        assert_ne!(a, shuffled_order(100, 8));
        let mut s = a.clone();
        s.sort();
        assert_eq!(s, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn invalid_utf8_names_file_and_offset() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.txt");
        std::fs::write(&p, b"ok line\nbad \xff here\n").unwrap();
        let err = read_text_files(&[p]).unwrap_err().to_string();
        assert!(
            err.contains("bad.txt") && err.contains("line 2") && err.contains("offset 12"),
            "{err}"
        );
    }
}
