//! Cutting one document (its lines, joined with `<BR>`) into examples of a fixed length.
//!
//! Each example holds up to `seq_len - 3` text tokens (SOT, SEG and EOT take the rest).
//! Its kind is chosen first (`lm`; `mlm`; `hybrid`: with probability `hybrid_rate` a
//! prefix of random length, else `lm`), then text is taken from where the previous example
//! stopped: the prefix from the raw encoding, the LM part from the cleaned one. Whole lines
//! are taken while they fit; a line that does not fit is split at the longest run of
//! characters that does (found by binary search on the encoded length), and the next
//! example or part continues there. So no text is lost or repeated between windows, and
//! prefixes are never cleaned while LM parts always are.

use super::rules::{assemble, corrupt, lm_part, LmPart, RuleTokens};
use super::Example;
use crate::rng::Rng;
use crate::tokenizer::{Prefixes, Tokenizer};
use serde::{Deserialize, Serialize};

/// The training objective of prepared data (SPEC section 5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// `[SOT, SEG] + text + [EOT]`: next-token prediction.
    Lm,
    /// The whole text is an MLM-corrupted, fully visible prefix.
    Mlm,
    /// Per example: a random-length MLM prefix and an LM part, or plain `lm`.
    Hybrid,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Lm => "lm",
            Mode::Mlm => "mlm",
            Mode::Hybrid => "hybrid",
        }
    }

    /// Whether examples of this mode can have a prefix (raw encodings needed).
    pub fn uses_prefix(self) -> bool {
        self != Mode::Lm
    }

    /// Whether examples of this mode can have an LM part (cleaned encodings needed).
    pub fn uses_lm(self) -> bool {
        self != Mode::Mlm
    }
}

/// What fixes the examples of a document besides its text.
#[derive(Clone, Debug)]
pub struct WindowSpec {
    pub mode: Mode,
    pub seq_len: usize,
    pub hybrid_rate: f64,
}

/// One line with its encodings (whichever the mode needs), computed in parallel ahead.
#[derive(Clone, Debug, Default)]
pub struct EncodedLine {
    pub text: String,
    /// `encode(text, clean = false)`: prefix tokens.
    pub raw: Vec<u32>,
    /// The LM rules on `encode(text, clean = true)`.
    pub lm: LmPart,
    /// The line's segmentation, kept to encode its starts and rests cheaply, when encoding
    /// them is plain segmentation: without cleaning, and with it too if `pre_clean`.
    pre: Option<Prefixes>,
    pre_clean: bool,
}

/// Encodes a line as `mode` needs.
pub fn encode_line(text: String, mode: Mode, tok: &Tokenizer, t: &RuleTokens) -> EncodedLine {
    // Plain text (nothing to clean, no emoji) has one encoding with or without cleaning.
    let mut pre_clean = true;
    let mut pre = tok.prefixes(&text, true);
    if pre.is_none() && mode.uses_prefix() {
        pre_clean = false;
        pre = tok.prefixes(&text, false);
    }
    let raw = match (&pre, mode.uses_prefix()) {
        (_, false) => Vec::new(),
        (Some(p), true) => p.ids.clone(),
        (None, true) => tok.encode(&text, false),
    };
    let lm = match (&pre, mode.uses_lm()) {
        (_, false) => LmPart::default(),
        (Some(p), true) if pre_clean => lm_part(&p.ids, t),
        _ => lm_part(&tok.encode(&text, true), t),
    };
    EncodedLine {
        text,
        raw,
        lm,
        pre,
        pre_clean,
    }
}

/// A position in a document: a line and a byte offset in it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Cursor {
    line: usize,
    byte: usize,
}

/// Which encoding a part is taken from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Prefix,
    Lm,
}

/// Cuts a document into examples. `rng` drives the kind of each example and the MLM
/// corruption; the same lines, spec and rng state give the same examples.
pub fn document_examples(
    lines: &[EncodedLine],
    class_id: u32,
    spec: &WindowSpec,
    tok: &Tokenizer,
    t: &RuleTokens,
    rng: &mut Rng,
) -> Vec<Example> {
    let mut doc = Doc {
        lines,
        tok,
        t,
        at: Cursor::default(),
    };
    let room = spec.seq_len - 3;
    let mut out = Vec::new();
    while doc.at.line < lines.len() {
        let prefix_room = match spec.mode {
            Mode::Lm => 0,
            Mode::Mlm => room,
            Mode::Hybrid => {
                let hybrid = rng.next_f64() < spec.hybrid_rate;
                let left = doc.raw_tokens_left(room);
                if hybrid && left >= 2 {
                    // 1..left-1 tokens, so that the LM part is never empty.
                    1 + (rng.next_u64() % (left as u64 - 1)) as usize
                } else {
                    0
                }
            }
        };
        let mut prefix = doc.take_prefix(prefix_room);
        let lm = if spec.mode.uses_lm() {
            doc.take_lm(room - prefix.len())
        } else {
            LmPart::default()
        };
        if prefix.is_empty() && lm.is_empty() {
            break;
        }
        let corrupted = corrupt(&mut prefix, t, rng);
        out.push(assemble(
            &prefix,
            &corrupted,
            &lm,
            spec.seq_len,
            class_id,
            t,
        ));
    }
    out
}

/// A document being cut, with the position reached.
struct Doc<'a> {
    lines: &'a [EncodedLine],
    tok: &'a Tokenizer,
    t: &'a RuleTokens,
    at: Cursor,
}

impl Doc<'_> {
    /// Raw tokens from the cursor on (estimated inside a split line), `<BR>`s included,
    /// counted up to `cap` (so a long document costs no more than a short one).
    fn raw_tokens_left(&self, cap: usize) -> usize {
        let mut n = 0;
        for (i, l) in self.lines.iter().enumerate().skip(self.at.line) {
            let len = if i == self.at.line && self.at.byte > 0 {
                let rest = l.text.len() - self.at.byte;
                (l.raw.len() * rest).div_ceil(l.text.len().max(1))
            } else {
                l.raw.len()
            };
            n += len + (i > self.at.line) as usize;
            if n >= cap {
                return cap;
            }
        }
        n
    }

    fn take_prefix(&mut self, room: usize) -> Vec<u32> {
        let mut out = LmPart::default();
        self.take(room, Kind::Prefix, &mut out);
        out.input
    }

    fn take_lm(&mut self, room: usize) -> LmPart {
        let mut out = LmPart::default();
        self.take(room, Kind::Lm, &mut out);
        out
    }

    /// The encoding of `text` for a part of `kind` (prefix parts fill `input` only).
    fn encode(&self, text: &str, kind: Kind) -> LmPart {
        self.part_of(self.tok.encode(text, kind == Kind::Lm), kind)
    }

    /// A part of `kind` from the ids of `encode(text, kind == Lm)`.
    fn part_of(&self, ids: Vec<u32>, kind: Kind) -> LmPart {
        match kind {
            Kind::Prefix => LmPart {
                input: ids,
                target: Vec::new(),
            },
            Kind::Lm => lm_part(&ids, self.t),
        }
    }

    /// Appends text from the cursor to `out` while it fits in `room` tokens.
    fn take(&mut self, room: usize, kind: Kind, out: &mut LmPart) {
        while self.at.line < self.lines.len() {
            let line = &self.lines[self.at.line];
            let join = !out.is_empty() as usize;
            if out.len() + join >= room {
                return;
            }
            let rest = &line.text[self.at.byte..];
            let plain = line
                .pre
                .as_ref()
                .filter(|_| kind == Kind::Prefix || line.pre_clean);
            let mut pre = None;
            let piece = if self.at.byte == 0 {
                match kind {
                    Kind::Prefix => LmPart {
                        input: line.raw.clone(),
                        target: Vec::new(),
                    },
                    Kind::Lm => line.lm.clone(),
                }
            } else {
                let before = line.text[..self.at.byte].chars().count();
                pre = plain
                    .and_then(|p| self.tok.suffix(p, before))
                    .or_else(|| self.tok.prefixes(rest, kind == Kind::Lm));
                match &pre {
                    Some(p) => self.part_of(p.ids.clone(), kind),
                    None => self.encode(rest, kind),
                }
            };
            let free = room - out.len() - join;
            if piece.len() <= free {
                self.push(out, join, &piece, kind);
                self.at = Cursor {
                    line: self.at.line + 1,
                    byte: 0,
                };
                continue;
            }
            let pre = if self.at.byte == 0 {
                plain
            } else {
                pre.as_ref()
            };
            let (bytes, mut piece) = self.longest_fit(rest, free, kind, pre);
            if bytes == 0 {
                if !out.is_empty() {
                    return;
                }
                // Not even one character fits an empty part (a tiny window): take it
                // anyway, cut to the room.
                let one = rest.chars().next().map_or(rest.len(), char::len_utf8);
                piece = self.encode(&rest[..one], kind);
                piece.truncate(free);
                self.push(out, join, &piece, kind);
                self.advance(one);
                return;
            }
            self.push(out, join, &piece, kind);
            self.advance(bytes);
            return;
        }
    }

    fn push(&self, out: &mut LmPart, join: usize, piece: &LmPart, kind: Kind) {
        if join == 1 {
            out.input.push(self.t.br);
            if kind == Kind::Lm {
                out.target.push(self.t.br);
            }
        }
        out.extend(piece);
    }

    /// Moves the cursor `bytes` further in the current line (to the next line at its end).
    fn advance(&mut self, bytes: usize) {
        self.at.byte += bytes;
        if self.at.byte >= self.lines[self.at.line].text.len() {
            self.at = Cursor {
                line: self.at.line + 1,
                byte: 0,
            };
        }
    }

    /// The longest start of `text` (in whole characters) whose encoding has at most `free`
    /// tokens, with that encoding; (0, empty) when not even one character fits. `pre`, when
    /// given, holds the prefixes of `text` (it saves encoding each start from scratch).
    fn longest_fit(
        &self,
        text: &str,
        free: usize,
        kind: Kind,
        pre: Option<&Prefixes>,
    ) -> (usize, LmPart) {
        let mut ends: Vec<usize> = text.char_indices().map(|(i, c)| i + c.len_utf8()).collect();
        // Vocabulary entries hold at most 3 characters, so more than 4 per token rarely fit
        // (only cleaned placeholders such as <URL> do): this bound keeps the search short
        // and at worst leaves a window a little less full.
        ends.truncate(4 * free + 4);
        let owned;
        let pre = match (pre, ends.last()) {
            (Some(p), _) => Some(p),
            (None, Some(&end)) => {
                owned = self.tok.prefixes(&text[..end], kind == Kind::Lm);
                owned.as_ref()
            }
            (None, None) => None,
        };
        let (mut lo, mut hi) = (0usize, ends.len());
        let mut best = (0, LmPart::default());
        while lo < hi {
            let mid = (lo + hi).div_ceil(2);
            // The same ids as encoding the start afresh (see `Tokenizer::prefixes`).
            let piece = match pre {
                Some(p) => {
                    let mut ids = Vec::with_capacity(free + 8);
                    self.tok.encode_prefix(p, mid, &mut ids);
                    self.part_of(ids, kind)
                }
                None => self.encode(&text[..ends[mid - 1]], kind),
            };
            if piece.len() <= free {
                best = (ends[mid - 1], piece);
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::IGNORE;

    fn lines(texts: &[&str], mode: Mode) -> (Vec<EncodedLine>, RuleTokens) {
        let tok = Tokenizer::builtin();
        let t = RuleTokens::new(tok).unwrap();
        let l = texts
            .iter()
            .map(|s| encode_line(s.to_string(), mode, tok, &t))
            .collect();
        (l, t)
    }

    fn spec(mode: Mode, seq_len: usize, hybrid_rate: f64) -> WindowSpec {
        WindowSpec {
            mode,
            seq_len,
            hybrid_rate,
        }
    }

    fn ids(s: &str, clean: bool) -> Vec<i32> {
        Tokenizer::builtin()
            .encode(s, clean)
            .into_iter()
            .map(|x| x as i32)
            .collect()
    }

    #[test]
    fn lines_are_joined_with_br_and_end_with_eot() {
        let tok = Tokenizer::builtin();
        let sp = tok.special();
        let (l, t) = lines(&["猫", "犬"], Mode::Lm);
        let ex = document_examples(&l, 0, &spec(Mode::Lm, 16, 0.0), tok, &t, &mut Rng::new(1));
        assert_eq!(ex.len(), 1);
        let mut want = vec![sp.sot as i32, sp.seg as i32];
        want.extend(ids("猫", false));
        want.push(t.br as i32);
        want.extend(ids("犬", false));
        want.push(sp.eot as i32);
        assert_eq!(&ex[0].input_ids[..want.len()], &want[..]);
        assert!(ex[0].input_ids[want.len()..]
            .iter()
            .all(|&x| x == sp.not as i32));
    }

    /// Hand-written: SEP for 。 in inputs only, ねねね as ね + BAG, a line that does not
    /// fit starts the next window, and a line longer than a window is cut.
    #[test]
    fn hand_written_lm_windows() {
        let tok = Tokenizer::builtin();
        let sp = tok.special();
        let id = |s: &str| tok.token_to_id(s).unwrap() as i32;
        let (neko, maru, ne, inu, mo) = (id("猫"), id("。"), id("ね"), id("犬"), id("も"));
        let (sot, seg, eot, not) = (sp.sot as i32, sp.seg as i32, sp.eot as i32, sp.not as i32);
        let (sep, bag, ig) = (sp.sep as i32, sp.bag as i32, IGNORE);
        let (l, t) = lines(&["猫。ねねね", "犬も。"], Mode::Lm);
        let ex = document_examples(&l, 0, &spec(Mode::Lm, 8, 0.0), tok, &t, &mut Rng::new(1));
        assert_eq!(ex.len(), 2);
        assert_eq!(
            ex[0].input_ids,
            vec![sot, seg, neko, sep, ne, bag, eot, not]
        );
        assert_eq!(ex[0].labels, vec![ig, neko, maru, ne, bag, eot, ig, ig]);
        assert_eq!(ex[1].input_ids, vec![sot, seg, inu, mo, sep, eot, not, not]);
        assert_eq!(ex[1].labels, vec![ig, inu, mo, maru, eot, ig, ig, ig]);
        // With room for both lines they share a window, joined by <BR>.
        let ex = document_examples(&l, 0, &spec(Mode::Lm, 11, 0.0), tok, &t, &mut Rng::new(1));
        let br = t.br as i32;
        assert_eq!(
            ex[0].input_ids,
            vec![sot, seg, neko, sep, ne, bag, br, inu, mo, sep, eot]
        );
        // One line of 7 tokens in windows of 4: cut after ね BAG, then 犬も。.
        let (l, t) = lines(&["猫。ねねね犬も。"], Mode::Lm);
        let ex = document_examples(&l, 0, &spec(Mode::Lm, 7, 0.0), tok, &t, &mut Rng::new(1));
        assert_eq!(ex.len(), 2);
        assert_eq!(ex[0].input_ids, vec![sot, seg, neko, sep, ne, bag, eot]);
        assert_eq!(ex[1].input_ids, vec![sot, seg, inu, mo, sep, eot, not]);
    }

    #[test]
    fn long_documents_are_split_into_windows_without_loss() {
        let tok = Tokenizer::builtin();
        let sp = tok.special();
        let text = "吾輩は猫である。名前はまだ無い。どこで生れたかとんと見当がつかぬ。";
        let (l, t) = lines(&[text, text], Mode::Lm);
        let seq_len = 12;
        let ex = document_examples(
            &l,
            0,
            &spec(Mode::Lm, seq_len, 0.0),
            tok,
            &t,
            &mut Rng::new(1),
        );
        assert!(ex.len() >= 3, "{} windows", ex.len());
        // Every window but the last is full: SOT SEG + 9 tokens + EOT.
        for e in &ex[..ex.len() - 1] {
            assert_eq!(e.input_ids.len(), seq_len);
            assert_eq!(e.input_ids[seq_len - 1], sp.eot as i32);
            assert!(!e.input_ids.contains(&(sp.not as i32)));
        }
        // The targets of all windows, joined, decode to both lines.
        let mut all = Vec::new();
        for e in &ex {
            let end = e.labels.iter().position(|&x| x == sp.eot as i32).unwrap();
            all.extend(e.labels[1..end].iter().map(|&x| x as u32));
        }
        // A line break that falls between two windows is not written (SEG starts a window).
        let decoded = tok.decode(&all).unwrap().replace('\n', "");
        assert_eq!(decoded, format!("{text}{text}"));
    }

    #[test]
    fn lm_parts_are_cleaned_and_prefixes_are_not() {
        let tok = Tokenizer::builtin();
        let sp = tok.special();
        let url = "https://example.com/a を見て";
        let (l, t) = lines(&[url], Mode::Lm);
        let e = &document_examples(&l, 0, &spec(Mode::Lm, 32, 0.0), tok, &t, &mut Rng::new(1))[0];
        let url_id = tok.token_to_id("<URL>").unwrap() as i32;
        assert_eq!(e.input_ids[2], url_id);
        // In a prefix (mlm) the URL stays as text.
        let (l, t) = lines(&[url], Mode::Mlm);
        let e = &document_examples(&l, 0, &spec(Mode::Mlm, 64, 0.0), tok, &t, &mut Rng::new(1))[0];
        assert!(!e.input_ids.contains(&url_id));
        let n = ids(url, false).len();
        assert_eq!(e.input_ids[1 + n], sp.seg as i32);
        assert_eq!(e.token_types[..1 + n], vec![1; 1 + n][..]);
    }

    #[test]
    fn hybrid_rate_is_per_example() {
        let tok = Tokenizer::builtin();
        let text = "吾輩は猫である。名前はまだ無い。";
        let docs: Vec<&str> = vec![text; 5000];
        let (l, t) = lines(&docs, Mode::Hybrid);
        let mut rng = Rng::new(7);
        let ex = document_examples(&l, 0, &spec(Mode::Hybrid, 24, 0.3), tok, &t, &mut rng);
        let hybrid = ex
            .iter()
            .filter(|e| e.token_types.iter().sum::<i32>() > 1)
            .count();
        let rate = hybrid as f64 / ex.len() as f64;
        assert!(ex.len() > 1000, "{} examples", ex.len());
        assert!((rate - 0.3).abs() < 0.04, "hybrid rate {rate}");
        // A hybrid example: prefix visible, SEG then a non-empty LM part.
        let e = ex
            .iter()
            .find(|e| e.token_types.iter().sum::<i32>() > 1)
            .unwrap();
        let seg = e.token_types.iter().position(|&x| x == 0).unwrap();
        assert_eq!(e.input_ids[seg], tok.special().seg as i32);
        assert_ne!(e.labels[seg], IGNORE);
    }

    #[test]
    fn prefix_encodings_match_encoding_afresh() {
        let tok = Tokenizer::builtin();
        let texts = [
            "吾輩は猫である。名前はまだ無い。どこで生れたかとんと見当がつかぬ。",
            "a b\tc\r\nd\re\u{3000}f<SP><BR>g<|endoftext|>h<|endofte",
            "ねねねねねね。。。ーー\u{2014}\u{2212}ÿ\u{2000}\u{1f600}x",
            "(^^)ね:)ね☆♪",
        ];
        for text in texts {
            for clean in [false, true] {
                let Some(p) = tok.prefixes(text, clean) else {
                    continue;
                };
                assert_eq!(p.ids, tok.encode(text, clean));
                for (n, (i, c)) in text.char_indices().enumerate() {
                    let mut ids = Vec::new();
                    tok.encode_prefix(&p, n + 1, &mut ids);
                    let start = &text[..i + c.len_utf8()];
                    assert_eq!(ids, tok.encode(start, clean), "{start:?} {clean}");
                }
            }
        }
        for text in texts {
            for clean in [false, true] {
                let Some(p) = tok.prefixes(text, clean) else {
                    continue;
                };
                for (n, (i, _)) in text.char_indices().enumerate() {
                    let rest = &text[i..];
                    let Some(r) = tok.suffix(&p, n) else {
                        assert!(text[..i].ends_with('\r') && rest.starts_with('\n'));
                        continue;
                    };
                    assert_eq!(r.ids, tok.encode(rest, clean), "{rest:?} {clean}");
                    for (m, (j, c)) in rest.char_indices().enumerate() {
                        let mut ids = Vec::new();
                        tok.encode_prefix(&r, m + 1, &mut ids);
                        let start = &rest[..j + c.len_utf8()];
                        assert_eq!(ids, tok.encode(start, clean), "{start:?} {clean}");
                    }
                }
            }
        }
        // Emoji and cleanable text take the ordinary path.
        assert!(tok.prefixes("電話 03-1234-5678", true).is_none());
        assert!(tok.prefixes("電話 03-1234-5678", false).is_some());
    }

    #[test]
    fn a_line_longer_than_a_window_is_cut_between_characters() {
        let tok = Tokenizer::builtin();
        let text = "あいうえおかきくけこさしすせそたちつてとなにぬねの".repeat(4);
        let (l, t) = lines(&[&text], Mode::Mlm);
        let ex = document_examples(&l, 0, &spec(Mode::Mlm, 10, 0.0), tok, &t, &mut Rng::new(3));
        assert!(ex.len() > 5);
        for e in &ex {
            let n = e.token_types.iter().sum::<i32>() as usize;
            assert!((2..=8).contains(&n), "prefix of {n}");
        }
    }
}
