//! `gptsan export` writes StableHLO text that recompiles and runs, executables that load,
//! and a manifest that describes every argument.

use gptsan::device::Device;
use hlo::{DType, Literal, Shape};
use std::process::Command;

const CONFIG: &str = r#"
vocab_size = 8000
context = 32
d_model = 32
num_heads = 4
num_switch_layers = 1
num_experts = 2
expert_hidden = 32

[train]
batch_size = 2
seq_len = 16
"#;

#[test]
fn exported_programs_recompile_and_run() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("m.toml");
    std::fs::write(&cfg, CONFIG).unwrap();
    let out = dir.path().join("export");
    let status = Command::new(env!("CARGO_BIN_EXE_gptsan"))
        .args([
            "export",
            "--config",
            cfg.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--prompt-len",
            "8",
        ])
        .env("TF_CPP_MIN_LOG_LEVEL", "2")
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    let programs = manifest["programs"].as_array().unwrap();
    let names: Vec<&str> = programs
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["train_step", "forward", "prefill", "decode"]);

    let device = Device::shared().unwrap();
    for p in programs {
        let text = std::fs::read_to_string(out.join(p["stablehlo"].as_str().unwrap())).unwrap();
        let exe = device
            .client()
            .compile(&text, &runtime::CompileOptions::default())
            .unwrap();
        // Zero-filled arguments of the shapes the manifest gives.
        let args: Vec<Literal> = p["params"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                let dtype = DType::parse(a["dtype"].as_str().unwrap()).unwrap();
                let dims: Vec<i64> = serde_json::from_value(a["shape"].clone()).unwrap();
                Literal::zeros(Shape::new(dtype, dims))
            })
            .collect();
        let bufs: Vec<runtime::Buffer> =
            args.iter().map(|a| device.upload(a, 0).unwrap()).collect();
        let refs: Vec<&runtime::Buffer> = bufs.iter().collect();
        let results = exe.execute(&[refs]).unwrap();
        let outputs = p["outputs"].as_array().unwrap();
        assert_eq!(results[0].len(), outputs.len(), "{}", p["name"]);
        for (r, o) in results[0].iter().zip(outputs) {
            let dims: Vec<i64> = serde_json::from_value(o["shape"].clone()).unwrap();
            assert_eq!(r.to_literal().unwrap().dims(), dims.as_slice());
        }
        // The serialized executable loads with the same plugin.
        let bytes = std::fs::read(out.join(p["executable"].as_str().unwrap())).unwrap();
        device.client().deserialize_executable(&bytes).unwrap();
    }
}
