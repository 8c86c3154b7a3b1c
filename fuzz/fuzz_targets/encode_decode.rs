//! Encode arbitrary text (both `clean` settings) with the original 36K vocabulary (when
//! `../shared/gptsan-vocab` is present) and the built-in one, decode the ids, and decode
//! arbitrary id lists: nothing may panic, and encoded ids must decode.
#![no_main]

use std::sync::OnceLock;

use gptsan::tokenizer::Tokenizer;
use libfuzzer_sys::fuzz_target;

fn tokenizers() -> &'static Vec<Tokenizer> {
    static T: OnceLock<Vec<Tokenizer>> = OnceLock::new();
    T.get_or_init(|| {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/gptsan-vocab");
        let mut v = vec![Tokenizer::builtin().clone()];
        if let Ok(t) = Tokenizer::from_files(&dir.join("ja-swe36k.txt"), &dir.join("emoji.json")) {
            v.push(t);
        }
        v
    })
}

fuzz_target!(|data: &[u8]| {
    for tok in tokenizers() {
        if let Ok(text) = std::str::from_utf8(data) {
            for clean in [false, true] {
                let ids = tok.encode(text, clean);
                assert!(tok.decode(&ids).is_ok());
            }
        }
        let ids: Vec<u32> = data
            .chunks(2)
            .map(|c| u32::from(c[0]) << 8 | u32::from(*c.get(1).unwrap_or(&0)))
            .collect();
        let n = tok.vocab_size() as u32;
        assert_eq!(tok.decode(&ids).is_ok(), ids.iter().all(|&i| i < n));
    }
});
