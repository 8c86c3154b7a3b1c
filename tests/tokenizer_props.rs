//! Property tests: encode never panics, decode never panics (out-of-range ids are errors),
//! and texts made of characters the vocabulary covers round-trip through encode/decode
//! (after the documented pre-replacements: CR/CRLF -> LF, U+3000 -> space, U+2014/U+2212 -> ー).

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::OnceLock;

use gptsan::tokenizer::Tokenizer;
use proptest::prelude::*;

fn shared() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/gptsan-vocab")
}

fn original() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| {
        Tokenizer::from_files(
            &shared().join("ja-swe36k.txt"),
            &shared().join("emoji.json"),
        )
        .expect("load the 36K vocabulary")
    })
}

/// Characters that decode to themselves in any combination: start from the characters of
/// first (decoding) spellings, then, for every spelling that would decode to something
/// else (a variant spelling, a first spelling a later line overrides) and every emoji key,
/// drop one of its characters unless one is already gone. `<` (special-token text) and `,`
/// are left out.
fn canonical_chars(tok: &Tokenizer) -> Vec<char> {
    let v = tok.vocab();
    let mut alphabet: HashSet<char> = HashSet::new();
    let mut bad: Vec<String> = Vec::new();
    for id in 0..v.len() as u32 {
        let spellings = v.spellings(id).unwrap();
        let f = &spellings[0];
        if f.starts_with('<') && f.chars().count() > 2 {
            continue;
        }
        alphabet.extend(f.chars());
        bad.extend(spellings[1..].iter().map(|s| s.to_string()));
        if v.id(f) != Some(id) {
            bad.push(f.to_string());
        }
    }
    bad.extend(tok.emoji().pairs().iter().map(|(k, _)| k.clone()));
    alphabet.remove(&'<');
    alphabet.remove(&',');
    for s in bad {
        if !s.is_empty() && s.chars().all(|c| alphabet.contains(&c)) {
            let worst = s.chars().max().unwrap();
            alphabet.remove(&worst);
        }
    }
    let mut out: Vec<char> = alphabet.into_iter().collect();
    out.sort_unstable();
    out
}

fn alphabet(tok: &'static Tokenizer) -> &'static [char] {
    static A: OnceLock<Vec<char>> = OnceLock::new();
    static B: OnceLock<Vec<char>> = OnceLock::new();
    let cell = if std::ptr::eq(tok, original()) {
        &A
    } else {
        &B
    };
    cell.get_or_init(|| {
        let mut a = canonical_chars(tok);
        // Layout characters and characters that fall back to byte tokens also round-trip.
        a.extend([' ', '\n', '\t', '\u{3000}']);
        let v = tok.vocab();
        let used: HashSet<char> = (0..v.len() as u32)
            .flat_map(|id| {
                v.spellings(id)
                    .unwrap()
                    .into_iter()
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .chain(tok.emoji().pairs().iter().map(|(k, _)| k.clone()))
            .flat_map(|s| s.chars().collect::<Vec<_>>())
            .collect();
        a.extend(
            ['ß', 'Ω', 'ŋ', '𝄞', 'ꙮ', 'ᚠ', '🦀']
                .into_iter()
                .filter(|c| !used.contains(c)),
        );
        a
    })
}

/// What decoding returns for a text of covered characters.
fn after_prereplacement(t: &str) -> String {
    t.replace('\u{3000}', " ")
}

fn covered_text(tok: &'static Tokenizer) -> impl Strategy<Value = String> {
    let a = alphabet(tok);
    proptest::collection::vec(0..a.len(), 0..60)
        .prop_map(move |ix| ix.into_iter().map(|i| a[i]).collect())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    #[test]
    fn encode_never_panics(text in any::<String>(), clean in any::<bool>()) {
        let ids = original().encode(&text, clean);
        prop_assert!(ids.iter().all(|&id| (id as usize) < original().vocab_size()));
        let ids = Tokenizer::builtin().encode(&text, clean);
        prop_assert!(ids.iter().all(|&id| (id as usize) < Tokenizer::builtin().vocab_size()));
    }

    #[test]
    fn encode_never_panics_on_tricky_text(
        text in "[<>|a-zSPBRTA0-9@:/.\\-年月日円(),\u{2500}\u{2580}😀 \r\n\t\u{a1}\u{2000}]{0,40}",
        clean in any::<bool>(),
    ) {
        let tok = original();
        let ids = tok.encode(&text, clean);
        prop_assert!(tok.decode(&ids).is_ok());
    }

    #[test]
    fn encoding_in_pieces_equals_encoding_whole(
        text in "([a-zあ-んア-ン漢字の<>|SPBRTAB0-9 \r\n\t]|<SP>|<BR>|<\\|byte3\\|>|<\\|endoftext\\|>|\r\n){0,60}",
        chunk in 1usize..24,
    ) {
        for tok in [original(), Tokenizer::builtin()] {
            if let Some(ids) = tok.encode_in_pieces(&text, chunk) {
                prop_assert_eq!(ids, tok.encode(&text, false));
            }
        }
    }

    #[test]
    fn decode_never_panics(ids in proptest::collection::vec(0u32..40_000, 0..80)) {
        for tok in [original(), Tokenizer::builtin()] {
            let n = tok.vocab_size() as u32;
            match tok.decode(&ids) {
                Ok(_) => prop_assert!(ids.iter().all(|&i| i < n)),
                Err(e) => {
                    prop_assert!(e.id >= n);
                    prop_assert_eq!(ids[e.position], e.id);
                }
            }
        }
    }

    #[test]
    fn covered_text_round_trips_original(text in covered_text(original())) {
        let tok = original();
        let ids = tok.encode(&text, false);
        prop_assert_eq!(tok.decode(&ids).unwrap(), after_prereplacement(&text));
    }

    #[test]
    fn covered_text_round_trips_builtin(text in covered_text(Tokenizer::builtin())) {
        let tok = Tokenizer::builtin();
        let ids = tok.encode(&text, false);
        prop_assert_eq!(tok.decode(&ids).unwrap(), after_prereplacement(&text));
    }
}

#[test]
fn long_texts_are_encoded_in_pieces_exactly() {
    // Long documents take the streaming path; it must agree with one-piece segmentation.
    let text = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/wagahai.txt"),
    )
    .unwrap();
    let head: String = text.chars().take(60_000).collect();
    let tok = Tokenizer::builtin();
    let one_piece = tok
        .encode_in_pieces(&head, usize::MAX / 4)
        .expect("no emoji in wagahai");
    assert!(one_piece.len() > 20_000);
    for chunk in [1, 7, 1000, 16 * 1024] {
        assert_eq!(
            tok.encode_in_pieces(&head, chunk).as_ref(),
            Some(&one_piece),
            "{chunk}"
        );
    }
    assert_eq!(tok.encode(&head, false), one_piece);
}

#[test]
fn alphabets_are_large() {
    // The round-trip properties must exercise most of the vocabulary's characters.
    eprintln!(
        "alphabets: {} {}",
        alphabet(original()).len(),
        alphabet(Tokenizer::builtin()).len()
    );
    assert!(
        alphabet(original()).len() > 5000,
        "{}",
        alphabet(original()).len()
    );
    assert!(alphabet(Tokenizer::builtin()).len() > 2000);
}
