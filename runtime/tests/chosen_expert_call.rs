//! The chosen-expert MLP kernel as a custom call inside a compiled program gives what the
//! composite's decomposition gives as XLA ops (the gathered weights' products), for
//! tokens on different experts, a dropped token and an expert index out of range.

mod common;

use hlo::ir::DotDims;
use hlo::{Builder, DType, Literal, Shape, Tensor};

const NAME: &str = "chosen";

/// `relu(x wi[e]^T) wo[e]^T * kept`, the kernel's contract, as ops.
fn decomposition(_: &Builder, a: &[Tensor]) -> Vec<Tensor> {
    let per_token = |lhs: &Tensor, rhs: &Tensor| {
        lhs.dot_general(
            rhs,
            DotDims {
                lhs_batch: vec![0],
                rhs_batch: vec![0],
                lhs_contracting: vec![1],
                rhs_contracting: vec![2],
            },
        )
    };
    let hidden = per_token(&a[0], &a[3].take_rows(&a[1])).relu();
    vec![per_token(&hidden, &a[4].take_rows(&a[1])).mul(&a[2].expand_dim(-1))]
}

#[test]
fn the_kernel_equals_the_ops() {
    let client = common::client();
    let Some(target) = client.chosen_expert_call() else {
        assert!(
            !runtime::chosen_expert::available(),
            "AVX-512 is there but the kernel was not registered"
        );
        eprintln!("no AVX-512 here: the experts stay with XLA's ops");
        return;
    };
    let (n, e, d, f) = (4i64, 3i64, 40i64, 72i64);
    let f32s = |dims: &[i64]| Shape::new(DType::F32, dims.to_vec());
    let b = Builder::new("chosen");
    let x = b.parameter("x", f32s(&[n, d]));
    let expert = b.parameter("expert", Shape::new(DType::S32, vec![n]));
    let kept = b.parameter("kept", f32s(&[n]));
    let wi = b.parameter("wi", f32s(&[e, f, d]));
    let wo = b.parameter("wo", f32s(&[e, d, f]));
    let out = b
        .composite(NAME, &[x, expert, kept, wi, wo], decomposition)
        .remove(0);
    let func = b.build(&[&out]).unwrap();
    let (with_call, xla) = common::with_and_without_calls(&func, &[(NAME, target)], 1);
    let floats = |len: i64, seed: u64| common::uniform_f32(len as usize, seed);
    let inputs = [
        Literal::from_slice(&[n, d], &floats(n * d, 1)).unwrap(),
        Literal::from_slice(&[n], &[2i32, 0, 1, 7]).unwrap(), // 7 is clamped to 2
        Literal::from_slice(&[n], &[1.0f32, 0.0, 1.0, 1.0]).unwrap(),
        Literal::from_slice(&[e, f, d], &floats(e * f * d, 2)).unwrap(),
        Literal::from_slice(&[e, d, f], &floats(e * d * f, 3)).unwrap(),
    ];
    let run = |text: &str| common::run_on_device(text, &inputs).remove(0);
    let (got, want) = (run(&with_call), run(&xla));
    common::assert_near(&got, &want, 1e-5);
    assert!(
        got[d as usize..2 * d as usize].iter().all(|v| *v == 0.0),
        "the dropped token"
    );
    assert!(got.iter().any(|v| *v != 0.0));
}
