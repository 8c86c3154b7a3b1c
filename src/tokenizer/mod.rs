//! The GPTSAN SWE tokenizer (SPEC section 3): exact ids of the reference encoder, fast.
//!
//! Encoding = pre-replacements ([`normalize`]) -> emoji replacement ([`emoji`]) -> optional
//! cleaning ([`clean`]) -> greedy segmentation ([`segment`]). Decoding lives in [`decode`].
//! The vocabulary file format is in [`vocab`]; [`builder`] learns new vocabularies.
//!
//! ```no_run
//! use gptsan::tokenizer::Tokenizer;
//! let tok = Tokenizer::builtin();
//! let ids = tok.encode("吾輩は猫である。", false);
//! assert_eq!(tok.decode(&ids).unwrap(), "吾輩は猫である。");
//! ```

pub mod builder;
pub mod clean;
mod decode;
pub mod emoji;
pub mod normalize;
mod segment;
mod spelling_index;
pub mod vocab;

use std::cell::RefCell;
use std::path::Path;
use std::sync::OnceLock;

use anyhow::{Context, Result};
use rayon::prelude::*;

pub use decode::DecodeOptions;
pub use emoji::EmojiTable;
pub use vocab::{SpecialTokens, Vocab, SPECIAL_NAMES};

/// A decode error: an id the vocabulary does not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("token id {id} at position {position} is out of range (vocabulary size {vocab_size})")]
pub struct DecodeError {
    pub id: u32,
    pub position: usize,
    pub vocab_size: usize,
}

/// Vocabulary + emoji table + the lookup tables built from them. Cheap to share across
/// threads (`&Tokenizer` is `Sync`).
#[derive(Debug, Clone)]
pub struct Tokenizer {
    vocab: Vocab,
    emoji: EmojiTable,
    segmenter: segment::Segmenter,
    /// What each id decodes to, worked out on the first decode (encoding never needs it).
    pieces: OnceLock<Vec<decode::Piece>>,
}

/// A text's segmentation kept for [`Tokenizer::encode_prefix`]. Its buffers are reused
/// when it is filled again ([`Tokenizer::prefixes_into`], [`Tokenizer::suffix_into`]).
#[derive(Debug, Clone, Default)]
pub(crate) struct Prefixes {
    /// The pre-replaced code points.
    cps: Vec<u32>,
    /// Code points after each character of the text.
    char_cps: Vec<u32>,
    /// (start in `cps`, ids before it) of every token.
    starts: Vec<(u32, u32)>,
    /// The ids of the whole text.
    pub(crate) ids: Vec<u32>,
    /// Whether the text may hold a `<` (a segmenter window may reach further from one).
    angle: bool,
}

impl Prefixes {
    /// Number of characters of the text.
    pub(crate) fn chars(&self) -> usize {
        self.char_cps.len()
    }
}

/// Texts longer than twice this many bytes are encoded in pieces of this size.
const STREAM_CHUNK: usize = 16 * 1024;

/// Reusable buffers of one thread: the pre-replaced code points and the positions of emoji
/// trigger characters among them.
#[derive(Default)]
struct Scratch {
    cps: Vec<u32>,
    triggers: Vec<usize>,
}

thread_local! {
    /// Per-thread code-point buffer, so encoding allocates only its output.
    static SCRATCH: RefCell<Scratch> = const { RefCell::new(Scratch { cps: Vec::new(), triggers: Vec::new() }) };
}

/// The default vocabulary shipped in the binary (built from the built-in corpus by
/// `gptsan vocab build`; see `data/README.md`).
const BUILTIN_VOCAB: &str = include_str!("../../data/default-vocab.txt");
const BUILTIN_EMOJI: &str = include_str!("../../data/emoji.json");

impl Tokenizer {
    /// Builds a tokenizer from a parsed vocabulary and emoji table.
    pub fn new(vocab: Vocab, emoji: EmojiTable) -> Self {
        let segmenter = segment::Segmenter::new(&vocab);
        Tokenizer {
            vocab,
            emoji,
            segmenter,
            pieces: OnceLock::new(),
        }
    }

    /// Loads `ja-swe36k.txt`/`vocab.txt` and `emoji.json`.
    pub fn from_files(vocab: &Path, emoji: &Path) -> Result<Self> {
        let v = Vocab::from_file(vocab)?;
        let e = EmojiTable::from_file(emoji)?;
        Ok(Self::new(v, e))
    }

    /// Loads a vocabulary folder holding `vocab.txt` (or `ja-swe36k.txt`) and `emoji.json`.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let vocab = ["vocab.txt", "ja-swe36k.txt"]
            .iter()
            .map(|n| dir.join(n))
            .find(|p| p.is_file())
            .with_context(|| format!("{}: no vocab.txt or ja-swe36k.txt", dir.display()))?;
        Self::from_files(&vocab, &dir.join("emoji.json"))
    }

    /// The default tokenizer embedded in the binary (parsed once per process).
    pub fn builtin() -> &'static Tokenizer {
        static TOK: OnceLock<Tokenizer> = OnceLock::new();
        TOK.get_or_init(|| {
            let v = Vocab::from_text(BUILTIN_VOCAB, "built-in default-vocab.txt")
                .expect("the shipped vocabulary is valid (checked by tests)");
            let e = EmojiTable::from_json(BUILTIN_EMOJI.as_bytes(), "built-in emoji.json")
                .expect("the shipped emoji table is valid (checked by tests)");
            Tokenizer::new(v, e)
        })
    }

    /// The vocabulary.
    pub fn vocab(&self) -> &Vocab {
        &self.vocab
    }

    /// The emoji table.
    pub fn emoji(&self) -> &EmojiTable {
        &self.emoji
    }

    /// Number of ids.
    pub fn vocab_size(&self) -> usize {
        self.vocab.len()
    }

    /// Special-token ids (SOT, MSK, SEP, NOT, BAG, SEG, EOT).
    pub fn special(&self) -> SpecialTokens {
        self.vocab.special()
    }

    /// Id of a spelling, if the vocabulary has it.
    pub fn token_to_id(&self, spelling: &str) -> Option<u32> {
        self.vocab.id(spelling)
    }

    /// First spelling of an id.
    pub fn id_to_token(&self, id: u32) -> Option<&str> {
        self.vocab.first_spelling(id)
    }

    /// Encodes a text; `clean` applies the URL/EMAIL/TEL/DATE/PRICE/BLOCK cleaning.
    pub fn encode(&self, text: &str, clean: bool) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 2 + 4);
        self.encode_into(text, clean, &mut out);
        out
    }

    /// Appends the ids of `text` to `out`.
    pub fn encode_into(&self, text: &str, clean: bool, out: &mut Vec<u32>) {
        SCRATCH.with(|cell| {
            let mut guard = cell.try_borrow_mut();
            let mut local = Scratch::default();
            // Re-entrancy cannot happen here, but never panic if it did.
            let scratch: &mut Scratch = match guard.as_mut() {
                Ok(v) => v,
                Err(_) => &mut local,
            };
            let Scratch { cps, triggers } = scratch;
            cps.clear();
            triggers.clear();
            if !clean
                && text.len() > 2 * STREAM_CHUNK
                && self.encode_streaming(text, STREAM_CHUNK, cps, out)
            {
                return;
            }
            cps.clear();
            let emoji = &self.emoji;
            normalize::prereplace(text, |c| {
                if emoji.is_trigger(c) {
                    triggers.push(cps.len());
                }
                cps.push(c as u32);
            });
            // A trigger character alone proves nothing: look for whole keys around the
            // triggers before taking the string path. With no emoji, cleaning changes
            // only texts holding one of the characters its patterns need; without them
            // `cps` is already the cleaned text.
            let slow = (!triggers.is_empty() && self.emoji.any_key_near(cps, triggers))
                || (clean && clean::may_change(cps));
            if slow {
                let s = normalize::prereplace_string(text);
                let replaced = self.emoji.replace(&s);
                // Without cleaning and with no emoji found, `cps` is already right.
                if clean || replaced.is_some() {
                    let mut s = replaced.unwrap_or(s);
                    if clean {
                        s = clean::clean(s);
                    }
                    cps.clear();
                    cps.extend(s.chars().map(|c| c as u32));
                }
            }
            self.segmenter.segment(cps, out);
        })
    }

    /// Encodes a long text piece by piece so the code-point buffer stays in cache. Only
    /// for texts where no emoji key can occur (no trigger character): returns false, with
    /// `out` as it was, as soon as a trigger shows up; the caller then takes the normal path.
    fn encode_streaming(
        &self,
        text: &str,
        chunk: usize,
        cps: &mut Vec<u32>,
        out: &mut Vec<u32>,
    ) -> bool {
        let out_start = out.len();
        let lookahead = self.segmenter.lookahead();
        let bytes = text.as_bytes();
        let mut start = 0;
        while start < text.len() {
            let mut end = (start + chunk).min(text.len());
            while !text.is_char_boundary(end) {
                end += 1;
            }
            // Never split CR LF (it is one line break).
            if end < text.len() && bytes[end - 1] == b'\r' && bytes[end] == b'\n' {
                end += 1;
            }
            let mut triggered = false;
            let emoji = &self.emoji;
            normalize::prereplace(&text[start..end], |c| {
                triggered |= emoji.is_trigger(c);
                cps.push(c as u32);
            });
            if triggered {
                out.truncate(out_start);
                return false;
            }
            if end == text.len() {
                self.segmenter.segment(cps, out);
            } else {
                let limit = cps.len().saturating_sub(lookahead);
                let next = self.segmenter.segment_until(cps, limit, out);
                cps.drain(..next);
            }
            start = end;
        }
        true
    }

    /// The segmentation of `text` kept so that the encoding of any of its starts (in whole
    /// characters) costs only the last few tokens: `None` unless encoding the text and
    /// every start of it is plain segmentation of the pre-replaced code points (no emoji
    /// key; with `clean`, none of the characters the cleaning patterns need).
    pub(crate) fn prefixes(&self, text: &str, clean: bool) -> Option<Prefixes> {
        let mut p = Prefixes::default();
        self.prefixes_into(text, clean, &mut p).then_some(p)
    }

    /// [`Tokenizer::prefixes`] into `p`'s buffers; false (and `p` unusable) for `None`.
    pub(crate) fn prefixes_into(&self, text: &str, clean: bool, p: &mut Prefixes) -> bool {
        let Prefixes {
            cps,
            char_cps,
            starts,
            ids,
            angle,
        } = p;
        cps.clear();
        char_cps.clear();
        *angle = false;
        let mut triggers = Vec::new();
        let emoji = &self.emoji;
        // `char_cps`: code points after each character (CR LF is one line break).
        let n = std::cell::Cell::new(0u32);
        normalize::prereplace_marking(
            text,
            |c| {
                if emoji.is_trigger(c) {
                    triggers.push(cps.len());
                }
                *angle |= c == '<';
                cps.push(c as u32);
                n.set(n.get() + 1);
            },
            || char_cps.push(n.get()),
        );
        // No emoji key in the text means none in any start of it either.
        if (!triggers.is_empty() && emoji.any_key_near(cps, &triggers))
            || (clean && clean::may_change(cps))
        {
            return false;
        }
        starts.clear();
        ids.clear();
        self.segmenter
            .segment_noting(cps, cps.len(), ids, |pos, n| {
                starts.push((pos as u32, n as u32))
            });
        true
    }

    /// The prefixes of the text of `p` after its first `chars` characters (`None` when
    /// that cut falls inside a CR LF). Segmentation is greedy and looks only forward, so
    /// the rest's tokens are those of the whole text from the first token start they
    /// share on: only the tokens before it are segmented again.
    #[cfg(test)]
    pub(crate) fn suffix(&self, p: &Prefixes, chars: usize) -> Option<Prefixes> {
        let mut r = Prefixes::default();
        self.suffix_into(p, chars, &mut r).then_some(r)
    }

    /// [`Tokenizer::suffix`] into `r`'s buffers; false (and `r` unusable) for `None`.
    pub(crate) fn suffix_into(&self, p: &Prefixes, chars: usize, r: &mut Prefixes) -> bool {
        let q = match chars {
            0 => 0,
            _ => p.char_cps[chars - 1],
        };
        if chars > 0 && p.char_cps.get(chars) == Some(&q) {
            return false;
        }
        let Prefixes {
            cps,
            char_cps,
            starts,
            ids,
            angle,
        } = r;
        // The rest holds no `<` the whole text did not.
        *angle = p.angle;
        cps.clear();
        cps.extend_from_slice(&p.cps[q as usize..]);
        char_cps.clear();
        char_cps.extend(p.char_cps[chars..].iter().map(|&c| c - q));
        starts.clear();
        ids.clear();
        let mut pos = 0;
        let (from, from_id) = loop {
            if pos >= cps.len() {
                break (p.starts.len(), p.ids.len());
            }
            let at = q + pos as u32;
            if let Ok(t) = p.starts.binary_search_by_key(&at, |&(s, _)| s) {
                break (t, p.starts[t].1 as usize);
            }
            starts.push((pos as u32, ids.len() as u32));
            pos += self.segmenter.segment_until(&cps[pos..], 1, ids);
        };
        let shift = ids.len() as u32;
        starts.extend(
            p.starts[from..]
                .iter()
                .map(|&(s, i)| (s - q, i - from_id as u32 + shift)),
        );
        ids.extend_from_slice(&p.ids[from_id..]);
        true
    }

    /// Appends `encode(start, clean)` to `out`, where `start` is the first `chars`
    /// characters of the text of `p` (`clean` as given to [`Tokenizer::prefixes`]).
    pub(crate) fn encode_prefix(&self, p: &Prefixes, chars: usize, out: &mut Vec<u32>) {
        let (shared, rest) = self.prefix_split(p, chars);
        out.extend_from_slice(&p.ids[..shared]);
        self.segmenter.segment(&p.cps[rest], out);
    }

    /// [`Tokenizer::encode_prefix`] in two parts: returns how many of the whole text's ids
    /// the start shares (`p.ids[..shared]`), and sets `tail` to the ids that follow them.
    pub(crate) fn prefix_parts(&self, p: &Prefixes, chars: usize, tail: &mut Vec<u32>) -> usize {
        let (shared, rest) = self.prefix_split(p, chars);
        tail.clear();
        self.segmenter.segment(&p.cps[rest], tail);
        shared
    }

    /// For the start of `chars` characters: how many ids it shares with the whole text,
    /// and the code points segmented again after them.
    fn prefix_split(&self, p: &Prefixes, chars: usize) -> (usize, std::ops::Range<usize>) {
        let k = if chars == 0 {
            0
        } else {
            p.char_cps[chars - 1] as usize
        };
        // A token is the whole text's when segmenting it looked at no character from the
        // end on, and so were all before it: at a `<` the segmenter may look `lookahead`
        // characters ahead, elsewhere at most [`segment::WINDOW`].
        let near = p
            .starts
            .partition_point(|&(s, _)| s as usize + segment::WINDOW <= k);
        let t = match p.angle {
            false => near,
            true => {
                let la = self.segmenter.lookahead();
                let far = p.starts.partition_point(|&(s, _)| s as usize + la <= k);
                (far..near)
                    .find(|&j| p.cps[p.starts[j].0 as usize] == '<' as u32)
                    .unwrap_or(near)
            }
        };
        match p.starts.get(t) {
            Some(&(s, i)) => (i as usize, s as usize..k.max(s as usize)),
            None => (p.ids.len(), k..k),
        }
    }

    /// Encodes many texts in parallel (rayon); the result keeps the input order.
    pub fn encode_batch<S: AsRef<str> + Sync>(&self, texts: &[S], clean: bool) -> Vec<Vec<u32>> {
        texts
            .par_iter()
            .map(|t| self.encode(t.as_ref(), clean))
            .collect()
    }

    /// Streaming encode with an explicit piece size (tests compare it with `encode`).
    #[doc(hidden)]
    pub fn encode_in_pieces(&self, text: &str, chunk: usize) -> Option<Vec<u32>> {
        let mut cps = Vec::new();
        let mut out = Vec::new();
        self.encode_streaming(text, chunk.max(1), &mut cps, &mut out)
            .then_some(out)
    }

    /// Decodes ids exactly as the reference encoder does.
    pub fn decode(&self, ids: &[u32]) -> Result<String, DecodeError> {
        self.decode_with(ids, &DecodeOptions::default())
    }

    /// Decodes ids with explicit options (BAG expansion, dropping specials, line break).
    pub fn decode_with(&self, ids: &[u32], opts: &DecodeOptions) -> Result<String, DecodeError> {
        let pieces = self
            .pieces
            .get_or_init(|| decode::pieces(&self.vocab, &self.emoji));
        decode::decode(pieces, ids, opts).map_err(|position| DecodeError {
            id: ids[position],
            position,
            vocab_size: self.vocab.len(),
        })
    }
}
