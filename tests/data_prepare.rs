//! `gptsan data prepare|inspect` and `gptsan train --data` end to end through the binary:
//! prepared data trains (loss goes down) and resumes exactly, any vocabulary size works,
//! the output is deterministic and atomic, and bad input gives one clear line.

mod common;

use common::{fails_with, gptsan_command, losses, run_ok, shared};
use std::path::{Path, PathBuf};

/// A model small enough for tests, with the built-in vocabulary.
static CONFIG: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| common::tiny_config(8, 4, Some(2)));

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

fn config(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("model.toml");
    std::fs::write(&p, text).unwrap();
    p
}

fn manifest(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap()
}

fn prepare(args: &[&str]) {
    let mut all = vec!["data", "prepare", "--quiet"];
    all.extend_from_slice(args);
    run_ok(&all);
}

#[test]
fn prepared_hybrid_data_trains_and_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let text = wagahai(d, 40);
    let data = d.join("data");
    prepare(&[
        "--mode",
        "hybrid",
        "--seq-len",
        "32",
        "--input",
        s(&text),
        "--out",
        s(&data),
        "--shard-examples",
        "16",
    ]);
    let m = manifest(&data);
    assert_eq!(m["mode"], "hybrid");
    assert!(m["shards"].as_array().unwrap().len() > 1, "several shards");
    assert!(m["prefixed_examples"].as_u64().unwrap() > 0);
    let cfg = config(d, &CONFIG);
    let whole = d.join("whole");
    run_ok(&[
        "train",
        "--config",
        s(&cfg),
        "--data",
        s(&data),
        "--out",
        s(&whole),
        "--quiet",
    ]);
    let reference = losses(&whole);
    assert_eq!(reference.len(), 8);
    assert!(
        reference[7].1 < reference[0].1,
        "the loss did not go down: {reference:?}"
    );
    // The run keeps the data's vocabulary.
    assert_eq!(
        std::fs::read(whole.join("vocab.txt")).unwrap(),
        std::fs::read(data.join("vocab.txt")).unwrap()
    );

    // Stop after 4 steps, resume to 8: the same losses (same examples, same order).
    let split = d.join("split");
    let base = [
        "train",
        "--config",
        s(&cfg),
        "--data",
        s(&data),
        "--out",
        s(&split),
        "--quiet",
    ];
    let mut first = base.to_vec();
    first.extend(["--steps", "4"]);
    run_ok(&first);
    let mut second = base.to_vec();
    second.extend(["--steps", "8", "--resume"]);
    run_ok(&second);
    assert_eq!(losses(&split), reference);
}

#[test]
fn command_line_overrides_the_train_table() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let text = wagahai(d, 30);
    let cfg = config(d, &CONFIG);
    let out = d.join("run");
    run_ok(&[
        "train",
        "--config",
        s(&cfg),
        "--corpus",
        s(&text),
        "--out",
        s(&out),
        "--steps",
        "2",
        "--batch-size",
        "2",
        "--seq-len",
        "16",
        "--lr",
        "0.001",
        "--quiet",
    ]);
    let run: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("run.json")).unwrap()).unwrap();
    assert_eq!(run["train"]["batch_size"], 2);
    assert_eq!(run["train"]["seq_len"], 16);
    assert_eq!(run["train"]["schedule"]["base_lr"], 0.001);
    assert_eq!(losses(&out).len(), 2);
}

#[test]
fn the_original_36k_vocabulary_works_and_a_mismatch_names_both_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let text = wagahai(d, 20);
    let data = d.join("data36k");
    let vocab = shared().join("gptsan-vocab/ja-swe36k.txt");
    prepare(&[
        "--mode",
        "lm",
        "--vocab",
        s(&vocab),
        "--seq-len",
        "32",
        "--input",
        s(&text),
        "--out",
        s(&data),
    ]);
    assert_eq!(manifest(&data)["vocab_size"], 36000);
    let cfg = config(d, &CONFIG);
    fails_with(
        &[
            "train",
            "--config",
            s(&cfg),
            "--data",
            s(&data),
            "--out",
            s(&d.join("r")),
        ],
        "36000",
    );
    fails_with(
        &[
            "train",
            "--config",
            s(&cfg),
            "--data",
            s(&data),
            "--out",
            s(&d.join("r")),
        ],
        "vocab_size is 8000",
    );
    assert!(!d.join("r").exists(), "nothing written on error");
    // A model of the data's size trains on it.
    let cfg = config(
        d,
        &CONFIG.replace("vocab_size = 8000", "vocab_size = 36000"),
    );
    let out = d.join("r36k");
    run_ok(&[
        "train",
        "--config",
        s(&cfg),
        "--data",
        s(&data),
        "--out",
        s(&out),
        "--steps",
        "2",
        "--quiet",
    ]);
    assert_eq!(losses(&out).len(), 2);
}

#[test]
fn mlm_data_corrupts_about_8_percent_and_inspect_decodes_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let text = wagahai(d, 400);
    let data = d.join("mlm");
    prepare(&[
        "--mode",
        "mlm",
        "--seq-len",
        "64",
        "--input",
        s(&text),
        "--out",
        s(&data),
    ]);
    let m = manifest(&data);
    let tokens = m["tokens"].as_u64().unwrap();
    let corrupted = m["corrupted"].as_u64().unwrap();
    assert!(tokens > 10_000, "{tokens} tokens");
    let rate = corrupted as f64 / tokens as f64;
    assert!((rate - 0.08).abs() < 0.01, "corruption rate {rate}");
    assert_eq!(m["targets"], m["corrupted"], "mlm trains the prefix only");

    let out = run_ok(&["data", "inspect", s(&data), "--limit", "2"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("example 1"), "{text}");
    assert!(text.contains("<|inputmask|>"), "{text}");
    assert!(text.contains("mlm"), "{text}");
    let out = run_ok(&["data", "inspect", s(&data), "--limit", "3", "--json"]);
    let rows: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 3);
    assert!(rows[0]["visible_prefix"].as_u64().unwrap() > 10);
    assert_eq!(rows[0]["input_ids"].as_array().unwrap().len(), 64);
}

#[test]
fn csv_classes_folders_and_determinism() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("texts/more")).unwrap();
    std::fs::write(
        d.join("texts/a.txt"),
        "吾輩は猫である。\n名前はまだ無い。\n",
    )
    .unwrap();
    std::fs::write(d.join("texts/more/b.txt"), "今日は良い天気です。\n").unwrap();
    std::fs::write(
        d.join("classes.csv"),
        "filename,fileid\ntexts/a.txt,0\ntexts/more/b.txt,5\n",
    )
    .unwrap();
    let one = d.join("one");
    prepare(&[
        "--mode",
        "lm",
        "--input",
        s(&d.join("classes.csv")),
        "--out",
        s(&one),
    ]);
    let ids: Vec<u64> = manifest(&one)["classes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, vec![0, 5]);
    let out = run_ok(&["data", "inspect", s(&one), "--json"]);
    let classes: Vec<u64> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["class_id"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(classes, vec![0, 5]);

    // A folder, with one thread and with all: the same bytes for the same seed.
    let text = wagahai(&d.join("texts"), 50);
    assert!(text.exists());
    let run = |out: &Path, seed: &str, threads: &str| {
        let o = gptsan_command(&[
            "data",
            "prepare",
            "--quiet",
            "--mode",
            "hybrid",
            "--seed",
            seed,
            "--input",
            s(&d.join("texts")),
            "--out",
            s(out),
        ])
        .env("RAYON_NUM_THREADS", threads)
        .output()
        .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        std::fs::read(out.join("shard-00000.bin")).unwrap()
    };
    let a = run(&d.join("a"), "9", "1");
    let b = run(&d.join("b"), "9", "2");
    let c = run(&d.join("c"), "10", "2");
    assert_eq!(a, b, "the same seed gives the same data");
    assert_ne!(a, c, "another seed gives other corruption");
}

#[test]
fn bad_input_gives_one_clear_line_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = d.join("out");
    let prep = |input: &Path| {
        vec![
            "data".to_string(),
            "prepare".into(),
            "--mode".into(),
            "lm".into(),
            "--input".into(),
            input.display().to_string(),
            "--out".into(),
            out.display().to_string(),
        ]
    };
    let check = |args: Vec<String>, needle: &str| {
        let args: Vec<&str> = args.iter().map(|x| x.as_str()).collect();
        fails_with(&args, needle);
        assert!(!out.exists(), "{args:?} left {}", out.display());
        assert!(
            !d.join("out.partial").exists(),
            "{args:?} left a partial folder"
        );
    };
    let bad = d.join("bad.txt");
    std::fs::write(&bad, b"good line\nbad \xfe\n").unwrap();
    check(prep(&bad), "bad.txt: line 2: invalid UTF-8");
    check(prep(&d.join("missing.txt")), "missing.txt: no such file");
    let csv = d.join("list.csv");
    std::fs::write(&csv, "bad.txt,1\ngone.txt,2\n").unwrap();
    check(prep(&csv), "line 2: ");
    std::fs::write(&csv, "bad.txt,x1\n").unwrap();
    check(prep(&csv), "file id \"x1\" is not a non-negative integer");
    let empty = d.join("empty.txt");
    std::fs::write(&empty, "\n  \n\n").unwrap();
    check(prep(&empty), "no text");
    let mut short = prep(&empty);
    short.extend(["--seq-len".into(), "4".into()]);
    check(short, "--seq-len 4 is too short");

    // Sequences longer than the model's context: from the data, and from --seq-len.
    let text = wagahai(d, 10);
    let data = d.join("long");
    prepare(&[
        "--mode",
        "lm",
        "--seq-len",
        "100",
        "--input",
        s(&text),
        "--out",
        s(&data),
    ]);
    let cfg = config(d, &CONFIG);
    let run = d.join("run");
    fails_with(
        &[
            "train",
            "--config",
            s(&cfg),
            "--data",
            s(&data),
            "--out",
            s(&run),
        ],
        "above the model's context of 64",
    );
    fails_with(
        &[
            "train",
            "--config",
            s(&cfg),
            "--corpus",
            s(&text),
            "--seq-len",
            "65",
            "--out",
            s(&run),
        ],
        "--seq-len 65 is above the model's context of 64",
    );
    assert!(!run.exists());
    // A folder that is not prepared data.
    fails_with(&["data", "inspect", s(d)], "no manifest.json");
}

#[test]
fn a_killed_prepare_leaves_nothing_training_reads() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("big");
    let mut child = gptsan_command(&[
        "data",
        "prepare",
        "--quiet",
        "--mode",
        "hybrid",
        "--input",
        s(&shared().join("corpus/tatoeba-ja.txt")),
        "--out",
        s(&out),
        "--shard-examples",
        "1000",
    ])
    .spawn()
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(400));
    child.kill().unwrap();
    child.wait().unwrap();
    // Either it finished (complete data) or nothing is at --out.
    if out.exists() {
        assert!(out.join("manifest.json").is_file());
    }
}
