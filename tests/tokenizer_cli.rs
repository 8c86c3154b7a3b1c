//! The `gptsan tokenize` / `vocab` / `bench` commands, run as a user would.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

fn shared() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared")
}

fn gptsan(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_gptsan"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run gptsan");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn vocab_args() -> Vec<String> {
    vec![
        "--vocab".into(),
        shared()
            .join("gptsan-vocab/ja-swe36k.txt")
            .display()
            .to_string(),
        "--emoji".into(),
        shared()
            .join("gptsan-vocab/emoji.json")
            .display()
            .to_string(),
    ]
}

fn run_with_vocab(sub: &[&str], extra: &[&str], stdin: &[u8]) -> Output {
    let va = vocab_args();
    let mut args: Vec<&str> = sub.to_vec();
    args.extend(va.iter().map(String::as_str));
    args.extend_from_slice(extra);
    gptsan(&args, stdin)
}

#[test]
fn encode_and_decode_jsonl_match_the_reference() {
    let input = "{\"text\": \"今日は良い天気ですね😀🙂🥰 そうですね！\"}\n{\"text\": \"\"}\n";
    let out = run_with_vocab(&["tokenize", "encode"], &[], input.as_bytes());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        stdout,
        "{\"ids\": [668, 30647, 31469, 30623, 4486, 4, 30645, 35726, 35726, 35734, 35716, 131, 4, 30645, 35487]}\n{\"ids\": []}\n"
    );
    let out = run_with_vocab(&["tokenize", "decode"], &[], stdout.as_bytes());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "{\"text\": \"今日は良い天気ですね😀😀❤ そうですね！\"}\n{\"text\": \"\"}\n"
    );
}

#[test]
fn clean_flag_and_plain_mode() {
    let out = run_with_vocab(
        &["tokenize", "encode"],
        &["--clean", "--plain"],
        "問い合わせは info@example.co.jp まで。\n".as_bytes(),
    );
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "32740 30623 31492 336 30647 35716 35719 35716 67 35676\n"
    );
    let out = run_with_vocab(&["tokenize", "decode"], &["--plain"], b"35719 35716 67\n");
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "<EMAIL> まで\n");
}

#[test]
fn bad_json_names_the_line_and_writes_nothing() {
    let input = "{\"text\": \"a\"}\n{\"text\": \"b\"}\n{\"txt\": 3}\n";
    let out = run_with_vocab(&["tokenize", "encode"], &[], input.as_bytes());
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "partial output on stdout");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 3"), "{err}");
}

#[test]
fn invalid_utf8_names_the_line() {
    let input = b"{\"text\": \"a\"}\n{\"text\": \"\xff\"}\n";
    let out = run_with_vocab(&["tokenize", "encode"], &[], input);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 2: invalid UTF-8"));
}

#[test]
fn out_of_range_ids_are_an_error_not_a_panic() {
    let out = run_with_vocab(
        &["tokenize", "decode"],
        &[],
        b"{\"ids\": [1, 2]}\n{\"ids\": [99999]}\n",
    );
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 2") && err.contains("99999"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn output_file_is_written_whole_or_not_at_all() {
    let dir = std::env::temp_dir().join(format!("gptsan-tok-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("out.jsonl");
    let p = path.display().to_string();
    let out = run_with_vocab(
        &["tokenize", "encode"],
        &["--output", &p],
        b"{\"text\": \"x\"}\n",
    );
    assert!(out.status.success());
    assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 1);
    // A failing run leaves the previous file untouched.
    let out = run_with_vocab(&["tokenize", "encode"], &["--output", &p], b"not json\n");
    assert!(!out.status.success());
    assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 1);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn builtin_vocabulary_is_the_default() {
    let out = gptsan(
        &["tokenize", "encode", "--plain"],
        "吾輩は猫である。\n".as_bytes(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ids = String::from_utf8(out.stdout).unwrap();
    let out = gptsan(&["tokenize", "decode", "--plain"], ids.as_bytes());
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "吾輩は猫である。\n");
}

#[test]
fn missing_vocabulary_file_is_named() {
    let out = gptsan(
        &["tokenize", "encode", "--vocab", "/nonexistent/vocab.txt"],
        b"",
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/vocab.txt"));
}
