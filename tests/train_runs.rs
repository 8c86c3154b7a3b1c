//! Training end to end through the `gptsan` binary: exact resume after a kill and clear
//! errors on bad input (meshes: `model_parallel.rs`).

mod common;

use common::{gptsan_command as gptsan, losses, run_ok};

use std::path::{Path, PathBuf};

/// A model small enough for tests; the vocabulary is the built-in one.
static CONFIG: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| common::tiny_config(12, 3, Some(4)));

fn write_config(dir: &Path, text: &str) -> PathBuf {
    write_config_as(dir, "model.toml", text)
}

fn write_config_as(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn run_err(args: &[&str]) -> String {
    let out = gptsan(args).output().unwrap();
    assert!(!out.status.success(), "gptsan {args:?} should fail");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !err.contains("panicked"),
        "gptsan {args:?} panicked:\n{err}"
    );
    err
}

#[test]
fn a_killed_run_resumes_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &CONFIG);
    let cfg = cfg.to_str().unwrap();
    let whole = dir.path().join("whole");
    run_ok(&[
        "train",
        "--config",
        cfg,
        "--out",
        whole.to_str().unwrap(),
        "--quiet",
    ]);
    let reference = losses(&whole);
    assert_eq!(reference.len(), 12);

    // Kill the second run as soon as its first checkpoint exists, then resume it.
    let killed = dir.path().join("killed");
    let mut child = gptsan(&[
        "train",
        "--config",
        cfg,
        "--out",
        killed.to_str().unwrap(),
        "--quiet",
    ])
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null())
    .spawn()
    .unwrap();
    let first_ckpt = killed.join("checkpoints/step-0000003");
    while !first_ckpt.exists() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("training exited early: {status}");
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    run_ok(&[
        "train",
        "--config",
        cfg,
        "--out",
        killed.to_str().unwrap(),
        "--resume",
        "--quiet",
    ]);
    assert_eq!(
        losses(&killed),
        reference,
        "the resumed run differs from the uninterrupted one"
    );
    // The loss went down.
    assert!(reference[11].1 < reference[0].1);
}

#[test]
fn bad_training_input_gives_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &CONFIG);
    let cfg = cfg.to_str().unwrap();
    let out = dir.path().join("o");
    let out = out.to_str().unwrap();
    let err = run_err(&[
        "train",
        "--config",
        cfg,
        "--out",
        out,
        "--mesh",
        "data=3",
        "--devices",
        "4",
    ]);
    assert!(err.contains("does not divide"), "{err}");
    let err = run_err(&[
        "train",
        "--config",
        cfg,
        "--out",
        out,
        "--mesh",
        "model=8",
        "--devices",
        "8",
    ]);
    assert!(err.contains("experts are not divisible"), "{err}");
    let bad = dir.path().join("bad.txt");
    std::fs::write(&bad, b"good line\nbad \xfe\n").unwrap();
    let err = run_err(&[
        "train",
        "--config",
        cfg,
        "--out",
        out,
        "--corpus",
        bad.to_str().unwrap(),
    ]);
    assert!(
        err.contains("bad.txt") && err.contains("invalid UTF-8") && err.contains("offset 14"),
        "{err}"
    );
    // An output folder that holds another run.
    let other = write_config_as(
        dir.path(),
        "other.toml",
        &CONFIG.replace("d_model = 32", "d_model = 16"),
    );
    run_ok(&[
        "train", "--config", cfg, "--out", out, "--steps", "1", "--quiet",
    ]);
    let err = run_err(&[
        "train",
        "--config",
        other.to_str().unwrap(),
        "--out",
        out,
        "--steps",
        "1",
    ]);
    assert!(err.contains("holds another run"), "{err}");
}

#[test]
fn adafactor_and_class_conditioned_spout_runs_train() {
    let dir = tempfile::tempdir().unwrap();
    let text = CONFIG
        .replace("steps = 12", "steps = 8\nspout = \"onehot\"")
        .replace(
            "warmup_steps = 4\n",
            "warmup_steps = 4\n\n[train.optimizer]\ntype = \"adafactor\"\n",
        );
    let cfg = write_config(dir.path(), &text);
    let out = dir.path().join("run");
    run_ok(&[
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--quiet",
    ]);
    let l = losses(&out);
    assert_eq!(l.len(), 8);
    assert!(l[7].1 < l[0].1, "loss did not fall: {l:?}");
    // The trained model generates with a class spout.
    let gen = run_ok(&[
        "generate",
        "--model",
        out.to_str().unwrap(),
        "--prompt",
        "吾輩は",
        "--spout",
        "onehot:1",
        "--max-new-tokens",
        "5",
        "--json",
    ]);
    let line = String::from_utf8_lossy(&gen.stdout);
    let v: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    assert!(!v["ids"].as_array().unwrap().is_empty());
}

#[test]
fn resume_skips_a_damaged_newest_checkpoint_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &CONFIG);
    let cfg = cfg.to_str().unwrap();
    let run = dir.path().join("run");
    let run_s = run.to_str().unwrap();
    // The config checkpoints every 3 steps: step 3 and step 6.
    run_ok(&[
        "train", "--config", cfg, "--out", run_s, "--steps", "6", "--quiet",
    ]);
    let reference = losses(&run);
    // Cut the newest checkpoint's model short, as a disk error would.
    let model = run.join("checkpoints/step-0000006/model.safetensors");
    let bytes = std::fs::read(&model).unwrap();
    std::fs::write(&model, &bytes[..bytes.len() / 2]).unwrap();

    let out = run_ok(&[
        "train", "--config", cfg, "--out", run_s, "--steps", "6", "--resume", "--quiet",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("step-0000006 is damaged"), "{err}");
    assert!(err.contains("(step 3)"), "{err}");
    assert_eq!(
        losses(&run),
        reference,
        "steps 4-6 retrained from step 3 differ"
    );
}
