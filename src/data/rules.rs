//! The token rules of SPEC section 5 that make one training example out of token ids.
//!
//! An example is `[SOT] + prefix + [SEG] + lm + [EOT]`, padded with NOT:
//! - the prefix (raw, not cleaned) is fully visible (token type 1, SOT included) and
//!   MLM-corrupted; the output at position p-1 is trained to predict the original token at
//!   p (the original's "shifted" MLM, which `fill-mask` reads back);
//! - the LM part (cleaned) is causal; SEG predicts its first token, its last token predicts
//!   EOT. In its inputs sentence-final punctuation is SEP while the targets keep the token,
//!   and runs of 3+ identical ordinary tokens are written as token + BAG in both.
//!
//! `lm` examples have an empty prefix, `mlm` examples an empty LM part (then nothing
//! predicts EOT: only the corrupted positions are trained).

use super::shards::Columns;
use super::{Example, IGNORE};
use crate::rng::Rng;
use crate::tokenizer::{SpecialTokens, Tokenizer};
use anyhow::{anyhow, Result};

/// Sentence-final punctuation that LM inputs write as SEP (SPEC section 5).
pub const SENTENCE_FINAL: &str = "。｡．.？！?!:：;；";

/// Share of prefix tokens the MLM corrupts, and the most it corrupts in one example.
pub const MASK_RATE: f64 = 0.08;
pub const MAX_MASKS: usize = 100;

/// The ids the rules need, worked out once per vocabulary.
#[derive(Clone, Debug)]
pub struct RuleTokens {
    pub special: SpecialTokens,
    /// `<BR>`, which joins lines.
    pub br: u32,
    /// `<|byte0|>`: ids below it are ordinary text (BAG runs, random MLM replacements).
    pub first_byte: u32,
    /// `dot[id]`: the id is sentence-final punctuation.
    dot: Vec<bool>,
}

impl RuleTokens {
    /// The rule ids of a tokenizer's vocabulary.
    pub fn new(tok: &Tokenizer) -> Result<Self> {
        let special = tok.special();
        let br = tok
            .token_to_id("<BR>")
            .ok_or_else(|| anyhow!("the vocabulary has no <BR> token (it joins lines)"))?;
        let first_byte = tok
            .token_to_id("<|byte0|>")
            .unwrap_or(special.sot.saturating_sub(256));
        let mut dot = vec![false; tok.vocab_size()];
        // Each mark on its own: a vocabulary entry like "?!" is not one of them.
        for c in SENTENCE_FINAL.chars() {
            if let Some(id) = tok.token_to_id(c.encode_utf8(&mut [0; 4])) {
                dot[id as usize] = true;
            }
        }
        Ok(RuleTokens {
            special,
            br,
            first_byte,
            dot,
        })
    }

    /// A rule set from explicit ids (tests with hand-made vocabularies).
    pub fn from_ids(special: SpecialTokens, br: u32, first_byte: u32, dots: &[u32]) -> Self {
        let mut dot = vec![false; special.eot as usize + 1];
        for &d in dots {
            dot[d as usize] = true;
        }
        RuleTokens {
            special,
            br,
            first_byte,
            dot,
        }
    }

    fn is_dot(&self, id: u32) -> bool {
        self.dot.get(id as usize).copied().unwrap_or(false)
    }

    fn is_ordinary(&self, id: u32) -> bool {
        id < self.first_byte
    }
}

/// The LM part of an example: what the model reads and what it must predict.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LmPart {
    pub input: Vec<u32>,
    pub target: Vec<u32>,
}

impl LmPart {
    pub fn len(&self) -> usize {
        self.input.len()
    }

    pub fn is_empty(&self) -> bool {
        self.input.is_empty()
    }

    /// Appends another part (a line after `<BR>`, say).
    pub fn extend(&mut self, other: &LmPart) {
        self.input.extend_from_slice(&other.input);
        self.target.extend_from_slice(&other.target);
    }

    /// Appends one token that is the same in input and target (`<BR>`).
    pub fn push_plain(&mut self, id: u32) {
        self.input.push(id);
        self.target.push(id);
    }

    /// Keeps the first `n` tokens.
    pub fn truncate(&mut self, n: usize) {
        self.input.truncate(n);
        self.target.truncate(n);
    }
}

/// Runs of 3+ identical ordinary tokens become token + BAG (the released model's way of
/// writing "and so on" repetitions such as ーーーー or 。。。).
pub fn bag_runs(ids: &[u32], t: &RuleTokens) -> Vec<u32> {
    let mut out = Vec::with_capacity(ids.len());
    bag_runs_into(ids, t, &mut out);
    out
}

/// [`bag_runs`] appended to `out`. Text between collapsed runs is copied in one piece
/// (most lines have no run at all).
fn bag_runs_into(ids: &[u32], t: &RuleTokens, out: &mut Vec<u32>) {
    let mut copied = 0;
    let mut i = 0;
    while i < ids.len() {
        let id = ids[i];
        let mut j = i + 1;
        while j < ids.len() && ids[j] == id {
            j += 1;
        }
        if j - i >= 3 && t.is_ordinary(id) {
            out.extend_from_slice(&ids[copied..i]);
            out.push(id);
            out.push(t.special.bag);
            copied = j;
        }
        i = j;
    }
    out.extend_from_slice(&ids[copied..]);
}

/// `bag_runs(a ++ b, t).len()` without building either (the search for where to cut a
/// line asks this of many candidate starts: the line's own ids, then a few new ones).
pub fn bag_len(a: &[u32], b: &[u32], t: &RuleTokens) -> usize {
    let mut n = a.len() + b.len();
    let (mut id, mut run) = (u32::MAX, 0);
    for &x in a.iter().chain(b) {
        if x == id {
            run += 1;
            continue;
        }
        n -= collapsed(id, run, t);
        (id, run) = (x, 1);
    }
    n - collapsed(id, run, t)
}

/// How many tokens a run of `run` times `id` loses to BAG.
fn collapsed(id: u32, run: usize, t: &RuleTokens) -> usize {
    match run >= 3 && t.is_ordinary(id) {
        true => run - 2,
        false => 0,
    }
}

/// The LM rules on cleaned ids: BAG runs in both, sentence-final punctuation as SEP in the
/// input only (the model learns to end sentences from SEP, and still predicts the mark).
pub fn lm_part(cleaned: &[u32], t: &RuleTokens) -> LmPart {
    let mut part = LmPart::default();
    lm_part_into(cleaned, t, &mut part);
    part
}

/// [`lm_part`] into `out`, replacing what it held (its buffers are reused).
pub fn lm_part_into(cleaned: &[u32], t: &RuleTokens, out: &mut LmPart) {
    out.target.clear();
    bag_runs_into(cleaned, t, &mut out.target);
    out.input.clear();
    out.input.extend(
        out.target
            .iter()
            .map(|&id| if t.is_dot(id) { t.special.sep } else { id }),
    );
}

/// How many prefix tokens to corrupt: 8% of them, rounded at random so that the rate is
/// right on average even for short prefixes, and at most [`MAX_MASKS`].
fn mask_count(len: usize, rng: &mut Rng) -> usize {
    let want = MASK_RATE * len as f64;
    let mut n = want.floor() as usize;
    if rng.next_f64() < want - want.floor() {
        n += 1;
    }
    n.min(MAX_MASKS).min(len)
}

/// One corrupted prefix position: its index in the prefix and the token it held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Corrupted {
    pub index: usize,
    pub original: u32,
}

/// MLM corruption of a prefix in place: about 8% of its tokens (at most 100) are chosen;
/// 80% of those become MSK, 10% a random ordinary token, 10% stay. Special tokens are never
/// chosen. Returns the chosen positions in increasing order.
pub fn corrupt(prefix: &mut [u32], t: &RuleTokens, rng: &mut Rng) -> Vec<Corrupted> {
    let n = mask_count(prefix.len(), rng);
    // A partial Fisher-Yates shuffle picks n distinct positions.
    let mut order: Vec<usize> = (0..prefix.len()).collect();
    let mut chosen = Vec::with_capacity(n);
    for k in 0..n {
        let j = k + (rng.next_u64() % (order.len() - k) as u64) as usize;
        order.swap(k, j);
        let index = order[k];
        let original = prefix[index];
        if original >= t.special.sot {
            continue;
        }
        let r = rng.next_f64();
        if r < 0.8 {
            prefix[index] = t.special.msk;
        } else if r < 0.9 {
            prefix[index] = (rng.next_u64() % t.first_byte.max(1) as u64) as u32;
        }
        chosen.push(Corrupted { index, original });
    }
    chosen.sort_unstable_by_key(|c| c.index);
    chosen
}

/// Assembles `[SOT] + prefix + [SEG] + lm + [EOT]` padded with NOT to `len`, with token
/// types and labels (see the module doc). The caller keeps `prefix.len() + lm.len() <= len - 3`.
pub fn assemble(
    prefix: &[u32],
    corrupted: &[Corrupted],
    lm: &LmPart,
    len: usize,
    class_id: u32,
    t: &RuleTokens,
) -> Example {
    let mut one = Columns::new(len);
    assemble_into(prefix, corrupted, lm, class_id, t, &mut one);
    one.example(0)
}

/// [`assemble`] appended to columns of `out.seq_len` tokens per example: prepared data is
/// written in columns, so no example is ever built on its own.
pub fn assemble_into(
    prefix: &[u32],
    corrupted: &[Corrupted],
    lm: &LmPart,
    class_id: u32,
    t: &RuleTokens,
    out: &mut Columns,
) {
    let sp = &t.special;
    let len = out.seq_len;
    debug_assert!(prefix.len() + lm.len() + 3 <= len);
    let ids = &mut out.input_ids;
    let start = ids.len();
    ids.push(sp.sot);
    ids.extend_from_slice(prefix);
    let seg = ids.len() - start;
    ids.push(sp.seg);
    ids.extend_from_slice(&lm.input);
    ids.push(sp.eot);
    ids.resize(start + len, sp.not);

    let types = &mut out.token_types;
    types.resize(start + seg, 1);
    types.resize(start + len, 0);

    let labels = &mut out.labels;
    labels.resize(start + len, IGNORE);
    let labels = &mut labels[start..];
    // Prefix token k sits at position k + 1; position k predicts it.
    for c in corrupted {
        labels[c.index] = c.original as i32;
    }
    if !lm.is_empty() {
        for (k, &target) in lm.target.iter().enumerate() {
            labels[seg + k] = target as i32;
        }
        labels[seg + lm.len()] = sp.eot as i32;
    }
    out.class_ids.push(class_id);
}

#[cfg(test)]
mod tests {
    use super::*;

    // A hand-made vocabulary: ids 0..50 ordinary, 50..60 "bytes", 60..67 specials.
    const SP: SpecialTokens = SpecialTokens {
        sot: 60,
        msk: 61,
        sep: 62,
        not: 63,
        bag: 64,
        seg: 65,
        eot: 66,
    };
    const BR: u32 = 49;
    const DOT: u32 = 7; // 。
    const QUESTION: u32 = 8; // ？

    fn rules() -> RuleTokens {
        RuleTokens::from_ids(SP, BR, 50, &[DOT, QUESTION])
    }

    #[test]
    fn sentence_final_marks_become_sep_in_inputs_only() {
        let p = lm_part(&[1, 2, DOT, 3, QUESTION, 4], &rules());
        assert_eq!(p.input, vec![1, 2, 62, 3, 62, 4]);
        assert_eq!(p.target, vec![1, 2, DOT, 3, QUESTION, 4]);
    }

    #[test]
    fn runs_of_three_or_more_ordinary_tokens_become_token_and_bag() {
        let t = rules();
        // Two stay, three and five collapse, byte tokens (55) never do.
        assert_eq!(
            bag_runs(&[5, 5, 6, 6, 6, 7, 9, 9, 9, 9, 9, 55, 55, 55], &t),
            vec![5, 5, 6, 64, 7, 9, 64, 55, 55, 55]
        );
        let ids = [5, 5, 6, 6, 6, 7, 9, 9, 9, 9, 9, 55, 55, 55];
        for cut in 0..=ids.len() {
            let (a, b) = ids.split_at(cut);
            assert_eq!(bag_len(a, b, &t), bag_runs(&ids, &t).len());
        }
        // In an LM part: a run of 。 is 。 BAG in targets and SEP BAG in inputs.
        let p = lm_part(&[1, DOT, DOT, DOT], &t);
        assert_eq!(p.target, vec![1, DOT, 64]);
        assert_eq!(p.input, vec![1, 62, 64]);
    }

    #[test]
    fn lm_example_layout() {
        let t = rules();
        let lm = lm_part(&[1, 2, DOT], &t);
        let e = assemble(&[], &[], &lm, 8, 3, &t);
        assert_eq!(e.input_ids, vec![60, 65, 1, 2, 62, 66, 63, 63]);
        assert_eq!(
            e.labels,
            vec![IGNORE, 1, 2, DOT as i32, 66, IGNORE, IGNORE, IGNORE]
        );
        assert_eq!(e.token_types, vec![1, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(e.class_id, 3);
    }

    #[test]
    fn hybrid_example_layout_with_shifted_mlm_labels() {
        let t = rules();
        let prefix = [10, 61, 12];
        let corrupted = [Corrupted {
            index: 1,
            original: 11,
        }];
        let lm = lm_part(&[20, DOT], &t);
        let e = assemble(&prefix, &corrupted, &lm, 10, 0, &t);
        assert_eq!(e.input_ids, vec![60, 10, 61, 12, 65, 20, 62, 66, 63, 63]);
        // Position 1 (before the MSK at 2) predicts 11; SEG predicts 20, ...
        assert_eq!(
            e.labels,
            vec![IGNORE, 11, IGNORE, IGNORE, 20, DOT as i32, 66, IGNORE, IGNORE, IGNORE]
        );
        assert_eq!(e.token_types, vec![1, 1, 1, 1, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn mlm_example_trains_only_corrupted_positions() {
        let t = rules();
        let e = assemble(
            &[61, 2],
            &[Corrupted {
                index: 0,
                original: 1,
            }],
            &LmPart::default(),
            6,
            0,
            &t,
        );
        assert_eq!(e.input_ids, vec![60, 61, 2, 65, 66, 63]);
        assert_eq!(e.labels, vec![1, IGNORE, IGNORE, IGNORE, IGNORE, IGNORE]);
        assert_eq!(e.token_types, vec![1, 1, 1, 0, 0, 0]);
    }

    /// Rates over 500k prefix tokens: 8% corrupted, of which 80% MSK, 10% random, 10% kept,
    /// each within 1% absolute.
    #[test]
    fn mlm_corruption_rates() {
        let t = rules();
        let mut rng = Rng::new(42);
        let (mut total, mut chosen, mut msk, mut random, mut kept) = (0, 0, 0, 0, 0);
        for k in 0..10_000u32 {
            // Prefixes of varied length, all ordinary tokens, none equal to MSK.
            let len = 1 + (k as usize * 7919) % 99;
            let original: Vec<u32> = (0..len as u32).map(|i| (i * 13 + k) % 49).collect();
            let mut prefix = original.clone();
            let c = corrupt(&mut prefix, &t, &mut rng);
            total += len;
            chosen += c.len();
            for x in &c {
                assert_eq!(x.original, original[x.index]);
                let now = prefix[x.index];
                if now == SP.msk {
                    msk += 1;
                } else if now == x.original {
                    kept += 1;
                } else {
                    assert!(now < 50, "random replacements are ordinary tokens");
                    random += 1;
                }
            }
            // Unchosen positions are untouched.
            let touched: Vec<usize> = c.iter().map(|x| x.index).collect();
            for i in (0..len).filter(|i| !touched.contains(i)) {
                assert_eq!(prefix[i], original[i]);
            }
        }
        assert!(total > 10_000);
        let rate = chosen as f64 / total as f64;
        assert!((rate - 0.08).abs() < 0.01, "corrupted {rate}");
        let share = |n: usize| n as f64 / chosen as f64;
        assert!((share(msk) - 0.8).abs() < 0.01, "MSK {}", share(msk));
        // A random token equal to the original counts as kept (1 in 50 here).
        assert!(
            (share(random) - 0.1).abs() < 0.01,
            "random {}",
            share(random)
        );
        assert!((share(kept) - 0.1).abs() < 0.01, "kept {}", share(kept));
    }

    #[test]
    fn at_most_100_masks_and_never_a_special_token() {
        let t = rules();
        let mut rng = Rng::new(1);
        let mut prefix = vec![3u32; 5000];
        assert_eq!(corrupt(&mut prefix, &t, &mut rng).len(), MAX_MASKS);
        let mut specials = vec![SP.eot; 200];
        assert!(corrupt(&mut specials, &t, &mut rng).is_empty());
        assert!(specials.iter().all(|&x| x == SP.eot));
    }

    #[test]
    fn sentence_final_ids_come_from_the_vocabulary() {
        let tok = Tokenizer::builtin();
        let t = RuleTokens::new(tok).unwrap();
        let maru = tok.token_to_id("。").unwrap();
        assert!(t.is_dot(maru));
        assert!(!t.is_dot(tok.token_to_id("の").unwrap()));
        assert_eq!(t.br, tok.token_to_id("<BR>").unwrap());
    }
}
