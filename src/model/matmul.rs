//! `a b^T` in f32 as a composite (`hlo`'s `Op::Composite`), for the tied head's logits
//! over many positions (`[tokens, d + 1] . [V, d + 1]^T`). Where the backend has a kernel
//! for it (the CPU plugin on AVX-512: `runtime::gemm`) it runs at about 320 GFLOP/s on
//! two cores against about 250 in XLA CPU's dot library; everywhere else, and in its
//! gradient (autodiff of the decomposition), it is the dot.

use super::nn::dot_nt;
use hlo::Tensor;

/// The composite: operands `a [M, K]` and `b [N, K]`, f32; result `a b^T` `[M, N]`.
pub const MATMUL_NT: &str = "matmul_nt";

/// `a b^T` for `a [M, K]` and `b [N, K]` (see [`MATMUL_NT`]).
pub fn matmul_nt(a: &Tensor, b: &Tensor) -> Tensor {
    a.builder()
        .composite(MATMUL_NT, &[a.clone(), b.clone()], |_, x| {
            vec![dot_nt(&x[0], &x[1])]
        })
        .remove(0)
}

/// The composite: operands `x [1, K]` and `w [N, K]`, f32; result `x w^T` `[1, N]`: a
/// decode step's products. Where the backend has a kernel for it (the CPU plugin on
/// AVX-512: `runtime`'s matrix-vector product) it runs on both cores; XLA CPU runs the
/// small ones (a layer's `[768, 256]`) on one.
pub const MATVEC_NT: &str = "matvec_nt";

/// `x w^T` for `x [1, K]` and `w [N, K]` (see [`MATVEC_NT`]).
pub fn matvec_nt(x: &Tensor, w: &Tensor) -> Tensor {
    x.builder()
        .composite(MATVEC_NT, &[x.clone(), w.clone()], |_, a| {
            vec![dot_nt(&a[0], &a[1])]
        })
        .remove(0)
}
