//! Small layers shared by the model: Linear in PyTorch layout and LayerNorm.

use super::matmul::matvec_nt;
use hlo::ir::DotDims;
use hlo::{DType, Tensor};

/// `x @ W^T` for a PyTorch-layout weight `W [out, in]`: one dot_general contracting the
/// `in` axes, so no transposed copy of W is ever materialised.
///
/// `x` of rank 3 or more goes through the dot as `[N, in]`: XLA canonicalizes a dot
/// with several non-contracting dimensions by transposing W to `[in, out]`, and a decode
/// step (a vector times W) then fuses that transpose into a loop kernel that computes
/// the product one output at a time: greedy decoding of `small` was 10-20% slower so
/// (README, Benchmarks). One row of f32 (a decode step) is the [`matvec_nt`] composite.
pub fn linear(x: &Tensor, w: &Tensor) -> Tensor {
    if x.rank() > 2 {
        let (lead, d_in) = x.dims().split_at(x.rank() - 1);
        let mut out = lead.to_vec();
        out.push(w.dims()[0]);
        let rows = lead.iter().product();
        return linear(&x.reshape(&[rows, d_in[0]]), w).reshape(&out);
    }
    if x.dims()[0] == 1 && x.dtype() == DType::F32 && w.dtype() == DType::F32 {
        return matvec_nt(x, w);
    }
    dot_nt(x, w)
}

/// `x [N, in] . W [out, in]^T` as one dot.
pub(crate) fn dot_nt(x: &Tensor, w: &Tensor) -> Tensor {
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

#[cfg(test)]
mod tests {
    use super::*;
    use hlo::ir::Op;
    use hlo::{Builder, DType, Literal, Shape};

    /// A `[B, T, in]` input reaches the dot as `[B*T, in]` (a rank-2 dot that XLA leaves
    /// alone; see [`linear`]) and gives the same values as `x @ W^T` computed by hand.
    #[test]
    fn linear_of_a_rank_3_input_is_one_rank_2_dot_with_the_right_values() {
        let b = Builder::new("linear");
        let (rows, t, d_in, d_out) = (2, 3, 4, 5);
        let x = b.parameter("x", Shape::new(DType::F32, vec![rows, t, d_in]));
        let w = b.parameter("w", Shape::new(DType::F32, vec![d_out, d_in]));
        let y = linear(&x, &w);
        assert_eq!(y.dims(), &[rows, t, d_out]);
        let f = b.build(&[&y]).unwrap();
        let dots: Vec<_> = f
            .nodes
            .iter()
            .filter(|n| matches!(n.op, Op::DotGeneral { .. }))
            .collect();
        assert_eq!(dots.len(), 1);
        assert_eq!(
            f.value_shape(dots[0].operands[0]).dims,
            vec![rows * t, d_in]
        );

        let xs: Vec<f32> = (0..rows * t * d_in)
            .map(|i| (i as f32 * 0.37).sin())
            .collect();
        let ws: Vec<f32> = (0..d_out * d_in).map(|i| (i as f32 * 0.53).cos()).collect();
        let args = [
            Literal::from_slice(&[rows, t, d_in], &xs).unwrap(),
            Literal::from_slice(&[d_out, d_in], &ws).unwrap(),
        ];
        let got = hlo::interpret::evaluate(&f, &args).unwrap()[0].to_f64_vec();
        let (d_in, d_out) = (d_in as usize, d_out as usize);
        for (p, row) in xs.chunks(d_in).enumerate() {
            for o in 0..d_out {
                let want: f32 = (0..d_in).map(|i| row[i] * ws[o * d_in + i]).sum();
                let have = got[p * d_out + o];
                assert!(
                    (have - want as f64).abs() < 1e-5,
                    "row {p}, output {o}: {have} vs {want}"
                );
            }
        }
    }
}
