//! Fine-tuning end to end: `convert --add-ext-layers` on fixture A, data prepared with
//! the original 36K vocabulary, `train --init` with only the new blocks trainable.

mod common;

use common::{fails_with, run_ok, shared};
use gptsan::model::checkpoint::read_safetensors;
use std::path::{Path, PathBuf};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The first `n` lines of 吾輩は猫である.
fn wagahai(dir: &Path, n: usize) -> PathBuf {
    let text = std::fs::read_to_string(shared().join("corpus/wagahai.txt")).unwrap();
    let lines: Vec<&str> = text.lines().take(n).collect();
    let p = dir.join("wagahai.txt");
    std::fs::write(&p, lines.join("\n")).unwrap();
    p
}

fn prepare(text: &Path, out: &Path, vocab: Option<&Path>) {
    let vocab_args = vocab.map(|v| vec!["--vocab", s(v)]).unwrap_or_default();
    common::prepare_data("lm", 32, text, out, &vocab_args);
}

fn is_new_block(name: &str) -> bool {
    name.starts_with("model.blocks.2.") || name.starts_with("model.blocks.3.")
}

#[test]
fn fine_tuning_the_new_ext_blocks_keeps_the_rest_bit_identical() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = d.join("ext");
    run_ok(&[
        "convert",
        "--model",
        s(&common::hf_tiny()),
        "--add-ext-layers",
        "2",
        "--out",
        s(&model),
    ]);
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("gptsan.json")).unwrap()).unwrap();
    assert_eq!(cfg["num_ext_layers"], 2);

    let text = wagahai(d, 40);
    let data = d.join("data36k");
    prepare(
        &text,
        &data,
        Some(&shared().join("gptsan-vocab/ja-swe36k.txt")),
    );
    let run = d.join("run");
    let base = [
        "train",
        "--init",
        s(&model),
        "--data",
        s(&data),
        "--steps",
        "3",
        "--batch-size",
        "4",
        "--checkpoint-every",
        "3",
        "--samples",
        "0",
        "--lr",
        "0.01",
        "--quiet",
    ];
    let mut args = base.to_vec();
    args.extend([
        "--train-only",
        "model.blocks.2.*",
        "--train-only",
        "model.blocks.3.*",
        "--out",
        s(&run),
    ]);
    run_ok(&args);

    let before = read_safetensors(&model.join("model.safetensors")).unwrap();
    let ckpt = run.join("checkpoints/step-0000003");
    let after = read_safetensors(&ckpt.join("model.safetensors")).unwrap();
    assert_eq!(before.len(), after.len());
    let mut changed = 0;
    for (name, b) in &before {
        let a = &after[name];
        if is_new_block(name) {
            changed += (a.bytes() != b.bytes()) as usize;
        } else {
            assert!(a.bytes() == b.bytes(), "frozen {name} changed");
        }
    }
    assert!(
        changed >= 8,
        "only {changed} tensors of the new blocks changed"
    );
    let opt = read_safetensors(&ckpt.join("optimizer.safetensors")).unwrap();
    assert!(!opt.is_empty());
    for name in opt.keys() {
        assert!(is_new_block(name), "optimizer state for frozen {name}");
    }

    // A pattern that matches nothing, and data of another vocabulary, are clear errors.
    let mut args = base.to_vec();
    let typo = d.join("typo");
    args.extend(["--train-only", "model.block.9.*", "--out", s(&typo)]);
    fails_with(&args, "--train-only model.block.9.* matches no parameter");
    let small = d.join("data8k");
    prepare(&text, &small, None);
    let mut args = base.to_vec();
    let other = d.join("other");
    args[4] = s(&small);
    args.extend(["--out", s(&other)]);
    fails_with(
        &args,
        "uses a vocabulary of 8000 tokens but the model's vocab_size is 36000",
    );
}
