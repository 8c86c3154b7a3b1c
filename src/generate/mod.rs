//! Text generation with a device-resident KV cache: one compiled prefill program per
//! prompt size, then the generation loop, compiled once per cache size and reused.
//!
//! The loop runs on the device by default ([`LoopMode::Device`], [`decode_loop`]): one
//! call of a compiled `while` loop generates a chunk of tokens (the token choice
//! included), so the host streams text chunk by chunk and never downloads logits. The
//! host loop ([`LoopMode::Host`]: one decode call per token, the token chosen on the
//! host from downloaded logits) remains for what needs every step's logits
//! (`keep_logits`), for meshes, for 16-bit weights ([`Generator::with_weights`]), and for
//! beam search ([`beam`]). Greedy gives the same
//! tokens either way; sampling on the device uses the device's random bits, so a seeded
//! sample is reproducible but differs from the host loop's.
//!
//! Rows of a batch are independent: a left-padded row gets positions counted from its
//! first real token and its padding takes no expert slots, so it generates exactly what
//! it generates alone.

pub mod beam;
pub mod decode_loop;
pub mod device_pick;
pub mod sampling;

use crate::device::{shard_of, Device, Program};
use crate::model::decode::{cache_shape, decode_step, prefill};
use crate::model::gptsan::Params;
use crate::model::inputs::{HostBatch, PositionRule};
use crate::model::params::{param_sharding, param_specs};
use crate::model::programs::{declare_batch, on_mesh};
use crate::model::ModelConfig;
use anyhow::{anyhow, bail, Result};
use hlo::{Builder, DType, Function, Literal, Mesh, Shape};
use runtime::Buffer;
use sampling::{pick, Rng, Strategy};
use std::collections::HashMap;

/// What to generate.
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    pub max_new_tokens: usize,
    pub strategy: Strategy,
    pub seed: u64,
    /// Stop a row at the end-of-text token.
    pub stop_at_eot: bool,
}

/// Where the generation loop runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoopMode {
    /// One decode program call per token; the token is chosen on the host.
    Host,
    /// Up to `chunk` tokens per call of one compiled while loop; tokens are chosen on
    /// the device and streamed a chunk at a time.
    Device { chunk: usize },
}

/// Tokens per decode-loop call by default: long enough that the per-call cost (launch,
/// transfers of the small state) vanishes, short enough to stream text smoothly.
pub const DEFAULT_CHUNK: usize = 16;

/// The prefill program: the prompt in, the last position's logits and the cache out.
pub fn prefill_program(
    cfg: &ModelConfig,
    batch: i64,
    len: i64,
    spout: bool,
    slots: i64,
    weights: DType,
) -> Result<Function> {
    let b = Builder::new("prefill");
    let params = Params::declare_stored(&b, &param_specs(cfg), weights);
    // The labels argument is declared but unused, so every program built on
    // `declare_batch` takes the batch in the same order.
    let (mut inputs, _labels) = declare_batch(&b, cfg, batch, len, spout);
    inputs.pads_take_capacity = false;
    let (logits, cache) = prefill(cfg, &params, &inputs, slots);
    Ok(b.build_named(&[("logits", &logits), ("cache", &cache)])?)
}

/// The one-token decode program. The cache argument is donated to the new cache.
pub fn decode_program(
    cfg: &ModelConfig,
    batch: i64,
    slots: i64,
    weights: DType,
) -> Result<Function> {
    decode_function(cfg, batch, slots, false, weights)
}

/// The decode program; with `reorder`, a last argument `parent [B]` (s32) first replaces
/// every cache row by row `parent[b]` (beam search: hypotheses follow their parents).
pub(crate) fn decode_function(
    cfg: &ModelConfig,
    batch: i64,
    slots: i64,
    reorder: bool,
    weights: DType,
) -> Result<Function> {
    let b = Builder::new(if reorder { "beam_decode" } else { "decode" });
    let params = Params::declare_stored(&b, &param_specs(cfg), weights);
    let mut cache = b.parameter("cache", cache_shape(cfg, batch, slots));
    let token = b.parameter("token", Shape::new(DType::S32, vec![batch, 1]));
    let position = b.parameter("position", Shape::new(DType::S32, vec![batch, 1]));
    let key_valid = b.parameter("key_valid", Shape::new(DType::S32, vec![batch, slots]));
    let cur = b.parameter("cur", Shape::scalar(DType::S32));
    if reorder {
        let parent = b.parameter("parent", Shape::new(DType::S32, vec![batch]));
        cache = reorder_rows(&cache, &parent);
    }
    let valid = key_valid.ne(&b.scalar(0.0, DType::S32));
    let (logits, new_cache) = decode_step(cfg, &params, &cache, &token, &position, &valid, &cur);
    let mut f = b.build_named(&[("logits", &logits), ("cache", &new_cache)])?;
    let cache_arg = params.names().len();
    f.donate(cache_arg, 1).map_err(|e| anyhow!(e))?;
    Ok(f)
}

/// The cache `[L, 2, B, H, M, dh]` with batch row b replaced by row `parent[b]`.
fn reorder_rows(cache: &hlo::Tensor, parent: &hlo::Tensor) -> hlo::Tensor {
    let mut slice_sizes = cache.dims().to_vec();
    slice_sizes[2] = 1;
    cache.gather(
        parent,
        hlo::ir::GatherDims {
            offset_dims: vec![0, 1, 3, 4, 5],
            collapsed_slice_dims: vec![2],
            start_index_map: vec![2],
            index_vector_dim: 1,
            slice_sizes,
        },
    )
}

/// Holds the parameters on the device(s) and the compiled programs.
pub struct Generator<'d> {
    device: &'d Device,
    cfg: ModelConfig,
    /// `params[device][i]`: parameter i (its piece, on a mesh) on each device.
    params: Vec<Vec<Buffer>>,
    /// Programs run SPMD over this mesh (experts and heads split over `model`).
    mesh: Option<Mesh>,
    /// How the weights are kept on the device (f32, or bf16/f16: half the bytes read
    /// per token); the programs compute in f32 either way.
    weights: DType,
    prefill: HashMap<(i64, i64, bool, i64), Program>,
    decode: HashMap<(i64, i64, bool), Program>,
    loops: HashMap<decode_loop::LoopKey, Program>,
    picks: HashMap<decode_loop::PickKey, Program>,
    mode: LoopMode,
}

/// The state after a prompt's prefill.
pub(crate) struct Prefilled {
    /// The KV cache on the device (a piece per device on a mesh).
    pub cache: Vec<Buffer>,
    /// `[B, V]` logits of each row's next token.
    pub logits: Literal,
    /// `[B, slots]`: 1 where a cache slot holds a real key.
    pub key_valid: Vec<i32>,
    /// The position of each row's next token.
    pub next_pos: Vec<i32>,
    pub slots: i64,
    /// The cache slot of the first generated token.
    pub first_slot: i64,
    /// How many tokens fit (max_new_tokens, or fewer when the context is full).
    pub steps: i64,
}

/// Generated tokens per row, and (optionally) the logits of every step.
pub struct Generation {
    pub tokens: Vec<Vec<u32>>,
    /// `[step][row]` logits, kept when asked for (tests compare them).
    pub step_logits: Vec<Vec<Vec<f32>>>,
}

impl<'d> Generator<'d> {
    pub fn new(device: &'d Device, cfg: &ModelConfig, params: &[Literal]) -> Result<Generator<'d>> {
        Generator::on_mesh(device, cfg, params, None)
    }

    /// A generator keeping its weights on the device as `weights` (f32, bf16 or f16).
    pub fn with_weights(
        device: &'d Device,
        cfg: &ModelConfig,
        params: &[Literal],
        mesh: Option<Mesh>,
        weights: DType,
    ) -> Result<Generator<'d>> {
        let mut g = if params.iter().all(|p| p.dtype() == weights) {
            Generator::on_mesh(device, cfg, params, mesh)?
        } else {
            let stored: Vec<Literal> = params
                .iter()
                .map(|p| p.convert_float(weights))
                .collect::<Result<_, _>>()?;
            Generator::on_mesh(device, cfg, &stored, mesh)?
        };
        g.weights = weights;
        if weights != DType::F32 {
            // XLA CPU computes a gather of 16-bit floats in f32 by converting its whole
            // operand first; inside a while loop that conversion of every expert table
            // does not depend on the loop, so XLA hoists it and keeps all of them in f32
            // (10.7 GB more for the 2.8B model, which then runs out of memory). One decode
            // call per token converts only the rows it gathers.
            g.mode = LoopMode::Host;
        }
        Ok(g)
    }

    /// A generator whose programs run over `mesh` (None or one device: plain).
    pub fn on_mesh(
        device: &'d Device,
        cfg: &ModelConfig,
        params: &[Literal],
        mesh: Option<Mesh>,
    ) -> Result<Generator<'d>> {
        let mesh = mesh.filter(|m| m.device_count() > 1);
        let specs = param_specs(cfg);
        let per_device = |d: usize| -> Result<Vec<Buffer>> {
            params
                .iter()
                .zip(&specs)
                .map(|(p, s)| match &mesh {
                    Some(m) => device.upload(&shard_of(p, &param_sharding(s, m), m, d)?, d),
                    None => device.upload(p, 0),
                })
                .collect()
        };
        let devices = mesh.as_ref().map_or(1, |m| m.device_count() as usize);
        let params = (0..devices).map(per_device).collect::<Result<_>>()?;
        Ok(Generator {
            device,
            cfg: cfg.clone(),
            params,
            mesh,
            weights: DType::F32,
            prefill: HashMap::new(),
            decode: HashMap::new(),
            loops: HashMap::new(),
            picks: HashMap::new(),
            mode: LoopMode::Device {
                chunk: DEFAULT_CHUNK,
            },
        })
    }

    /// How the weights are kept on the device (programs over them must declare this).
    /// The device the weights and programs live on.
    pub fn device(&self) -> &'d Device {
        self.device
    }

    pub fn weights(&self) -> DType {
        self.weights
    }

    /// Runs the prompt through the prefill program, leaving room for up to
    /// `max_new_tokens` generated tokens (fewer when the context is shorter).
    pub(crate) fn run_prefill(
        &mut self,
        batch: &HostBatch,
        max_new_tokens: usize,
    ) -> Result<Prefilled> {
        let cfg = self.cfg.clone();
        let width = if cfg.has_spout() { cfg.spout_width } else { 0 };
        batch.validate(cfg.vocab_size, cfg.context, width)?;
        let (bsz, len) = (batch.batch as i64, batch.len as i64);
        let past = batch.spout.is_some() as i64;
        let room = cfg.context - len - past;
        if room <= 0 {
            bail!(
                "the prompt of {len} tokens leaves no room in the context of {}",
                cfg.context
            );
        }
        let new = (max_new_tokens as i64).min(room);
        let slots = past + len + new;

        let key = (bsz, len, batch.spout.is_some(), slots);
        if !self.prefill.contains_key(&key) {
            let f = prefill_program(&cfg, bsz, len, batch.spout.is_some(), slots, self.weights)?;
            self.prefill.insert(key, self.compile(f)?);
        }

        let positions = batch.positions(cfg.context, PositionRule::FirstToken);
        let mut args: Vec<Literal> = Vec::new();
        let dims = [bsz, len];
        for rows in [
            &batch.input_ids[..],
            &positions[..],
            &batch.attention_mask[..],
            &batch.token_type_ids[..],
        ] {
            args.push(Literal::from_slice(&dims, rows)?);
        }
        args.push(Literal::from_slice(
            &dims,
            &vec![-100i32; (bsz * len) as usize],
        )?);
        if let Some(s) = &batch.spout {
            args.push(Literal::from_slice(&[bsz, cfg.spout_width], s)?);
        }
        let (logits, cache) = self.call(&self.prefill[&key], None, &args)?;

        // Which cache slots hold real keys: the spout, the prompt's real tokens.
        let m = slots as usize;
        let mut key_valid = vec![0i32; batch.batch * m];
        let mut next_pos = vec![0i32; batch.batch];
        for r in 0..batch.batch {
            if past > 0 {
                key_valid[r * m] = 1;
            }
            for t in 0..batch.len {
                key_valid[r * m + past as usize + t] = batch.attention_mask[r * batch.len + t];
            }
            next_pos[r] =
                (positions[r * batch.len + batch.len - 1] + 1).min(cfg.context as i32 - 1);
        }
        Ok(Prefilled {
            cache,
            logits,
            key_valid,
            next_pos,
            slots,
            first_slot: past + len,
            steps: new,
        })
    }

    /// The decode program for `bsz` rows and `slots` cache slots (`reorder`: with the
    /// `parent` argument), compiled on first use.
    pub(crate) fn decode_for(&mut self, bsz: i64, slots: i64, reorder: bool) -> Result<&Program> {
        let key = (bsz, slots, reorder);
        if !self.decode.contains_key(&key) {
            let f = decode_function(&self.cfg, bsz, slots, reorder, self.weights)?;
            self.decode.insert(key, self.compile(f)?);
        }
        Ok(&self.decode[&key])
    }

    /// Chooses where the generation loop runs (the device by default).
    pub fn set_loop_mode(&mut self, mode: LoopMode) {
        self.mode = mode;
    }

    pub fn loop_mode(&self) -> LoopMode {
        self.mode
    }

    /// Generates up to `opts.max_new_tokens` per row. `on_token(row, id)` sees every
    /// token as it is produced (for streaming): one at a time on the host loop, a chunk
    /// at a time on the device loop. `keep_logits` (every step's logits, for tests)
    /// and a mesh use the host loop.
    pub fn generate(
        &mut self,
        batch: &HostBatch,
        opts: &GenerateOptions,
        keep_logits: bool,
        mut on_token: impl FnMut(usize, u32),
    ) -> Result<Generation> {
        let _awake = self.device.keep_cores_awake();
        match self.mode {
            LoopMode::Device { chunk } if !keep_logits && self.mesh.is_none() => {
                self.generate_on_device(batch, opts, chunk, &mut on_token)
            }
            _ => self.generate_on_host(batch, opts, keep_logits, &mut on_token),
        }
    }

    /// Generation with one decode call per token, the token chosen on the host.
    fn generate_on_host(
        &mut self,
        batch: &HostBatch,
        opts: &GenerateOptions,
        keep_logits: bool,
        on_token: &mut dyn FnMut(usize, u32),
    ) -> Result<Generation> {
        let cfg = self.cfg.clone();
        let Prefilled {
            mut cache,
            mut logits,
            mut key_valid,
            mut next_pos,
            slots,
            first_slot,
            steps: new,
        } = self.run_prefill(batch, opts.max_new_tokens)?;
        let bsz = batch.batch as i64;
        let m = slots as usize;
        let v = cfg.vocab_size as u32;
        let (sep, not, eot) = (v - 5, v - 4, v - 1);
        self.decode_for(bsz, slots, false)?;

        let mut rng = Rng::new(opts.seed);
        let mut tokens = vec![Vec::new(); batch.batch];
        let mut done = vec![false; batch.batch];
        let mut step_logits = Vec::new();
        for step in 0..new {
            let flat = logits.to_vec::<f32>()?;
            let rows: Vec<&[f32]> = flat.chunks(v as usize).collect();
            if keep_logits {
                step_logits.push(rows.iter().map(|r| r.to_vec()).collect());
            }
            let mut next = vec![0i32; batch.batch];
            for r in 0..batch.batch {
                let id = if done[r] {
                    sep
                } else {
                    pick(rows[r], &opts.strategy, &[sep, not], &mut rng)
                };
                if !done[r] {
                    tokens[r].push(id);
                    on_token(r, id);
                    done[r] = opts.stop_at_eot && id == eot;
                }
                next[r] = id as i32;
            }
            if done.iter().all(|d| *d) || step + 1 == new {
                break;
            }
            let cur = (first_slot + step) as usize;
            for r in 0..batch.batch {
                key_valid[r * m + cur] = 1;
            }
            let step_args = [
                Literal::from_slice(&[bsz, 1], &next)?,
                Literal::from_slice(&[bsz, 1], &next_pos)?,
                Literal::from_slice(&[bsz, slots], &key_valid)?,
                Literal::scalar(cur as i32),
            ];
            (logits, cache) = self.run_decode(bsz, slots, false, cache, &step_args)?;
            for p in next_pos.iter_mut() {
                *p = (*p + 1).min(cfg.context as i32 - 1);
            }
        }
        Ok(Generation {
            tokens,
            step_logits,
        })
    }

    /// Runs a decode program (compiled by [`Self::decode_for`]) on the cache and the
    /// step's arguments; returns the next logits `[B, V]` and the new cache.
    pub(crate) fn run_decode(
        &self,
        bsz: i64,
        slots: i64,
        reorder: bool,
        cache: Vec<Buffer>,
        step_args: &[Literal],
    ) -> Result<(Literal, Vec<Buffer>)> {
        let program = self
            .decode
            .get(&(bsz, slots, reorder))
            .ok_or_else(|| anyhow!("the decode program for {bsz} rows was not compiled"))?;
        self.call(program, Some(cache), step_args)
    }

    /// Compiles `f` for this generator's device(s) (also used by the server's programs).
    pub(crate) fn compile(&self, f: Function) -> Result<Program> {
        match &self.mesh {
            Some(m) => self.device.compile(&on_mesh(f, &self.cfg, m)),
            None => self.device.compile(&f),
        }
    }

    /// Runs a program that takes the parameters then `extra` (a forward or inference
    /// program compiled by [`Self::compile`]); returns every output of the first device.
    /// The server's one-forward requests share the generator's parameters this way.
    pub(crate) fn run_outputs(&self, program: &Program, extra: &[Literal]) -> Result<Vec<Literal>> {
        let out = self.execute(program, None, extra)?;
        let first = out
            .into_iter()
            .next()
            .ok_or_else(|| anyhow!("{} ran on no device", program.function.name))?;
        first
            .into_iter()
            .map(|b| b.to_literal().map_err(Into::into))
            .collect()
    }

    /// Runs `program` on every device with the parameters, then `cache` (when given),
    /// then `extra` uploaded; returns each device's outputs.
    fn execute(
        &self,
        program: &Program,
        cache: Option<&[Buffer]>,
        extra: &[Literal],
    ) -> Result<Vec<Vec<Buffer>>> {
        let first_extra = self.params[0].len() + cache.is_some() as usize;
        let uploaded: Vec<Vec<Buffer>> = extra
            .iter()
            .enumerate()
            .map(|(k, lit)| program.upload_arg(first_extra + k, lit))
            .collect::<Result<_>>()?;
        let lists: Vec<Vec<&Buffer>> = (0..self.params.len())
            .map(|d| {
                let mut l: Vec<&Buffer> = self.params[d].iter().collect();
                l.extend(cache.map(|c| &c[d]));
                l.extend(uploaded.iter().map(|u| &u[d]));
                l
            })
            .collect();
        program.run_per_device(&lists)
    }

    /// Runs a prefill or decode program: the parameters, then the (donated) cache when
    /// given, then `extra`. Returns the logits and the new cache (a piece per device).
    pub(crate) fn call(
        &self,
        program: &Program,
        cache: Option<Vec<Buffer>>,
        extra: &[Literal],
    ) -> Result<(Literal, Vec<Buffer>)> {
        let out = self.execute(program, cache.as_deref(), extra)?;
        drop(cache);
        let name = &program.function.name;
        let mut new_cache = Vec::new();
        let mut logits = None;
        for (d, mut res) in out.into_iter().enumerate() {
            new_cache.push(
                res.pop()
                    .ok_or_else(|| anyhow!("{name} returned no cache"))?,
            );
            if d == 0 {
                let l = res
                    .pop()
                    .ok_or_else(|| anyhow!("{name} returned no logits"))?;
                logits = Some(l.to_literal()?);
            }
        }
        let logits = logits.ok_or_else(|| anyhow!("{name} ran on no device"))?;
        Ok((logits, new_cache))
    }
}
