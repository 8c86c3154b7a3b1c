//! The built-in corpus and default vocabulary shipped in the binary.

use gptsan::corpus::{self, CLASS_CONVERSATIONAL, CLASS_LITERARY};
use gptsan::tokenizer::builder::{self, BuildOptions};
use gptsan::tokenizer::Tokenizer;

#[test]
fn builtin_corpus_has_both_classes() {
    let docs = corpus::builtin();
    let lit = docs.iter().filter(|d| d.class_id == CLASS_LITERARY).count();
    let conv = docs
        .iter()
        .filter(|d| d.class_id == CLASS_CONVERSATIONAL)
        .count();
    assert_eq!(lit, 2257);
    assert_eq!(conv, 103_998);
    assert_eq!(docs.len(), lit + conv);
    assert_eq!(docs[0].text, "吾輩は猫である");
    assert!(docs
        .iter()
        .all(|d| !d.text.is_empty() && !d.text.contains('\n')));
}

#[test]
fn builtin_tokenizer_loads_with_specials_at_the_end() {
    let tok = Tokenizer::builtin();
    let n = tok.vocab_size() as u32;
    assert_eq!(n, 8000);
    let s = tok.special();
    assert_eq!(
        [s.sot, s.msk, s.sep, s.not, s.bag, s.seg, s.eot],
        [n - 7, n - 6, n - 5, n - 4, n - 3, n - 2, n - 1]
    );
    assert_eq!(tok.id_to_token(s.eot), Some("<|endoftext|>"));
    assert_eq!(tok.token_to_id("<|byte0|>"), Some(n - 7 - 256));
    let text = "吾輩は猫である。名前はまだ無い。\nどこで生れたかとんと見当がつかぬ。";
    let ids = tok.encode(text, false);
    assert_eq!(tok.decode(&ids).unwrap(), text);
    assert!(ids.len() < text.chars().count(), "{} tokens", ids.len());
}

#[test]
fn builtin_tokenizer_compresses_held_out_text() {
    // Every 20th document is held out when the default vocabulary is built.
    let docs = corpus::builtin();
    let held: Vec<&str> = docs
        .iter()
        .skip(19)
        .step_by(20)
        .map(|d| d.text.as_str())
        .collect();
    let tpc = builder::tokens_per_char(Tokenizer::builtin(), &held);
    assert!(tpc < 0.6, "tokens per char {tpc}");
}

#[test]
fn shipped_vocabulary_is_a_fresh_build() {
    // Rebuild the default vocabulary exactly as data/README.md says; it must be identical.
    // The full build takes seconds in release builds but minutes unoptimised, so debug
    // builds check determinism on a slice of the corpus instead.
    let docs = corpus::builtin();
    let train: Vec<&str> = docs
        .iter()
        .enumerate()
        .filter(|(i, _)| (i + 1) % 20 != 0)
        .map(|(_, d)| d.text.as_str())
        .collect();
    if cfg!(debug_assertions) {
        let small = &train[..3000];
        let opts = BuildOptions {
            size: 1500,
            ..BuildOptions::default()
        };
        let a = builder::build(small, builder::default_emoji_table(), &opts).unwrap();
        let b = builder::build(small, builder::default_emoji_table(), &opts).unwrap();
        assert_eq!(a.vocab.to_text(), b.vocab.to_text());
        assert_eq!(a.vocab.len(), 1500);
    } else {
        let opts = BuildOptions {
            size: 8000,
            ..BuildOptions::default()
        };
        let built = builder::build(&train, builder::default_emoji_table(), &opts).unwrap();
        let shipped = include_str!("../data/default-vocab.txt");
        assert!(
            built.vocab.to_text() == shipped,
            "data/default-vocab.txt differs from a fresh build"
        );
        assert_eq!(built.emoji.to_json(), include_str!("../data/emoji.json"));
    }
}
