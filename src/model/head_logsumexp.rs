//! The tied LM head's per-token log-sum-exp as a composite (`hlo`'s `Op::Composite`),
//! with its gradient as a composite of its own: the head's part of the train step,
//! about two thirds of it in f32 on the 2-core CPU.
//!
//! Where the backend has kernels for them (the CPU plugin on AVX-512:
//! `runtime::head_logsumexp`), the gradient never writes the logits' cotangent
//! (`softmax * g`, `[V, N]`, 147 MB per 1,024-token chunk of `small`) and reads the logits
//! once: it makes the cotangent a block of vocabulary rows at a time, in cache, for both
//! products. XLA CPU writes it, then reads it back for each product. Everywhere else
//! (other plugins, meshes, exported artifacts) both are the ops below.

use super::nn::linear;
use hlo::ir::DotDims;
use hlo::{Builder, Tensor};

/// The forward composite: operands `w [V, K]` and `h [N, K]`, f32; results
/// `lse [N]`, each column's log-sum-exp of `w h^T`, and the logits `w h^T` `[V, N]`
/// for the gradient (without gradient of its own).
pub const HEAD_LOGSUMEXP: &str = "head_logsumexp";

/// The gradient composite: operands `w`, `h`, the logits, `lse` and the cotangent of
/// `lse`; results the cotangents of `w` and `h`.
pub const HEAD_LOGSUMEXP_GRAD: &str = "head_logsumexp_grad";

/// `log sum_v exp((w h^T)[v, n])` for every `n`: `w [V, K]`, `h [N, K]`, f32; `[N]`.
pub fn head_logsumexp(w: &Tensor, h: &Tensor) -> Tensor {
    let operands = [w.clone(), h.clone()];
    w.builder()
        .composite_with_vjp(
            HEAD_LOGSUMEXP,
            &operands,
            forward_ops,
            |b, ops, outs, cts| {
                let args = [
                    ops[0].clone(),
                    ops[1].clone(),
                    outs[1].clone(),
                    outs[0].clone(),
                    cts[0].clone(),
                ];
                b.composite(HEAD_LOGSUMEXP_GRAD, &args, grad_ops)
            },
        )
        .remove(0)
}

/// The forward composite as ops.
fn forward_ops(_: &Builder, a: &[Tensor]) -> Vec<Tensor> {
    let logits = linear(&a[0], &a[1]); // [V, N]
    vec![logits.logsumexp(0), logits.stop_gradient()]
}

/// The gradient composite as ops: `p = softmax * g` over the vocabulary, then
/// `dw = p h` and `dh = p^T w`.
fn grad_ops(_: &Builder, a: &[Tensor]) -> Vec<Tensor> {
    let (w, h, logits, lse, g) = (&a[0], &a[1], &a[2], &a[3], &a[4]);
    let p = logits.sub(&lse.expand_dim(0)).exp().mul(&g.expand_dim(0));
    let over_tokens = DotDims {
        lhs_contracting: vec![1],
        rhs_contracting: vec![0],
        ..Default::default()
    };
    let over_vocabulary = DotDims {
        lhs_contracting: vec![0],
        rhs_contracting: vec![0],
        ..Default::default()
    };
    vec![
        p.dot_general(h, over_tokens),
        p.dot_general(w, over_vocabulary),
    ]
}
