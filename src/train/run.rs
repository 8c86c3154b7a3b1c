//! The training loop: data, device state, the compiled step, metrics, checkpoints and
//! samples. Parameters and optimizer state live on the device(s) between steps; each step
//! uploads only the batch.

use super::checkpoint::{self, TrainerState};
use super::config::{SpoutMode, TrainConfig};
use super::step::{param_sharding, split_params, train_step_program, LossKind, StepSpec};
use crate::data::source::{self, TrainData};
use crate::data::{shuffled_order, Example};
use crate::device::Device;
use crate::generate::sampling::{Rng, Strategy};
use crate::generate::{GenerateOptions, Generator};
use crate::model::inputs::HostBatch;
use crate::model::params::{param_specs, Init, ParamSpec};
use crate::model::ModelConfig;
use crate::tokenizer::Tokenizer;
use anyhow::{anyhow, bail, Context, Result};
use hlo::{DType, Literal, Mesh, PartitionSpec, Shape};
use runtime::Buffer;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What `gptsan train` was asked to do.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Config file; None: the built-in default (`configs/tiny.toml`).
    pub config: Option<PathBuf>,
    /// `built-in`, or text files (one document per line).
    pub corpus: Vec<String>,
    /// A folder made by `gptsan data prepare` (replaces `corpus`).
    pub data: Option<PathBuf>,
    pub out: PathBuf,
    pub resume: bool,
    pub steps: Option<u64>,
    pub checkpoint_every: Option<u64>,
    /// `data=D,model=M`.
    pub mesh: Option<String>,
    /// Virtual CPU devices of the client.
    pub devices: Option<i64>,
    pub plugin: Option<String>,
    pub progress: bool,
    pub samples: Option<usize>,
    /// Command-line overrides of the `[train]` table.
    pub batch_size: Option<i64>,
    pub seq_len: Option<i64>,
    pub lr: Option<f64>,
}

/// Identifies a run: resuming with other settings is refused.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunMeta {
    pub model: ModelConfig,
    pub train: TrainConfig,
    pub corpus: Vec<String>,
    pub mesh: Option<String>,
    /// Prepared data (folder, vocabulary hash, size); absent for raw text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
}

/// One metrics line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub step: u64,
    pub loss: f64,
    pub ce: f64,
    pub z_loss: f64,
    pub balance_loss: f64,
    pub grad_norm: f64,
    pub lr: f64,
    pub tokens_per_s: f64,
    pub step_ms: f64,
}

pub struct RunSummary {
    pub metrics: Vec<Metrics>,
    pub samples: Vec<String>,
    pub out: PathBuf,
}

/// The default config (`configs/tiny.toml`), built into the binary so `gptsan train`
/// works from any folder.
pub const DEFAULT_CONFIG: &str = include_str!("../../configs/tiny.toml");

/// Reads the model config and the `[train]` table of a config file.
pub fn load_configs(path: &Path) -> Result<(ModelConfig, TrainConfig)> {
    if path.extension().is_some_and(|e| e == "toml") {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config {}", path.display()))?;
        return configs_from_toml(&text, &path.display().to_string());
    }
    Ok((ModelConfig::load(path)?, TrainConfig::default()))
}

/// Model config and `[train]` table from TOML text.
pub fn configs_from_toml(text: &str, origin: &str) -> Result<(ModelConfig, TrainConfig)> {
    let model = ModelConfig::from_toml(text, origin)?;
    let mut table: toml::Table = toml::from_str(text)?;
    let train = match table.remove("train") {
        Some(t) => t.try_into().map_err(|e: toml::de::Error| {
            anyhow!("in [train] of {origin}: {}", e.to_string().trim_end())
        })?,
        None => TrainConfig::default(),
    };
    Ok((model, train))
}

/// Parses `data=2,model=2` (axes in that order; missing ones are 1).
pub fn parse_mesh(spec: &str) -> Result<Mesh> {
    let mut data = 1;
    let mut model = 1;
    for part in spec.split(',').filter(|p| !p.is_empty()) {
        let (name, size) = part.split_once('=').ok_or_else(|| {
            anyhow!("--mesh {spec}: expected axis=size pairs like data=2,model=2")
        })?;
        let size: i64 = size
            .trim()
            .parse()
            .map_err(|_| anyhow!("--mesh {spec}: {size:?} is not a number"))?;
        if size < 1 {
            bail!("--mesh {spec}: axis sizes must be at least 1");
        }
        match name.trim() {
            "data" => data = size,
            "model" => model = size,
            other => bail!("--mesh {spec}: unknown axis {other:?} (use data and model)"),
        }
    }
    Ok(Mesh::new(&[("data", data), ("model", model)]))
}

/// Checks that the mesh fits the devices, the batch and the model.
pub fn check_mesh(mesh: &Mesh, devices: usize, cfg: &ModelConfig, batch: i64) -> Result<()> {
    let n = mesh.device_count();
    if n as usize > devices || devices as i64 % n != 0 {
        bail!("the mesh needs {n} devices, which does not divide the {devices} devices of the client (use --devices)");
    }
    let model = mesh.axis_size("model").unwrap_or(1);
    let data = mesh.axis_size("data").unwrap_or(1);
    if cfg.num_experts % model != 0 {
        bail!(
            "{} experts are not divisible by the model axis of size {model}",
            cfg.num_experts
        );
    }
    if cfg.num_heads % model != 0 {
        bail!(
            "{} attention heads are not divisible by the model axis of size {model}",
            cfg.num_heads
        );
    }
    if batch % data != 0 {
        bail!("the batch of {batch} is not divisible by the data axis of size {data}");
    }
    Ok(())
}

/// Fresh parameters drawn from a seeded generator.
pub fn init_params(specs: &[ParamSpec], seed: u64) -> Vec<Literal> {
    let mut rng = Rng::new(seed);
    specs
        .iter()
        .map(|s| {
            let n = s.numel() as usize;
            let values: Vec<f32> = match s.init {
                Init::Zeros => vec![0.0; n],
                Init::Ones => vec![1.0; n],
                Init::Normal { std } => (0..n)
                    .map(|_| {
                        let u1 = 1.0 - rng.next_f64();
                        let u2 = rng.next_f64();
                        ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos() * std)
                            as f32
                    })
                    .collect(),
            };
            Literal::from_slice(&s.dims, &values).expect("sizes match the spec")
        })
        .collect()
}

/// Device-resident training state, one argument list per device.
struct DeviceState {
    /// `[device][argument]` for the persistent arguments (parameters, frozen, optimizer
    /// state); the step's scalars, rng and batch are appended per call.
    args: Vec<Vec<Buffer>>,
    rng: Vec<Buffer>,
}

/// Runs a whole training job.
pub fn run(opts: &RunOptions) -> Result<RunSummary> {
    let (cfg, mut train) = match &opts.config {
        Some(p) => load_configs(p)?,
        None => configs_from_toml(DEFAULT_CONFIG, "the built-in configs/tiny.toml")?,
    };
    let config_name = opts
        .config
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or("configs/tiny.toml".into());
    apply_overrides(&mut train, opts)?;
    let mesh = match &opts.mesh {
        Some(m) => parse_mesh(m)?,
        None => Mesh::new(&[("data", 1), ("model", 1)]),
    };
    let data = open_training_data(opts, &cfg, &mut train, &config_name)?;
    let meta = RunMeta {
        model: cfg.clone(),
        train: TrainConfig {
            steps: 0,
            samples: 0,
            checkpoint_every: 0,
            ..train.clone()
        },
        corpus: if data.id.is_some() {
            Vec::new()
        } else {
            opts.corpus.clone()
        },
        mesh: opts.mesh.clone(),
        data: data.id.clone(),
    };
    let tok = &data.tokenizer;
    let sp = tok.special();
    let examples = &data.source;
    if examples.len() < train.batch_size as usize {
        bail!(
            "the corpus gives {} examples, fewer than one batch of {}",
            examples.len(),
            train.batch_size
        );
    }
    tracing::info!(examples = examples.len(), "corpus packed");

    let devices_wanted = opts
        .devices
        .or_else(|| (mesh.device_count() > 1).then(|| mesh.device_count()));
    let device = Device::open(opts.plugin.as_deref(), devices_wanted)?;
    eprintln!("{}", device.report);
    check_mesh(&mesh, device.device_count(), &cfg, train.batch_size)?;
    prepare_out_dir(&opts.out, &meta, opts.resume, tok)?;

    // Parameters and optimizer state: fresh, or from the latest checkpoint.
    let specs = param_specs(&cfg);
    let (mut params, opt_state, mut tstate) = if opts.resume {
        let r = checkpoint::restore_newest_intact(&opts.out)?;
        eprintln!("resuming from {} (step {})", r.dir.display(), r.state.step);
        (r.params, Some(r.optimizer), r.state)
    } else {
        let seed_state = TrainerState {
            step: 0,
            cursor: 0,
            rng: [train.seed, 0],
            host_rng: train.seed ^ 0x5eed,
        };
        (init_params(&specs, train.seed), None, seed_state)
    };
    if opts.resume {
        truncate_metrics(&opts.out.join("metrics.jsonl"), tstate.step)?;
    }
    note_checkpoint_for_watchdog(&opts.out, opts.resume.then_some(tstate.step));

    let with_spout = train.spout != SpoutMode::None;
    if with_spout && !cfg.has_spout() {
        bail!(
            "[train] spout = {:?} needs a model with spout_width > 0",
            train.spout
        );
    }
    let step_spec = StepSpec {
        batch: train.batch_size,
        len: train.seq_len,
        spout: with_spout,
        optimizer: train.optimizer.clone(),
        loss: LossKind::Original,
        clip_norm: train.clip_norm,
        decay_all: false,
        training: true,
        frozen: Vec::new(),
        mesh: (mesh.device_count() > 1).then(|| mesh.clone()),
    };
    let started = Instant::now();
    let program = device.compile(&train_step_program(&cfg, &step_spec)?)?;
    eprintln!(
        "compiled the train step in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let (trainable, _) = split_params(&cfg, &step_spec.frozen);
    let mut state_lits: Vec<(String, Literal)> = Vec::new();
    for s in &trainable {
        let names = train.optimizer.state_names(s.dims.len());
        for (suffix, dims) in names.iter().zip(train.optimizer.state_dims(&s.dims)) {
            let name = format!("{}.{suffix}", s.name);
            let lit = match &opt_state {
                Some(m) => m
                    .get(&name)
                    .cloned()
                    .with_context(|| format!("checkpoint has no optimizer state {name}"))?,
                None => Literal::zeros(Shape::new(DType::F32, dims)),
            };
            state_lits.push((name, lit));
        }
    }
    let n_params = specs.len();
    let ndev = mesh.device_count() as usize;
    let mut dstate = DeviceState {
        args: (0..ndev).map(|_| Vec::new()).collect(),
        rng: Vec::new(),
    };
    for (i, lit) in params
        .iter()
        .chain(state_lits.iter().map(|(_, l)| l))
        .enumerate()
    {
        for (d, b) in program.upload_arg(i, lit)?.into_iter().enumerate() {
            dstate.args[d].push(b);
        }
    }
    let rng_arg = n_params + state_lits.len() + 2;
    dstate.rng = program.upload_arg(rng_arg, &Literal::from_slice(&[2], &tstate.rng)?)?;

    let bar = progress_bar(opts.progress, train.steps, tstate.step);
    let mut metrics_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(opts.out.join("metrics.jsonl"))
        .context("cannot open metrics.jsonl")?;
    let mut host_rng = Rng::new(tstate.host_rng);
    let order_for = |epoch: u64| shuffled_order(examples.len(), train.seed.wrapping_add(epoch));
    let mut epoch = tstate.cursor / examples.len() as u64;
    let mut order = order_for(epoch);
    let mut all_metrics = Vec::new();
    let names = program.output_names();
    let out_index = |n: &str| {
        names
            .iter()
            .position(|x| x == n)
            .ok_or_else(|| anyhow!("no output {n}"))
    };
    let scalar_outputs: Vec<usize> = ["loss", "ce", "z_loss", "balance_loss", "grad_norm"]
        .iter()
        .map(|n| out_index(n))
        .collect::<Result<_>>()?;
    let rng_out = out_index("rng")?;

    while tstate.step < train.steps {
        let step = tstate.step + 1;
        let t0 = Instant::now();
        // The batch: the next examples of this epoch's order.
        let mut picked: Vec<Example> = Vec::new();
        for _ in 0..train.batch_size {
            let e = tstate.cursor / examples.len() as u64;
            if e != epoch {
                epoch = e;
                order = order_for(epoch);
            }
            picked.push(examples.example(order[(tstate.cursor % examples.len() as u64) as usize]));
            tstate.cursor += 1;
        }
        let batch_lits = batch_literals(&picked, &cfg, &train, &mut host_rng, sp.not as i32)?;
        let lr = train.schedule.lr(step);
        let mut extra = vec![Literal::scalar(step as f32), Literal::scalar(lr as f32)];
        extra.extend(batch_lits);
        let mut call: Vec<Vec<&Buffer>> = dstate.args.iter().map(|a| a.iter().collect()).collect();
        let mut uploaded: Vec<Vec<Buffer>> = (0..ndev).map(|_| Vec::new()).collect();
        for (k, lit) in extra.iter().enumerate() {
            let arg = if k < 2 {
                n_params + state_lits.len() + k
            } else {
                rng_arg + k - 1
            };
            for (d, b) in program.upload_arg(arg, lit)?.into_iter().enumerate() {
                uploaded[d].push(b);
            }
        }
        for d in 0..ndev {
            // step, lr, rng, then the batch
            call[d].push(&uploaded[d][0]);
            call[d].push(&uploaded[d][1]);
            call[d].push(&dstate.rng[d]);
            call[d].extend(uploaded[d][2..].iter());
        }
        let mut results = program.executable().execute(&call)?;
        drop(call);
        // New parameters and state replace the donated ones.
        for (d, res) in results.iter_mut().enumerate() {
            let mut outs: Vec<Option<Buffer>> = std::mem::take(res).into_iter().map(Some).collect();
            let n_state = n_params + state_lits.len();
            for (i, slot) in outs.iter_mut().take(n_state).enumerate() {
                dstate.args[d][i] = slot.take().ok_or_else(|| anyhow!("missing output {i}"))?;
            }
            dstate.rng[d] = outs[rng_out]
                .take()
                .ok_or_else(|| anyhow!("missing rng output"))?;
            *res = outs.into_iter().flatten().collect();
        }
        // Scalars (replicated): from device 0, in the order left after the moves above.
        let first_scalar = scalar_outputs[0] - (n_params + state_lits.len() + 1);
        let vals: Vec<f64> = (0..5)
            .map(|k| Ok(results[0][first_scalar + k].to_literal()?.to_f64_vec()[0]))
            .collect::<Result<_>>()?;
        let dt = t0.elapsed().as_secs_f64();
        tstate.step = step;
        let m = Metrics {
            step,
            loss: vals[0],
            ce: vals[1],
            z_loss: vals[2],
            balance_loss: vals[3],
            grad_norm: vals[4],
            lr,
            tokens_per_s: (train.batch_size * train.seq_len) as f64 / dt,
            step_ms: dt * 1e3,
        };
        if !m.loss.is_finite() {
            bail!(
                "the loss became {} at step {step}; lower the learning rate",
                m.loss
            );
        }
        writeln!(metrics_file, "{}", serde_json::to_string(&m)?)?;
        metrics_file.flush()?;
        if let Some(b) = &bar {
            b.set_position(step);
            b.set_message(format!(
                "loss {:.3}  {:.0} tok/s  {:.0} ms/step",
                m.loss, m.tokens_per_s, m.step_ms
            ));
        }
        all_metrics.push(m);

        if step % train.checkpoint_every.max(1) == 0 || step == train.steps {
            tstate.host_rng = host_rng.next_u64();
            host_rng = Rng::new(tstate.host_rng);
            let rng_lit = dstate.rng[0].to_literal()?.to_vec::<u64>()?;
            tstate.rng = [rng_lit[0], rng_lit[1]];
            params = (0..n_params)
                .map(|i| {
                    program.download_arg(i, &dstate.args.iter().map(|a| &a[i]).collect::<Vec<_>>())
                })
                .collect::<Result<_>>()?;
            for (k, (_, lit)) in state_lits.iter_mut().enumerate() {
                let i = n_params + k;
                *lit = program
                    .download_arg(i, &dstate.args.iter().map(|a| &a[i]).collect::<Vec<_>>())?;
            }
            checkpoint::save(&opts.out, &cfg, &params, &state_lits, &tstate, 2)?;
            note_checkpoint_for_watchdog(&opts.out, Some(step));
        }
    }
    if let Some(b) = &bar {
        b.finish();
    }
    if let Some(last) = all_metrics.last() {
        eprintln!(
            "step {}: loss {:.4} (ce {:.4})",
            last.step, last.loss, last.ce
        );
    }
    let samples = if train.samples > 0 {
        sample_texts(
            &device,
            &cfg,
            &params,
            tok,
            train.samples,
            train.sample_tokens,
            train.seed,
        )?
    } else {
        Vec::new()
    };
    Ok(RunSummary {
        metrics: all_metrics,
        samples,
        out: opts.out.clone(),
    })
}

/// The `[train]` settings given on the command line replace the config's.
fn apply_overrides(train: &mut TrainConfig, opts: &RunOptions) -> Result<()> {
    if let Some(s) = opts.steps {
        train.steps = s;
    }
    if let Some(k) = opts.checkpoint_every {
        train.checkpoint_every = k;
    }
    if let Some(s) = opts.samples {
        train.samples = s;
    }
    if let Some(b) = opts.batch_size {
        if b < 1 {
            bail!("--batch-size must be at least 1");
        }
        train.batch_size = b;
    }
    if let Some(s) = opts.seq_len {
        train.seq_len = s;
    }
    if let Some(lr) = opts.lr {
        if !(lr > 0.0 && lr.is_finite()) {
            bail!("--lr {lr} must be a positive number");
        }
        train.schedule.set_base_lr(lr);
    }
    Ok(())
}

/// The examples and tokenizer of the run: prepared data (`--data`, whose sequence length
/// and vocabulary win) or raw text with the built-in vocabulary.
fn open_training_data(
    opts: &RunOptions,
    cfg: &ModelConfig,
    train: &mut TrainConfig,
    config_name: &str,
) -> Result<TrainData> {
    let past = (train.spout != SpoutMode::None) as i64;
    if let Some(dir) = &opts.data {
        let data = source::from_prepared(dir, cfg.vocab_size, cfg.context, past)?;
        if let source::DataSource::Shards(set) = &data.source {
            let len = set.manifest.seq_len as i64;
            if opts.seq_len.is_some_and(|s| s != len) {
                bail!(
                    "--seq-len {} differs from the {len} tokens the data in {} was prepared with",
                    train.seq_len,
                    dir.display()
                );
            }
            train.seq_len = len;
        }
        return Ok(data);
    }
    if train.seq_len + past > cfg.context {
        bail!(
            "--seq-len {} is above the model's context of {} positions{}",
            train.seq_len,
            cfg.context,
            if past > 0 {
                " (one is the spout's)"
            } else {
                ""
            }
        );
    }
    let builtin = Tokenizer::builtin().vocab_size();
    if builtin as i64 != cfg.vocab_size {
        bail!(
            "{config_name}: vocab_size {} does not match the built-in vocabulary ({builtin} tokens)",
            cfg.vocab_size
        );
    }
    source::from_corpus(&opts.corpus, train.seq_len as usize)
}

/// What a watchdog report (a stuck multi-device step) says about the run's checkpoints.
fn note_checkpoint_for_watchdog(out: &Path, step: Option<u64>) {
    let note = match step {
        Some(s) => format!(
            "the checkpoint of step {s} in {} is intact: run the same command with --resume \
             to continue",
            out.display()
        ),
        None => format!("no checkpoint was written to {} yet", out.display()),
    };
    runtime::watchdog::set_note(Some(note));
}

/// The batch arguments as literals: ids, positions, mask, token types, labels, spout.
fn batch_literals(
    picked: &[Example],
    cfg: &ModelConfig,
    train: &TrainConfig,
    host_rng: &mut Rng,
    not: i32,
) -> Result<Vec<Literal>> {
    let (b, t) = (picked.len() as i64, train.seq_len);
    let past = (train.spout != SpoutMode::None) as i32;
    let mut ids = Vec::new();
    let mut labels = Vec::new();
    let mut mask = Vec::new();
    let mut types = Vec::new();
    for e in picked {
        ids.extend_from_slice(&e.input_ids);
        labels.extend_from_slice(&e.labels);
        types.extend_from_slice(&e.token_types);
        mask.extend(e.input_ids.iter().map(|&x| (x != not) as i32));
    }
    let positions: Vec<i32> = (0..b)
        .flat_map(|_| (0..t as i32).map(|p| (p + past).min(cfg.context as i32 - 1)))
        .collect();
    let dims = [b, t];
    let mut out = vec![
        Literal::from_slice(&dims, &ids)?,
        Literal::from_slice(&dims, &positions)?,
        Literal::from_slice(&dims, &mask)?,
        Literal::from_slice(&dims, &types)?,
        Literal::from_slice(&dims, &labels)?,
    ];
    match train.spout {
        SpoutMode::None => {}
        SpoutMode::Uniform => {
            let v: Vec<f32> = (0..b * cfg.spout_width)
                .map(|_| host_rng.next_f64() as f32)
                .collect();
            out.push(Literal::from_slice(&[b, cfg.spout_width], &v)?);
        }
        SpoutMode::Onehot => {
            let mut v = vec![0f32; (b * cfg.spout_width) as usize];
            for (r, e) in picked.iter().enumerate() {
                let k = (e.class_id as i64).min(cfg.spout_width - 1);
                v[r * cfg.spout_width as usize + k as usize] = 1.0;
            }
            out.push(Literal::from_slice(&[b, cfg.spout_width], &v)?);
        }
    }
    Ok(out)
}

fn progress_bar(show: bool, total: u64, start: u64) -> Option<indicatif::ProgressBar> {
    if !show {
        return None;
    }
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_position(start);
    Some(bar)
}

/// Refuses to mix runs in one folder.
fn prepare_out_dir(out: &Path, meta: &RunMeta, resume: bool, tok: &Tokenizer) -> Result<()> {
    let meta_path = out.join("run.json");
    if meta_path.is_file() {
        let text = std::fs::read_to_string(&meta_path)?;
        let existing: RunMeta = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a gptsan run description", meta_path.display()))?;
        if &existing != meta {
            bail!(
                "{} holds another run (different model, training settings, corpus or mesh); choose another --out",
                out.display()
            );
        }
        if !resume {
            bail!(
                "{} already holds this run; pass --resume to continue it, or choose another --out",
                out.display()
            );
        }
        return Ok(());
    }
    if resume {
        bail!("nothing to resume: {} holds no run", out.display());
    }
    if out.is_dir() && std::fs::read_dir(out)?.next().is_some() {
        bail!(
            "{} is not empty and holds no gptsan run; choose another --out",
            out.display()
        );
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    crate::model::checkpoint::write_atomic(
        &meta_path,
        serde_json::to_string_pretty(meta)?.as_bytes(),
    )?;
    crate::model::checkpoint::write_atomic(
        &out.join("vocab.txt"),
        tok.vocab().to_text().as_bytes(),
    )?;
    crate::model::checkpoint::write_atomic(
        &out.join("emoji.json"),
        tok.emoji().to_json().as_bytes(),
    )?;
    Ok(())
}

/// Drops metrics after `step` (a resumed run rewrites them).
fn truncate_metrics(path: &Path, step: u64) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<Metrics>(l)
                .map(|m| m.step <= step)
                .unwrap_or(false)
        })
        .collect();
    let mut body = kept.join("\n");
    if !body.is_empty() {
        body.push('\n');
    }
    crate::model::checkpoint::write_atomic(path, body.as_bytes())
}

/// A few generated texts from the trained parameters.
fn sample_texts(
    device: &Device,
    cfg: &ModelConfig,
    params: &[Literal],
    tok: &Tokenizer,
    n: usize,
    tokens: usize,
    seed: u64,
) -> Result<Vec<String>> {
    let prompts = ["吾輩は", "今日は", "猫が"];
    let mut g = Generator::new(device, cfg, params)?;
    let sp = tok.special();
    let mut out = Vec::new();
    for i in 0..n {
        let prompt = prompts[i % prompts.len()];
        let mut ids = vec![sp.sot as i32, sp.seg as i32];
        ids.extend(tok.encode(prompt, false).into_iter().map(|t| t as i32));
        let len = ids.len();
        let batch = HostBatch {
            batch: 1,
            len,
            input_ids: ids,
            attention_mask: vec![1; len],
            token_type_ids: (0..len).map(|i| (i == 0) as i32).collect(),
            spout: None,
        };
        let opts = GenerateOptions {
            max_new_tokens: tokens,
            strategy: Strategy::Sample {
                temperature: 0.8,
                top_k: 40,
                top_p: 1.0,
            },
            seed: seed + i as u64,
            stop_at_eot: true,
        };
        let gen = g.generate(&batch, &opts, false, |_, _| {})?;
        let text = tok.decode_with(
            &gen.tokens[0],
            &crate::tokenizer::DecodeOptions::generated(),
        )?;
        out.push(format!("{prompt}{text}"));
    }
    Ok(out)
}

/// The parameter layout over a mesh (re-exported for export and tests).
pub fn sharding_of(spec: &ParamSpec, mesh: &Mesh) -> PartitionSpec {
    param_sharding(spec, mesh)
}
