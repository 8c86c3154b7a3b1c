//! Vocabulary builder: learns a vocabulary in the SWE file format from a corpus.
//!
//! Method (deterministic, a few seconds on the built-in corpus):
//! 1. Texts are pre-replaced and split at spaces, line breaks and tabs into runs.
//! 2. Every character seen gets a 1-character entry (the most frequent ones when the size
//!    budget is short). 2- and 3-character n-grams seen at least `min_count` times (no
//!    comma, not starting with `<`) are candidates, scored by `count * (length - 1)`
//!    (characters saved if every occurrence became one token).
//! 3. The best candidates fill the budget. Then, a few rounds: segment the corpus with the
//!    real "smallest id wins" segmenter, re-score each entry by how often it is actually
//!    used times the characters it saves, drop the weakest part and refill from the
//!    unused candidates. Ids follow the score, so the strongest entry wins conflicts.
//! 4. Layout: multi-character entries (best first), single characters (most frequent
//!    first), `<SP> <BR> <TAB> <URL> <EMAIL> <TEL> <DATE> <PRICE> <BLOCK> <KIGOU>
//!    <U2000U2BFF>`, emoji tokens, 256 byte tokens, the seven special tokens.

use anyhow::{bail, Result};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use rustc_hash::FxHashMap;

use super::{EmojiTable, Tokenizer, Vocab, SPECIAL_NAMES};

/// Layout tokens between the characters and the emoji tokens.
pub const LAYOUT_TOKENS: [&str; 11] = [
    "<SP>",
    "<BR>",
    "<TAB>",
    "<URL>",
    "<EMAIL>",
    "<TEL>",
    "<DATE>",
    "<PRICE>",
    "<BLOCK>",
    "<KIGOU>",
    "<U2000U2BFF>",
];

/// Builder settings.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Total number of ids, special/byte/emoji tokens included.
    pub size: usize,
    /// Minimum count of a 2-3 character candidate.
    pub min_count: u32,
    /// Re-scoring rounds.
    pub rounds: usize,
    /// Show a progress bar.
    pub progress: bool,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            size: 8000,
            min_count: 3,
            rounds: 6,
            progress: false,
        }
    }
}

/// A learned vocabulary plus its emoji table, ready to write or use.
#[derive(Debug, Clone)]
pub struct Built {
    pub vocab: Vocab,
    pub emoji: EmojiTable,
}

impl Built {
    /// A tokenizer using the learned vocabulary.
    pub fn tokenizer(&self) -> Tokenizer {
        Tokenizer::new(self.vocab.clone(), self.emoji.clone())
    }
}

/// Runs of ordinary characters of a text (pre-replacement split points removed).
fn runs(text: &str, emoji: &EmojiTable) -> Vec<Vec<char>> {
    let norm = super::normalize::prereplace_string(text);
    let norm = emoji.replace(&norm).unwrap_or(norm);
    let mut out = Vec::new();
    for part in norm.split("<SP>").flat_map(|p| p.split("<BR>")) {
        for piece in part.split("<TAB>") {
            // Emoji tokens are handled by the emoji table, not learned.
            let mut cur = Vec::new();
            let mut rest = piece;
            while !rest.is_empty() {
                if rest.starts_with("<|emoji") {
                    if let Some(end) = rest.find("|>") {
                        if !cur.is_empty() {
                            out.push(std::mem::take(&mut cur));
                        }
                        rest = &rest[end + 2..];
                        continue;
                    }
                }
                let c = rest.chars().next().unwrap_or_default();
                cur.push(c);
                rest = &rest[c.len_utf8()..];
            }
            if !cur.is_empty() {
                out.push(cur);
            }
        }
    }
    out
}

type Counts = FxHashMap<String, u64>;

fn merge(mut a: Counts, b: Counts) -> Counts {
    if a.len() < b.len() {
        return merge(b, a);
    }
    for (k, v) in b {
        *a.entry(k).or_insert(0) += v;
    }
    a
}

/// Character and 2-3 character n-gram counts over all runs.
fn count_ngrams(all_runs: &[Vec<Vec<char>>]) -> (Counts, Counts) {
    all_runs
        .par_iter()
        .fold(
            || (Counts::default(), Counts::default()),
            |(mut chars, mut grams), runs| {
                for run in runs {
                    for i in 0..run.len() {
                        *chars.entry(run[i].to_string()).or_insert(0) += 1;
                        for len in 2..=3 {
                            if i + len > run.len() {
                                break;
                            }
                            let g = &run[i..i + len];
                            if g.contains(&',') || g[0] == '<' {
                                continue;
                            }
                            *grams.entry(g.iter().collect()).or_insert(0) += 1;
                        }
                    }
                }
                (chars, grams)
            },
        )
        .reduce(
            || (Counts::default(), Counts::default()),
            |a, b| (merge(a.0, b.0), merge(a.1, b.1)),
        )
}

/// Sorted by score descending, then spelling (so the order never depends on hashing).
fn ranked(scores: impl IntoIterator<Item = (String, u64)>) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = scores.into_iter().collect();
    v.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v
}

/// Assembles the full vocabulary from ranked multi-character entries and characters.
fn assemble(multi: &[String], chars: &[String], emoji: &EmojiTable) -> Result<Vocab> {
    let mut lines: Vec<Vec<String>> = Vec::new();
    lines.extend(multi.iter().map(|s| vec![s.clone()]));
    lines.extend(chars.iter().map(|s| vec![s.clone()]));
    lines.extend(LAYOUT_TOKENS.iter().map(|s| vec![s.to_string()]));
    lines.extend(emoji_tokens(emoji).into_iter().map(|s| vec![s]));
    lines.extend((0..256).map(|b| vec![format!("<|byte{b}|>")]));
    lines.extend(SPECIAL_NAMES.iter().map(|s| vec![s.to_string()]));
    Vocab::from_entries(lines, "built vocabulary")
}

/// Distinct `<|emojiN|>` token strings of a table, in order of N.
fn emoji_tokens(emoji: &EmojiTable) -> Vec<String> {
    let mut toks: Vec<String> = emoji.pairs().iter().map(|(_, v)| v.clone()).collect();
    toks.sort_unstable_by_key(|t| {
        let n: u64 = t
            .trim_start_matches("<|emoji")
            .trim_end_matches("|>")
            .parse()
            .unwrap_or(u64::MAX);
        (n, t.clone())
    });
    toks.dedup();
    toks
}

/// Number of ids that are not learned (layout, emoji, byte and special tokens).
pub fn reserved_ids(emoji: &EmojiTable) -> usize {
    LAYOUT_TOKENS.len() + emoji_tokens(emoji).len() + 256 + SPECIAL_NAMES.len()
}

/// Learns a vocabulary of `opts.size` ids from `texts`.
pub fn build<S: AsRef<str> + Sync>(
    texts: &[S],
    emoji: EmojiTable,
    opts: &BuildOptions,
) -> Result<Built> {
    let reserved = reserved_ids(&emoji);
    if opts.size <= reserved + 1 {
        bail!(
            "--size {} is too small: {reserved} ids are taken by layout, emoji, byte and special tokens",
            opts.size
        );
    }
    let budget = opts.size - reserved;
    let bar = if opts.progress {
        let b = ProgressBar::new(opts.rounds as u64 + 2);
        b.set_style(
            ProgressStyle::with_template("{msg:>12} [{bar:30}] {pos}/{len} {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b
    } else {
        ProgressBar::hidden()
    };
    bar.set_message("counting");
    let all_runs: Vec<Vec<Vec<char>>> =
        texts.par_iter().map(|t| runs(t.as_ref(), &emoji)).collect();
    let (char_counts, gram_counts) = count_ngrams(&all_runs);
    bar.inc(1);

    // Characters: most frequent first; a comma is the line ",".
    let mut chars: Vec<String> = ranked(char_counts).into_iter().map(|(c, _)| c).collect();
    let char_budget = budget.min(chars.len());
    chars.truncate(char_budget);
    let multi_budget = budget - char_budget;
    tracing::info!(chars = chars.len(), multi_budget, "vocabulary budget");

    // Candidates by static score.
    let pool: Vec<(String, u64)> = ranked(
        gram_counts
            .into_iter()
            .filter(|(_, c)| *c >= opts.min_count as u64)
            .map(|(g, c)| {
                let saved = g.chars().count() as u64 - 1;
                (g, c * saved)
            }),
    );
    let mut next_candidate = 0usize;
    let mut chosen: Vec<String> = Vec::new();
    let refill = |chosen: &mut Vec<String>, next: &mut usize| {
        let present: rustc_hash::FxHashSet<String> = chosen.iter().cloned().collect();
        while chosen.len() < multi_budget && *next < pool.len() {
            let g = &pool[*next].0;
            *next += 1;
            if !present.contains(g) {
                chosen.push(g.clone());
            }
        }
    };
    refill(&mut chosen, &mut next_candidate);

    let texts_joined: Vec<String> = all_runs
        .iter()
        .map(|runs| {
            let v: Vec<String> = runs.iter().map(|r| r.iter().collect()).collect();
            v.join("\n")
        })
        .collect();
    for round in 0..opts.rounds {
        bar.set_message(format!("round {}", round + 1));
        let vocab = assemble(&chosen, &chars, &emoji)?;
        let tok = Tokenizer::new(vocab, emoji.clone());
        let n_multi = chosen.len();
        let usage = texts_joined
            .par_iter()
            .fold(
                || vec![0u64; n_multi],
                |mut acc, t| {
                    for id in tok.encode(t, false) {
                        if (id as usize) < n_multi {
                            acc[id as usize] += 1;
                        }
                    }
                    acc
                },
            )
            .reduce(
                || vec![0u64; n_multi],
                |mut a, b| {
                    a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
                    a
                },
            );
        let mut scored: Vec<(String, u64)> = chosen
            .iter()
            .zip(&usage)
            .map(|(g, &u)| (g.clone(), u * (g.chars().count() as u64 - 1)))
            .collect();
        scored = ranked(scored);
        // Drop entries never used and, except in the last round, the weakest tenth.
        let last = round + 1 == opts.rounds;
        let keep = if last {
            scored.len()
        } else {
            scored.len() - scored.len() / 10
        };
        chosen = scored
            .into_iter()
            .take(keep)
            .filter(|(_, s)| *s > 0)
            .map(|(g, _)| g)
            .collect();
        if !last {
            refill(&mut chosen, &mut next_candidate);
        }
        bar.inc(1);
    }
    let vocab = assemble(&chosen, &chars, &emoji)?;
    bar.inc(1);
    bar.finish_and_clear();
    Ok(Built { vocab, emoji })
}

/// Tokens per character of `texts` (characters of the original texts).
pub fn tokens_per_char<S: AsRef<str> + Sync>(tok: &Tokenizer, texts: &[S]) -> f64 {
    let (tokens, chars) = texts
        .par_iter()
        .map(|t| {
            let t = t.as_ref();
            (tok.encode(t, false).len() as u64, t.chars().count() as u64)
        })
        .reduce(|| (0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    tokens as f64 / chars.max(1) as f64
}

/// The emoji table the default vocabulary uses: a small one generated from Unicode
/// blocks (eight classes, one representative each), so nothing needs to be copied.
pub fn default_emoji_table() -> EmojiTable {
    let classes: [(char, &[(u32, u32)]); 8] = [
        (
            '😀',
            &[(0x1f600, 0x1f64f), (0x1f910, 0x1f92f), (0x1f970, 0x1f97a)],
        ),
        (
            '❤',
            &[(0x2764, 0x2764), (0x1f493, 0x1f49f), (0x1f9e1, 0x1f9e1)],
        ),
        ('👍', &[(0x1f446, 0x1f450), (0x270a, 0x270d)]),
        ('🐱', &[(0x1f400, 0x1f43f)]),
        ('🍙', &[(0x1f345, 0x1f37f)]),
        (
            '✨',
            &[
                (0x2728, 0x2728),
                (0x2b50, 0x2b50),
                (0x1f31f, 0x1f31f),
                (0x1f4ab, 0x1f4ab),
            ],
        ),
        ('🎉', &[(0x1f380, 0x1f393)]),
        ('🌸', &[(0x1f331, 0x1f344)]),
    ];
    let mut pairs = Vec::new();
    let mut inv = Vec::new();
    for (n, (rep, ranges)) in classes.iter().enumerate() {
        let token = format!("<|emoji{}|>", n + 1);
        inv.push((token.clone(), rep.to_string()));
        for &(lo, hi) in ranges.iter() {
            for c in (lo..=hi).filter_map(char::from_u32) {
                // The emoji-presentation form first: it is the longer key.
                pairs.push((format!("{c}\u{fe0f}"), token.clone()));
                pairs.push((c.to_string(), token.clone()));
            }
        }
    }
    EmojiTable::new(pairs, inv).expect("the generated emoji table is valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus() -> Vec<String> {
        let base = [
            "吾輩は猫である。名前はまだ無い。",
            "今日は良い天気ですね。",
            "猫は名前がない。",
        ];
        (0..50).map(|i| base[i % 3].to_string()).collect()
    }

    #[test]
    fn build_is_deterministic_and_round_trips() {
        let opts = BuildOptions {
            size: 400,
            min_count: 2,
            rounds: 3,
            progress: false,
        };
        let a = build(&corpus(), default_emoji_table(), &opts).unwrap();
        let b = build(&corpus(), default_emoji_table(), &opts).unwrap();
        assert_eq!(a.vocab.to_text(), b.vocab.to_text());
        assert!(a.vocab.len() <= 400);
        let tok = a.tokenizer();
        let text = "吾輩は猫である。今日は良い天気ですね。";
        let ids = tok.encode(text, false);
        assert_eq!(tok.decode(&ids).unwrap(), text);
        // Learned multi-character entries compress the training text.
        assert!(ids.len() < text.chars().count());
    }

    #[test]
    fn too_small_size_is_an_error() {
        let opts = BuildOptions {
            size: 10,
            ..BuildOptions::default()
        };
        assert!(build(&corpus(), default_emoji_table(), &opts).is_err());
    }
}
