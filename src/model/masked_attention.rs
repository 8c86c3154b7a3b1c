//! Attention's softmax as a composite (`hlo`'s `Op::Composite`): `softmax(q k^T + mask) v`
//! per head, with its gradient as a composite of its own. Where the backend has kernels
//! for them (the CPU plugin on AVX-512: `runtime::masked_attention`), the scores never
//! leave the cores' caches and key blocks the mask hides are skipped; everywhere else
//! (other plugins, programs on a mesh, exported artifacts) both are the ops below.
//!
//! The forward composite also returns each row's score maximum and sum of exponentials,
//! and the gradient recomputes the probabilities from them (as FlashAttention does), so
//! a train step keeps no `[B, H, T, S]` weights between its passes.

use super::attention::softmax_with_stats;
use hlo::ir::DotDims;
use hlo::{Builder, Tensor};

/// The forward composite. Operands `q [B, T, H, dh]`, `k` and `v [B, S, H, dh]`,
/// `mask [B, T, S]` (added to the scores), all f32; results `softmax(q k^T + mask) v`
/// per head `[B, T, H, dh]`, and each row's score maximum and sum of
/// `exp(score - maximum)`, `[B, T, H]` (without gradient: their cotangents are not used).
pub const MASKED_ATTENTION: &str = "masked_attention";

/// The gradient composite. Operands the forward's four operands, its three results and
/// the cotangent of its first result; results the cotangents of `q`, `k` and `v`.
pub const MASKED_ATTENTION_GRAD: &str = "masked_attention_grad";

/// From this many tokens attention goes through the composite: prefill, evaluation and
/// training, not a decode step's single query.
pub const COMPOSITE_QUERIES: i64 = 64;

/// `softmax(q k^T + mask) v` per head, token-major (see [`MASKED_ATTENTION`]).
pub fn masked_attention(q: &Tensor, k: &Tensor, v: &Tensor, mask: &Tensor) -> Tensor {
    let operands = [q.clone(), k.clone(), v.clone(), mask.clone()];
    q.builder()
        .composite_with_vjp(
            MASKED_ATTENTION,
            &operands,
            forward_ops,
            |b, ops, outs, cts| {
                let mut args = ops.to_vec();
                args.extend_from_slice(outs);
                args.push(cts[0].clone());
                let mut grads = b.composite(MASKED_ATTENTION_GRAD, &args, grad_ops);
                grads.push(b.zeros(ops[3].shape()));
                grads
            },
        )
        .remove(0)
}

/// `[B, T, H, dh]` <-> `[B, H, T, dh]`.
fn swap(x: &Tensor) -> Tensor {
    x.transpose(&[0, 2, 1, 3])
}

/// The forward composite as ops: the model's head-major softmax between transposes.
fn forward_ops(_: &Builder, a: &[Tensor]) -> Vec<Tensor> {
    let (ctx, top, total) = softmax_with_stats(&swap(&a[0]), &swap(&a[1]), &swap(&a[2]), &a[3]);
    let (b, t, h) = (a[0].dims()[0], a[0].dims()[1], a[0].dims()[2]);
    let stat = |s: &Tensor| s.reshape(&[b, h, t]).transpose(&[0, 2, 1]).stop_gradient();
    vec![swap(&ctx), stat(&top), stat(&total)]
}

/// The gradient composite as ops: `p` from the statistics, `ds = p (d_out v^T -
/// rowsum(d_out out))`, then `dq = ds k`, `dk = ds^T q`, `dv = p^T d_out`.
fn grad_ops(_: &Builder, a: &[Tensor]) -> Vec<Tensor> {
    let (q, k, v, out, d_out) = (
        swap(&a[0]),
        swap(&a[1]),
        swap(&a[2]),
        swap(&a[4]),
        swap(&a[7]),
    );
    let (b, t, s) = (a[3].dims()[0], a[3].dims()[1], a[3].dims()[2]);
    let per_head = |lhs_contracting: i64, rhs_contracting: i64| DotDims {
        lhs_batch: vec![0, 1],
        rhs_batch: vec![0, 1],
        lhs_contracting: vec![lhs_contracting],
        rhs_contracting: vec![rhs_contracting],
    };
    // [B, T, H] -> [B, H, T, 1]
    let stat = |x: &Tensor| x.transpose(&[0, 2, 1]).expand_dim(3);
    let scores = q
        .dot_general(&k, per_head(3, 3))
        .add(&a[3].reshape(&[b, 1, t, s]));
    let p = scores.sub(&stat(&a[5])).exp().div(&stat(&a[6]));
    let dp = d_out.dot_general(&v, per_head(3, 3));
    let row_dot = d_out.mul(&out).reduce_sum(&[3]).expand_dim(3);
    let ds = p.mul(&dp.sub(&row_dot));
    let dq = ds.dot_general(&k, per_head(3, 2));
    let dk = ds.dot_general(&q, per_head(2, 2));
    let dv = p.dot_general(&d_out, per_head(2, 2));
    vec![swap(&dq), swap(&dk), swap(&dv)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use hlo::{grad, DType, Literal, Shape};

    /// The composite's own gradient equals autodiff through the plain softmax, on a
    /// causal mask with a row that sees nothing.
    #[test]
    fn the_gradient_composite_equals_autodiff_of_the_ops() {
        let (b, t, h, dh) = (2i64, 5i64, 2i64, 3i64);
        let f32s = |d: &[i64]| Shape::new(DType::F32, d.to_vec());
        let run = |composite: bool| -> Vec<Vec<f64>> {
            let bld = Builder::new("attention");
            let q = bld.parameter("q", f32s(&[b, t, h, dh]));
            let k = bld.parameter("k", f32s(&[b, t, h, dh]));
            let v = bld.parameter("v", f32s(&[b, t, h, dh]));
            let mask = bld.parameter("mask", f32s(&[b, t, t]));
            let w = bld.parameter("w", f32s(&[b, t, h, dh]));
            let ctx = if composite {
                masked_attention(&q, &k, &v, &mask)
            } else {
                forward_ops(&bld, &[q.clone(), k.clone(), v.clone(), mask.clone()]).remove(0)
            };
            let loss = ctx.mul(&w).sum_all();
            let g = grad(&loss, &[q, k, v]).unwrap();
            let f = bld.build(&[&ctx, &g[0], &g[1], &g[2]]).unwrap();
            let n = (b * t * h * dh) as usize;
            let data = |seed: usize| -> Vec<f32> {
                (0..n)
                    .map(|i| (((i * 37 + seed * 11) % 23) as f32 - 11.0) * 0.1)
                    .collect()
            };
            let mut m = vec![0.0f32; (b * t * t) as usize];
            for (i, x) in m.iter_mut().enumerate() {
                let (row, col) = ((i / t as usize) % t as usize, i % t as usize);
                if col > row || i / (t * t) as usize == 1 && row == 2 {
                    *x = f32::MIN;
                }
            }
            let dims = [b, t, h, dh];
            let args = [
                Literal::from_slice(&dims, &data(1)).unwrap(),
                Literal::from_slice(&dims, &data(2)).unwrap(),
                Literal::from_slice(&dims, &data(3)).unwrap(),
                Literal::from_slice(&[b, t, t], &m).unwrap(),
                Literal::from_slice(&dims, &data(4)).unwrap(),
            ];
            hlo::evaluate(&f, &args)
                .unwrap()
                .iter()
                .map(|l| l.to_f64_vec())
                .collect()
        };
        let (ours, plain) = (run(true), run(false));
        for (i, (a, b)) in ours.iter().zip(&plain).enumerate() {
            for (x, y) in a.iter().zip(b) {
                assert!(
                    (x - y).abs() <= 1e-5 * (1.0 + y.abs()),
                    "output {i}: {x} vs {y}"
                );
            }
            assert!(a.iter().any(|x| *x != 0.0), "output {i} is all zeros");
        }
    }
}
