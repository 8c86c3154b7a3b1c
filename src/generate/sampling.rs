//! Choosing the next token from logits on the host: greedy, temperature, top-k, top-p.

/// How to pick tokens.
#[derive(Clone, Debug, PartialEq)]
pub enum Strategy {
    Greedy,
    Sample {
        temperature: f64,
        top_k: usize,
        top_p: f64,
    },
}

pub use crate::rng::Rng;

/// Picks a token from `logits`; ids in `banned` are never chosen.
pub fn pick(logits: &[f32], strategy: &Strategy, banned: &[u32], rng: &mut Rng) -> u32 {
    let allowed = |i: usize| !banned.contains(&(i as u32));
    match strategy {
        Strategy::Greedy => {
            let mut best = None::<(usize, f32)>;
            for (i, &v) in logits.iter().enumerate() {
                if allowed(i) && best.is_none_or(|(_, b)| v > b) {
                    best = Some((i, v));
                }
            }
            best.map(|(i, _)| i as u32).unwrap_or(0)
        }
        Strategy::Sample {
            temperature,
            top_k,
            top_p,
        } => {
            let mut cands: Vec<(usize, f32)> = logits
                .iter()
                .copied()
                .enumerate()
                .filter(|(i, _)| allowed(*i))
                .collect();
            cands.sort_by(|a, b| b.1.total_cmp(&a.1));
            if *top_k > 0 {
                cands.truncate(*top_k);
            }
            let t = temperature.max(1e-6);
            let max = cands.first().map(|c| c.1 as f64).unwrap_or(0.0);
            let mut probs: Vec<f64> = cands
                .iter()
                .map(|c| ((c.1 as f64 - max) / t).exp())
                .collect();
            let total: f64 = probs.iter().sum();
            probs.iter_mut().for_each(|p| *p /= total);
            if *top_p < 1.0 {
                let mut acc = 0.0;
                let mut keep = probs.len();
                for (i, p) in probs.iter().enumerate() {
                    acc += p;
                    if acc >= *top_p {
                        keep = i + 1;
                        break;
                    }
                }
                probs.truncate(keep);
                let s: f64 = probs.iter().sum();
                probs.iter_mut().for_each(|p| *p /= s);
            }
            let mut u = rng.next_f64();
            for (i, p) in probs.iter().enumerate() {
                if u < *p {
                    return cands[i].0 as u32;
                }
                u -= p;
            }
            cands
                .get(probs.len().saturating_sub(1))
                .map(|c| c.0 as u32)
                .unwrap_or(0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_skips_banned_and_sampling_respects_top_k() {
        let logits = [0.1f32, 5.0, 3.0, 4.0];
        let mut rng = Rng::new(1);
        assert_eq!(pick(&logits, &Strategy::Greedy, &[], &mut rng), 1);
        assert_eq!(pick(&logits, &Strategy::Greedy, &[1], &mut rng), 3);
        let s = Strategy::Sample {
            temperature: 1.0,
            top_k: 2,
            top_p: 1.0,
        };
        for _ in 0..100 {
            let t = pick(&logits, &s, &[], &mut rng);
            assert!(t == 1 || t == 3);
        }
    }
}
