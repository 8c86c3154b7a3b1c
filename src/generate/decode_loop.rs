//! The generation loop on the device: one compiled program decodes up to `chunk` tokens
//! per call inside a `while` loop (decode step, token choice, bookkeeping), so the host
//! neither downloads `[B, V]` logits nor launches a program per token. The host calls it
//! chunk by chunk, streaming each chunk's tokens, and the cache stays on the device
//! (donated from call to call).
//!
//! One iteration does what one step of the host loop does ([`super::Generator`]): mark
//! the pending token's cache slot valid, run [`decode_step`] on it, advance the position
//! and slot, pick the next token ([`pick_on_device`]; finished rows feed SEP), record it
//! and mark rows that picked EOT as done (when asked). The loop ends after `count`
//! iterations or when every row is done. The first token comes from the prefill's logits
//! through the small pick program; each chunk then starts from the pending token.

use super::device_pick::{banned_ids, pick_on_device, pick_program, rng_state, SampleArgs};
use super::sampling::Strategy;
use super::{GenerateOptions, Generation, Generator, Prefilled};
use crate::model::decode::{cache_shape, decode_step};
use crate::model::gptsan::Params;
use crate::model::inputs::HostBatch;
use crate::model::params::param_specs;
use crate::model::ModelConfig;
use anyhow::{anyhow, Result};
use hlo::{Builder, DType, Function, Literal, Shape, Tensor};
use runtime::Buffer;

/// The values the loop carries from iteration to iteration (and, through the host, from
/// chunk to chunk).
struct LoopState {
    /// Iterations done in this call (s32).
    step: Tensor,
    cache: Tensor,
    /// `[B, chunk]` s32: the token each row produced at each step, -1 where a finished
    /// row produced none (or the loop ended first).
    tokens: Tensor,
    /// `[B]` s32: the last token, not yet decoded.
    pending: Tensor,
    /// `[B]` s32: the pending token's position.
    position: Tensor,
    /// `[B, M]` s32: 1 where a cache slot holds a real key.
    key_valid: Tensor,
    /// The pending token's cache slot (s32, one for all rows).
    cur: Tensor,
    /// `[B]` pred: the row has stopped (at EOT).
    done: Tensor,
    /// u64[2]: the device generator's state.
    rng: Tensor,
}

impl LoopState {
    const LEN: usize = 9;

    fn to_vec(&self) -> Vec<Tensor> {
        vec![
            self.step.clone(),
            self.cache.clone(),
            self.tokens.clone(),
            self.pending.clone(),
            self.position.clone(),
            self.key_valid.clone(),
            self.cur.clone(),
            self.done.clone(),
            self.rng.clone(),
        ]
    }

    fn from_slice(v: &[Tensor]) -> LoopState {
        LoopState {
            step: v[0].clone(),
            cache: v[1].clone(),
            tokens: v[2].clone(),
            pending: v[3].clone(),
            position: v[4].clone(),
            key_valid: v[5].clone(),
            cur: v[6].clone(),
            done: v[7].clone(),
            rng: v[8].clone(),
        }
    }
}

/// What every iteration reads but does not change.
struct Fixed<'a> {
    cfg: &'a ModelConfig,
    greedy: bool,
    /// Iterations to run at most in this call (s32, at most `chunk`).
    count: Tensor,
    /// Stop rows at EOT (pred).
    stop: Tensor,
    sample: SampleArgs,
    /// The weights as stored (f32 or 16-bit); converted to f32 inside the loop so that
    /// the 16-bit ones are what each iteration reads.
    params: Vec<Tensor>,
}

impl Fixed<'_> {
    const SCALARS: usize = 5;

    fn to_vec(&self) -> Vec<Tensor> {
        let mut v = vec![self.count.clone(), self.stop.clone()];
        v.extend(self.sample.tensors());
        v.extend(self.params.iter().cloned());
        v
    }

    /// The same settings as seen inside a loop region (its parameters).
    fn inside<'c>(cfg: &'c ModelConfig, greedy: bool, v: &[Tensor]) -> Fixed<'c> {
        Fixed {
            cfg,
            greedy,
            count: v[0].clone(),
            stop: v[1].clone(),
            sample: SampleArgs::from_tensors(&v[2..Self::SCALARS]),
            params: v[Self::SCALARS..].to_vec(),
        }
    }

    /// The model parameters in f32, by name.
    fn model(&self) -> Params {
        let names: Vec<String> = param_specs(self.cfg).into_iter().map(|s| s.name).collect();
        let f32s = self.params.iter().map(|t| t.convert(DType::F32)).collect();
        Params::from_tensors(&names, f32s)
    }
}

/// The decode-loop program for `batch` rows, `slots` cache slots and up to `chunk`
/// tokens per call. Arguments: the parameters (stored as `weights`), `cache` (donated),
/// `pending [B]`, `position [B]`, `key_valid [B, M]`, `cur`, `done [B]`, `rng u64[2]`,
/// `count`, `stop_at_eot`, then the sampling arguments ([`SampleArgs`]). Results:
/// `tokens [B, chunk]`, then the new `cache`, `pending`, `position`, `key_valid`, `cur`,
/// `done`, `rng` (the next call's arguments) and `steps` (iterations run).
pub fn decode_loop_program(
    cfg: &ModelConfig,
    batch: i64,
    slots: i64,
    chunk: i64,
    greedy: bool,
    weights: DType,
) -> Result<Function> {
    let b = Builder::new(if greedy { "decode_loop" } else { "sample_loop" });
    let params = Params::declare(&b, &param_specs(cfg), weights);
    let cache_arg = params.names().len();
    let s32 = |dims: Vec<i64>| Shape::new(DType::S32, dims);
    let init = LoopState {
        step: b.scalar(0.0, DType::S32),
        cache: b.parameter("cache", cache_shape(cfg, batch, slots)),
        tokens: b.splat(-1.0, &s32(vec![batch, chunk])),
        pending: b.parameter("pending", s32(vec![batch])),
        position: b.parameter("position", s32(vec![batch])),
        key_valid: b.parameter("key_valid", s32(vec![batch, slots])),
        cur: b.parameter("cur", s32(vec![])),
        done: b.parameter("done", Shape::new(DType::Pred, vec![batch])),
        rng: b.parameter("rng", Shape::new(DType::U64, vec![2])),
    };
    let fixed = Fixed {
        cfg,
        greedy,
        count: b.parameter("count", s32(vec![])),
        stop: b.parameter("stop_at_eot", Shape::scalar(DType::Pred)),
        sample: SampleArgs::declare(&b),
        params: params.tensors(),
    };
    let out = b.while_loop(
        &init.to_vec(),
        &fixed.to_vec(),
        |_, v| {
            go_on(
                &LoopState::from_slice(v),
                &Fixed::inside(cfg, greedy, &v[LoopState::LEN..]),
            )
        },
        |_, v| {
            let fixed = Fixed::inside(cfg, greedy, &v[LoopState::LEN..]);
            iteration(&LoopState::from_slice(v), &fixed).to_vec()
        },
    );
    let last = LoopState::from_slice(&out);
    let mut f = b.build_named(&[
        ("tokens", &last.tokens),
        ("cache", &last.cache),
        ("pending", &last.pending),
        ("position", &last.position),
        ("key_valid", &last.key_valid),
        ("cur", &last.cur),
        ("done", &last.done),
        ("rng", &last.rng),
        ("steps", &last.step),
    ])?;
    f.donate(cache_arg, 1).map_err(|e| anyhow!(e))?;
    Ok(f)
}

/// The loop condition: iterations left in this call, and a row still going.
fn go_on(s: &LoopState, fixed: &Fixed) -> Tensor {
    let all_done = s.done.reduce_and(&[0]);
    s.step.lt(&fixed.count).and(&all_done.not())
}

/// One step of generation: decode the pending token, pick the next one, record it.
fn iteration(s: &LoopState, fixed: &Fixed) -> LoopState {
    let b = s.step.builder();
    let (logits, next) = decode_phase(s, fixed);
    let v = fixed.cfg.vocab_size;
    let (picked, rng) =
        pick_on_device(&logits, fixed.greedy, &banned_ids(v), &fixed.sample, &s.rng);
    let id = |x: i64| b.scalar(x as f64, DType::S32);
    // Finished rows feed SEP and record nothing (-1), as on the host.
    let token = s.done.select(&id(v - 5), &picked);
    let shown = s.done.select(&id(-1), &picked);
    let rows = shown.dims()[0];
    let tokens = s
        .tokens
        .dynamic_update_slice(&shown.reshape(&[rows, 1]), &[id(0), s.step.clone()]);
    let ended = fixed.stop.and(&token.eq(&id(v - 1)));
    LoopState {
        step: s.step.add(&id(1)),
        tokens,
        pending: token,
        done: s.done.or(&ended),
        rng,
        ..next
    }
}

/// Marks the pending token's slot valid, runs the decode step on it and advances the
/// position (clamped to the context) and the slot. Returns the next logits `[B, V]` and
/// the state with the new cache, key_valid, position and cur.
fn decode_phase(s: &LoopState, fixed: &Fixed) -> (Tensor, LoopState) {
    let b = s.step.builder();
    let rows = s.pending.dims()[0];
    let s32 = |x: i64| b.scalar(x as f64, DType::S32);
    let ones = b.splat(1.0, &Shape::new(DType::S32, vec![rows, 1]));
    let key_valid = s
        .key_valid
        .dynamic_update_slice(&ones, &[s32(0), s.cur.clone()]);
    let valid = key_valid.ne(&s32(0));
    let column = |t: &Tensor| t.reshape(&[rows, 1]);
    let (logits, cache) = decode_step(
        fixed.cfg,
        &fixed.model(),
        &s.cache,
        &column(&s.pending),
        &column(&s.position),
        &valid,
        &s.cur,
    );
    let position = s.position.add(&s32(1)).min(&s32(fixed.cfg.context - 1));
    let next = LoopState {
        step: s.step.clone(),
        cache,
        tokens: s.tokens.clone(),
        pending: s.pending.clone(),
        position,
        key_valid,
        cur: s.cur.add(&s32(1)),
        done: s.done.clone(),
        rng: s.rng.clone(),
    };
    (logits, next)
}

/// The host's copy of what one chunk hands to the next (the cache stays on the device).
pub(crate) struct ChunkState {
    pub pending: Literal,
    pub position: Literal,
    pub key_valid: Literal,
    pub cur: Literal,
    pub done: Literal,
    pub rng: Literal,
}

impl ChunkState {
    /// The program's arguments after the cache, in order.
    pub fn args(&self, count: i64, stop_at_eot: bool, sample: &[Literal]) -> Vec<Literal> {
        let mut v = vec![
            self.pending.clone(),
            self.position.clone(),
            self.key_valid.clone(),
            self.cur.clone(),
            self.done.clone(),
            self.rng.clone(),
            Literal::scalar(count as i32),
            Literal::scalar(stop_at_eot),
        ];
        v.extend(sample.iter().cloned());
        v
    }

    /// Whether every row has stopped.
    pub fn all_done(&self) -> Result<bool> {
        Ok(self.done.to_vec::<bool>()?.iter().all(|d| *d))
    }
}

/// A chunk's results on the host: `tokens [B, chunk]` (-1: none), the next state and
/// the number of iterations run.
pub(crate) struct ChunkOutput {
    pub tokens: Literal,
    pub state: ChunkState,
    pub steps: i64,
}

impl ChunkOutput {
    /// From the program's results other than the cache (tokens, pending, position,
    /// key_valid, cur, done, rng, steps).
    pub fn from_results(mut r: Vec<Literal>) -> Result<ChunkOutput> {
        if r.len() != 8 {
            return Err(anyhow!(
                "the decode loop returned {} values, not 8",
                r.len()
            ));
        }
        let steps = r.pop().expect("8 values").to_vec::<i32>()?;
        let mut r = r.into_iter();
        let mut next = || r.next().expect("8 values");
        Ok(ChunkOutput {
            tokens: next(),
            state: ChunkState {
                pending: next(),
                position: next(),
                key_valid: next(),
                cur: next(),
                done: next(),
                rng: next(),
            },
            steps: steps.first().copied().unwrap_or(0) as i64,
        })
    }
}

/// Program cache keys: `(rows, slots, chunk, greedy)` for the loop, `(rows, greedy)` for
/// the first pick.
pub(crate) type LoopKey = (i64, i64, i64, bool);
pub(crate) type PickKey = (i64, bool);

/// What stays the same from chunk to chunk of one generation.
struct Chunks<'a> {
    key: LoopKey,
    stop_at_eot: bool,
    sample: &'a [Literal],
}

impl Generator<'_> {
    /// Generation with the loop on the device, `chunk` tokens per call at most (see the
    /// module doc). Same results as the host loop for greedy; sampling draws from the
    /// device generator.
    pub(super) fn generate_on_device(
        &mut self,
        batch: &HostBatch,
        opts: &GenerateOptions,
        chunk: usize,
        on_token: &mut dyn FnMut(usize, u32),
    ) -> Result<Generation> {
        let pre = self.run_prefill(batch, opts.max_new_tokens)?;
        let mut tokens = vec![Vec::new(); batch.batch];
        if pre.steps > 0 {
            let greedy = opts.strategy == Strategy::Greedy;
            let sample = SampleArgs::values(&opts.strategy);
            let state = self.first_token(&pre, opts, &sample, &mut tokens, on_token)?;
            let key = (batch.batch as i64, pre.slots, chunk.max(1) as i64, greedy);
            let run = Chunks {
                key,
                stop_at_eot: opts.stop_at_eot,
                sample: &sample,
            };
            self.run_chunks(&run, pre.cache, state, pre.steps - 1, &mut tokens, on_token)?;
        }
        Ok(Generation {
            tokens,
            step_logits: Vec::new(),
        })
    }

    /// Picks and streams each row's first token from the prefill's logits; returns the
    /// loop's starting state.
    fn first_token(
        &mut self,
        pre: &Prefilled,
        opts: &GenerateOptions,
        sample: &[Literal],
        tokens: &mut [Vec<u32>],
        on_token: &mut dyn FnMut(usize, u32),
    ) -> Result<ChunkState> {
        let greedy = opts.strategy == Strategy::Greedy;
        let (first, rng) = self.pick_first(&pre.logits, greedy, opts.seed, sample)?;
        let eot = self.cfg.vocab_size as i32 - 1;
        let done: Vec<bool> = first
            .iter()
            .map(|&t| opts.stop_at_eot && t == eot)
            .collect();
        for (r, &t) in first.iter().enumerate() {
            tokens[r].push(t as u32);
            on_token(r, t as u32);
        }
        let bsz = first.len() as i64;
        Ok(ChunkState {
            pending: Literal::from_slice(&[bsz], &first)?,
            position: Literal::from_slice(&[bsz], &pre.next_pos)?,
            key_valid: Literal::from_slice(&[bsz, pre.slots], &pre.key_valid)?,
            cur: Literal::scalar(pre.first_slot as i32),
            done: Literal::from_slice(&[bsz], &done)?,
            rng,
        })
    }

    /// Runs the loop chunk by chunk until `remaining` tokens were generated or every
    /// row is done, streaming each chunk's tokens.
    fn run_chunks(
        &mut self,
        run: &Chunks,
        mut cache: Vec<Buffer>,
        mut state: ChunkState,
        mut remaining: i64,
        tokens: &mut [Vec<u32>],
        on_token: &mut dyn FnMut(usize, u32),
    ) -> Result<()> {
        while remaining > 0 && !state.all_done()? {
            let args = state.args(remaining.min(run.key.2), run.stop_at_eot, run.sample);
            let (out, next_cache) = self.run_chunk(run.key, cache, &args)?;
            cache = next_cache;
            report(&out.tokens, tokens, on_token)?;
            if out.steps <= 0 {
                break;
            }
            remaining -= out.steps;
            state = out.state;
        }
        Ok(())
    }

    /// The first token of each row from the prefill's logits, and the generator state
    /// after it.
    fn pick_first(
        &mut self,
        logits: &Literal,
        greedy: bool,
        seed: u64,
        sample: &[Literal],
    ) -> Result<(Vec<i32>, Literal)> {
        let bsz = logits.dims()[0];
        let key = (bsz, greedy);
        if !self.picks.contains_key(&key) {
            let f = pick_program(bsz, self.cfg.vocab_size, greedy)?;
            self.picks.insert(key, self.compile(f)?);
        }
        let mut args = vec![logits.clone(), rng_state(seed)];
        args.extend(sample.iter().cloned());
        let mut out = self.picks[&key].run_literals(&args)?.into_iter();
        let (Some(token), Some(rng)) = (out.next(), out.next()) else {
            return Err(anyhow!("the pick program returned too few values"));
        };
        Ok((token.to_vec::<i32>()?, rng))
    }

    /// Runs one chunk of the loop on the (donated) cache; returns its results and the
    /// new cache.
    fn run_chunk(
        &mut self,
        key: LoopKey,
        cache: Vec<Buffer>,
        args: &[Literal],
    ) -> Result<(ChunkOutput, Vec<Buffer>)> {
        if !self.loops.contains_key(&key) {
            let (bsz, slots, chunk, greedy) = key;
            let f = decode_loop_program(&self.cfg, bsz, slots, chunk, greedy, self.weights)?;
            self.loops.insert(key, self.compile(f)?);
        }
        let program = &self.loops[&key];
        let out = self.execute(program, Some(&cache), args)?;
        drop(cache);
        let mut results = out
            .into_iter()
            .next()
            .ok_or_else(|| anyhow!("the decode loop ran on no device"))?;
        if results.len() != 9 {
            return Err(anyhow!("the decode loop returned {} values", results.len()));
        }
        let new_cache = results.remove(1);
        let lits = results
            .iter()
            .map(|b| b.to_literal().map_err(Into::into))
            .collect::<Result<Vec<_>>>()?;
        Ok((ChunkOutput::from_results(lits)?, vec![new_cache]))
    }
}

/// Streams a chunk's tokens `[B, chunk]` step by step, row by row (the host loop's
/// order), skipping the -1 of rows that produced none.
fn report(
    chunk: &Literal,
    tokens: &mut [Vec<u32>],
    on_token: &mut dyn FnMut(usize, u32),
) -> Result<()> {
    let ids = chunk.to_vec::<i32>()?;
    let width = chunk.dims().get(1).copied().unwrap_or(0) as usize;
    for j in 0..width {
        for (r, row) in tokens.iter_mut().enumerate() {
            let id = ids[r * width + j];
            if id >= 0 {
                row.push(id as u32);
                on_token(r, id as u32);
            }
        }
    }
    Ok(())
}
