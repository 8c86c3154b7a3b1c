//! Small layers shared by the model: Linear in PyTorch layout and LayerNorm.

use hlo::ir::DotDims;
use hlo::Tensor;

/// `x @ W^T` for a PyTorch-layout weight `W [out, in]`: one dot_general contracting the
/// `in` axes, so no transposed copy of W is ever materialised.
pub fn linear(x: &Tensor, w: &Tensor) -> Tensor {
    let last = x.rank() as i64 - 1;
    x.dot_general(
        w,
        DotDims {
            lhs_contracting: vec![last],
            rhs_contracting: vec![1],
            ..Default::default()
        },
    )
}

/// `x @ W^T + b`.
pub fn linear_bias(x: &Tensor, w: &Tensor, b: &Tensor) -> Tensor {
    linear(x, w).add(b)
}

/// LayerNorm over the last axis with the biased variance, as PyTorch computes it. Computed
/// in f32 whatever the input's type (bf16 statistics lose too much), returned in the
/// input's type.
pub fn layer_norm(x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f64) -> Tensor {
    let f32 = hlo::DType::F32;
    let xf = x.convert(f32);
    let mean = xf.mean(&[-1]).expand_dim(-1);
    let centered = xf.sub(&mean);
    let var = centered.square().mean(&[-1]).expand_dim(-1);
    centered
        .mul(&var.add_scalar(eps).rsqrt())
        .mul(&gamma.convert(f32))
        .add(&beta.convert(f32))
        .convert(x.dtype())
}
