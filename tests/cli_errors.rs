//! Bad input to the model commands gives one clear line on stderr, never a panic.

mod common;

use common::fails_with;

use std::path::Path;

fn copy_fixture(dir: &Path) {
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(common::hf_tiny().join(f), dir.join(f)).unwrap();
    }
}

#[test]
fn unknown_config_keys_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/configs/small.toml"))
        .unwrap();
    std::fs::write(&cfg, text.replace("d_model", "d_modle")).unwrap();
    fails_with(&["params", "--config", cfg.to_str().unwrap()], "d_modle");
}

#[test]
fn broken_checkpoints_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    copy_fixture(dir.path());
    let model = dir.path().to_str().unwrap();
    // Shapes that do not match the config.
    let cfg = std::fs::read_to_string(dir.path().join("config.json")).unwrap();
    std::fs::write(
        dir.path().join("config.json"),
        cfg.replace("\"d_ff\": 64", "\"d_ff\": 128"),
    )
    .unwrap();
    fails_with(
        &["generate", "--model", model, "--ids", "1,2,3"],
        "config needs",
    );
    // A truncated weights file.
    copy_fixture(dir.path());
    let w = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&w).unwrap();
    std::fs::write(&w, &bytes[..1000]).unwrap();
    fails_with(
        &["generate", "--model", model, "--ids", "1,2,3"],
        "not a valid safetensors file",
    );
}

#[test]
fn bad_prompts_are_reported() {
    let model = common::hf_tiny();
    let model = model.to_str().unwrap();
    fails_with(
        &["generate", "--model", model, "--ids", "1,99999,3"],
        "token id 99999",
    );
    let long: Vec<String> = (0..70).map(|i| (100 + i).to_string()).collect();
    fails_with(
        &["generate", "--model", model, "--ids", &long.join(",")],
        "longer than the model's context",
    );
    let dir = tempfile::tempdir().unwrap();
    let spout = dir.path().join("spout.txt");
    std::fs::write(&spout, "0.1 0.2 0.3").unwrap();
    fails_with(
        &[
            "generate",
            "--model",
            model,
            "--ids",
            "1,2",
            "--spout-file",
            spout.to_str().unwrap(),
        ],
        "spout has 3 values",
    );
    fails_with(
        &[
            "generate",
            "--model",
            model,
            "--ids",
            "1,2",
            "--spout",
            "onehot:99",
        ],
        "spout width",
    );
}
