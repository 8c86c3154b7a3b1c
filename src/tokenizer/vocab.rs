//! The vocabulary file: one entry per line, line index = token id.
//!
//! A line may hold several comma-separated spellings of the same token (variant kanji,
//! half-width kana); the first one is what decoding writes. The line that is exactly `,`
//! is the comma itself. When two lines hold the same spelling, the later id wins, as in the
//! reference encoder (it fills a dict line by line).

use std::path::Path;

use anyhow::{bail, Context, Result};
use rustc_hash::FxHashMap;

/// Names of the seven special tokens, in the order they close the vocabulary.
pub const SPECIAL_NAMES: [&str; 7] = [
    "<|startoftext|>",
    "<|inputmask|>",
    "<|separator|>",
    "<|nottoken|>",
    "<|bagoftoken|>",
    "<|segmenter|>",
    "<|endoftext|>",
];

/// Whether a byte can occur in UTF-8 text (not C0, C1, F5-FF).
pub(crate) fn utf8_byte(b: u8) -> bool {
    !matches!(b, 0xc0 | 0xc1 | 0xf5..=0xff)
}

/// Ids of the special tokens, read from the last seven lines of the vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialTokens {
    /// `<|startoftext|>` (SOT).
    pub sot: u32,
    /// `<|inputmask|>` (MSK).
    pub msk: u32,
    /// `<|separator|>` (SEP).
    pub sep: u32,
    /// `<|nottoken|>` (NOT, padding).
    pub not: u32,
    /// `<|bagoftoken|>` (BAG).
    pub bag: u32,
    /// `<|segmenter|>` (SEG).
    pub seg: u32,
    /// `<|endoftext|>` (EOT).
    pub eot: u32,
}

/// A parsed vocabulary: spellings per id and the spelling -> id map.
#[derive(Debug, Clone)]
pub struct Vocab {
    /// All spellings of each id, in file order (never empty: an empty line is `[""]`).
    entries: Vec<Vec<String>>,
    /// Spelling -> id; later lines overwrite earlier ones.
    map: FxHashMap<String, u32>,
    special: SpecialTokens,
}

impl Vocab {
    /// Reads a vocabulary file (`ja-swe36k.txt` or the Hugging Face `vocab.txt`).
    pub fn from_file(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path)
            .with_context(|| format!("reading vocabulary file {}", path.display()))?;
        Self::from_bytes(&bytes, &path.display().to_string())
    }

    /// Parses vocabulary bytes; `origin` names the source in error messages.
    pub fn from_bytes(bytes: &[u8], origin: &str) -> Result<Self> {
        let text = match std::str::from_utf8(bytes) {
            Ok(t) => t,
            Err(e) => {
                let line = bytes[..e.valid_up_to()]
                    .iter()
                    .filter(|&&b| b == b'\n')
                    .count()
                    + 1;
                bail!("{origin}: line {line}: invalid UTF-8");
            }
        };
        Self::from_text(text, origin)
    }

    /// Parses vocabulary text. Line ends may be LF, CRLF or CR (the reference reads the
    /// file in Python's universal-newline mode). A single trailing line end is ignored, so
    /// both the original file (no final newline) and the Hugging Face `vocab.txt` load.
    pub fn from_text(text: &str, origin: &str) -> Result<Self> {
        let normalized;
        let text = if text.contains('\r') {
            normalized = text.replace("\r\n", "\n").replace('\r', "\n");
            normalized.as_str()
        } else {
            text
        };
        let text = text.strip_suffix('\n').unwrap_or(text);
        if text.is_empty() {
            bail!("{origin}: the vocabulary is empty");
        }
        let mut entries = Vec::new();
        for line in text.split('\n') {
            let spellings: Vec<String> = if line == "," || !line.contains(',') {
                vec![line.to_string()]
            } else {
                line.split(',').map(str::to_string).collect()
            };
            entries.push(spellings);
        }
        Self::from_entries(entries, origin)
    }

    /// Builds a vocabulary from spellings per id (used by the vocabulary builder too).
    pub fn from_entries(entries: Vec<Vec<String>>, origin: &str) -> Result<Self> {
        let n = entries.len();
        if n > (1 << 30) {
            bail!("{origin}: {n} entries is more than this tokenizer supports (2^30)");
        }
        if n < SPECIAL_NAMES.len() {
            bail!(
                "{origin}: {n} lines; a vocabulary ends with the seven special tokens {}",
                SPECIAL_NAMES.join(" ")
            );
        }
        let mut map = FxHashMap::with_capacity_and_hasher(n + n / 2, Default::default());
        for (id, spellings) in entries.iter().enumerate() {
            if spellings.is_empty() {
                bail!("{origin}: line {}: no spelling", id + 1);
            }
            for s in spellings {
                if !s.is_empty() {
                    map.insert(s.clone(), id as u32);
                }
            }
        }
        let mut ids = [0u32; 7];
        for (k, name) in SPECIAL_NAMES.iter().enumerate() {
            let id = n - 7 + k;
            if entries[id][0] != *name {
                bail!(
                    "{origin}: line {}: expected special token {name} (the last seven lines \
                     must be {}), found {:?}",
                    id + 1,
                    SPECIAL_NAMES.join(" "),
                    entries[id].join(",")
                );
            }
            ids[k] = id as u32;
        }
        let special = SpecialTokens {
            sot: ids[0],
            msk: ids[1],
            sep: ids[2],
            not: ids[3],
            bag: ids[4],
            seg: ids[5],
            eot: ids[6],
        };
        let vocab = Vocab {
            entries,
            map,
            special,
        };
        for required in ["<KIGOU>", "<U2000U2BFF>"] {
            if vocab.id(required).is_none() {
                bail!("{origin}: the vocabulary has no {required} line (needed for symbols)");
            }
        }
        // Bytes UTF-8 can produce (the 36K vocabulary has no <|byte255|>: 0xFF never occurs).
        for b in (0..=255u8).filter(|&b| utf8_byte(b)) {
            if vocab.id(&format!("<|byte{b}|>")).is_none() {
                bail!(
                    "{origin}: the vocabulary has no <|byte{b}|> line (needed for byte fallback)"
                );
            }
        }
        Ok(vocab)
    }

    /// Number of ids (lines).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Always false for a loaded vocabulary (it holds at least the special tokens).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The id of a spelling (the later line when several hold it).
    pub fn id(&self, spelling: &str) -> Option<u32> {
        self.map.get(spelling).copied()
    }

    /// All spellings of an id (the first is the decoding).
    pub fn spellings(&self, id: u32) -> Option<&[String]> {
        self.entries.get(id as usize).map(Vec::as_slice)
    }

    /// The spelling decoding uses for an id.
    pub fn first_spelling(&self, id: u32) -> Option<&str> {
        self.entries.get(id as usize).map(|s| s[0].as_str())
    }

    /// Spelling -> id pairs (each spelling once, with its winning id).
    pub fn iter_map(&self) -> impl Iterator<Item = (&str, u32)> {
        self.map.iter().map(|(s, &id)| (s.as_str(), id))
    }

    /// The special-token ids.
    pub fn special(&self) -> SpecialTokens {
        self.special
    }

    /// The file text (lines joined by `\n`, no trailing newline), as the builder writes it.
    pub fn to_text(&self) -> String {
        let lines: Vec<String> = self.entries.iter().map(|s| s.join(",")).collect();
        lines.join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tail() -> String {
        let mut lines = vec!["<KIGOU>".to_string(), "<U2000U2BFF>".to_string()];
        lines.extend((0..256).map(|b| format!("<|byte{b}|>")));
        lines.extend(SPECIAL_NAMES.iter().map(|s| s.to_string()));
        lines.join("\n")
    }

    #[test]
    fn commas_variants_and_later_wins() {
        let text = format!("ab,AB\n,\nx\nab\n{}", tail());
        let v = Vocab::from_text(&text, "t").unwrap();
        assert_eq!(v.id(","), Some(1));
        assert_eq!(v.id("AB"), Some(0));
        assert_eq!(v.id("ab"), Some(3), "the later line wins");
        assert_eq!(v.first_spelling(0), Some("ab"));
        assert_eq!(v.special().eot as usize, v.len() - 1);
        assert_eq!(v.to_text(), text);
    }

    #[test]
    fn trailing_newline_and_crlf_are_accepted() {
        let a = Vocab::from_text(&format!("x\n{}", tail()), "a").unwrap();
        let b =
            Vocab::from_text(&format!("x\r\n{}\r\n", tail().replace('\n', "\r\n")), "b").unwrap();
        assert_eq!(a.len(), b.len());
        assert_eq!(a.special(), b.special());
    }

    #[test]
    fn errors_name_file_and_line() {
        let bad = tail().replace("<|segmenter|>", "<|oops|>");
        let err = Vocab::from_text(&bad, "my/vocab.txt")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("my/vocab.txt") && err.contains("line 264"),
            "{err}"
        );
        let err = Vocab::from_bytes(b"a\nb\xff\n", "v.txt")
            .unwrap_err()
            .to_string();
        assert!(err.contains("v.txt: line 2: invalid UTF-8"), "{err}");
        let err = Vocab::from_text("a\nb", "v.txt").unwrap_err().to_string();
        assert!(err.contains("special"), "{err}");
    }
}
