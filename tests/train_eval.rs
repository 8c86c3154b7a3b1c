//! Held-out evaluation and loss plots: a run writes `eval_loss` and `loss.png`, and
//! `gptsan plot` redraws the plot or says clearly why it cannot.

mod common;

use common::{gptsan_command as gptsan, run_ok};
use std::path::Path;

/// The tiny test model on the built-in corpus, with the default held-out split.
static CONFIG: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| common::tiny_config(6, 3, None));

fn assert_png(path: &Path) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        bytes.len() > 1000,
        "{} is too small for a plot",
        path.display()
    );
    assert_eq!(
        &bytes[..8],
        b"\x89PNG\r\n\x1a\n",
        "{} is not a PNG",
        path.display()
    );
}

#[test]
fn a_run_writes_eval_loss_and_a_loss_plot_that_plot_redraws() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("model.toml");
    std::fs::write(&cfg, CONFIG.as_str()).unwrap();
    let run = dir.path().join("run");
    run_ok(&[
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
        "--quiet",
    ]);
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let evals: Vec<(u64, f64)> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter_map(|v| Some((v["step"].as_u64()?, v["eval_loss"].as_f64()?)))
        .collect();
    // Evaluated at each checkpoint (no eval_every given).
    assert_eq!(
        evals.iter().map(|e| e.0).collect::<Vec<_>>(),
        [3, 6],
        "{text}"
    );
    assert!(
        evals.iter().all(|e| e.1.is_finite() && e.1 > 0.0),
        "{evals:?}"
    );
    assert_png(&run.join("loss.png"));

    let other = dir.path().join("again.png");
    run_ok(&[
        "plot",
        run.to_str().unwrap(),
        "--out",
        other.to_str().unwrap(),
    ]);
    assert_png(&other);
}

#[test]
fn eval_every_sets_how_often_the_held_out_loss_is_measured() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("model.toml");
    std::fs::write(&cfg, CONFIG.as_str()).unwrap();
    let run = dir.path().join("run");
    run_ok(&[
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
        "--steps",
        "4",
        "--eval-every",
        "2",
        "--eval-fraction",
        "0.05",
        "--quiet",
    ]);
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let steps: Vec<u64> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["eval_loss"].is_f64())
        .map(|v| v["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, [2, 4], "{text}");
}

#[test]
fn plot_says_clearly_when_a_folder_has_no_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let out = gptsan(&["plot", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("metrics.jsonl") && !err.contains("panicked"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(!dir.path().join("loss.png").exists());
}
