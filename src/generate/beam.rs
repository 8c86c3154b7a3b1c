//! Beam search on the device: the W hypotheses are the W rows of one decode program, and
//! after each step the cache rows follow their parents through a gather inside that
//! program (see [`super::decode_program`]'s `reorder` form).
//!
//! Each step keeps the W best unfinished hypotheses by cumulative log-softmax (over the
//! whole vocabulary). SEP and NOT are never chosen. An EOT extension that ranks among the
//! step's W best candidates is a finished hypothesis (so width 1 is greedy search). The
//! search stops when enough finished hypotheses beat every unfinished one (log-
//! probabilities only fall) or at the length limit; the results are the best finished or
//! full-length hypotheses.

use super::Generator;
use crate::model::inputs::HostBatch;
use anyhow::{bail, Result};
use hlo::Literal;
use std::cmp::Ordering;

/// What to search for.
#[derive(Clone, Debug)]
pub struct BeamOptions {
    /// Hypotheses kept per step (rows on the device).
    pub width: usize,
    pub max_new_tokens: usize,
    /// How many results to return (at most `width`).
    pub num_results: usize,
    /// EOT ends a hypothesis (otherwise it is a token like any other).
    pub stop_at_eot: bool,
}

/// A generated continuation and its cumulative log-probability.
#[derive(Clone, Debug, PartialEq)]
pub struct Hypothesis {
    /// New tokens only (an EOT that ended it included).
    pub tokens: Vec<u32>,
    pub logprob: f64,
}

/// One extension of a hypothesis.
#[derive(Clone, Copy, Debug)]
struct Candidate {
    logprob: f64,
    parent: usize,
    token: u32,
}

/// Higher log-probability first; ties by parent, then token (deterministic).
fn better(a: &Candidate, b: &Candidate) -> Ordering {
    b.logprob
        .total_cmp(&a.logprob)
        .then(a.parent.cmp(&b.parent))
        .then(a.token.cmp(&b.token))
}

/// `log_softmax(row)` in f64.
fn log_softmax(row: &[f32]) -> Vec<f64> {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
    let lse = row
        .iter()
        .map(|&v| (v as f64 - max).exp())
        .sum::<f64>()
        .ln()
        + max;
    row.iter().map(|&v| v as f64 - lse).collect()
}

/// The best `keep` extensions of every hypothesis (never a `banned` token), best first.
fn candidates(
    alive: &[Hypothesis],
    logits: &[f32],
    vocab: usize,
    keep: usize,
    banned: &[u32],
) -> Vec<Candidate> {
    let mut all = Vec::new();
    for (parent, hyp) in alive.iter().enumerate() {
        let lsm = log_softmax(&logits[parent * vocab..(parent + 1) * vocab]);
        let mut row: Vec<Candidate> = (0..vocab as u32)
            .filter(|t| !banned.contains(t))
            .map(|token| Candidate {
                logprob: hyp.logprob + lsm[token as usize],
                parent,
                token,
            })
            .collect();
        if row.len() > keep {
            row.select_nth_unstable_by(keep - 1, better);
            row.truncate(keep);
        }
        all.extend(row);
    }
    all.sort_by(better);
    all
}

/// The search state between steps.
struct Beam {
    alive: Vec<Hypothesis>,
    /// Best first, at most `width`.
    finished: Vec<Hypothesis>,
    width: usize,
}

impl Beam {
    /// Takes the step's candidates (best first): EOT among the first `width` finishes a
    /// hypothesis; the first `width` others are the new unfinished ones. Returns their
    /// parents (rows of the previous step).
    fn advance(&mut self, cands: &[Candidate], eot: Option<u32>) -> Vec<usize> {
        let mut alive = Vec::with_capacity(self.width);
        let mut parents = Vec::with_capacity(self.width);
        for (rank, c) in cands.iter().enumerate() {
            if alive.len() == self.width {
                break;
            }
            let mut tokens = self.alive[c.parent].tokens.clone();
            tokens.push(c.token);
            let hyp = Hypothesis {
                tokens,
                logprob: c.logprob,
            };
            if Some(c.token) == eot {
                if rank < self.width {
                    self.finish(hyp);
                }
            } else {
                alive.push(hyp);
                parents.push(c.parent);
            }
        }
        self.alive = alive;
        parents
    }

    fn finish(&mut self, hyp: Hypothesis) {
        self.finished.push(hyp);
        self.finished
            .sort_by(|a, b| b.logprob.total_cmp(&a.logprob));
        self.finished.truncate(self.width);
    }

    /// True when `n` finished hypotheses are at least as likely as every unfinished one.
    fn settled(&self, n: usize) -> bool {
        let best_alive = self.alive.first().map_or(f64::NEG_INFINITY, |h| h.logprob);
        self.finished.len() >= n && self.finished[n - 1].logprob >= best_alive
    }

    /// The `n` best of the finished and the (full-length) unfinished hypotheses.
    fn results(mut self, n: usize) -> Vec<Hypothesis> {
        let mut all = std::mem::take(&mut self.finished);
        all.extend(self.alive);
        all.sort_by(|a, b| b.logprob.total_cmp(&a.logprob));
        all.truncate(n);
        all
    }
}

/// `width` copies of a one-row prompt.
fn repeat_rows(prompt: &HostBatch, width: usize) -> HostBatch {
    HostBatch {
        batch: width,
        len: prompt.len,
        input_ids: prompt.input_ids.repeat(width),
        attention_mask: prompt.attention_mask.repeat(width),
        token_type_ids: prompt.token_type_ids.repeat(width),
        spout: prompt.spout.as_ref().map(|s| s.repeat(width)),
    }
}

impl Generator<'_> {
    /// Beam search for a one-row prompt; returns up to `opts.num_results` hypotheses,
    /// best first.
    pub fn beam_search(
        &mut self,
        prompt: &HostBatch,
        opts: &BeamOptions,
    ) -> Result<Vec<Hypothesis>> {
        let w = opts.width;
        if w == 0 {
            bail!("the beam width must be at least 1");
        }
        if prompt.batch != 1 {
            bail!(
                "beam search takes one prompt at a time, got {}",
                prompt.batch
            );
        }
        if opts.num_results == 0 || opts.num_results > w {
            bail!(
                "beam search returns 1 to {w} results (the beam width), {} asked",
                opts.num_results
            );
        }
        let pre = self.run_prefill(&repeat_rows(prompt, w), opts.max_new_tokens)?;
        let (slots, bsz) = (pre.slots, w as i64);
        self.decode_for(bsz, slots, true)?;
        let v = self.cfg.vocab_size as usize;
        let (sep, not, eot) = (v as u32 - 5, v as u32 - 4, v as u32 - 1);
        let mut beam = Beam {
            alive: vec![Hypothesis {
                tokens: Vec::new(),
                logprob: 0.0,
            }],
            finished: Vec::new(),
            width: w,
        };
        let (mut logits, mut cache, mut key_valid) = (pre.logits, pre.cache, pre.key_valid);
        for step in 0..pre.steps {
            let flat = logits.to_vec::<f32>()?;
            let cands = candidates(&beam.alive, &flat, v, w + 1, &[sep, not]);
            let mut parents = beam.advance(&cands, opts.stop_at_eot.then_some(eot));
            if beam.alive.is_empty() || beam.settled(opts.num_results) || step + 1 == pre.steps {
                break;
            }
            let mut tokens: Vec<i32> = beam
                .alive
                .iter()
                .map(|h| h.tokens[step as usize] as i32)
                .collect();
            // Rows without a hypothesis repeat the first one; their outputs are ignored.
            parents.resize(w, parents[0]);
            tokens.resize(w, tokens[0]);
            let cur = pre.first_slot + step;
            for r in 0..w {
                key_valid[r * slots as usize + cur as usize] = 1;
            }
            let position: Vec<i32> = pre
                .next_pos
                .iter()
                .map(|&p| (p + step as i32).min(self.cfg.context as i32 - 1))
                .collect();
            let parents: Vec<i32> = parents.iter().map(|&p| p as i32).collect();
            let args = [
                Literal::from_slice(&[bsz, 1], &tokens)?,
                Literal::from_slice(&[bsz, 1], &position)?,
                Literal::from_slice(&[bsz, slots], &key_valid)?,
                Literal::scalar(cur as i32),
                Literal::from_slice(&[bsz], &parents)?,
            ];
            (logits, cache) = self.run_decode(bsz, slots, true, cache, &args)?;
        }
        Ok(beam.results(opts.num_results))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hyp(tokens: &[u32], logprob: f64) -> Hypothesis {
        Hypothesis {
            tokens: tokens.to_vec(),
            logprob,
        }
    }

    #[test]
    fn eot_finishes_only_among_the_best_width_candidates() {
        let mut beam = Beam {
            alive: vec![hyp(&[1], -1.0), hyp(&[2], -2.0)],
            finished: Vec::new(),
            width: 2,
        };
        let c = |logprob, parent, token| Candidate {
            logprob,
            parent,
            token,
        };
        // EOT (9) ranks first from parent 1 and third from parent 0.
        let cands = [
            c(-2.5, 1, 9),
            c(-3.0, 0, 4),
            c(-3.1, 0, 9),
            c(-3.2, 1, 5),
            c(-4.0, 0, 6),
        ];
        let parents = beam.advance(&cands, Some(9));
        assert_eq!(parents, vec![0, 1]);
        assert_eq!(beam.alive, vec![hyp(&[1, 4], -3.0), hyp(&[2, 5], -3.2)]);
        assert_eq!(beam.finished, vec![hyp(&[2, 9], -2.5)]);
        assert!(beam.settled(1));
        assert!(!beam.settled(2));
    }

    #[test]
    fn candidates_skip_banned_tokens_and_come_best_first() {
        let alive = [hyp(&[], 0.0)];
        let logits = [0.0f32, 3.0, 1.0, 2.0];
        let c = candidates(&alive, &logits, 4, 2, &[1]);
        let tokens: Vec<u32> = c.iter().map(|c| c.token).collect();
        assert_eq!(tokens, vec![3, 2]);
        let lse = (1f64 + 3f64.exp() + 1f64.exp() + 2f64.exp()).ln();
        assert!((c[0].logprob - (2.0 - lse)).abs() < 1e-12);
    }
}
