//! Multi-head self-attention with optional past keys/values (spout or KV cache) and an
//! additive visibility mask.

use super::nn::linear;
use hlo::ir::DotDims;
use hlo::Tensor;

/// Weights of one attention layer (PyTorch layout `[out, in]`, no biases).
pub struct AttentionWeights<'a> {
    pub q: &'a Tensor,
    pub k: &'a Tensor,
    pub v: &'a Tensor,
    pub out: &'a Tensor,
}

/// Result of one attention layer.
pub struct AttentionOutput {
    /// `[B, T, d]` after the output projection.
    pub out: Tensor,
    /// Keys and values of every visible position, past included: `[B, H, S, dh]`.
    pub keys: Tensor,
    pub values: Tensor,
}

/// `[B, T, d] -> [B, H, T, dh]`.
fn split_heads(x: &Tensor, heads: i64) -> Tensor {
    let (b, t, d) = (x.dims()[0], x.dims()[1], x.dims()[2]);
    x.reshape(&[b, t, heads, d / heads])
        .transpose(&[0, 2, 1, 3])
}

/// Self-attention of `x [B, T, d]`. `past` holds keys/values `[B, H, P, dh]` that come
/// before the tokens; `mask_add [B, T, P+T]` is 0 where a key is visible and the f32
/// minimum where it is not (so a row with no visible key attends uniformly, as the
/// reference does). Softmax runs in f32.
pub fn self_attention(
    x: &Tensor,
    w: &AttentionWeights,
    heads: i64,
    past: Option<(&Tensor, &Tensor)>,
    mask_add: &Tensor,
) -> AttentionOutput {
    let (b, t, d) = (x.dims()[0], x.dims()[1], x.dims()[2]);
    let dh = d / heads;
    let q = split_heads(&linear(x, w.q).mul_scalar((dh as f64).powf(-0.5)), heads);
    let mut k = split_heads(&linear(x, w.k), heads);
    let mut v = split_heads(&linear(x, w.v), heads);
    if let Some((pk, pv)) = past {
        k = x.builder().concatenate(&[pk.clone(), k], 2);
        v = x.builder().concatenate(&[pv.clone(), v], 2);
    }
    let batch_heads = DotDims {
        lhs_batch: vec![0, 1],
        rhs_batch: vec![0, 1],
        lhs_contracting: vec![3],
        rhs_contracting: vec![3],
    };
    let scores = q
        .convert(hlo::DType::F32)
        .dot_general(&k.convert(hlo::DType::F32), batch_heads);
    let s = scores.dims()[3];
    let mask = mask_add.reshape(&[b, 1, t, s]);
    let probs = scores.add(&mask).softmax(-1).convert(x.dtype());
    let ctx = probs.dot_general(
        &v,
        DotDims {
            lhs_batch: vec![0, 1],
            rhs_batch: vec![0, 1],
            lhs_contracting: vec![3],
            rhs_contracting: vec![2],
        },
    );
    let merged = ctx.transpose(&[0, 2, 1, 3]).reshape(&[b, t, d]);
    AttentionOutput {
        out: linear(&merged, w.out),
        keys: k,
        values: v,
    }
}
