//! Inputs and outputs shared by the batch commands (fill-mask, vector, generate): token
//! ids from the command line, JSONL files of one object per line.

use crate::model::ModelConfig;
use crate::tokenizer::Tokenizer;
use anyhow::{bail, Context, Result};
use serde::de::DeserializeOwned;
use std::path::Path;

/// Reads one JSON object per non-blank line; errors name the file and line.
pub fn read_jsonl<T: DeserializeOwned>(path: &Path) -> Result<Vec<(usize, T)>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let value = serde_json::from_str(line)
            .with_context(|| format!("{} line {}", path.display(), i + 1))?;
        out.push((i + 1, value));
    }
    if out.is_empty() {
        bail!("{} has no inputs", path.display());
    }
    Ok(out)
}

/// Writes one JSON value per line, atomically.
pub fn write_jsonl(path: &Path, values: &[serde_json::Value]) -> Result<()> {
    let mut text = String::new();
    for v in values {
        text.push_str(&v.to_string());
        text.push('\n');
    }
    crate::model::checkpoint::write_atomic(path, text.as_bytes())
}

/// Token ids as given on the command line or in a file (range-checked later against the
/// model's vocabulary).
pub fn to_ids(ids: &[i64]) -> Result<Vec<u32>> {
    ids.iter()
        .map(|&i| u32::try_from(i).map_err(|_| anyhow::anyhow!("token id {i} is out of range")))
        .collect()
}

/// Refuses to encode text with a tokenizer that does not fit the model.
pub fn check_tokenizer(tok: &Tokenizer, cfg: &ModelConfig) -> Result<()> {
    if tok.vocab_size() as i64 != cfg.vocab_size {
        bail!(
            "the tokenizer has {} tokens but the model expects {}: pass the model's --vocab",
            tok.vocab_size(),
            cfg.vocab_size
        );
    }
    Ok(())
}

/// The decoded text of `ids`, when the tokenizer fits the model.
pub fn decode_text(tok: &Tokenizer, cfg: &ModelConfig, ids: &[u32]) -> Option<String> {
    if tok.vocab_size() as i64 != cfg.vocab_size {
        return None;
    }
    tok.decode(ids).ok()
}

/// One input line of fill-mask and vector: `{"text": ...}` or `{"ids": [...]}`, with an
/// optional `"pos"` (vector only).
#[derive(serde::Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct TextOrIds {
    pub text: Option<String>,
    pub ids: Option<Vec<i64>>,
    pub pos: Option<i64>,
}

/// The input's ids: `ids` as given, or `encode(text)`.
pub fn resolve(
    text: Option<&str>,
    ids: Option<&[i64]>,
    encode: impl FnOnce(&str) -> Result<Vec<u32>>,
) -> Result<Vec<u32>> {
    match (text, ids) {
        (Some(_), Some(_)) => bail!("give either text or ids, not both"),
        (Some(t), None) => encode(t),
        (None, Some(i)) => to_ids(i),
        (None, None) => bail!("give text or ids"),
    }
}

/// Comma-separated token ids from the command line; an empty list is allowed here and
/// refused where it matters (with a clear message instead of a parse error).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdList(pub Vec<i64>);

impl std::str::FromStr for IdList {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        s.split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| {
                p.parse::<i64>()
                    .map_err(|_| format!("{p:?} is not a token id"))
            })
            .collect::<std::result::Result<_, _>>()
            .map(IdList)
    }
}
