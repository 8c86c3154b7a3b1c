//! One-forward inference tools: mask filling and hidden-state vectors.
//!
//! Inputs of different lengths are right-padded into one batch. Padding is invisible to
//! every query and takes no expert slots, and positions count from each row's first
//! token, so a row computes what it computes alone.

pub mod fill_mask;
pub mod vector;

use crate::device::{Device, Program};
use crate::model::inputs::{HostBatch, PositionRule};
use crate::model::programs::{forward_args, infer_program, InferOutput};
use crate::model::ModelConfig;
use anyhow::{anyhow, bail, Result};
use hlo::Literal;
use runtime::Buffer;
use std::collections::HashMap;

/// One input sequence and which of its positions are in the bidirectional prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub ids: Vec<u32>,
    /// Per position: 1 = prefix (visible to every query), 0 = causal.
    pub token_types: Vec<i32>,
}

impl Row {
    /// The original's fill-mask visibility (`num_precontext = n`): `ids` is `[SOT] + n`
    /// tokens and every position but the last is in the prefix.
    pub fn hybrid(ids: Vec<u32>) -> Row {
        let n = ids.len();
        let token_types = (0..n).map(|i| (i + 1 < n) as i32).collect();
        Row { ids, token_types }
    }
}

/// Right-pads `rows` into one batch (padding: id 0, mask 0, type 0).
pub fn pad_rows(rows: &[Row]) -> HostBatch {
    let len = rows.iter().map(|r| r.ids.len()).max().unwrap_or(0);
    let mut batch = HostBatch {
        batch: rows.len(),
        len,
        input_ids: Vec::with_capacity(rows.len() * len),
        attention_mask: Vec::with_capacity(rows.len() * len),
        token_type_ids: Vec::with_capacity(rows.len() * len),
        spout: None,
    };
    for r in rows {
        let pad = len - r.ids.len();
        batch.input_ids.extend(r.ids.iter().map(|&t| t as i32));
        batch.input_ids.extend(std::iter::repeat_n(0, pad));
        batch
            .attention_mask
            .extend(std::iter::repeat_n(1, r.ids.len()));
        batch.attention_mask.extend(std::iter::repeat_n(0, pad));
        batch.token_type_ids.extend(&r.token_types);
        batch.token_type_ids.extend(std::iter::repeat_n(0, pad));
    }
    batch
}

/// The model's parameters on the device and the inference programs compiled so far
/// (one per output kind and batch shape).
pub struct Runner<'d> {
    device: &'d Device,
    cfg: ModelConfig,
    params: Vec<Buffer>,
    programs: HashMap<(InferOutput, i64, i64), Program>,
}

impl<'d> Runner<'d> {
    pub fn new(device: &'d Device, cfg: &ModelConfig, params: &[Literal]) -> Result<Runner<'d>> {
        let params = params
            .iter()
            .map(|p| device.upload(p, 0))
            .collect::<Result<_>>()?;
        Ok(Runner {
            device,
            cfg: cfg.clone(),
            params,
            programs: HashMap::new(),
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// Runs the `what` program on `rows` (right-padded into one batch); `extra` follows
    /// the batch arguments. Returns the program's single output.
    pub fn run(&mut self, what: InferOutput, rows: &[Row], extra: &[Literal]) -> Result<Literal> {
        let (dims, mut args) = batch_args(rows, &self.cfg)?;
        let key = (what, dims[0], dims[1]);
        if !self.programs.contains_key(&key) {
            let f = infer_program(&self.cfg, what, key.1, key.2, hlo::DType::F32)?;
            self.programs.insert(key, self.device.compile(&f)?);
        }
        args.extend_from_slice(extra);
        let uploaded: Vec<Buffer> = args
            .iter()
            .map(|a| self.device.upload(a, 0))
            .collect::<Result<_>>()?;
        let mut refs: Vec<&Buffer> = self.params.iter().collect();
        refs.extend(uploaded.iter());
        let _awake = self.device.keep_cores_awake();
        let mut out = self.programs[&key].run(&refs)?;
        out.pop()
            .ok_or_else(|| anyhow!("the {what:?} program returned nothing"))?
            .to_literal()
            .map_err(Into::into)
    }
}

/// The batch arguments of an inference program for `rows` (checked, right-padded into
/// one batch) and the batch's `[B, T]`.
pub fn batch_args(rows: &[Row], cfg: &ModelConfig) -> Result<([i64; 2], Vec<Literal>)> {
    for r in rows {
        check_row(&r.ids, cfg)?;
    }
    let batch = pad_rows(rows);
    let positions = batch.positions(cfg.context, PositionRule::FirstToken);
    let labels = vec![-100; batch.batch * batch.len];
    let args = forward_args(&[], &batch, &positions, &labels)?;
    Ok(([batch.batch as i64, batch.len as i64], args))
}

/// Checks ids before they are batched: not empty, in the vocabulary, within the context.
pub fn check_row(ids: &[u32], cfg: &ModelConfig) -> Result<()> {
    if ids.is_empty() {
        bail!("the input is empty");
    }
    if ids.len() as i64 > cfg.context {
        bail!(
            "input of {} tokens is longer than the model's context of {}",
            ids.len(),
            cfg.context
        );
    }
    if let Some((i, t)) = ids
        .iter()
        .enumerate()
        .find(|(_, &t)| t as i64 >= cfg.vocab_size)
    {
        bail!(
            "token id {t} at position {i} is out of range for a vocabulary of {}",
            cfg.vocab_size
        );
    }
    Ok(())
}

/// Applies `f` to `rows` in batches of at most `batch_size`, in order.
pub fn in_batches<T>(
    rows: &[Row],
    batch_size: usize,
    mut f: impl FnMut(&[Row]) -> Result<Vec<T>>,
) -> Result<Vec<T>> {
    let mut out = Vec::with_capacity(rows.len());
    for chunk in rows.chunks(batch_size.max(1)) {
        out.extend(f(chunk)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hybrid_rows_put_all_but_the_last_position_in_the_prefix() {
        assert_eq!(Row::hybrid(vec![7, 8, 9]).token_types, vec![1, 1, 0]);
        let b = pad_rows(&[Row::hybrid(vec![7, 8, 9]), Row::hybrid(vec![5, 6])]);
        assert_eq!(b.len, 3);
        assert_eq!(b.attention_mask, vec![1, 1, 1, 1, 1, 0]);
        assert_eq!(b.token_type_ids, vec![1, 1, 0, 1, 0, 0]);
    }
}
