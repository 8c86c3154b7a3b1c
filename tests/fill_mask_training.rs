//! Hybrid training makes mask filling work: a small model trained on hybrid data made from
//! a few sentences fills masked tokens of those sentences far better than chance. The
//! trained model's prefix positions see the tokens to their right (SPEC 4.2; fill-mask
//! feeds `[SOT]` + tokens, all but the last position bidirectional): changing a later
//! token changes what a mask is filled with.

mod common;

use common::{run_ok, shared};
use gptsan::tokenizer::Tokenizer;
use std::path::Path;

/// Sentences of the text, repeated this many times (rotated, so contexts vary).
const REPEATS: usize = 60;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The first `n` Tatoeba sentences of 8 to 22 characters that start with 私は: after
/// those two tokens only the right context tells them apart.
fn sentences(tok: &Tokenizer, n: usize) -> Vec<(String, Vec<u32>)> {
    let text = std::fs::read_to_string(shared().join("corpus/tatoeba-ja.txt")).unwrap();
    text.lines()
        .filter(|l| l.starts_with("私は") && (8..=22).contains(&l.chars().count()))
        .take(n)
        .map(|l| (l.to_string(), tok.encode(l, false)))
        .collect()
}

/// A model small enough to train a few hundred steps in well under a minute.
const CONFIG: &str = r#"
vocab_size = 8000
context = 64
d_model = 64
num_heads = 4
num_switch_layers = 2
num_experts = 2
expert_hidden = 128
spout_width = 8

[router]
semantics = "original"

[train]
batch_size = 16
seq_len = 32
steps = 400
checkpoint_every = 400
eval_fraction = 0.0
samples = 0

[train.schedule]
type = "cosine"
base_lr = 0.01
min_lr = 0.0005
warmup_steps = 20
total_steps = 400
"#;

/// One fill-mask input: the sentence with token `k` masked and, when given, token `j`
/// masked too.
fn masked(tok: &Tokenizer, ids: &[u32], k: usize, j: Option<usize>) -> serde_json::Value {
    let sp = tok.special();
    let mut input = vec![sp.sot];
    input.extend_from_slice(ids);
    input[k + 1] = sp.msk;
    if let Some(j) = j {
        input[j + 1] = sp.msk;
    }
    serde_json::json!({ "ids": input })
}

/// Runs fill-mask on `inputs` with the model in `run`; one result per input.
fn fill(d: &Path, run: &Path, inputs: &[serde_json::Value]) -> Vec<serde_json::Value> {
    let (input, output) = (d.join("in.jsonl"), d.join("out.jsonl"));
    let lines: Vec<String> = inputs.iter().map(|v| v.to_string()).collect();
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    run_ok(&[
        "fill-mask",
        "--model",
        s(run),
        "--input",
        s(&input),
        "--output",
        s(&output),
    ]);
    let results: Vec<serde_json::Value> = std::fs::read_to_string(&output)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(results.len(), inputs.len());
    results
}

#[test]
fn hybrid_training_fills_masks_far_better_than_chance() {
    let tok = Tokenizer::builtin();
    let sents = sentences(tok, 24);
    assert_eq!(sents.len(), 24);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut text = String::new();
    for r in 0..REPEATS {
        for k in 0..sents.len() {
            text.push_str(&sents[(k + r) % sents.len()].0);
            text.push('\n');
        }
    }
    std::fs::write(d.join("small.txt"), text).unwrap();
    std::fs::write(d.join("tiny.toml"), CONFIG).unwrap();
    let data = d.join("data");
    common::prepare_data("hybrid", 32, &d.join("small.txt"), &data, &[]);
    let run = d.join("run");
    run_ok(&[
        "train",
        "--quiet",
        "--config",
        s(&d.join("tiny.toml")),
        "--data",
        s(&data),
        "--out",
        s(&run),
    ]);

    // Every token of every sentence masked in turn; output k fills input k + 1.
    let cases: Vec<(&[u32], usize)> = sents
        .iter()
        .flat_map(|(_, ids)| (0..ids.len()).map(move |k| (ids.as_slice(), k)))
        .collect();
    let inputs: Vec<_> = cases
        .iter()
        .map(|&(ids, k)| masked(tok, ids, k, None))
        .collect();
    let results = fill(d, &run, &inputs);
    let hits = cases
        .iter()
        .zip(&results)
        .filter(|(&(ids, k), r)| r["output_ids"][k].as_u64() == Some(ids[k] as u64))
        .count();
    let rate = hits as f64 / cases.len() as f64;
    let chance = 1.0 / 8000.0;
    eprintln!(
        "fill-mask accuracy {rate:.3} over {} masks ({:.0}x chance {chance})",
        cases.len(),
        rate / chance
    );
    assert!(rate >= 0.3, "mask filling accuracy {rate:.3}");

    // Masking the token after next (still in the prefix, not the last position) changes
    // the scores of the first mask: it sees to its right.
    let right: Vec<(&[u32], usize)> = cases
        .iter()
        .copied()
        .filter(|&(ids, k)| k + 3 < ids.len())
        .collect();
    let both: Vec<_> = right
        .iter()
        .map(|&(ids, k)| masked(tok, ids, k, Some(k + 2)))
        .collect();
    let alone: Vec<_> = right
        .iter()
        .map(|&(ids, k)| masked(tok, ids, k, None))
        .collect();
    let (with_right, without) = (fill(d, &run, &both), fill(d, &run, &alone));
    let moved = right
        .iter()
        .zip(with_right.iter().zip(&without))
        .filter(|(&(_, k), (a, b))| {
            let (a, b) = (a["logprobs"][k].as_f64(), b["logprobs"][k].as_f64());
            (a.unwrap() - b.unwrap()).abs() > 1e-5
        })
        .count();
    assert!(
        moved * 10 >= right.len() * 9,
        "only {moved} of {} masks depend on the tokens to their right",
        right.len()
    );
}
