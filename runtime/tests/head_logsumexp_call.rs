//! The tied head's log-sum-exp kernels as custom calls inside a compiled program give
//! what their composites' decompositions give as XLA ops: the per-token log-sum-exp of
//! `w h^T` and the logits, then the cotangents of `w` and `h`, for a vocabulary that
//! ends in a partial block and token and feature counts off the vector widths.

mod common;

use hlo::ir::DotDims;
use hlo::{Builder, DType, Literal, Shape, Tensor};

const V: i64 = 2 * 224 + 37;
const N: i64 = 37;
const K: i64 = 23;

fn forward_ops(_: &Builder, a: &[Tensor]) -> Vec<Tensor> {
    let logits = a[0].dot_general(
        &a[1],
        DotDims {
            lhs_contracting: vec![1],
            rhs_contracting: vec![1],
            ..Default::default()
        },
    );
    vec![logits.logsumexp(0), logits]
}

fn grad_ops(_: &Builder, a: &[Tensor]) -> Vec<Tensor> {
    let p = a[2].sub(&a[3].expand_dim(0)).exp().mul(&a[4].expand_dim(0));
    let contract = |l: i64, rhs: &Tensor| {
        p.dot_general(
            rhs,
            DotDims {
                lhs_contracting: vec![l],
                rhs_contracting: vec![0],
                ..Default::default()
            },
        )
    };
    vec![contract(1, &a[1]), contract(0, &a[0])]
}

#[test]
fn the_kernels_equal_the_ops() {
    let client = common::client();
    let Some([forward, grad]) = client.head_logsumexp_calls() else {
        assert!(
            !runtime::head_logsumexp::available(),
            "AVX-512 is there but the kernels were not registered"
        );
        eprintln!("no AVX-512 here: the head's loss stays with XLA's ops");
        return;
    };
    let b = Builder::new("head");
    let f32s = |dims: &[i64]| Shape::new(DType::F32, dims.to_vec());
    let w = b.parameter("w", f32s(&[V, K]));
    let h = b.parameter("h", f32s(&[N, K]));
    let g = b.parameter("g", f32s(&[N]));
    let outs = b.composite("head", &[w.clone(), h.clone()], forward_ops);
    let grads = b.composite(
        "head_grad",
        &[w, h, outs[1].clone(), outs[0].clone(), g],
        grad_ops,
    );
    let func = b
        .build(&[&outs[0], &outs[1], &grads[0], &grads[1]])
        .unwrap();
    let (with_calls, xla) =
        common::with_and_without_calls(&func, &[("head", forward), ("head_grad", grad)], 2);
    // Logits up to about +-40: the softmax is far from uniform.
    let scaled = |n: i64, seed: u64, s: f32| -> Vec<f32> {
        common::uniform_f32(n as usize, seed)
            .iter()
            .map(|v| v * s)
            .collect()
    };
    let inputs = [
        Literal::from_slice(&[V, K], &scaled(V * K, 1, 2.0)).unwrap(),
        Literal::from_slice(&[N, K], &scaled(N * K, 2, 2.0)).unwrap(),
        Literal::from_slice(&[N], &scaled(N, 3, 1.0)).unwrap(),
    ];
    let got = common::run_on_device(&with_calls, &inputs);
    let want = common::run_on_device(&xla, &inputs);
    for (i, (a, b)) in got.iter().zip(&want).enumerate() {
        let scale = b.iter().fold(1e-30f64, |m, x| m.max(x.abs()));
        let diffs = a.iter().zip(b).map(|(x, y)| (x - y).abs() / scale);
        let worst = diffs.fold(0.0f64, f64::max);
        assert!(
            worst <= 2e-6,
            "output {i} differs by {worst:e} of its largest value"
        );
    }
}
