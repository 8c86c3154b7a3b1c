//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// `../shared` next to the repository (fixtures, vocabulary, corpus).
pub fn shared() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared")
}

pub fn hf_tiny() -> PathBuf {
    shared().join("fixtures/hf-tiny")
}

/// Runs the `gptsan` binary with `args`; returns (success, stdout, stderr).
pub fn gptsan(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gptsan"))
        .args(args)
        .env("TF_CPP_MIN_LOG_LEVEL", "2")
        .output()
        .expect("the gptsan binary runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Asserts that `gptsan args` fails with one line on stderr containing `needle`, no panic.
pub fn fails_with(args: &[&str], needle: &str) {
    let (ok, _, err) = gptsan(args);
    assert!(!ok, "gptsan {args:?} should fail");
    assert!(!err.contains("panicked"), "gptsan {args:?} panicked: {err}");
    assert_eq!(
        err.trim().lines().count(),
        1,
        "gptsan {args:?} printed more than one line:\n{err}"
    );
    assert!(
        err.contains(needle),
        "gptsan {args:?}: expected {needle:?} in {err}"
    );
}

/// The `(step, loss)` lines of a training run's metrics.jsonl.
pub fn losses(run: &std::path::Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .expect("the run has metrics.jsonl")
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("a JSON metrics line");
            (v["step"].as_u64().unwrap(), v["loss"].as_f64().unwrap())
        })
        .collect()
}

/// A `gptsan` command with quiet plugin logs and no watchdog override from the caller's
/// environment.
pub fn gptsan_command(args: &[&str]) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_gptsan"));
    c.args(args)
        .env("TF_CPP_MIN_LOG_LEVEL", "2")
        .env_remove("GPTSAN_COLLECTIVE_TIMEOUT");
    c
}

/// Runs `gptsan args`, asserting success (stderr shown on failure).
pub fn run_ok(args: &[&str]) -> std::process::Output {
    let out = gptsan_command(args)
        .output()
        .expect("the gptsan binary runs");
    assert!(
        out.status.success(),
        "gptsan {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The tiny test model (built-in 8K vocabulary, one switch layer) with a `[train]` table:
/// `steps` steps, a checkpoint every `every`, and an inverse-sqrt schedule warming up for
/// `warmup` steps (None: the default schedule).
pub fn tiny_config(steps: u64, every: u64, warmup: Option<u64>) -> String {
    let mut text = format!(
        r#"
vocab_size = 8000
context = 64
d_model = 32
num_heads = 4
num_switch_layers = 1
num_experts = 4
expert_hidden = 64
spout_width = 8

[router]
semantics = "original"

[train]
batch_size = 4
seq_len = 32
steps = {steps}
checkpoint_every = {every}
samples = 0
"#
    );
    if let Some(w) = warmup {
        text.push_str(&format!(
            "\n[train.schedule]\ntype = \"inverse_sqrt\"\nbase_lr = 0.003\nwarmup_steps = {w}\n"
        ));
    }
    text
}

/// The inputs of fixture case `case` (`<case>/input.*` in `cases.safetensors`) as a batch.
pub fn fixture_batch(
    cases: &std::collections::BTreeMap<String, hlo::Literal>,
    case: &str,
) -> gptsan::model::inputs::HostBatch {
    use gptsan::model::inputs::{int_rows, HostBatch};
    let ids = &cases[&format!("{case}/input.input_ids")];
    let (b, t) = (ids.dims()[0] as usize, ids.dims()[1] as usize);
    let get = |k: &str| {
        cases
            .get(&format!("{case}/input.{k}"))
            .map(|l| int_rows(l, k).unwrap())
    };
    HostBatch {
        batch: b,
        len: t,
        input_ids: int_rows(ids, "ids").unwrap(),
        attention_mask: get("attention_mask").unwrap_or(vec![1; b * t]),
        token_type_ids: get("token_type_ids").unwrap_or(vec![0; b * t]),
        spout: cases
            .get(&format!("{case}/input.spout"))
            .map(|l| l.to_vec::<f32>().unwrap()),
    }
}

/// `gptsan data prepare --quiet --mode MODE --seq-len N [extra...] --input INPUT --out OUT`.
pub fn prepare_data(
    mode: &str,
    seq_len: usize,
    input: &std::path::Path,
    out: &std::path::Path,
    extra: &[&str],
) {
    let seq_len = seq_len.to_string();
    let mut args = vec![
        "data",
        "prepare",
        "--quiet",
        "--mode",
        mode,
        "--seq-len",
        &seq_len,
    ];
    args.extend_from_slice(extra);
    args.extend([
        "--input",
        input.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    run_ok(&args);
}
