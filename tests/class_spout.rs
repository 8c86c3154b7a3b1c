//! Class-conditioned fine-tuning end to end: data prepared from a CSV `filename,fileid`,
//! trained with `spout = "onehot"`, so the class id is the only thing that tells the two
//! texts apart; greedy generation with `--spout onehot:K` then continues as class K's text.

mod common;

use common::run_ok;
use std::path::Path;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Both classes start every line with 今日 (the prompt); only the class says how it goes on.
const CLASS_TEXT: [&str; 2] = ["今日は晴れです。", "今日は雨が降っています。"];

/// 200 steps: at 120 the model had only just learnt where class 0's line starts (final
/// cross entropy 0.12-0.13), and a change in the head's float summation order alone
/// flipped its first greedy token; at 200 it is 0.04.
const CONFIG: &str = r#"
vocab_size = 8000
context = 64
d_model = 32
num_heads = 4
num_switch_layers = 1
num_experts = 2
expert_hidden = 64
spout_width = 4

[router]
semantics = "original"

[train]
batch_size = 8
seq_len = 16
steps = 200
checkpoint_every = 200
eval_fraction = 0.0
samples = 0
spout = "onehot"

[train.schedule]
type = "constant"
lr = 0.01
"#;

fn greedy(run: &Path, class: usize) -> String {
    let spout = format!("onehot:{class}");
    let out = run_ok(&[
        "generate",
        "--model",
        s(run),
        "--prompt",
        "今日",
        "--greedy",
        "--max-new-tokens",
        "4",
        "--spout",
        &spout,
    ]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn onehot_class_ids_from_a_csv_condition_the_trained_model() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut csv = String::from("filename,fileid\n");
    for (class, line) in CLASS_TEXT.iter().enumerate() {
        let name = format!("class{class}.txt");
        std::fs::write(d.join(&name), format!("{line}\n").repeat(40)).unwrap();
        csv.push_str(&format!("{name},{class}\n"));
    }
    std::fs::write(d.join("files.csv"), csv).unwrap();
    std::fs::write(d.join("cfg.toml"), CONFIG).unwrap();
    let data = d.join("data");
    common::prepare_data("lm", 16, &d.join("files.csv"), &data, &[]);
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data.join("manifest.json")).unwrap())
            .unwrap();
    assert_eq!(
        manifest["classes"].as_array().map(Vec::len),
        Some(2),
        "{manifest}"
    );

    let run = d.join("run");
    run_ok(&[
        "train",
        "--quiet",
        "--config",
        s(&d.join("cfg.toml")),
        "--data",
        s(&data),
        "--out",
        s(&run),
    ]);
    let sunny = greedy(&run, 0);
    let rainy = greedy(&run, 1);
    assert!(
        sunny.contains("晴れ") && !sunny.contains("雨"),
        "class 0: {sunny}"
    );
    assert!(
        rainy.contains("雨") && !rainy.contains("晴れ"),
        "class 1: {rainy}"
    );
}
