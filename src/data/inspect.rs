//! `gptsan data inspect`: prepared examples decoded, so a person can check the rules by
//! eye: the input as the model reads it, what each trained position must predict, which
//! positions are the visible prefix, and the class.

use super::shards::ShardSet;
use super::{Example, IGNORE};
use crate::tokenizer::{DecodeOptions, Tokenizer};
use anyhow::Result;
use serde::Serialize;

/// One example, decoded.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Inspected {
    pub index: usize,
    pub class_id: u32,
    /// Positions with token type 1 (SOT and the prefix), visible to every position.
    pub visible_prefix: usize,
    /// The input up to the padding, specials spelled out.
    pub input: String,
    /// The MLM targets: `position: token` for each trained prefix position.
    pub mlm_targets: Vec<String>,
    /// What the LM positions predict, decoded in order.
    pub lm_target: String,
    pub input_ids: Vec<i32>,
    pub labels: Vec<i32>,
    pub token_types: Vec<i32>,
}

/// The first `limit` examples of a prepared folder, decoded.
pub fn inspect(set: &ShardSet, tok: &Tokenizer, limit: usize) -> Result<Vec<Inspected>> {
    (0..set.len().min(limit))
        .map(|i| decode_example(i, &set.example(i), tok))
        .collect()
}

fn decode_example(index: usize, e: &Example, tok: &Tokenizer) -> Result<Inspected> {
    let not = tok.special().not as i32;
    let opts = DecodeOptions {
        line_break: "<BR>".into(),
        ..DecodeOptions::default()
    };
    let decode = |ids: &[i32]| -> Result<String> {
        let ids: Vec<u32> = ids.iter().map(|&x| x as u32).collect();
        Ok(tok.decode_with(&ids, &opts)?)
    };
    let real = e
        .input_ids
        .iter()
        .rposition(|&x| x != not)
        .map_or(0, |p| p + 1);
    let visible = e.token_types.iter().filter(|&&x| x == 1).count();
    let mut mlm = Vec::new();
    for p in 0..visible.saturating_sub(1) {
        if e.labels[p] != IGNORE {
            mlm.push(format!("{}: {}", p + 1, decode(&e.labels[p..p + 1])?));
        }
    }
    let lm: Vec<i32> = e.labels[visible.min(e.labels.len())..]
        .iter()
        .copied()
        .filter(|&x| x != IGNORE)
        .collect();
    Ok(Inspected {
        index,
        class_id: e.class_id,
        visible_prefix: visible,
        input: decode(&e.input_ids[..real])?,
        mlm_targets: mlm,
        lm_target: decode(&lm)?,
        input_ids: e.input_ids.clone(),
        labels: e.labels.clone(),
        token_types: e.token_types.clone(),
    })
}

/// The human-readable form of one inspected example.
pub fn render(x: &Inspected) -> String {
    let mut s = format!(
        "example {}  class {}  visible prefix: {} positions (SOT{})\n",
        x.index,
        x.class_id,
        x.visible_prefix,
        if x.visible_prefix > 1 {
            " + prefix"
        } else {
            ""
        }
    );
    s += &format!("  input : {}\n", x.input);
    if !x.mlm_targets.is_empty() {
        s += &format!(
            "  mlm   : position -> original token: {}\n",
            x.mlm_targets.join(", ")
        );
    }
    if !x.lm_target.is_empty() {
        s += &format!("  target: {}\n", x.lm_target);
    }
    s
}
