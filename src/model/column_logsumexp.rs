//! The log-sum-exp of every column of a matrix as a composite (`hlo`'s `Op::Composite`),
//! for the tied head's loss over `[V, N]` logits. Where the backend has a kernel for it
//! (the CPU plugin on AVX-512: `runtime::logsumexp`) it reads the logits once; XLA CPU's
//! reductions read them twice (maximum, then sum), at 29 ms per 1,024-token chunk of
//! `small` against about 7. Everywhere else it is the ops.

use hlo::{Builder, Tensor};

/// The composite: operand `x [R, C]` f32, result `log sum_r exp(x[r, c])` `[C]` (for a
/// column of `-inf` the kernel gives `-inf`, the ops NaN; logits are finite).
pub const LOGSUMEXP_COLUMNS: &str = "logsumexp_columns";

/// `log sum_r exp(x[r, c])` for every column of `x [R, C]` (f32), with the gradient
/// `exp(x - result) * cotangent` written as ops.
pub fn logsumexp_columns(x: &Tensor) -> Tensor {
    x.builder()
        .composite_with_vjp(
            LOGSUMEXP_COLUMNS,
            std::slice::from_ref(x),
            |_: &Builder, a: &[Tensor]| vec![a[0].logsumexp(0)],
            |_, ops, outs, cts| {
                let p = ops[0].sub(&outs[0].expand_dim(0)).exp();
                vec![p.mul(&cts[0].expand_dim(0))]
            },
        )
        .remove(0)
}
