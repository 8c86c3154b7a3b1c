//! `gptsan forward` on the fixture model writes what the reference computed.

mod common;

use gptsan::model::checkpoint::{read_safetensors, write_safetensors};
use std::process::Command;

#[test]
fn forward_command_writes_reference_outputs_and_gradients() {
    let cases = read_safetensors(&common::hf_tiny().join("cases.safetensors")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let inputs = dir.path().join("in.safetensors");
    let pick = |k: &str| (k.to_string(), &cases[&format!("prefix/{k}")]);
    let tensors = vec![
        ("input_ids".to_string(), pick("input.input_ids").1),
        ("attention_mask".to_string(), pick("input.attention_mask").1),
        ("token_type_ids".to_string(), pick("input.token_type_ids").1),
        pick("labels"),
    ];
    write_safetensors(&inputs, &tensors, None).unwrap();
    let out = forward(&inputs, &[]);
    let diff = |ours: &str, theirs: &str| {
        let (a, b) = (out[ours].to_f64_vec(), cases[theirs].to_f64_vec());
        assert_eq!(a.len(), b.len(), "{ours}");
        a.iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max)
    };
    assert!(diff("logits", "prefix/logits") <= 1e-4);
    assert!(diff("hidden_states.1", "prefix/hidden_states.1") <= 1e-4);
    assert!(diff("router.1.kept", "prefix/router.1.kept") == 0.0);
    assert!(diff("loss", "prefix/loss") <= 1e-4);
    // Gradients come in the port's per-expert names.
    assert!(out.contains_key("grad.model.blocks.0.feed_forward.mlp.experts.expert_3.wo.weight"));
    assert!(out.contains_key("grad_global_norm"));

    // On a model-sharded mesh (experts and heads split) every output equals one device's.
    for mesh in ["model=2", "model=4"] {
        let sharded = forward(&inputs, &["--mesh", mesh]);
        assert_eq!(sharded.len(), out.len(), "{mesh}");
        for (name, want) in &out {
            let (a, b) = (sharded[name].to_f64_vec(), want.to_f64_vec());
            let worst = a
                .iter()
                .zip(&b)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f64::max);
            assert!(worst <= 1e-5, "{mesh}: {name} differs by {worst}");
        }
    }
}

/// Runs `gptsan forward --grads` on the fixture model and reads what it wrote.
fn forward(
    inputs: &std::path::Path,
    extra: &[&str],
) -> std::collections::HashMap<String, hlo::Literal> {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out.safetensors");
    let run = Command::new(env!("CARGO_BIN_EXE_gptsan"))
        .args(["forward", "--model", common::hf_tiny().to_str().unwrap()])
        .args([
            "--inputs",
            inputs.to_str().unwrap(),
            "--output",
            output.to_str().unwrap(),
            "--grads",
        ])
        .args(extra)
        .env("TF_CPP_MIN_LOG_LEVEL", "2")
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    read_safetensors(&output).unwrap().into_iter().collect()
}
