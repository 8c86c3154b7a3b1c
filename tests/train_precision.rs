//! Mixed precision: the default tiny model trained 60 steps in bf16 (f32 master weights)
//! ends within 2% of the same run in f32.

mod common;

use common::{fails_with, losses, run_ok};

fn train(out: &std::path::Path, precision: &str) -> Vec<(u64, f64)> {
    run_ok(&[
        "train",
        "--steps",
        "60",
        "--samples",
        "0",
        "--precision",
        precision,
        "--out",
        out.to_str().unwrap(),
        "--quiet",
    ]);
    losses(out)
}

#[test]
fn bf16_training_ends_within_two_percent_of_f32() {
    let dir = tempfile::tempdir().unwrap();
    let f32_run = train(&dir.path().join("f32"), "f32");
    let bf16_run = train(&dir.path().join("bf16"), "bf16");
    assert_eq!(f32_run.len(), 60);
    assert_eq!(bf16_run.len(), 60);
    let (a, b) = (f32_run[59].1, bf16_run[59].1);
    let rel = (a - b).abs() / a;
    assert!(rel <= 0.02, "final loss f32 {a}, bf16 {b}: {rel:.4} apart");
    // Both learned (from 9.0, the loss of a uniform guess over 8,000 tokens)...
    assert!(a < 8.0 && b < 8.0, "f32 {a}, bf16 {b}");
    // ...and bf16 really computed in bf16: the curves are not the same.
    let differ = f32_run
        .iter()
        .zip(&bf16_run)
        .filter(|(x, y)| x.1 != y.1)
        .count();
    assert!(differ > 50, "only {differ} of 60 steps differ");
}

#[test]
fn f16_training_is_refused_with_a_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("f16");
    fails_with(
        &[
            "train",
            "--steps",
            "2",
            "--precision",
            "f16",
            "--out",
            out.to_str().unwrap(),
        ],
        "dynamic loss scaling",
    );
    assert!(!out.join("checkpoints").exists());
}
