//! The vocabulary file: one entry per line, line index = token id.
//!
//! A line may hold several comma-separated spellings of the same token (variant kanji,
//! half-width kana); the first one is what decoding writes. The line that is exactly `,`
//! is the comma itself. When two lines hold the same spelling, the later id wins, as in the
//! reference encoder (it fills a dict line by line).

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{bail, Context, Result};

use super::spelling_index::SpellingIndex;

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

/// A parsed vocabulary: the file text, where each line (id) starts, and the spelling -> id
/// index. Spellings are never copied out of the text: loading the 36K vocabulary is one
/// pass over its 180K spellings with no allocation per spelling.
#[derive(Debug, Clone)]
pub struct Vocab {
    /// The file text, line ends normalized to `\n`, without the trailing one (what
    /// [`Vocab::to_text`] writes back).
    text: String,
    /// Byte offset of each line in `text`, then `text.len() + 1` (so line i is
    /// `text[lines[i]..lines[i + 1] - 1]`).
    lines: Vec<u32>,
    /// Spelling -> id of the spellings of one character or starting with `<` (what
    /// loading and the data rules look up); later lines overwrite earlier ones.
    index: SpellingIndex,
    /// The other spellings, indexed on the first lookup of one (encoding never needs it).
    rest: OnceLock<SpellingIndex>,
    special: SpecialTokens,
}

/// The spellings of one line: the whole line when it is `,` or has no comma, else its
/// comma-separated parts.
fn line_spellings(line: &str) -> impl Iterator<Item = &str> {
    let whole = line == "," || !line.contains(',');
    let (one, many) = if whole {
        (Some(line), None)
    } else {
        (None, Some(line.split(',')))
    };
    one.into_iter().chain(many.into_iter().flatten())
}

impl Vocab {
    /// Reads a vocabulary file (`ja-swe36k.txt` or the Hugging Face `vocab.txt`).
    pub fn from_file(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path)
            .with_context(|| format!("reading vocabulary file {}", path.display()))?;
        Self::from_bytes(bytes, &path.display().to_string())
    }

    /// Parses vocabulary bytes; `origin` names the source in error messages.
    pub fn from_bytes(bytes: impl Into<Vec<u8>>, origin: &str) -> Result<Self> {
        match String::from_utf8(bytes.into()) {
            Ok(t) => Self::from_string(t, origin),
            Err(e) => {
                let bytes = e.as_bytes();
                let valid = e.utf8_error().valid_up_to();
                let line = bytes[..valid].iter().filter(|&&b| b == b'\n').count() + 1;
                bail!("{origin}: line {line}: invalid UTF-8");
            }
        }
    }

    /// Parses vocabulary text. Line ends may be LF, CRLF or CR (the reference reads the
    /// file in Python's universal-newline mode). A single trailing line end is ignored, so
    /// both the original file (no final newline) and the Hugging Face `vocab.txt` load.
    pub fn from_text(text: &str, origin: &str) -> Result<Self> {
        Self::from_string(text.to_string(), origin)
    }

    fn from_string(mut text: String, origin: &str) -> Result<Self> {
        if text.contains('\r') {
            text = text.replace("\r\n", "\n").replace('\r', "\n");
        }
        if text.ends_with('\n') {
            text.pop();
        }
        if text.is_empty() {
            bail!("{origin}: the vocabulary is empty");
        }
        if text.len() >= u32::MAX as usize {
            bail!(
                "{origin}: {} bytes is more than this tokenizer supports (4 GB)",
                text.len()
            );
        }
        let mut lines: Vec<u32> = Vec::with_capacity(text.len() / 8);
        lines.push(0);
        lines.extend(line_starts(&text));
        lines.push(text.len() as u32 + 1);
        let n = lines.len() - 1;
        if n > (1 << 30) {
            bail!("{origin}: {n} entries is more than this tokenizer supports (2^30)");
        }
        if n < SPECIAL_NAMES.len() {
            bail!(
                "{origin}: {n} lines; a vocabulary ends with the seven special tokens {}",
                SPECIAL_NAMES.join(" ")
            );
        }
        let index = build_index(&text, &lines, true);
        let mut vocab = Vocab {
            text,
            lines,
            index,
            rest: OnceLock::new(),
            special: SpecialTokens {
                sot: 0,
                msk: 0,
                sep: 0,
                not: 0,
                bag: 0,
                seg: 0,
                eot: 0,
            },
        };
        vocab.special = vocab.check_specials(origin)?;
        vocab.check_fallbacks(origin)?;
        Ok(vocab)
    }

    /// Builds a vocabulary from spellings per id (used by the vocabulary builder). The
    /// entries must be what a file can say: no line break in a spelling, and a comma only
    /// as the one spelling `,`.
    pub fn from_entries(entries: Vec<Vec<String>>, origin: &str) -> Result<Self> {
        if let Some(id) = entries.iter().position(Vec::is_empty) {
            bail!("{origin}: line {}: no spelling", id + 1);
        }
        let lines: Vec<String> = entries.iter().map(|s| s.join(",")).collect();
        let vocab = Self::from_string(lines.join("\n"), origin)?;
        for (id, spellings) in entries.iter().enumerate() {
            let parsed = vocab.spellings(id as u32).unwrap_or_default();
            if vocab.len() != entries.len() || parsed != *spellings {
                bail!(
                    "{origin}: line {}: {spellings:?} cannot be written as a vocabulary line",
                    id + 1
                );
            }
        }
        Ok(vocab)
    }

    /// The ids of the seven special tokens (the last seven lines, in [`SPECIAL_NAMES`] order).
    fn check_specials(&self, origin: &str) -> Result<SpecialTokens> {
        let n = self.len();
        let mut ids = [0u32; 7];
        for (k, name) in SPECIAL_NAMES.iter().enumerate() {
            let id = (n - 7 + k) as u32;
            if self.first_spelling(id) != Some(name) {
                bail!(
                    "{origin}: line {}: expected special token {name} (the last seven lines \
                     must be {}), found {:?}",
                    id + 1,
                    SPECIAL_NAMES.join(" "),
                    self.line(id as usize)
                );
            }
            ids[k] = id;
        }
        Ok(SpecialTokens {
            sot: ids[0],
            msk: ids[1],
            sep: ids[2],
            not: ids[3],
            bag: ids[4],
            seg: ids[5],
            eot: ids[6],
        })
    }

    /// The symbol and byte tokens segmentation falls back to must exist.
    fn check_fallbacks(&self, origin: &str) -> Result<()> {
        for required in ["<KIGOU>", "<U2000U2BFF>"] {
            if self.id(required).is_none() {
                bail!("{origin}: the vocabulary has no {required} line (needed for symbols)");
            }
        }
        // Bytes UTF-8 can produce (the 36K vocabulary has no <|byte255|>: 0xFF never occurs).
        for b in (0..=255u8).filter(|&b| utf8_byte(b)) {
            if self.id(&format!("<|byte{b}|>")).is_none() {
                bail!(
                    "{origin}: the vocabulary has no <|byte{b}|> line (needed for byte fallback)"
                );
            }
        }
        Ok(())
    }

    /// Line `i` of the text (`i < len()`).
    fn line(&self, i: usize) -> &str {
        &self.text[self.lines[i] as usize..self.lines[i + 1] as usize - 1]
    }

    /// Number of ids (lines).
    pub fn len(&self) -> usize {
        self.lines.len() - 1
    }

    /// Always false for a loaded vocabulary (it holds at least the special tokens).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The id of a spelling (the later line when several hold it).
    pub fn id(&self, spelling: &str) -> Option<u32> {
        if spelling.is_empty() {
            return None;
        }
        let index = match is_short(spelling) {
            true => &self.index,
            false => self
                .rest
                .get_or_init(|| build_index(&self.text, &self.lines, false)),
        };
        index.get(&self.text, spelling)
    }

    /// All spellings of an id (the first is the decoding).
    pub fn spellings(&self, id: u32) -> Option<Vec<&str>> {
        ((id as usize) < self.len()).then(|| line_spellings(self.line(id as usize)).collect())
    }

    /// The spelling decoding uses for an id.
    pub fn first_spelling(&self, id: u32) -> Option<&str> {
        ((id as usize) < self.len()).then(|| {
            line_spellings(self.line(id as usize))
                .next()
                .unwrap_or_default()
        })
    }

    /// Every non-empty spelling with the id of its line, in file order (a spelling on
    /// several lines comes several times; the last one is the id [`Vocab::id`] gives).
    pub fn iter_spellings(&self) -> impl Iterator<Item = (&str, u32)> {
        (0..self.len()).flat_map(move |i| {
            line_spellings(self.line(i))
                .filter(|s| !s.is_empty())
                .map(move |s| (s, i as u32))
        })
    }

    /// The special-token ids.
    pub fn special(&self) -> SpecialTokens {
        self.special
    }

    /// The file text (lines joined by `\n`, no trailing newline), as the builder writes it.
    pub fn to_text(&self) -> String {
        self.text.clone()
    }
}

/// Offsets just after every `\n` of `text`.
fn line_starts(text: &str) -> impl Iterator<Item = u32> + '_ {
    text.bytes()
        .enumerate()
        .filter(|&(_, b)| b == b'\n')
        .map(|(i, _)| i as u32 + 1)
}

/// Whether a spelling goes in the index built at load: one character, or `<...>`.
fn is_short(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next();
    s.starts_with('<') || chars.next().is_none()
}

/// The spelling index of a vocabulary text split at `lines`: of the spellings that are
/// short ([`is_short`]) or of the others.
fn build_index(text: &str, lines: &[u32], short: bool) -> SpellingIndex {
    let mut found: Vec<(u32, u32, u32)> = Vec::new();
    for i in 0..lines.len() - 1 {
        let line = &text[lines[i] as usize..lines[i + 1] as usize - 1];
        for s in line_spellings(line).filter(|s| !s.is_empty() && is_short(s) == short) {
            let start = s.as_ptr() as usize - text.as_ptr() as usize;
            found.push((start as u32, s.len() as u32, i as u32));
        }
    }
    let mut index = SpellingIndex::with_capacity(found.len());
    for (start, len, id) in found {
        index.insert(text, start as usize, len as usize, id);
    }
    index
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

    /// Short spellings are indexed at load, longer ones on the first lookup: both kinds
    /// answer, and the later line wins in both.
    #[test]
    fn short_and_long_spellings_are_found() {
        let text = format!("abc,x\n<ab>\nabc\nx,yz\n{}", tail());
        let v = Vocab::from_text(&text, "t").unwrap();
        assert_eq!(v.id("x"), Some(3));
        assert_eq!(v.id("abc"), Some(2));
        assert_eq!(v.id("<ab>"), Some(1));
        assert_eq!(v.id("yz"), Some(3));
        assert_eq!(v.id("zz"), None);
        assert_eq!(v.id(""), None);
        assert_eq!(v.iter_spellings().count(), 6 + 2 + 256 + 7);
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
