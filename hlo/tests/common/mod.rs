//! Shared test helpers: literal helpers and panicking wrappers around
//! [`hlo::gradcheck`] (which takes the evaluator as a parameter, so the same checks can
//! run on the real XLA CPU plugin instead of the reference interpreter).

#![allow(dead_code)]

use hlo::gradcheck::{self, interpreter};
use hlo::{Function, Literal};

#[allow(unused_imports)]
pub use hlo::gradcheck::Rng;

pub fn f64s(dims: &[i64], values: &[f64]) -> Literal {
    Literal::from_slice(dims, values).unwrap()
}

pub fn s32s(dims: &[i64], values: &[i32]) -> Literal {
    Literal::from_slice(dims, values).unwrap()
}

pub fn assert_close(got: &[f64], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * (1.0 + w.abs()),
            "{what}[{i}]: got {g}, want {w} (all: got {got:?}, want {want:?})"
        );
    }
}

/// Finite-difference check of `f`'s VJP w.r.t. `wrt` on the interpreter; panics with the
/// checker's message on a mismatch. Returns autodiff's gradients.
pub fn check_vjp(f: &Function, args: &[Literal], wrt: &[usize], seed: u64) -> Vec<Vec<f64>> {
    gradcheck::check_vjp(&interpreter, &f.name, f, args, wrt, seed)
        .unwrap_or_else(|e| panic!("{e}"))
}
