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
//!
//! Lines are encoded a batch at a time just ahead of the cut (`Feed`), into buffers
//! reused from line to line, so memory stays a few hundred lines however long the
//! document, and examples go straight into shard columns.

use super::rules::{assemble_into, bag_len, corrupt, lm_part_into, LmPart, RuleTokens};
use super::shards::Columns;
use super::Example;
use crate::rng::Rng;
use crate::tokenizer::{Prefixes, Tokenizer};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

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

/// One line's encodings (whichever the mode needs). The buffers are reused: a line's
/// encodings overwrite those of a line already cut.
#[derive(Clone, Debug, Default)]
struct EncodedLine {
    /// `encode(text, clean = false)`, the prefix tokens, unless `has_pre` (then they are
    /// `pre.ids`): see [`EncodedLine::raw`].
    raw: Vec<u32>,
    /// The LM rules on `encode(text, clean = true)`.
    lm: LmPart,
    /// The line's segmentation, kept to encode its starts and rests cheaply, when encoding
    /// them is plain segmentation (`has_pre`): without cleaning, and with it too if
    /// `pre_clean`.
    pre: Prefixes,
    has_pre: bool,
    pre_clean: bool,
    /// Scratch for the cleaned ids of a line that is not plain text.
    ids: Vec<u32>,
}

impl EncodedLine {
    fn pre(&self) -> Option<&Prefixes> {
        self.has_pre.then_some(&self.pre)
    }

    /// `encode(text, clean = false)` (only asked for when the mode has prefixes). With
    /// `pre`, the text is plain or `pre` is of the raw text, so its ids are the raw
    /// encoding.
    fn raw(&self) -> &[u32] {
        match self.has_pre {
            true => &self.pre.ids,
            false => &self.raw,
        }
    }

    /// Encodes `text` as `mode` needs, into this line's buffers.
    fn encode(&mut self, text: &str, mode: Mode, tok: &Tokenizer, t: &RuleTokens) {
        // Plain text (nothing to clean, no emoji) has one encoding with or without cleaning.
        self.pre_clean = true;
        self.has_pre = tok.prefixes_into(text, true, &mut self.pre);
        if !self.has_pre && mode.uses_prefix() {
            self.pre_clean = false;
            self.has_pre = tok.prefixes_into(text, false, &mut self.pre);
        }
        self.raw.clear();
        if mode.uses_prefix() && !self.has_pre {
            tok.encode_into(text, false, &mut self.raw);
        }
        self.lm.truncate(0);
        if mode.uses_lm() {
            if self.has_pre && self.pre_clean {
                lm_part_into(&self.pre.ids, t, &mut self.lm);
            } else {
                self.ids.clear();
                tok.encode_into(text, true, &mut self.ids);
                lm_part_into(&self.ids, t, &mut self.lm);
            }
        }
    }
}

/// Lines encoded per batch (in parallel), ahead of the cut.
const BATCH: usize = 256;

/// The lines of a document, encoded a batch at a time as the cut reaches them; lines
/// behind the cut give their buffers back.
struct Feed<'a, S> {
    texts: &'a [S],
    mode: Mode,
    tok: &'a Tokenizer,
    t: &'a RuleTokens,
    /// Encoded lines `first..first + lines.len()`.
    lines: VecDeque<EncodedLine>,
    first: usize,
    spare: Vec<EncodedLine>,
}

impl<'a, S: AsRef<str> + Sync> Feed<'a, S> {
    fn new(texts: &'a [S], mode: Mode, tok: &'a Tokenizer, t: &'a RuleTokens) -> Self {
        Feed {
            texts,
            mode,
            tok,
            t,
            lines: VecDeque::new(),
            first: 0,
            spare: Vec::new(),
        }
    }

    /// Line `i`, encoded (None past the end of the document).
    fn line(&mut self, i: usize) -> Option<&EncodedLine> {
        while self.first + self.lines.len() <= i && self.first + self.lines.len() < self.texts.len()
        {
            self.encode_batch();
        }
        self.lines.get(i.checked_sub(self.first)?)
    }

    fn encode_batch(&mut self) {
        let start = self.first + self.lines.len();
        let end = (start + BATCH).min(self.texts.len());
        let mut batch: Vec<EncodedLine> = (start..end)
            .map(|_| self.spare.pop().unwrap_or_default())
            .collect();
        let (mode, tok, t) = (self.mode, self.tok, self.t);
        batch
            .par_iter_mut()
            .zip(self.texts[start..end].par_iter())
            .for_each(|(line, text)| line.encode(text.as_ref(), mode, tok, t));
        self.lines.extend(batch);
    }

    /// Lines before `i` are done with.
    fn release_before(&mut self, i: usize) {
        while self.first < i {
            let Some(line) = self.lines.pop_front() else {
                return;
            };
            self.spare.push(line);
            self.first += 1;
        }
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
pub fn document_examples<S: AsRef<str> + Sync>(
    lines: &[S],
    class_id: u32,
    spec: &WindowSpec,
    tok: &Tokenizer,
    t: &RuleTokens,
    rng: &mut Rng,
) -> Vec<Example> {
    let mut out = Columns::new(spec.seq_len);
    document_columns(lines, class_id, spec, tok, t, rng, &mut out);
    out.examples()
}

/// [`document_examples`] appended to `out` (of `spec.seq_len` tokens per example).
pub fn document_columns<S: AsRef<str> + Sync>(
    lines: &[S],
    class_id: u32,
    spec: &WindowSpec,
    tok: &Tokenizer,
    t: &RuleTokens,
    rng: &mut Rng,
    out: &mut Columns,
) {
    let mut doc = Doc {
        texts: lines,
        feed: Feed::new(lines, spec.mode, tok, t),
        at: Cursor::default(),
        rest: Prefixes::default(),
        cut: Cutter {
            tok,
            t,
            ids: Vec::new(),
            piece: LmPart::default(),
        },
    };
    let room = spec.seq_len - 3;
    // Room for the examples of text of 2 bytes per token (Japanese takes about 4): growing
    // a column of tens of MB by doubling would copy it and fault its pages in again.
    let bytes: usize = lines.iter().map(|l| l.as_ref().len() + 1).sum();
    out.reserve(bytes / (2 * room) + 1);
    let mut prefix = LmPart::default();
    let mut lm = LmPart::default();
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
        prefix.truncate(0);
        doc.take(prefix_room, Kind::Prefix, &mut prefix);
        lm.truncate(0);
        if spec.mode.uses_lm() {
            doc.take(room - prefix.len(), Kind::Lm, &mut lm);
        }
        if prefix.is_empty() && lm.is_empty() {
            break;
        }
        let corrupted = corrupt(&mut prefix.input, t, rng);
        assemble_into(&prefix.input, &corrupted, &lm, class_id, t, out);
    }
}

/// A document being cut, with the position reached and reused scratch buffers.
struct Doc<'a, S> {
    texts: &'a [S],
    feed: Feed<'a, S>,
    at: Cursor,
    /// The segmentation of the rest of a cut line.
    rest: Prefixes,
    cut: Cutter<'a>,
}

/// Encodes pieces of lines into reused buffers.
struct Cutter<'a> {
    tok: &'a Tokenizer,
    t: &'a RuleTokens,
    /// Candidate ids in the search for where to cut.
    ids: Vec<u32>,
    /// The part taken from one line.
    piece: LmPart,
}

impl<S: AsRef<str> + Sync> Doc<'_, S> {
    /// Raw tokens from the cursor on (estimated inside a split line), `<BR>`s included,
    /// counted up to `cap` (so a long document costs no more than a short one).
    fn raw_tokens_left(&mut self, cap: usize) -> usize {
        let mut n = 0;
        let mut i = self.at.line;
        while let Some(l) = self.feed.line(i) {
            let len = if i == self.at.line && self.at.byte > 0 {
                let text = self.texts[i].as_ref();
                let rest = text.len() - self.at.byte;
                (l.raw().len() * rest).div_ceil(text.len().max(1))
            } else {
                l.raw().len()
            };
            n += len + (i > self.at.line) as usize;
            if n >= cap {
                return cap;
            }
            i += 1;
        }
        n
    }

    /// Appends text from the cursor to `out` while it fits in `room` tokens.
    fn take(&mut self, room: usize, kind: Kind, out: &mut LmPart) {
        loop {
            self.feed.release_before(self.at.line);
            let at = self.at;
            let Some(line) = self.feed.line(at.line) else {
                return;
            };
            let join = !out.is_empty() as usize;
            if out.len() + join >= room {
                return;
            }
            let free = room - out.len() - join;
            let text = self.texts[at.line].as_ref();
            let rest = &text[at.byte..];
            let plain = line
                .pre()
                .filter(|_| kind == Kind::Prefix || line.pre_clean);
            let cut = &mut self.cut;
            let t = cut.t;
            let next_line = Cursor {
                line: at.line + 1,
                byte: 0,
            };
            let bytes = if at.byte == 0 {
                let whole = match kind {
                    Kind::Prefix => LmPartRef {
                        input: line.raw(),
                        target: &[],
                    },
                    Kind::Lm => LmPartRef {
                        input: &line.lm.input,
                        target: &line.lm.target,
                    },
                };
                if whole.input.len() <= free {
                    push(out, join, whole, kind, t);
                    self.at = next_line;
                    continue;
                }
                cut.longest_fit(rest, free, kind, plain)
            } else {
                let before = text[..at.byte].chars().count();
                let has_rest = plain
                    .is_some_and(|p| cut.tok.suffix_into(p, before, &mut self.rest))
                    || cut
                        .tok
                        .prefixes_into(rest, kind == Kind::Lm, &mut self.rest);
                let pre = has_rest.then_some(&self.rest);
                match pre {
                    Some(p) => cut.part_of_ids(&p.ids, kind),
                    None => cut.encode(rest, kind),
                }
                if cut.piece.len() <= free {
                    push(out, join, cut.piece.as_ref(), kind, t);
                    self.at = next_line;
                    continue;
                }
                cut.longest_fit(rest, free, kind, pre)
            };
            if bytes == 0 {
                if !out.is_empty() {
                    return;
                }
                // Not even one character fits an empty part (a tiny window): take it
                // anyway, cut to the room.
                let one = rest.chars().next().map_or(rest.len(), char::len_utf8);
                cut.encode(&rest[..one], kind);
                cut.piece.truncate(free);
                push(out, join, cut.piece.as_ref(), kind, t);
                self.advance(one);
                return;
            }
            push(out, join, cut.piece.as_ref(), kind, t);
            self.advance(bytes);
            return;
        }
    }

    /// Moves the cursor `bytes` further in the current line (to the next line at its end).
    fn advance(&mut self, bytes: usize) {
        self.at.byte += bytes;
        if self.at.byte >= self.texts[self.at.line].as_ref().len() {
            self.at = Cursor {
                line: self.at.line + 1,
                byte: 0,
            };
        }
    }
}

impl Cutter<'_> {
    /// `piece` = the part of `kind` from the ids of `encode(text, kind == Lm)`.
    fn part_of_ids(&mut self, ids: &[u32], kind: Kind) {
        match kind {
            Kind::Prefix => {
                self.piece.truncate(0);
                self.piece.input.extend_from_slice(ids);
            }
            Kind::Lm => lm_part_into(ids, self.t, &mut self.piece),
        }
    }

    /// `piece` = the part of `kind` of `text`, encoded afresh.
    fn encode(&mut self, text: &str, kind: Kind) {
        let mut ids = std::mem::take(&mut self.ids);
        ids.clear();
        self.tok.encode_into(text, kind == Kind::Lm, &mut ids);
        self.part_of_ids(&ids, kind);
        self.ids = ids;
    }

    /// `piece` = the part of `kind` of the first `chars` characters of the text of `p`.
    fn encode_start(&mut self, p: &Prefixes, chars: usize, kind: Kind) {
        let mut ids = std::mem::take(&mut self.ids);
        ids.clear();
        self.tok.encode_prefix(p, chars, &mut ids);
        self.part_of_ids(&ids, kind);
        self.ids = ids;
    }

    /// The length of that part, without building it.
    fn start_len(&mut self, p: &Prefixes, chars: usize, kind: Kind) -> usize {
        let shared = self.tok.prefix_parts(p, chars, &mut self.ids);
        match kind {
            Kind::Prefix => shared + self.ids.len(),
            Kind::Lm => bag_len(&p.ids[..shared], &self.ids, self.t),
        }
    }

    /// The longest start of `text` (in whole characters) whose encoding has at most `free`
    /// tokens: its length in bytes, with its part in `piece`; 0 when not even one
    /// character fits. `pre`, when given, holds the prefixes of `text` (it saves encoding
    /// each start from scratch).
    fn longest_fit(
        &mut self,
        text: &str,
        free: usize,
        kind: Kind,
        pre: Option<&Prefixes>,
    ) -> usize {
        // Vocabulary entries hold at most 3 characters, so more than 4 per token rarely fit
        // (only cleaned placeholders such as <URL> do): this bound keeps the search short
        // and at worst leaves a window a little less full.
        let bound = 4 * free + 4;
        let char_end = |n: usize| {
            text.char_indices()
                .nth(n - 1)
                .map_or(text.len(), |(i, c)| i + c.len_utf8())
        };
        let owned;
        let pre = match pre {
            Some(p) => Some(p),
            None if text.is_empty() => None,
            None => {
                owned = self
                    .tok
                    .prefixes(&text[..char_end(bound)], kind == Kind::Lm);
                owned.as_ref()
            }
        };
        let ends: Vec<usize> = match pre {
            Some(_) => Vec::new(),
            None => text
                .char_indices()
                .map(|(i, c)| i + c.len_utf8())
                .take(bound)
                .collect(),
        };
        let chars = pre.map_or(ends.len(), |p| p.chars().min(bound));
        let (mut lo, mut hi) = (0usize, chars);
        let mut best = 0;
        while lo < hi {
            let mid = (lo + hi).div_ceil(2);
            // The same ids as encoding the start afresh (see `Tokenizer::prefixes`).
            let len = match pre {
                Some(p) => self.start_len(p, mid, kind),
                None => {
                    self.encode(&text[..ends[mid - 1]], kind);
                    self.piece.len()
                }
            };
            if len <= free {
                best = mid;
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        if best == 0 {
            return 0;
        }
        match pre {
            Some(p) => {
                self.encode_start(p, best, kind);
                char_end(best)
            }
            None => {
                self.encode(&text[..ends[best - 1]], kind);
                ends[best - 1]
            }
        }
    }
}

/// A part borrowed from a line's buffers.
#[derive(Clone, Copy)]
struct LmPartRef<'a> {
    input: &'a [u32],
    target: &'a [u32],
}

impl LmPart {
    fn as_ref(&self) -> LmPartRef<'_> {
        LmPartRef {
            input: &self.input,
            target: &self.target,
        }
    }
}

/// Appends `piece` to `out`, after a `<BR>` when `join` is 1.
fn push(out: &mut LmPart, join: usize, piece: LmPartRef, kind: Kind, t: &RuleTokens) {
    if join == 1 {
        out.input.push(t.br);
        if kind == Kind::Lm {
            out.target.push(t.br);
        }
    }
    out.input.extend_from_slice(piece.input);
    out.target.extend_from_slice(piece.target);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::IGNORE;

    /// The lines of a document (encoded by `document_examples` as the mode needs).
    fn lines(texts: &[&str], _mode: Mode) -> (Vec<String>, RuleTokens) {
        let tok = Tokenizer::builtin();
        let t = RuleTokens::new(tok).unwrap();
        (texts.iter().map(|s| s.to_string()).collect(), t)
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
