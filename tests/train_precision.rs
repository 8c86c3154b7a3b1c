//! Mixed precision: the default tiny model trained 60 steps in bf16 or f16 (f32 master
//! weights; f16 with dynamic loss scaling) ends within 2% of the same run in f32, and the
//! loss scale skips overflowing steps and follows its rules.

mod common;

use common::{losses, run_ok};
use gptsan::model::params::param_specs;
use gptsan::train::checkpoint::restore_newest_intact;
use gptsan::train::run::{init_params, load_configs};
use std::path::{Path, PathBuf};

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

/// The last loss of `other` is within 2% of f32's, both learned, and `other` really
/// computed in 16 bits (its curve is not f32's).
fn close_to_f32(f32_run: &[(u64, f64)], other: &[(u64, f64)], name: &str) {
    assert_eq!(f32_run.len(), 60);
    assert_eq!(other.len(), 60, "{name}");
    let (a, b) = (f32_run[59].1, other[59].1);
    let rel = (a - b).abs() / a;
    assert!(
        rel <= 0.02,
        "final loss f32 {a}, {name} {b}: {rel:.4} apart"
    );
    // Both learned (from 9.0, the loss of a uniform guess over 8,000 tokens)...
    assert!(a < 8.0 && b < 8.0, "f32 {a}, {name} {b}");
    // ...and the run really computed in 16 bits: the curves are not the same.
    let differ = f32_run
        .iter()
        .zip(other)
        .filter(|(x, y)| x.1 != y.1)
        .count();
    assert!(differ > 50, "{name}: only {differ} of 60 steps differ");
}

#[test]
fn bf16_and_f16_training_end_within_two_percent_of_f32() {
    let dir = tempfile::tempdir().unwrap();
    let f32_run = train(&dir.path().join("f32"), "f32");
    close_to_f32(&f32_run, &train(&dir.path().join("bf16"), "bf16"), "bf16");
    close_to_f32(&f32_run, &train(&dir.path().join("f16"), "f16"), "f16");
}

/// `(loss_scale, skipped)` of every metrics line.
fn scales(run: &Path) -> Vec<(f64, bool)> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["loss_scale"].as_f64().expect("f16 lines have loss_scale"),
                v["skipped"].as_bool().expect("f16 lines have skipped"),
            )
        })
        .collect()
}

/// A tiny f16 config whose first loss scale overflows for sure (`steps` steps, a
/// checkpoint every `every`).
fn overflowing_config(dir: &Path, steps: u64, every: u64) -> PathBuf {
    let path = dir.join("f16.toml");
    let text = common::tiny_config(steps, every, Some(5))
        .replace("[train]\n", "[train]\nprecision = \"f16\"\n")
        + "\n[train.loss_scale]\ninit = 1e10\ngrowth_interval = 4\n";
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn an_f16_overflow_skips_the_step_and_halves_the_scale() {
    let dir = tempfile::tempdir().unwrap();
    let config = overflowing_config(dir.path(), 1, 1);
    let out = dir.path().join("run");
    train_with(&config, &out, &[]);
    assert_eq!(scales(&out), vec![(1e10, true)]);
    // The skipped step left every parameter bit for bit as it was drawn, and the
    // optimizer state at zero; the scale halved and the skip was counted.
    let (cfg, train_cfg) = load_configs(&config).unwrap();
    let fresh = init_params(&param_specs(&cfg), train_cfg.seed);
    let saved = restore_newest_intact(&out).unwrap();
    assert_eq!(saved.params.len(), fresh.len());
    for (a, b) in saved.params.iter().zip(&fresh) {
        assert_eq!(a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap());
    }
    let scalar = |n: &str| saved.optimizer[n].to_vec::<f32>().unwrap()[0];
    assert_eq!(scalar("loss_scale.scale"), 5e9);
    assert_eq!(scalar("loss_scale.skipped"), 1.0);
    for (name, lit) in &saved.optimizer {
        if !name.starts_with("loss_scale.") {
            assert!(
                lit.to_vec::<f32>().unwrap().iter().all(|v| *v == 0.0),
                "{name}"
            );
        }
    }
}

#[test]
fn the_f16_loss_scale_follows_the_rules_over_a_run() {
    let dir = tempfile::tempdir().unwrap();
    let config = overflowing_config(dir.path(), 40, 20);
    let out = dir.path().join("run");
    train_with(&config, &out, &[]);
    let seen = scales(&out);
    assert_eq!(seen.len(), 40);
    // Replay the rules on the host: halve after a skip, double after 4 clean steps.
    let (mut scale, mut good) = (1e10, 0);
    for (step, &(s, skipped)) in seen.iter().enumerate() {
        assert_eq!(s, scale, "step {}", step + 1);
        if skipped {
            scale = (scale / 2.0f64).max(1.0);
            good = 0;
        } else {
            good += 1;
            if good == 4 {
                scale *= 2.0;
                good = 0;
            }
        }
    }
    let skips = seen.iter().filter(|s| s.1).count();
    assert!(
        skips >= 5,
        "only {skips} skipped steps from a scale of 1e10"
    );
    assert!(!seen[39].1, "still overflowing at the end: {seen:?}");
    let grew = seen.windows(2).any(|w| w[1].0 > w[0].0);
    assert!(grew, "the scale never grew: {seen:?}");
    // The clean steps trained.
    let l = losses(&out);
    assert!(l[39].1 < l[0].1 - 0.1, "{:?} -> {:?}", l[0], l[39]);

    // Resumed from step 20, the run scales and skips exactly as it did.
    let again = dir.path().join("again");
    copy_tree(&out, &again);
    std::fs::remove_dir_all(again.join("checkpoints/step-0000040")).unwrap();
    train_with(&config, &again, &["--resume"]);
    assert_eq!(scales(&again), seen);
    assert_eq!(losses(&again), l);
}

/// `gptsan train --config C --out OUT --quiet` plus `extra`.
fn train_with(config: &Path, out: &Path, extra: &[&str]) {
    let mut args = vec![
        "train",
        "--config",
        config.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--quiet",
    ];
    args.extend_from_slice(extra);
    run_ok(&args);
}

/// Copies a file or a folder tree.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    if from.is_dir() {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            copy_tree(&e.path(), &to.join(e.file_name()));
        }
    } else {
        std::fs::copy(from, to).unwrap();
    }
}
