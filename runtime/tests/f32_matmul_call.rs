//! Our f32 product `a b^T` as a custom call inside a compiled program gives what XLA's
//! dot gives, for sizes off the kernel's panel multiples.

mod common;

use hlo::ir::DotDims;
use hlo::{Builder, DType, Literal, Shape};

#[test]
fn the_kernel_equals_the_dot() {
    let client = common::client();
    let Some(target) = client.f32_matmul_call() else {
        assert!(
            !runtime::gemm::available(),
            "AVX-512 is there but the kernel was not registered"
        );
        eprintln!("no AVX-512 here: f32 products stay with XLA's dots");
        return;
    };
    let (m, k, n) = (300i64, 257i64, 1000i64);
    let b = Builder::new("matmul");
    let x = b.parameter("a", Shape::new(DType::F32, vec![m, k]));
    let w = b.parameter("b", Shape::new(DType::F32, vec![n, k]));
    let out = b
        .composite("nt", &[x, w], |_, a| {
            let dims = DotDims {
                lhs_contracting: vec![1],
                rhs_contracting: vec![1],
                ..Default::default()
            };
            vec![a[0].dot_general(&a[1], dims)]
        })
        .remove(0);
    let func = b.build(&[&out]).unwrap();
    let (with_call, xla) = common::with_and_without_calls(&func, &[("nt", target)], 1);
    let floats = |len: i64, seed: u64| common::uniform_f32(len as usize, seed);
    let inputs = [
        Literal::from_slice(&[m, k], &floats(m * k, 1)).unwrap(),
        Literal::from_slice(&[n, k], &floats(n * k, 2)).unwrap(),
    ];
    let got = common::run_on_device(&with_call, &inputs).remove(0);
    let want = common::run_on_device(&xla, &inputs).remove(0);
    common::assert_near(&got, &want, 1e-5);
}
