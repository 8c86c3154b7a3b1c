//! The masked attention kernel as a custom call inside a compiled program gives what the
//! composite's decomposition gives as XLA ops (f32; the sums in another order), for a
//! causal mask with a past key, padded keys and a row that sees no key.

mod common;

use hlo::ir::DotDims;
use hlo::{Builder, DType, Literal, Shape, Tensor};

const NAME: &str = "attention";

fn values(n: usize, seed: u64) -> Vec<f32> {
    common::uniform(n, seed)
        .iter()
        .map(|x| (2.0 * x) as f32)
        .collect()
}

/// Token-major `softmax(q k^T + mask) v`, the kernel's contract, as ops.
fn decomposition(_: &Builder, a: &[Tensor]) -> Vec<Tensor> {
    let swap = |t: &Tensor| t.transpose(&[0, 2, 1, 3]);
    let (q, k, v) = (swap(&a[0]), swap(&a[1]), swap(&a[2]));
    let per_head = |l: i64, r: i64| DotDims {
        lhs_batch: vec![0, 1],
        rhs_batch: vec![0, 1],
        lhs_contracting: vec![l],
        rhs_contracting: vec![r],
    };
    let (b, t, s) = (a[3].dims()[0], a[3].dims()[1], a[3].dims()[2]);
    let scores = q
        .dot_general(&k, per_head(3, 3))
        .add(&a[3].reshape(&[b, 1, t, s]));
    let e = scores.sub(&scores.reduce_max(&[3]).expand_dim(3)).exp();
    let p = e.div(&e.reduce_sum(&[3]).expand_dim(3));
    vec![swap(&p.dot_general(&v, per_head(3, 2)))]
}

#[test]
fn the_kernel_equals_the_ops() {
    let client = common::client();
    let Some(target) = client.masked_attention_calls().map(|t| t[0]) else {
        assert!(
            !runtime::masked_attention::available(),
            "AVX-512 is there but the kernel was not registered"
        );
        eprintln!("no AVX-512 here: attention stays with XLA's ops");
        return;
    };
    let (b, t, s, h, dh) = (2usize, 70usize, 71usize, 3usize, 20usize);
    let f32s = |dims: &[usize]| {
        Shape::new(
            DType::F32,
            dims.iter().map(|&d| d as i64).collect::<Vec<_>>(),
        )
    };
    let bld = Builder::new("attention");
    let q = bld.parameter("q", f32s(&[b, t, h, dh]));
    let k = bld.parameter("k", f32s(&[b, s, h, dh]));
    let v = bld.parameter("v", f32s(&[b, s, h, dh]));
    let m = bld.parameter("mask", f32s(&[b, t, s]));
    let out = bld.composite(NAME, &[q, k, v, m], decomposition).remove(0);
    let f = bld.build(&[&out]).unwrap();
    let (with_call, xla) = common::with_and_without_calls(&f, &[(NAME, target)], 1);

    // Key 0 is a past key every row sees; then causal; batch row 1 has two padded keys;
    // row 35 of batch row 0 sees nothing (uniform).
    let mut mask = vec![0.0f32; b * t * s];
    for bi in 0..b {
        for i in 0..t {
            for j in 0..s {
                let hidden = j > i + 1 || (bi == 1 && j + 2 >= s) || (bi == 0 && i == 35);
                if hidden {
                    mask[(bi * t + i) * s + j] = f32::MIN;
                }
            }
        }
    }
    let inputs = [
        Literal::from_slice(
            &[b as i64, t as i64, h as i64, dh as i64],
            &values(b * t * h * dh, 1),
        )
        .unwrap(),
        Literal::from_slice(
            &[b as i64, s as i64, h as i64, dh as i64],
            &values(b * s * h * dh, 2),
        )
        .unwrap(),
        Literal::from_slice(
            &[b as i64, s as i64, h as i64, dh as i64],
            &values(b * s * h * dh, 3),
        )
        .unwrap(),
        Literal::from_slice(&[b as i64, t as i64, s as i64], &mask).unwrap(),
    ];
    let run = |text: &str| common::run_on_device(text, &inputs).remove(0);
    let (got, want) = (run(&with_call), run(&xla));
    common::assert_near(&got, &want, 1e-5);
    // The blind row is the mean of the values.
    let row = |bi: usize, i: usize| (bi * t + i) * h * dh;
    let mean0: f64 = (0..s)
        .map(|j| inputs[2].to_f64_vec()[j * h * dh])
        .sum::<f64>()
        / s as f64;
    assert!(
        (got[row(0, 35)] - mean0).abs() < 1e-5,
        "{} vs {mean0}",
        got[row(0, 35)]
    );
}
