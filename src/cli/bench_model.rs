//! `gptsan bench train|forward|generate`: model throughput on the current device, with
//! compile times (SPEC section 9). Random weights and random token ids: speed does not
//! depend on the values.

use crate::device::{Device, Program};
use crate::generate::sampling::Strategy;
use crate::generate::{GenerateOptions, Generator, LoopMode};
use crate::model::inputs::HostBatch;
use crate::model::params::{param_specs, Init, ParamSpec};
use crate::model::precision::Precision;
use crate::model::programs::{forward_args, forward_program, ForwardShape, FORWARD_INPUTS};
use crate::model::ModelConfig;
use crate::rng::Rng;
use crate::train::run::{init_params, load_configs};
use crate::train::step::{train_step_program, StepSpec};
use anyhow::{Context, Result};
use hlo::{DType, Literal, Shape};
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct ModelArgs {
    #[arg(long, default_value = "configs/small.toml")]
    pub config: PathBuf,
    #[arg(long, default_value_t = 8)]
    pub batch: i64,
    /// Tokens per row (train and forward) or prompt length (generate).
    #[arg(long, default_value_t = 256)]
    pub len: i64,
    /// Measured repetitions (steps, forward calls, or new tokens for generate).
    #[arg(long, default_value_t = 5)]
    pub repeat: usize,
    #[arg(long)]
    pub plugin: Option<String>,
    /// `train`: bf16/f16 compute from f32 master weights (f16 with loss scaling);
    /// `generate`: weights kept on the device as bf16/f16 (compute stays f32).
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    pub precision: Precision,
    /// `generate`: time the host loop (one decode call per token, the token chosen on
    /// the host) instead of the device loop that `gptsan generate` uses, to compare.
    #[arg(long)]
    pub host_loop: bool,
    /// `generate`: timed generations after the first (compiling) one; the fastest is
    /// reported, as the reference's harness reports its fastest run.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub runs: u32,
}

/// Refuses a precision the measured program does not have yet.
fn f32_only(a: &ModelArgs, what: &str) -> Result<()> {
    if a.precision != Precision::F32 {
        anyhow::bail!(
            "bench {what} runs in f32 only for now; --precision {} applies to bench train and generate",
            a.precision.name()
        );
    }
    Ok(())
}

fn random_batch(vocab: i64, b: i64, t: i64, seed: u64) -> HostBatch {
    let mut rng = Rng::new(seed);
    let n = (b * t) as usize;
    HostBatch {
        batch: b as usize,
        len: t as usize,
        input_ids: (0..n)
            .map(|_| (rng.next_u64() % (vocab as u64 - 8)) as i32)
            .collect(),
        attention_mask: vec![1; n],
        token_type_ids: vec![0; n],
        spout: None,
    }
}

/// Times the compiled train step (AdamW, the original's loss).
pub fn train(a: ModelArgs) -> Result<()> {
    let (cfg, tcfg) = load_configs(&a.config)?;
    let device = Device::open(a.plugin.as_deref(), None)?;
    let spec = StepSpec::benchmark(a.batch, a.len, &tcfg, a.precision.training_compute()?);
    let step = train_step_program(&cfg, &spec)?;
    let (program, compile) = compile_timed(&device, &step)?;
    let specs = param_specs(&cfg);
    let mut args: Vec<Literal> = init_params(&specs, 1);
    for s in &specs {
        for d in tcfg.optimizer.state_dims(&s.dims) {
            args.push(Literal::zeros(Shape::new(DType::F32, d)));
        }
    }
    if spec.scales_loss() {
        args.extend(spec.loss_scale.initial_state());
    }
    args.push(Literal::scalar(1.0f32));
    args.push(Literal::scalar(1e-3f32));
    args.push(Literal::from_slice(&[2], &[1u64, 2])?);
    let batch = random_batch(cfg.vocab_size, a.batch, a.len, 7);
    let positions: Vec<i32> = (0..a.batch).flat_map(|_| 0..a.len as i32).collect();
    args.extend(forward_args(&[], &batch, &positions, &batch.input_ids)?);
    let mut bufs: Vec<runtime::Buffer> = args
        .iter()
        .map(|l| device.upload(l, 0))
        .collect::<Result<_>>()?;
    // As in training: parameters, optimizer state and the rng are donated and replaced by
    // the step's outputs (new parameters and state first, then the rng).
    let n_state = args.len() - 3 - FORWARD_INPUTS.len();
    let rng_arg = n_state + 2;
    let _awake = device.keep_cores_awake(); // as `gptsan train`, `forward` and `generate` do
    let mut times = Vec::new();
    for _ in 0..a.repeat + 1 {
        let refs: Vec<&runtime::Buffer> = bufs.iter().collect();
        let t = Instant::now();
        let mut out = program.run(&refs)?;
        out.last().map(|b| b.to_literal()).transpose()?;
        times.push(t.elapsed().as_secs_f64());
        let mut outs = out.drain(..n_state + 1);
        for slot in bufs.iter_mut().take(n_state) {
            *slot = outs
                .next()
                .context("the train step returned too few outputs")?;
        }
        bufs[rng_arg] = outs.next().context("the train step returned no rng")?;
    }
    let what = format!("train step ({})", a.precision.name());
    report(
        &what,
        &compile,
        &times[1..],
        (a.batch * a.len) as f64,
        &step,
    );
    println!("  wait policy: {}", device.wait_policy());
    Ok(())
}

/// Times the research forward pass (all logits).
pub fn forward(a: ModelArgs) -> Result<()> {
    f32_only(&a, "forward")?;
    let (cfg, _) = load_configs(&a.config)?;
    let device = Device::open(a.plugin.as_deref(), None)?;
    let shape = ForwardShape {
        batch: a.batch,
        len: a.len,
        spout: false,
        grads: false,
        loss: false,
        weights: hlo::DType::F32,
    };
    let pass = forward_program(&cfg, shape)?;
    let (program, compile) = compile_timed(&device, &pass)?;
    let params = init_params(&param_specs(&cfg), 1);
    let batch = random_batch(cfg.vocab_size, a.batch, a.len, 7);
    let positions: Vec<i32> = (0..a.batch).flat_map(|_| 0..a.len as i32).collect();
    let args = forward_args(
        &params,
        &batch,
        &positions,
        &vec![-100; batch.input_ids.len()],
    )?;
    let bufs: Vec<runtime::Buffer> = args
        .iter()
        .map(|l| device.upload(l, 0))
        .collect::<Result<_>>()?;
    let _awake = device.keep_cores_awake(); // as `gptsan train`, `forward` and `generate` do
    let mut times = Vec::new();
    for _ in 0..a.repeat + 1 {
        let refs: Vec<&runtime::Buffer> = bufs.iter().collect();
        let t = Instant::now();
        let out = program.run(&refs)?;
        // Wait for every output to be computed; the logits stay on the device, as the
        // reference's stay in a tensor (a download would add a copy it does not make).
        for o in &out {
            o.block_until_ready()?;
        }
        times.push(t.elapsed().as_secs_f64());
    }
    report(
        "forward",
        &compile,
        &times[1..],
        (a.batch * a.len) as f64,
        &pass,
    );
    println!("  wait policy: {}", device.wait_policy());
    Ok(())
}

/// Random weights made directly in `dtype`, one tensor at a time and in parallel: the
/// 2.8B model in bf16 never holds an f32 copy of all its weights. Uniform values with the
/// spec's standard deviation (speed does not depend on the distribution).
fn random_params(specs: &[ParamSpec], dtype: DType, seed: u64) -> Result<Vec<Literal>> {
    use rayon::prelude::*;
    specs
        .par_iter()
        .enumerate()
        .map(|(i, s)| {
            let std = match s.init {
                Init::Zeros => 0.0,
                Init::Ones => return ones(s, dtype),
                Init::Normal { std } => std,
            };
            let mut rng = Rng::new(seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let half = std * 3f64.sqrt();
            let n = s.numel() as usize;
            let mut bytes = Vec::with_capacity(n * dtype.size_in_bytes());
            for _ in 0..n {
                let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
                let x = (2.0 * u - 1.0) * half;
                match dtype {
                    DType::Bf16 => bytes.extend_from_slice(&half::bf16::from_f64(x).to_le_bytes()),
                    DType::F16 => bytes.extend_from_slice(&half::f16::from_f64(x).to_le_bytes()),
                    _ => bytes.extend_from_slice(&(x as f32).to_le_bytes()),
                }
            }
            Ok(Literal::from_bytes(
                Shape::new(dtype, s.dims.clone()),
                bytes,
            )?)
        })
        .collect()
}

fn ones(s: &ParamSpec, dtype: DType) -> Result<Literal> {
    Ok(Literal::from_slice(&s.dims, &vec![1f32; s.numel() as usize])?.convert_float(dtype)?)
}

/// Weight bytes one decode step reads: every parameter except the experts, of which only
/// the chosen one per switch layer (one token per step).
fn bytes_per_token(specs: &[ParamSpec], cfg: &ModelConfig, dtype: DType) -> f64 {
    let width = dtype.size_in_bytes() as f64;
    specs
        .iter()
        .map(|s| {
            let n = s.numel() as f64;
            if s.name.contains(".mlp.experts.") {
                n / cfg.num_experts as f64 * width
            } else {
                n * width
            }
        })
        .sum()
}

/// The process's peak resident memory (Linux `VmHWM`), in bytes.
fn peak_memory() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024.0)
}

/// Times greedy generation with the KV cache: `--len` prompt tokens, `--repeat` new ones,
/// on the path `gptsan generate` takes (the device loop; `--host-loop` for the host's);
/// the fastest of `--runs` generations is reported. The device loop streams a chunk of
/// tokens at a time, so a per-token time is a window's time over its tokens.
pub fn generate(a: ModelArgs) -> Result<()> {
    let (cfg, _) = load_configs(&a.config)?;
    let device = Device::open(a.plugin.as_deref(), None)?;
    let specs = param_specs(&cfg);
    let weights = a.precision.weights();
    let params = random_params(&specs, weights, 1)?;
    let mut g = Generator::with_weights(&device, &cfg, &params, None, weights)?;
    drop(params);
    if a.host_loop {
        g.set_loop_mode(LoopMode::Host);
    }
    let batch = random_batch(cfg.vocab_size, 1, a.len, 7);
    let opts = GenerateOptions {
        max_new_tokens: a.repeat,
        strategy: Strategy::Greedy,
        seed: 0,
        stop_at_eot: false,
    };
    // The first call compiles the prefill and decode programs for these sizes.
    let t0 = Instant::now();
    g.generate(&batch, &opts, false, |_, _| {})?;
    let first = t0.elapsed().as_secs_f64();
    let mut best: Option<TimedGeneration> = None;
    for _ in 0..a.runs {
        let run = timed_generation(&mut g, &batch, &opts)?;
        if best.as_ref().is_none_or(|b| run.total < b.total) {
            best = Some(run);
        }
    }
    let run = best.context("no generation was timed")?;
    let path = match g.loop_mode() {
        LoopMode::Host => "host loop".to_string(),
        LoopMode::Device { chunk } => format!("device loop, {chunk} tokens per call"),
    };
    println!(
        "generate: prompt {} + {} new tokens, {} weights, {path}",
        a.len,
        run.tokens,
        a.precision.name()
    );
    println!("  first call (compiles the programs): {first:.2} s");
    println!("  the fastest of {} timed runs:", a.runs);
    print_generation(&run, a.len, bytes_per_token(&specs, &cfg, weights));
    if let Some(peak) = peak_memory() {
        println!("  peak memory (resident): {:.2} GB", peak / 1e9);
    }
    println!("  wait policy: {}", g.device().wait_policy());
    Ok(())
}

/// Prints a timed generation: prefill, tokens/s, per-token time at the start and the
/// end, and the weight bandwidth that the mean step time means.
fn print_generation(run: &TimedGeneration, prompt: i64, bytes_per_token: f64) {
    let per = run.per_token();
    let q = (per.len() / 4).max(1).min(per.len());
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    if let Some(prefill) = run.until_first_token {
        println!("  prefill of {prompt} tokens: {prefill:.2} s");
    }
    println!(
        "  {:.1} tokens/s overall ({:.2} s)",
        run.tokens as f64 / run.total,
        run.total
    );
    if per.is_empty() {
        println!("  per token: one token streamed, no step between tokens to time");
        return;
    }
    println!(
        "  per token: first quarter {:.2} ms, last quarter {:.2} ms (flat with a KV cache)",
        mean(&per[..q]) * 1e3,
        mean(&per[per.len() - q..]) * 1e3
    );
    let step = mean(&per);
    println!(
        "  weights read per token: {:.1} MB ({:.1} GB/s at the mean step time)",
        bytes_per_token / 1e6,
        bytes_per_token / step / 1e9
    );
}

/// One timed generation: its wall time, tokens, and when each token was streamed.
struct TimedGeneration {
    total: f64,
    tokens: usize,
    /// From the start to the first streamed token (prefill and first pick, and with the
    /// device loop the first chunk too).
    until_first_token: Option<f64>,
    stamps: Vec<Instant>,
}

impl TimedGeneration {
    /// Time between consecutive streamed tokens; the device loop streams a chunk at
    /// once, so a window's time falls on its first token.
    fn per_token(&self) -> Vec<f64> {
        self.stamps
            .windows(2)
            .map(|w| (w[1] - w[0]).as_secs_f64())
            .collect()
    }
}

fn timed_generation(
    g: &mut Generator,
    batch: &HostBatch,
    opts: &GenerateOptions,
) -> Result<TimedGeneration> {
    let mut stamps = Vec::new();
    let t = Instant::now();
    let out = g.generate(batch, opts, false, |_, _| stamps.push(Instant::now()))?;
    let total = t.elapsed().as_secs_f64();
    Ok(TimedGeneration {
        total,
        tokens: out.tokens[0].len(),
        until_first_token: stamps.first().map(|s| (*s - t).as_secs_f64()),
        stamps,
    })
}

/// Compiles `f`, and says how long that took and whether the executable cache served it
/// (a cached start and a compile differ by ten times; the figures mean different things).
fn compile_timed(device: &Device, f: &hlo::Function) -> Result<(Program, String)> {
    let hits = device.cache_hits();
    let t0 = Instant::now();
    let program = device.compile(f)?;
    let seconds = t0.elapsed().as_secs_f64();
    let from_cache = if device.cache_hits() > hits {
        " (loaded from the executable cache)"
    } else {
        ""
    };
    Ok((program, format!("{seconds:.2} s{from_cache}")))
}

/// Compile time, the best and mean run, and the program's dot work with the rate the best
/// run reached: against the machine's peak, how fast the step could possibly be (the
/// dots are fixed by the model).
fn report(what: &str, compile: &str, times: &[f64], tokens: f64, program: &hlo::Function) {
    let best = times.iter().cloned().fold(f64::INFINITY, f64::min);
    let mean = times.iter().sum::<f64>() / times.len().max(1) as f64;
    println!("{what}: compile {compile}");
    println!(
        "  best {:.3} s, mean {:.3} s over {} runs: {:.0} tokens/s (best)",
        best,
        mean,
        times.len(),
        tokens / best
    );
    let work = hlo::dot_work(program);
    let gflop = work.flops / 1e9;
    let digits = if gflop < 10.0 { 3 } else { 1 };
    let in_loops = match work.dots_in_loops {
        0 => String::new(),
        n => format!(" ({n} more inside loops, not counted)"),
    };
    println!(
        "  dots: {gflop:.digits$} GFLOP in {} products{in_loops}, {:.0} GFLOP/s over the whole best run",
        work.dots,
        gflop / best
    );
}
