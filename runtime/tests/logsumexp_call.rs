//! The column log-sum-exp kernel as a custom call inside a compiled program gives what
//! its composite's decomposition gives as XLA ops, on a matrix whose columns are not a
//! multiple of the vector width, with a column of large values, and with a column of
//! `-inf` (where the kernel gives `-inf` and the ops NaN).

mod common;

use hlo::{Builder, DType, Literal, Shape};

#[test]
fn the_kernel_equals_the_ops() {
    let client = common::client();
    let Some(target) = client.logsumexp_call() else {
        assert!(
            !runtime::logsumexp::available(),
            "AVX-512 is there but the kernel was not registered"
        );
        eprintln!("no AVX-512 here: log-sum-exps stay with XLA's reductions");
        return;
    };
    let (rows, cols) = (301i64, 1030i64);
    let b = Builder::new("lse");
    let x = b.parameter("x", Shape::new(DType::F32, vec![rows, cols]));
    let out = b
        .composite("lse", &[x], |_, a| vec![a[0].logsumexp(0)])
        .remove(0);
    let func = b.build(&[&out]).unwrap();
    let (with_call, xla) = common::with_and_without_calls(&func, &[("lse", target)], 1);
    let mut values: Vec<f32> = common::uniform_f32((rows * cols) as usize, 7)
        .iter()
        .map(|v| v * 30.0)
        .collect();
    for r in 0..rows as usize {
        values[r * cols as usize + 5] = f32::NEG_INFINITY;
        values[r * cols as usize + 1029] = 70.0 + r as f32 * 0.01;
    }
    let inputs = [Literal::from_slice(&[rows, cols], &values).unwrap()];
    let got = common::run_on_device(&with_call, &inputs).remove(0);
    let want = common::run_on_device(&xla, &inputs).remove(0);
    assert_eq!(got[5], f64::NEG_INFINITY);
    let finite = |v: &[f64]| -> Vec<f64> {
        v.iter()
            .map(|x| if x.is_finite() { *x } else { 0.0 })
            .collect()
    };
    // The ops give NaN there (`-inf - -inf`); the kernel the right answer.
    assert!(want[5].is_nan());
    common::assert_near(&finite(&got), &finite(&want), 1e-6);
}
