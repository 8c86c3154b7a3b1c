//! Mask filling, the original's `run_languagemodel.py`: the input is `[SOT] + tokens` with
//! each `[MASK]` as the MSK token, every position but the last in the bidirectional prefix,
//! one forward; output i is the argmax of logits i where input i+1 is MSK, else input i+1
//! (the "shifted" MLM), and score i is logits i at input i+1.

use super::{in_batches, Row, Runner};
use crate::model::programs::InferOutput;
use crate::tokenizer::Tokenizer;
use anyhow::{bail, Result};

/// How a mask is written in text.
pub const MASK_TEXT: &str = "[MASK]";

/// The result for one input.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Filled {
    pub input_ids: Vec<u32>,
    pub output_ids: Vec<u32>,
    /// `logits[i][input[i+1]]`.
    pub scores: Vec<f32>,
    /// `log_softmax(logits[i])[output[i]]`.
    pub logprobs: Vec<f64>,
}

/// `[SOT] + tokens` of text that must hold at least one `[MASK]`.
pub fn text_ids(tok: &Tokenizer, text: &str) -> Result<Vec<u32>> {
    if !text.contains(MASK_TEXT) {
        bail!("no {MASK_TEXT} in the text: nothing to fill");
    }
    Ok(encode_with_masks(tok, text))
}

/// `[SOT] + tokens`, each `[MASK]` becoming MSK (the text between masks is encoded piece
/// by piece, as the original does).
pub fn encode_with_masks(tok: &Tokenizer, text: &str) -> Vec<u32> {
    let sp = tok.special();
    let mut ids = vec![sp.sot];
    for (i, piece) in text.split(MASK_TEXT).enumerate() {
        if i > 0 {
            ids.push(sp.msk);
        }
        tok.encode_into(piece, false, &mut ids);
    }
    ids
}

/// Checks that `ids` (SOT included) have something to fill.
pub fn check_ids(ids: &[u32], msk: u32) -> Result<()> {
    if ids.len() < 2 {
        bail!(
            "fill-mask needs at least two ids (SOT and one token), got {}",
            ids.len()
        );
    }
    if !ids[1..].contains(&msk) {
        bail!("no MSK token ({msk}) after the first id: nothing to fill");
    }
    Ok(())
}

/// Applies the fill rule to one input's logits (`[T, V]` row-major, T >= ids.len()).
pub fn fill_from_logits(ids: &[u32], logits: &[f32], vocab: usize, msk: u32) -> Filled {
    let n = ids.len().saturating_sub(1);
    let mut out = Filled {
        input_ids: ids.to_vec(),
        output_ids: Vec::with_capacity(n),
        scores: Vec::with_capacity(n),
        logprobs: Vec::with_capacity(n),
    };
    for i in 0..n {
        let row = &logits[i * vocab..(i + 1) * vocab];
        let next = ids[i + 1];
        let chosen = if next == msk { argmax(row) } else { next };
        out.output_ids.push(chosen);
        out.scores.push(row[next as usize]);
        out.logprobs.push(log_softmax_at(row, chosen as usize));
    }
    out
}

/// Index of the largest value (the first one on ties).
pub fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best as u32
}

/// `log_softmax(row)[i]`, in f64.
pub fn log_softmax_at(row: &[f32], i: usize) -> f64 {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
    let sum: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
    row[i] as f64 - max - sum.ln()
}

/// Fills every input (`ids` with SOT), `batch_size` inputs per forward.
pub fn fill_mask(
    runner: &mut Runner,
    inputs: &[Vec<u32>],
    batch_size: usize,
) -> Result<Vec<Filled>> {
    let rows: Vec<Row> = inputs.iter().map(|ids| Row::hybrid(ids.clone())).collect();
    fill_rows(runner, &rows, batch_size)
}

/// Fills rows with any prefix flags (the fixture's cases have their own).
pub fn fill_rows(runner: &mut Runner, rows: &[Row], batch_size: usize) -> Result<Vec<Filled>> {
    let vocab = runner.config().vocab_size as usize;
    let msk = (vocab - 6) as u32;
    in_batches(rows, batch_size, |chunk| {
        let logits = runner
            .run(InferOutput::Logits, chunk, &[])?
            .to_vec::<f32>()?;
        let per_row = logits.len() / chunk.len();
        Ok(chunk
            .iter()
            .zip(logits.chunks(per_row))
            .map(|(r, l)| fill_from_logits(&r.ids, l, vocab, msk))
            .collect())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_copies_unmasked_tokens_and_fills_masks() {
        let v = 4;
        // ids: SOT(0) 2 MSK(3); logits rows for positions 0 and 1.
        let logits = [0.0, 1.0, 5.0, 0.0, 2.0, 0.0, 1.0, 0.5, 9.0, 9.0, 9.0, 9.0];
        let f = fill_from_logits(&[0, 2, 3], &logits, v, 3);
        assert_eq!(f.output_ids, vec![2, 0]);
        assert_eq!(f.scores, vec![5.0, 0.5]);
        let lse = (1f64 + 1f64.exp() + 5f64.exp() + 1.0).ln();
        assert!((f.logprobs[0] - (5.0 - lse)).abs() < 1e-12);
    }

    #[test]
    fn text_without_a_mask_is_refused() {
        let tok = Tokenizer::builtin();
        assert!(text_ids(tok, "abc").is_err());
        let ids = text_ids(tok, "[MASK]a[MASK]").unwrap();
        let sp = tok.special();
        assert_eq!(ids[0], sp.sot);
        assert_eq!(ids[1], sp.msk);
        assert_eq!(*ids.last().unwrap(), sp.msk);
    }
}
