//! Parity with the reference encoder: every case of
//! `../shared/fixtures/tokenizer/parity.jsonl` must match exactly (ids and decoded text).

use std::path::PathBuf;

use gptsan::tokenizer::Tokenizer;

fn shared() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared")
}

#[derive(serde::Deserialize)]
struct Case {
    text: String,
    clean: bool,
    ids: Vec<u32>,
    decoded: String,
}

#[test]
fn every_parity_case_matches() {
    let tok = Tokenizer::from_files(
        &shared().join("gptsan-vocab/ja-swe36k.txt"),
        &shared().join("gptsan-vocab/emoji.json"),
    )
    .expect("load the 36K vocabulary");
    assert_eq!(tok.vocab_size(), 36000);
    let s = tok.special();
    assert_eq!((s.sot, s.seg, s.eot, s.not), (35993, 35998, 35999, 35996));

    let path = shared().join("fixtures/tokenizer/parity.jsonl");
    let text = std::fs::read_to_string(&path).expect("read parity.jsonl");
    let mut cases = 0;
    let mut failures = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let case: Case = serde_json::from_str(line).expect("parity line is JSON");
        cases += 1;
        let ids = tok.encode(&case.text, case.clean);
        if ids != case.ids {
            failures.push(format!(
                "line {}: encode(clean={}) of {:?}\n  got  {:?}\n  want {:?}",
                n + 1,
                case.clean,
                case.text,
                ids,
                case.ids
            ));
        }
        let decoded = tok.decode(&case.ids).expect("fixture ids are in range");
        if decoded != case.decoded {
            failures.push(format!(
                "line {}: decode\n  got  {:?}\n  want {:?}",
                n + 1,
                decoded,
                case.decoded
            ));
        }
    }
    assert_eq!(cases, 3044);
    assert!(
        failures.is_empty(),
        "{} mismatches, first ones:\n{}",
        failures.len(),
        failures
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}
