//! Host-side preparation of a batch: positions, validity and prefix flags.
//!
//! Two position rules exist. The reference port's: `pos = clip(t + P - s, P, C-1)` where
//! `s` is the first 1 of the attention mask *after* a spout column was prepended (so with
//! a spout, left padding does not shift positions). The correct rule, used for generation
//! so that a left-padded row computes what it computes alone: `s` is the first real token.

use anyhow::{bail, Result};
use hlo::Literal;

/// Which position rule to apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PositionRule {
    /// Exactly the reference port's (for parity with its outputs).
    Reference,
    /// Positions count from each row's first real token.
    FirstToken,
}

/// A batch of token ids with its masks, on the host, as i32 rows.
#[derive(Clone, Debug, PartialEq)]
pub struct HostBatch {
    pub batch: usize,
    pub len: usize,
    pub input_ids: Vec<i32>,
    /// 1 = real token, 0 = padding.
    pub attention_mask: Vec<i32>,
    /// 1 = bidirectional prefix (token_type_id).
    pub token_type_ids: Vec<i32>,
    /// `[batch, spout_width]` when a spout is used.
    pub spout: Option<Vec<f32>>,
}

/// Reads an integer literal (i32 or i64) of shape `[B, T]` as i32 values.
pub fn int_rows(lit: &Literal, what: &str) -> Result<Vec<i32>> {
    if lit.dims().len() != 2 {
        bail!(
            "{what} must have shape [batch, tokens], got {:?}",
            lit.dims()
        );
    }
    match lit.dtype() {
        hlo::DType::S32 => Ok(lit.to_vec::<i32>()?),
        hlo::DType::S64 => lit
            .to_vec::<i64>()?
            .into_iter()
            .map(|v| {
                i32::try_from(v)
                    .map_err(|_| anyhow::anyhow!("{what} value {v} does not fit in i32"))
            })
            .collect(),
        d => bail!("{what} must be int32 or int64, got {d}"),
    }
}

impl HostBatch {
    /// Checks ids against the vocabulary and the length against the context.
    pub fn validate(&self, vocab_size: i64, context: i64, spout_width: i64) -> Result<()> {
        let past = self.spout.is_some() as i64;
        if self.len as i64 + past > context {
            bail!(
                "input of {} tokens{} is longer than the model's context of {context}",
                self.len,
                if past > 0 {
                    " plus the spout position"
                } else {
                    ""
                }
            );
        }
        for (i, &id) in self.input_ids.iter().enumerate() {
            if id < 0 || id as i64 >= vocab_size {
                bail!(
                    "token id {id} at row {}, position {} is out of range for a vocabulary of {vocab_size}",
                    i / self.len.max(1),
                    i % self.len.max(1)
                );
            }
        }
        if let Some(s) = &self.spout {
            if spout_width == 0 {
                bail!("a spout vector was given but the model has no spout");
            }
            if s.len() as i64 != self.batch as i64 * spout_width {
                bail!(
                    "spout has {} values per row, the model's spout width is {spout_width}",
                    s.len() / self.batch.max(1)
                );
            }
        }
        Ok(())
    }

    /// Position-table rows for every token.
    pub fn positions(&self, context: i64, rule: PositionRule) -> Vec<i32> {
        let past = self.spout.is_some() as i64;
        let mut out = Vec::with_capacity(self.batch * self.len);
        for b in 0..self.batch {
            let row = &self.attention_mask[b * self.len..(b + 1) * self.len];
            let first_real = row.iter().position(|&m| m != 0).unwrap_or(0) as i64;
            let start = match rule {
                // With a spout the prepended mask column is 1, so the first 1 is index 0.
                PositionRule::Reference if past > 0 => 0,
                _ => first_real,
            };
            for t in 0..self.len as i64 {
                out.push((t + past - start).clamp(past, context - 1) as i32);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(mask: Vec<i32>, spout: bool) -> HostBatch {
        HostBatch {
            batch: 1,
            len: mask.len(),
            input_ids: vec![1; mask.len()],
            token_type_ids: vec![0; mask.len()],
            attention_mask: mask,
            spout: spout.then(|| vec![0.0; 4]),
        }
    }

    #[test]
    fn reference_positions_follow_the_port() {
        let left = batch(vec![0, 0, 1, 1], false);
        assert_eq!(
            left.positions(64, PositionRule::Reference),
            vec![0, 0, 0, 1]
        );
        let spout = batch(vec![0, 0, 1, 1], true);
        assert_eq!(
            spout.positions(64, PositionRule::Reference),
            vec![1, 2, 3, 4]
        );
        assert_eq!(
            spout.positions(64, PositionRule::FirstToken),
            vec![1, 1, 1, 2]
        );
        assert_eq!(
            batch(vec![1; 5], false).positions(3, PositionRule::Reference),
            vec![0, 1, 2, 2, 2]
        );
    }
}
