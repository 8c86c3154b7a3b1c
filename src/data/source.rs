//! What training reads examples from: raw text packed in memory (`train --corpus`), or
//! prepared shards streamed from their memory map (`train --data`), with the tokenizer that
//! goes with them. The training loop only asks for the number of examples and example `i`,
//! so resuming at a data position is the same for both.

use super::shards::{text_hash, ShardSet};
use super::{pack_lm, Example, PackTokens};
use crate::tokenizer::Tokenizer;
use anyhow::{anyhow, bail, Context, Result};
use std::path::{Path, PathBuf};

/// Examples for training.
pub enum DataSource {
    /// Packed from raw text, held in memory.
    Packed(Vec<Example>),
    /// Prepared shards, read on demand.
    Shards(Box<ShardSet>),
}

impl DataSource {
    pub fn len(&self) -> usize {
        match self {
            DataSource::Packed(v) => v.len(),
            DataSource::Shards(s) => s.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Example `i < len()`.
    pub fn example(&self, i: usize) -> Example {
        match self {
            DataSource::Packed(v) => v[i].clone(),
            DataSource::Shards(s) => s.example(i),
        }
    }
}

/// A data source with its tokenizer and a description that identifies it in a run.
pub struct TrainData {
    pub source: DataSource,
    pub tokenizer: Tokenizer,
    /// `data:<dir> <vocab hash>, <n> examples` for prepared data (None for raw text).
    pub id: Option<String>,
}

/// Raw text (`built-in` or files, one document per line) packed into LM examples of
/// `seq_len` tokens with the built-in vocabulary.
pub fn from_corpus(corpus: &[String], seq_len: usize) -> Result<TrainData> {
    let tok = Tokenizer::builtin();
    let sp = tok.special();
    let br = tok
        .token_to_id("<BR>")
        .ok_or_else(|| anyhow!("the vocabulary has no <BR> token"))?;
    let docs = if corpus.is_empty() || corpus == ["built-in"] {
        crate::corpus::builtin()
    } else {
        let paths: Vec<PathBuf> = corpus.iter().map(PathBuf::from).collect();
        super::read_text_files(&paths)?
    };
    let pack = PackTokens {
        sot: sp.sot,
        seg: sp.seg,
        eot: sp.eot,
        not: sp.not,
        br,
    };
    let examples = pack_lm(&docs, seq_len, pack, |t| tok.encode(t, true))?;
    Ok(TrainData {
        source: DataSource::Packed(examples),
        tokenizer: tok.clone(),
        id: None,
    })
}

/// Prepared data for a model of `vocab_size` ids and `context` positions (`past`: the
/// spout position in front). The vocabulary is the data's own (`vocab.txt` beside the
/// manifest, checked against the manifest's hash).
pub fn from_prepared(dir: &Path, vocab_size: i64, context: i64, past: i64) -> Result<TrainData> {
    let set = ShardSet::open(dir)?;
    let m = &set.manifest;
    if m.vocab_size as i64 != vocab_size {
        bail!(
            "the data in {} uses a vocabulary of {} tokens but the model's vocab_size is {vocab_size}; \
             prepare the data with the model's vocabulary or set vocab_size = {}",
            dir.display(),
            m.vocab_size,
            m.vocab_size
        );
    }
    if m.seq_len as i64 + past > context {
        bail!(
            "the data in {} has sequences of {} tokens, above the model's context of {context} positions{}",
            dir.display(),
            m.seq_len,
            if past > 0 { " (one is the spout's)" } else { "" }
        );
    }
    let tok = Tokenizer::from_dir(dir)
        .with_context(|| format!("loading the vocabulary of the data in {}", dir.display()))?;
    let hash = text_hash(&tok.vocab().to_text());
    if hash != m.vocab_hash {
        bail!(
            "{}: vocab.txt does not match the manifest's vocab_hash (the data folder was modified)",
            dir.display()
        );
    }
    let id = format!(
        "data:{} {} {} examples",
        dir.display(),
        m.vocab_hash,
        m.examples
    );
    Ok(TrainData {
        source: DataSource::Shards(Box::new(set)),
        tokenizer: tok,
        id: Some(id),
    })
}
