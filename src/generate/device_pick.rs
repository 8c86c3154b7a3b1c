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

/// Temperature, top-k and top-p over the allowed logits with the host's rules (keep the
/// k best, the first ones by id on ties; soften by the temperature; keep the best ones
/// until their probability reaches top-p), then a draw by Gumbel-max over what is kept
/// (an exact draw from the renormalised distribution, one uniform number per id).
///
/// Nothing is sorted: sorting the vocabulary at every step cost five times the decode
/// step on the CPU plugin. The k-th best logit and the top-p cut are found by bitwise
/// searches over order-preserving integer keys instead ([`largest_where`]), each skipped
/// at run time when its setting is off.
fn sample(allowed: &Tensor, args: &SampleArgs, rng: &Tensor) -> (Tensor, Tensor) {
    let b = allowed.builder();
    let dims = allowed.dims().to_vec();
    let f32 = |v: f64| b.scalar(v, DType::F32);
    let key = order_key(allowed);
    let finite = allowed.gt(&f32(f64::NEG_INFINITY));
    let kept = finite.and(&in_top_k(&key, &args.top_k));

    let best = allowed.reduce_max(&[1]).expand_dim(1);
    let t = args.temperature.max(&f32(1e-6));
    let scaled = allowed.sub(&best).div(&t);
    let weight = kept.select(&scaled.exp(), &f32(0.0));
    let probs = weight.div(&weight.reduce_sum(&[1]).expand_dim(1));
    let kept = kept.and(&in_top_p(&key, &probs, &args.top_p));

    let (rng, u) = b.uniform(rng, &dims, 0.0, 1.0);
    let gumbel = u.log().neg().log().neg();
    let score = kept.select(&scaled.add(&gumbel), &f32(f64::NEG_INFINITY));
    (score.argmax(1), rng)
}

/// u32 keys ordered as the f32 values are (-inf lowest): the bits with the sign bit
/// set for non-negative values, all bits flipped for negative ones.
fn order_key(x: &Tensor) -> Tensor {
    let b = x.builder();
    let bits = x.bitcast(DType::U32);
    let sign = b.scalar(2_147_483_648.0, DType::U32);
    bits.ge(&sign).select(&bits.not(), &bits.or(&sign))
}

/// `[B]` u32: the largest `T < 2^bits` of each row with `holds(T, captured)` (`[B]` u32
/// -> `[B]` pred, monotone: true for a lower `T` when true for a higher one), found bit
/// by bit from the top; 0 without a single step when `needed` (pred[]) is false.
///
/// The steps run in a `while` loop: unrolled, each step's threshold feeds the next
/// one's comparison and XLA's fusion duplicated the whole chain (a compile that did not
/// end for a small vocabulary); the loop also skips the search when it is not needed.
/// `holds` sees outer values only through `captured`.
fn largest_where(
    rows: i64,
    bits: u32,
    needed: &Tensor,
    captured: &[Tensor],
    holds: impl Fn(&Tensor, &[Tensor]) -> Tensor,
) -> Tensor {
    let b = needed.builder();
    let init = [
        b.scalar(bits as f64 - 1.0, DType::S32),
        b.splat(0.0, &Shape::new(DType::U32, vec![rows])),
    ];
    let mut outer = vec![needed.clone()];
    outer.extend_from_slice(captured);
    let out = b.while_loop(
        &init,
        &outer,
        |b, v| v[0].ge(&b.scalar(0.0, DType::S32)).and(&v[2]),
        |b, v| {
            let (bit, t) = (&v[0], &v[1]);
            let one = b.scalar(1.0, DType::U32);
            let cand = t.or(&one
                .shift_left(&bit.convert(DType::U32))
                .broadcast_to(&[rows]));
            let ok = holds(&cand, &v[3..]);
            vec![bit.sub(&b.scalar(1.0, DType::S32)), ok.select(&cand, t)]
        },
    );
    out[1].clone()
}

/// `[B]` s32: the set entries of each row of a `[B, V]` pred.
fn count(m: &Tensor) -> Tensor {
    m.convert(DType::S32).reduce_sum(&[1])
}

/// `[B, V]` pred: the id is among its row's `top_k` best (all when `top_k` <= 0), ties at
/// the k-th value going to the lowest ids, as the host's stable sort does.
fn in_top_k(key: &Tensor, top_k: &Tensor) -> Tensor {
    let b = key.builder();
    let rows = key.dims()[0];
    let off = top_k.le(&b.scalar(0.0, DType::S32));
    let k = top_k.broadcast_to(&[rows]);
    let kth = largest_where(rows, 32, &off.not(), &[key.clone(), k.clone()], |t, c| {
        count(&c[0].ge(&t.expand_dim(1))).ge(&c[1])
    })
    .expand_dim(1);
    let above = key.gt(&kth);
    let room = k.sub(&count(&above));
    off.or(&above).or(&first_ones(&key.eq(&kth), &room))
}

/// `[B, V]` pred: the id is kept by top-p over `probs` (all when `top_p` >= 1): every id
/// above the cut, and of those tied at it the first ones by id while the probability
/// before them is short of `top_p` (tied ids have equal probabilities), as on the host.
fn in_top_p(key: &Tensor, probs: &Tensor, top_p: &Tensor) -> Tensor {
    let b = key.builder();
    let rows = key.dims()[0];
    let zero = b.scalar(0.0, DType::F32);
    let off = top_p.ge(&b.scalar(1.0, DType::F32));
    let p = top_p.broadcast_to(&[rows]);
    let captured = [key.clone(), probs.clone(), p.clone()];
    let cut = largest_where(rows, 32, &off.not(), &captured, |t, c| {
        let zero = c[1].builder().scalar(0.0, DType::F32);
        let above = c[0].ge(&t.expand_dim(1));
        above.select(&c[1], &zero).reduce_sum(&[1]).ge(&c[2])
    })
    .expand_dim(1);
    let above = key.gt(&cut);
    let tie = key.eq(&cut);
    let mass_above = above.select(probs, &zero).reduce_sum(&[1]);
    let p_tie = tie.select(probs, &zero).reduce_max(&[1]);
    // Tie j (0-based) is kept while mass_above + j * p_tie < top_p.
    let room = p
        .sub(&mass_above)
        .div(&p_tie)
        .sub(&b.scalar(1e-7, DType::F32));
    // Clamped so that a tiny p_tie (an infinite quotient) converts to a sane count.
    let most = b.scalar(key.dims()[1] as f64, DType::F32);
    let room = room.floor().add(&b.scalar(1.0, DType::F32));
    let room = room.clamp(&zero, &most).convert(DType::S32);
    off.or(&above).or(&first_ones(&tie, &room))
}

/// `[B, V]` pred: the first `room` (`[B]` s32) set entries of each row of `m`, by id.
/// The search for the id bound runs only when some row has more than `room`.
fn first_ones(m: &Tensor, room: &Tensor) -> Tensor {
    let dims = m.dims().to_vec();
    let ids = m.builder().iota(&Shape::new(DType::U32, dims.clone()), 1);
    let over = count(m).gt(room);
    let bits = 64 - (dims[1] as u64).leading_zeros();
    let needed = over.reduce_or(&[0]);
    let captured = [m.clone(), ids.clone(), room.clone()];
    let bound = largest_where(dims[0], bits, &needed, &captured, |t, c| {
        count(&c[0].and(&c[1].lt(&t.expand_dim(1)))).le(&c[2])
    });
    let first = m.and(&ids.lt(&bound.expand_dim(1)));
    over.expand_dim(1).select(&first, m)
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
