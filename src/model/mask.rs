//! Which keys each query may see: the hybrid Prefix-LM mask.
//!
//! Query `i` (at absolute index `offset + i` among the keys) sees key `j` when the key is a
//! real token (not padding) and either `j <= offset + i` (causal) or `j` is in the prefix
//! (its prefix flag is set). Past positions (spout, KV cache) sit before the tokens.

use hlo::{DType, Shape, Tensor};

/// Additive mask `[B, T, S]`: 0 where visible, f32 min where not.
///
/// `key_valid [B, S]` and `key_prefix [B, S]` are pred; `offset` is the number of key
/// positions before the first query (a constant or an s32 scalar tensor).
pub fn prefix_lm_mask(key_valid: &Tensor, key_prefix: &Tensor, t: i64, offset: &Tensor) -> Tensor {
    let b = key_valid.builder();
    let (batch, s) = (key_valid.dims()[0], key_valid.dims()[1]);
    let q_index = b.iota(&Shape::new(DType::S32, vec![t, s]), 0).add(offset);
    let k_index = b.iota(&Shape::new(DType::S32, vec![t, s]), 1);
    let causal = k_index.le(&q_index).broadcast_to(&[batch, t, s]);
    let prefix = key_prefix
        .reshape(&[batch, 1, s])
        .broadcast_to(&[batch, t, s]);
    let valid = key_valid
        .reshape(&[batch, 1, s])
        .broadcast_to(&[batch, t, s]);
    let visible = causal.or(&prefix).and(&valid);
    let zero = b.scalar(0.0, DType::F32);
    let min = b.scalar(f32::MIN as f64, DType::F32);
    visible.select(&zero, &min)
}
