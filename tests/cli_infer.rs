//! `gptsan fill-mask` and `gptsan vector` on the fixture model: the command's visibility
//! (every position but the last in the prefix), `--input` batches equal to single calls,
//! and one clear error line for bad input.

mod common;

use common::{fails_with, gptsan};
use gptsan::model::checkpoint::read_safetensors;
use serde_json::Value;

fn model() -> String {
    common::hf_tiny().to_str().unwrap().to_string()
}

fn vocab() -> String {
    common::shared()
        .join("gptsan-vocab/ja-swe36k.txt")
        .to_str()
        .unwrap()
        .to_string()
}

/// Runs a command that must succeed and returns its stdout.
fn ok(args: &[&str]) -> String {
    let (ok, out, err) = gptsan(args);
    assert!(ok, "gptsan {args:?} failed: {err}");
    out
}

fn json(out: &str) -> Value {
    serde_json::from_str(out.trim()).unwrap()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn assert_close(a: &Value, b: &Value, what: &str) {
    let (a, b) = (floats(a), floats(b));
    assert_eq!(a.len(), b.len(), "{what}");
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() <= 1e-5, "{what}: {x} vs {y}");
    }
}

const TEXTS: [&str; 2] = ["吾輩は[MASK]である。名前はまだ無い。", "[MASK]の[MASK]"];
const IDS: &str = "35993,100,35994,200,300";

#[test]
fn fill_mask_batches_equal_single_calls() {
    let (m, v) = (model(), vocab());
    let mut singles: Vec<Value> = TEXTS
        .iter()
        .map(|t| {
            json(&ok(&[
                "fill-mask",
                "--model",
                &m,
                "--vocab",
                &v,
                "--text",
                t,
                "--json",
            ]))
        })
        .collect();
    singles.push(json(&ok(&[
        "fill-mask",
        "--model",
        &m,
        "--vocab",
        &v,
        "--ids",
        IDS,
        "--json",
    ])));
    assert_eq!(
        singles[2]["input_ids"],
        serde_json::json!([35993, 100, 35994, 200, 300])
    );
    assert_eq!(singles[2]["output_ids"][0], 100);
    assert_eq!(singles[2]["output_ids"][2], 200);
    // The text becomes [SOT] + tokens with MSK for [MASK].
    let ids0 = singles[0]["input_ids"].as_array().unwrap();
    assert_eq!(ids0[0], 35993);
    assert!(ids0.contains(&Value::from(35994)));

    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let lines = [
        serde_json::json!({ "text": TEXTS[0] }),
        serde_json::json!({ "text": TEXTS[1] }),
        serde_json::json!({ "ids": [35993, 100, 35994, 200, 300] }),
    ];
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&input, text).unwrap();
    let output = dir.path().join("out.jsonl");
    let (i, o) = (input.to_str().unwrap(), output.to_str().unwrap());
    ok(&[
        "fill-mask",
        "--model",
        &m,
        "--vocab",
        &v,
        "--input",
        i,
        "--output",
        o,
        "--batch-size",
        "2",
    ]);
    let got: Vec<Value> = std::fs::read_to_string(&output)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(got.len(), 3);
    for (k, (g, s)) in got.iter().zip(&singles).enumerate() {
        for key in ["input_ids", "output_ids", "output_text"] {
            assert_eq!(g[key], s[key], "input {k}: {key}");
        }
        assert_close(&g["scores"], &s["scores"], "scores");
        assert_close(&g["logprobs"], &s["logprobs"], "logprobs");
    }
}

#[test]
fn fill_mask_prints_text_tokens_and_scores() {
    let out = ok(&[
        "fill-mask",
        "--model",
        &model(),
        "--vocab",
        &vocab(),
        "--text",
        TEXTS[0],
    ]);
    assert!(out.contains("output text: "), "{out}");
    assert!(out.contains("output tokens: ["), "{out}");
    assert!(out.contains("scores: ["), "{out}");
}

#[test]
fn vector_batches_equal_single_calls() {
    let m = model();
    let single = |ids: &str, pos: Option<&str>| {
        let mut args = vec!["vector", "--model", &m, "--ids", ids, "--json"];
        if let Some(p) = pos {
            args.extend(["--pos", p]);
        }
        json(&ok(&args))
    };
    let a = single(IDS, None);
    assert_eq!(a["pos"], 4);
    assert_eq!(a["vector"].as_array().unwrap().len(), 2 * 32);
    let b = single("35993,7,8", Some("1"));
    assert_eq!(b["pos"], 1);

    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(
        &input,
        "{\"ids\": [35993,100,35994,200,300]}\n\n{\"ids\": [35993,7,8], \"pos\": 1}\n",
    )
    .unwrap();
    let output = dir.path().join("v.safetensors");
    let (i, o) = (input.to_str().unwrap(), output.to_str().unwrap());
    ok(&["vector", "--model", &m, "--input", i, "--output", o]);
    let t = read_safetensors(&output).unwrap();
    assert_eq!(t["vector"].dims(), &[2, 64]);
    assert_eq!(t["pos"].to_vec::<i32>().unwrap(), vec![4, 1]);
    assert_eq!(
        t["input_ids"].to_vec::<i32>().unwrap(),
        vec![35993, 100, 35994, 200, 300, 35993, 7, 8, -1, -1]
    );
    let got = t["vector"].to_vec::<f32>().unwrap();
    let want: Vec<f64> = [floats(&a["vector"]), floats(&b["vector"])].concat();
    for (x, y) in got.iter().zip(&want) {
        assert!((*x as f64 - y).abs() <= 1e-5, "{x} vs {y}");
    }
}

#[test]
fn bad_inputs_give_one_clear_line() {
    let (m, v) = (model(), vocab());
    fails_with(
        &["fill-mask", "--model", &m, "--vocab", &v, "--text", "猫"],
        "no [MASK]",
    );
    fails_with(
        &["fill-mask", "--model", &m, "--ids", "35993,5,6"],
        "no MSK",
    );
    fails_with(
        &["fill-mask", "--model", &m, "--ids", "35993,35994,99999"],
        "token id 99999",
    );
    fails_with(
        &["fill-mask", "--model", &m, "--ids", "35993,-4"],
        "token id -4",
    );
    fails_with(
        &["vector", "--model", &m, "--ids", "35993,5,6", "--pos", "3"],
        "--pos 3 is out of range",
    );
    fails_with(
        &["vector", "--model", &m, "--ids", "35993,5,6", "--pos", "-1"],
        "--pos -1 is out of range",
    );
    fails_with(
        &["vector", "--model", &m, "--ids", "35993,36000"],
        "token id 36000",
    );
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(
        &input,
        "{\"ids\": [35993,35994,5]}\n{\"text\": \"no mask\"}\n",
    )
    .unwrap();
    let out = dir.path().join("o.jsonl");
    fails_with(
        &[
            "fill-mask",
            "--model",
            &m,
            "--vocab",
            &v,
            "--input",
            input.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
        ],
        "line 2",
    );
}

/// JSON lines of a command's stdout.
fn json_lines(out: &str) -> Vec<Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn generate_input_and_beams_equal_single_calls() {
    let m = model();
    let prompts = [
        "35993,35998,100,200",
        "35993,35998,5",
        "35993,300,35998,7,8,9",
    ];
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("prompts.jsonl");
    let lines: String = prompts
        .iter()
        .map(|p| format!("{{\"ids\": [{p}]}}\n"))
        .collect();
    std::fs::write(&input, lines).unwrap();
    let i = input.to_str().unwrap();
    let common = ["generate", "--model", &m, "--max-new-tokens", "6"];
    let run = |extra: &[&str]| json_lines(&ok(&[&common[..], extra].concat()));

    let batched = run(&["--input", i, "--greedy", "--batch-size", "2"]);
    let beams = run(&["--input", i, "--beam-width", "3", "--num-generate", "2"]);
    assert_eq!(batched.len(), 3);
    assert_eq!(beams.len(), 6);
    for (k, p) in prompts.iter().enumerate() {
        let single = run(&["--ids", p, "--greedy", "--json"]);
        assert_eq!(batched[k]["ids"], single[0]["ids"], "prompt {k}");
        assert_eq!(batched[k]["input"], k);
        let beam = run(&[
            "--ids",
            p,
            "--beam-width",
            "3",
            "--num-generate",
            "2",
            "--json",
        ]);
        assert_eq!(beam.len(), 2);
        assert!(beam[0]["logprob"].as_f64().unwrap() >= beam[1]["logprob"].as_f64().unwrap());
        for (r, b) in beam.iter().enumerate() {
            let from_input = &beams[2 * k + r];
            assert_eq!(from_input["input"], k);
            assert_eq!(from_input["ids"], b["ids"], "prompt {k} beam {r}");
            let (x, y) = (
                from_input["logprob"].as_f64().unwrap(),
                b["logprob"].as_f64().unwrap(),
            );
            assert!((x - y).abs() <= 1e-6);
        }
        // Width 1 is greedy.
        let one = run(&["--ids", p, "--beam-width", "1", "--json"]);
        assert_eq!(one[0]["ids"], single[0]["ids"], "prompt {k}");
    }
}

#[test]
fn bad_generate_inputs_give_one_clear_line() {
    let m = model();
    let g = ["generate", "--model", &m];
    let fails = |extra: &[&str], needle: &str| fails_with(&[&g[..], extra].concat(), needle);
    fails(
        &["--ids", "35993,5", "--beam-width", "0"],
        "--beam-width must be at least 1",
    );
    fails(&["--ids", "", "--beam-width", "2"], "the prompt is empty");
    fails(
        &["--ids", "35993,99999", "--beam-width", "2"],
        "token id 99999",
    );
    fails(
        &[
            "--ids",
            "35993,5",
            "--beam-width",
            "2",
            "--num-generate",
            "3",
        ],
        "1 to 2 results",
    );
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("p.jsonl");
    std::fs::write(&input, "{\"ids\": [35993, 5]}\n{\"ids\": []}\n").unwrap();
    fails(&["--input", input.to_str().unwrap(), "--greedy"], "line 2");
}
