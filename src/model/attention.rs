//! Multi-head self-attention with optional past keys/values (spout or KV cache) and an
//! additive visibility mask.

use super::masked_attention::{masked_attention, COMPOSITE_QUERIES};
use super::nn::linear;
use hlo::ir::DotDims;
use hlo::{DType, Tensor};

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

/// Self-attention of `x [B, T, d]`. `past` holds keys/values `[B, H, P, dh]` that come
/// before the tokens; `mask_add [B, T, P+T]` is 0 where a key is visible and the f32
/// minimum where it is not (so a row with no visible key attends uniformly, as the
/// reference does). From [`COMPOSITE_QUERIES`] tokens the softmax is the
/// [`masked_attention`] composite (a kernel of the backend's where it has one), in f32
/// whatever the program's precision.
pub fn self_attention(
    x: &Tensor,
    w: &AttentionWeights,
    heads: i64,
    past: Option<(&Tensor, &Tensor)>,
    mask_add: &Tensor,
) -> AttentionOutput {
    let composite = mask_add.dtype() == DType::F32 && x.dims()[1] >= COMPOSITE_QUERIES;
    if composite {
        return composite_self_attention(x, w, heads, past, mask_add);
    }
    let (q, mut k, mut v) = project_qkv(x, w, heads);
    if let Some((pk, pv)) = past {
        k = x.builder().concatenate(&[pk.clone(), k], 2);
        v = x.builder().concatenate(&[pv.clone(), v], 2);
    }
    let out = attend(&q, &k, &v, mask_add, w.out);
    AttentionOutput {
        out,
        keys: k,
        values: v,
    }
}

/// [`self_attention`] through the [`masked_attention`] composite, whose operands and
/// result are token-major (`[B, T, H, dh]`, a reshape of the projections): a kernel
/// reads the heads in place, and only the returned keys and values (the KV cache, if a
/// program keeps it) are made head-major.
fn composite_self_attention(
    x: &Tensor,
    w: &AttentionWeights,
    heads: i64,
    past: Option<(&Tensor, &Tensor)>,
    mask_add: &Tensor,
) -> AttentionOutput {
    let (b, t, d) = (x.dims()[0], x.dims()[1], x.dims()[2]);
    let swap = |y: &Tensor| y.transpose(&[0, 2, 1, 3]);
    let (q, mut k, mut v) = project_tokens(x, w, heads);
    if let Some((pk, pv)) = past {
        k = x.builder().concatenate(&[swap(pk), k], 1);
        v = x.builder().concatenate(&[swap(pv), v], 1);
    }
    // 16-bit programs attend in f32 too.
    let f32 = |y: &Tensor| y.convert(DType::F32);
    let ctx = masked_attention(&f32(&q), &f32(&k), &f32(&v), mask_add).convert(x.dtype());
    AttentionOutput {
        out: linear(&ctx.reshape(&[b, t, d]), w.out),
        keys: swap(&k),
        values: swap(&v),
    }
}

/// Queries (already scaled by dh^-0.5, as the reference does), keys and values, each
/// `[B, H, T, dh]`.
pub fn project_qkv(x: &Tensor, w: &AttentionWeights, heads: i64) -> (Tensor, Tensor, Tensor) {
    let (q, k, v) = project_tokens(x, w, heads);
    let swap = |y: Tensor| y.transpose(&[0, 2, 1, 3]);
    (swap(q), swap(k), swap(v))
}

/// [`project_qkv`] token-major, `[B, T, H, dh]`: the projections reshaped.
fn project_tokens(x: &Tensor, w: &AttentionWeights, heads: i64) -> (Tensor, Tensor, Tensor) {
    let (b, t, d) = (x.dims()[0], x.dims()[1], x.dims()[2]);
    let dh = d / heads;
    let tokens = |y: Tensor| y.reshape(&[b, t, heads, dh]);
    (
        tokens(linear(x, w.q).mul_scalar((dh as f64).powf(-0.5))),
        tokens(linear(x, w.k)),
        tokens(linear(x, w.v)),
    )
}

/// From this many queries [`attend`] takes the softmax's sum from the value product: a
/// decode step (one query) would copy its whole value cache to widen it, which cost 3-4%
/// of greedy generation, while at 512 queries the column saves a read of the
/// `[B, H, T, S]` weights (2026-12-01, with the division moved to the context:
/// `bench forward` 4x512 about 3% faster, mean 0.289-0.295 s against 0.298-0.312 s over
/// four alternating rounds of 15 runs; the train step unchanged). In 16-bit compute the
/// sum stays a reduction in f32, as the rest of the softmax.
const SUM_IN_PRODUCT_QUERIES: i64 = 64;

/// `softmax(q k^T + mask) v` with the softmax in f32, heads merged back to `[B, T, d]`
/// and projected by `w_out`.
pub fn attend(q: &Tensor, k: &Tensor, v: &Tensor, mask_add: &Tensor, w_out: &Tensor) -> Tensor {
    let (b, h, t, dh) = (q.dims()[0], q.dims()[1], q.dims()[2], q.dims()[3]);
    let ctx = softmax_values(q, k, v, mask_add);
    let merged = ctx.transpose(&[0, 2, 1, 3]).reshape(&[b, t, h * dh]);
    linear(&merged, w_out)
}

/// `softmax(q k^T + mask) v` per head, `[B, H, T, dh]` in `q`'s type (softmax in f32).
fn softmax_values(q: &Tensor, k: &Tensor, v: &Tensor, mask_add: &Tensor) -> Tensor {
    softmax_with_stats(q, k, v, mask_add).0
}

/// [`softmax_values`] and each row's softmax statistics, `[B, H, T, 1]` f32: the
/// maximum score (without gradient) and the sum of `exp(score - maximum)`.
pub(super) fn softmax_with_stats(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask_add: &Tensor,
) -> (Tensor, Tensor, Tensor) {
    let (b, h, t, dh) = (q.dims()[0], q.dims()[1], q.dims()[2], q.dims()[3]);
    let per_head = |lhs_contracting: i64, rhs_contracting: i64| DotDims {
        lhs_batch: vec![0, 1],
        rhs_batch: vec![0, 1],
        lhs_contracting: vec![lhs_contracting],
        rhs_contracting: vec![rhs_contracting],
    };
    let scores = q
        .convert(DType::F32)
        .dot_general(&k.convert(DType::F32), per_head(3, 3));
    let s = scores.dims()[3];
    let scores = scores.add(&mask_add.reshape(&[b, 1, t, s]));
    // The softmax's division is applied to the `[.., dh]` context rather than to the
    // `[.., S]` weights: one pass over the scores less.
    let top = scores.reduce_max(&[3]).expand_dim(3).stop_gradient();
    let weights = scores.sub(&top).exp();
    let (ctx, total) = if t >= SUM_IN_PRODUCT_QUERIES && q.dtype() == DType::F32 {
        // The weights' sum comes out of the product as one more column (`v` with a
        // column of ones), instead of a reduction that reads the weights once more.
        let ones = q
            .builder()
            .scalar(1.0, DType::F32)
            .broadcast_to(&[b, h, s, 1]);
        let v1 = q.builder().concatenate(&[v.clone(), ones], 3);
        let ctx1 = weights.dot_general(&v1, per_head(3, 2));
        (ctx1.slice_dim(3, 0, dh), ctx1.slice_dim(3, dh, dh + 1))
    } else {
        let total = weights.reduce_sum(&[3]).expand_dim(3);
        let ctx = weights
            .convert(q.dtype())
            .dot_general(v, per_head(3, 2))
            .convert(DType::F32);
        (ctx, total)
    };
    (ctx.div(&total).convert(q.dtype()), top, total)
}
