//! The decode-step product kernel as a custom call inside a compiled program gives what
//! its composite's decomposition gives as an XLA dot: `x [1, K] . w [N, K]^T` for sizes
//! off the vector width and the kernel's chunks, called many times in a row (the helper
//! threads awake) and once after a pause (asleep).

mod common;

use hlo::ir::DotDims;
use hlo::{Builder, DType, Literal, Shape};

#[test]
fn the_kernel_equals_the_ops() {
    let client = common::client();
    let Some(target) = client.f32_matvec_call() else {
        eprintln!("no AVX-512 here: decode steps' products stay with XLA's dots");
        return;
    };
    for (n, k) in [(1000i64, 257i64), (37, 5), (3, 1024)] {
        let b = Builder::new("matvec");
        let x = b.parameter("x", Shape::new(DType::F32, vec![1, k]));
        let w = b.parameter("w", Shape::new(DType::F32, vec![n, k]));
        let out = b
            .composite("matvec", &[x, w], |_, a| {
                vec![a[0].dot_general(
                    &a[1],
                    DotDims {
                        lhs_contracting: vec![1],
                        rhs_contracting: vec![1],
                        ..Default::default()
                    },
                )]
            })
            .remove(0);
        let func = b.build(&[&out]).unwrap();
        let (with_call, xla) = common::with_and_without_calls(&func, &[("matvec", target)], 1);
        let inputs = [
            Literal::from_slice(&[1, k], &common::uniform_f32(k as usize, 1)).unwrap(),
            Literal::from_slice(&[n, k], &common::uniform_f32((n * k) as usize, 2)).unwrap(),
        ];
        let want = common::run_on_device(&xla, &inputs).remove(0);
        for call in 0..20 {
            if call == 19 {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            let got = common::run_on_device(&with_call, &inputs).remove(0);
            common::assert_near(&got, &want, 1e-5);
        }
    }
}
