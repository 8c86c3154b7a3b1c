//! Choosing the next token on the device, inside the compiled decode loop: the same
//! strategies as [`super::sampling::pick`] on the host, as graph code.
//!
//! Greedy is exact: the argmax over the allowed ids, the first one on ties, which is
//! what the host picks from the same logits. Sampling draws from the device's random
//! bits (`rng_bit_generator`, a counter-based generator whose state the loop carries),
//! so a seed gives reproducible tokens, but not the host RNG's sequence: the tokens of a
//! seeded sample differ from the host loop's (and the server's batched sampling).

use super::sampling::Strategy;
use hlo::{Builder, DType, Literal, Shape, Tensor};

/// The sampling settings the programs take as arguments (one compiled program serves
/// every temperature, top-k and top-p): `temperature` f32, `top_k` s32 (0: off), `top_p`
/// f32. Greedy needs none of them.
pub(crate) struct SampleArgs {
    pub temperature: Tensor,
    pub top_k: Tensor,
    pub top_p: Tensor,
}

impl SampleArgs {
    /// Declares the three arguments in `b`.
    pub fn declare(b: &Builder) -> SampleArgs {
        SampleArgs {
            temperature: b.parameter("temperature", Shape::scalar(DType::F32)),
            top_k: b.parameter("top_k", Shape::scalar(DType::S32)),
            top_p: b.parameter("top_p", Shape::scalar(DType::F32)),
        }
    }

    pub fn tensors(&self) -> Vec<Tensor> {
        vec![
            self.temperature.clone(),
            self.top_k.clone(),
            self.top_p.clone(),
        ]
    }

    pub fn from_tensors(t: &[Tensor]) -> SampleArgs {
        SampleArgs {
            temperature: t[0].clone(),
            top_k: t[1].clone(),
            top_p: t[2].clone(),
        }
    }

    /// The argument values for `strategy` (greedy: unused placeholders).
    pub fn values(strategy: &Strategy) -> Vec<Literal> {
        let (t, k, p) = match strategy {
            Strategy::Greedy => (1.0, 0, 1.0),
            Strategy::Sample {
                temperature,
                top_k,
                top_p,
            } => (*temperature, (*top_k).min(i32::MAX as usize) as i32, *top_p),
        };
        vec![
            Literal::scalar(t as f32),
            Literal::scalar(k),
            Literal::scalar(p as f32),
        ]
    }
}

/// The initial state of the device generator for `seed`.
pub(crate) fn rng_state(seed: u64) -> Literal {
    Literal::from_slice(&[2], &[seed, 0x9E37_79B9_7F4A_7C15]).expect("two values for [2]")
}

/// `logits [B, V]` with the `banned` ids at -inf.
fn without(logits: &Tensor, banned: &[u32]) -> Tensor {
    let b = logits.builder();
    let ids = b.iota(&logits.shape().with_dtype(DType::S32), 1);
    let mut hit = b.splat(0.0, &logits.shape().with_dtype(DType::Pred));
    for &id in banned {
        hit = hit.or(&ids.eq(&b.scalar(id as f64, DType::S32)));
    }
    hit.select(&b.scalar(f64::NEG_INFINITY, DType::F32), logits)
}

/// The next token of each row `[B]` (s32) from `logits [B, V]`, never one of `banned`,
/// and the advanced random state (unchanged for greedy).
pub(crate) fn pick_on_device(
    logits: &Tensor,
    greedy: bool,
    banned: &[u32],
    args: &SampleArgs,
    rng: &Tensor,
) -> (Tensor, Tensor) {
    let allowed = without(logits, banned);
    if greedy {
        return (allowed.argmax(1), rng.clone());
    }
    sample(&allowed, args, rng)
}

/// Temperature, top-k and top-p over the allowed logits, as the host does it: sort the
/// candidates, keep the k best, soften by the temperature, keep the smallest prefix
/// whose probability reaches top-p; then draw by Gumbel-max over what is kept (an exact
/// draw from the renormalised distribution, with one uniform number per candidate).
fn sample(allowed: &Tensor, args: &SampleArgs, rng: &Tensor) -> (Tensor, Tensor) {
    let b = allowed.builder();
    let dims = allowed.dims().to_vec();
    let (sorted, ids) = allowed.top_k(dims[1]);
    let rank = b.iota(&Shape::new(DType::S32, dims.clone()), 1);
    let s32 = |v: f64| b.scalar(v, DType::S32);
    let f32 = |v: f64| b.scalar(v, DType::F32);

    let top_k = args.top_k.broadcast_to(&dims);
    let in_k = top_k.le(&s32(0.0)).or(&rank.lt(&top_k));
    let finite = sorted.gt(&f32(f64::NEG_INFINITY));
    let best = sorted.slice_dim(1, 0, 1);
    let t = args.temperature.max(&f32(1e-6));
    let scaled = sorted.sub(&best).div(&t);
    let kept = in_k.and(&finite);
    let weight = kept.select(&scaled.exp(), &f32(0.0));
    let probs = weight.div(&weight.reduce_sum(&[1]).expand_dim(1));
    // Keep candidate j while the probability before it is short of top_p.
    let before = probs.cumsum(1).sub(&probs);
    let top_p = args.top_p.broadcast_to(&dims);
    let in_p = top_p.ge(&f32(1.0)).or(&before.lt(&top_p));
    let kept = kept.and(&in_p);

    let (rng, u) = b.uniform(rng, &dims, 0.0, 1.0);
    let gumbel = u.log().neg().log().neg();
    let score = kept.select(&scaled.add(&gumbel), &f32(f64::NEG_INFINITY));
    let choice = score.argmax(1).expand_dim(1);
    let token = rank.eq(&choice).select(&ids, &s32(0.0)).reduce_sum(&[1]);
    (token, rng)
}

/// The one-shot pick program (the first token, from the prefill's logits):
/// `logits [B, V]`, `rng`, then the sampling arguments; returns `token [B]` and `rng`.
pub fn pick_program(batch: i64, vocab: i64, greedy: bool) -> anyhow::Result<hlo::Function> {
    let b = Builder::new("pick");
    let logits = b.parameter("logits", Shape::new(DType::F32, vec![batch, vocab]));
    let rng = b.parameter("rng", Shape::new(DType::U64, vec![2]));
    let args = SampleArgs::declare(&b);
    let (token, rng) = pick_on_device(&logits, greedy, &banned_ids(vocab), &args, &rng);
    Ok(b.build_named(&[("token", &token), ("rng", &rng)])?)
}

/// The ids generation never picks: SEP and NOT (the last ids are special tokens).
pub(crate) fn banned_ids(vocab: i64) -> [u32; 2] {
    let v = vocab as u32;
    [v - 5, v - 4]
}
