//! A training job, phase by phase: resolve the configs and data ([`setup`]), open the
//! device and the run folder, start fresh or from the newest checkpoint ([`state`]), then
//! the loop (one compiled step per batch, [`trainer`]), with metrics and checkpoints, and
//! samples at the end.
//!
//! [`setup`]: super::setup
//! [`state`]: super::state
//! [`trainer`]: super::trainer

use super::batches::{batch_literals, ExampleStream};
use super::checkpoint::{self, TrainerState};
use super::config::{SpoutMode, TrainConfig};
use super::eval::Evaluator;
use super::metrics::{truncate_metrics, MetricsLog, METRICS_FILE};
use super::plot::plot_run;
use super::run_dir::{note_checkpoint_for_watchdog, prepare_out_dir};
use super::samples::sample_texts;
use super::setup::Setup;
use super::state::initial_or_restored;
use super::step::{param_sharding, LossKind, StepSpec};
use super::trainer::{StepScalars, Trainer};
use crate::device::Device;
use crate::generate::sampling::Rng;
use crate::model::params::ParamSpec;
use crate::model::ModelConfig;
use anyhow::{bail, Result};
use hlo::{Literal, Mesh, PartitionSpec};
use std::path::PathBuf;
use std::time::Instant;

pub use super::metrics::Metrics;
pub use super::run_dir::RunMeta;
pub use super::setup::{check_mesh, configs_from_toml, load_configs, parse_mesh, DEFAULT_CONFIG};
pub use super::state::init_params;
use crate::model::precision::Precision;

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
    pub eval_fraction: Option<f64>,
    pub eval_every: Option<u64>,
    /// Start from this model folder (ours, a Hugging Face one, or a run) and its config.
    pub init: Option<PathBuf>,
    /// Globs on the port's parameter names: only these train.
    pub train_only: Vec<String>,
    /// Globs on the port's parameter names: these do not train.
    pub freeze: Vec<String>,
    /// Overrides the `[train]` table's precision.
    pub precision: Option<Precision>,
}

pub struct RunSummary {
    pub metrics: Vec<Metrics>,
    pub samples: Vec<String>,
    pub out: PathBuf,
}

/// Runs a whole training job.
pub fn run(opts: &RunOptions) -> Result<RunSummary> {
    let Setup {
        cfg,
        train,
        mesh,
        meta,
        data,
        split,
        init,
        frozen,
    } = super::setup::resolve(opts)?;
    let device = open_device(opts, &mesh)?;
    check_mesh(&mesh, device.device_count(), &cfg, train.batch_size)?;
    prepare_out_dir(&opts.out, &meta, opts.resume, &data.tokenizer)?;

    let start = initial_or_restored(&opts.out, opts.resume, init, &cfg, &train)?;
    if opts.resume {
        truncate_metrics(&opts.out.join(METRICS_FILE), start.trainer.step)?;
    }
    note_checkpoint_for_watchdog(&opts.out, opts.resume.then_some(start.trainer.step));
    let spec = step_spec(&cfg, &train, &mesh, frozen)?;
    let mut trainer = Trainer::new(
        &device,
        &cfg,
        &train,
        &spec,
        &start.params,
        start.optimizer.as_ref(),
        start.trainer.rng,
    )?;
    let not = data.tokenizer.special().not as i32;
    let evaluator = (!split.held_out.is_empty())
        .then(|| Evaluator::new(&device, &cfg, &train, &spec, &data, &split.held_out))
        .transpose()?;
    let mut tstate = start.trainer;
    let mut params = start.params;

    let bar = progress_bar(opts.progress, train.steps, tstate.step);
    let mut log = MetricsLog::open(&opts.out)?;
    let mut host_rng = Rng::new(tstate.host_rng);
    let mut stream = ExampleStream::new(
        &data.source,
        split.train.as_deref(),
        train.seed,
        tstate.cursor,
    );
    let mut all_metrics = Vec::new();
    let _awake = device.keep_cores_awake();
    while tstate.step < train.steps {
        let step = tstate.step + 1;
        let t0 = Instant::now();
        let picked = stream.next_batch(train.batch_size, &mut tstate.cursor);
        let batch = batch_literals(&picked, &cfg, &train, &mut host_rng, not)?;
        let lr = train.schedule.lr(step);
        let scalars = trainer.step(step, lr, batch)?;
        tstate.step = step;
        let mut m = step_metrics(step, lr, &scalars, &train, t0.elapsed().as_secs_f64())?;
        if let Some(ev) = evaluator.as_ref().filter(|_| eval_due(step, &train)) {
            m.eval_loss = Some(ev.loss(&trainer)?);
        }
        log.write(&m)?;
        show_progress(&bar, &m);
        all_metrics.push(m);
        if step % train.checkpoint_every.max(1) == 0 || step == train.steps {
            params = save_checkpoint(opts, &cfg, &trainer, &mut tstate, &mut host_rng)?;
            redraw_plot(&opts.out);
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
            &data.tokenizer,
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

/// The PJRT client with as many devices as the run (or `--devices`) asks for.
fn open_device(opts: &RunOptions, mesh: &Mesh) -> Result<Device> {
    let wanted = opts
        .devices
        .or_else(|| (mesh.device_count() > 1).then(|| mesh.device_count()));
    let device = Device::open(opts.plugin.as_deref(), wanted)?;
    eprintln!("{}", device.report);
    Ok(device)
}

/// What fixes the compiled train step of this run.
fn step_spec(
    cfg: &ModelConfig,
    train: &TrainConfig,
    mesh: &Mesh,
    frozen: Vec<String>,
) -> Result<StepSpec> {
    let with_spout = train.spout != SpoutMode::None;
    if with_spout && !cfg.has_spout() {
        bail!(
            "[train] spout = {:?} needs a model with spout_width > 0",
            train.spout
        );
    }
    Ok(StepSpec {
        batch: train.batch_size,
        len: train.seq_len,
        spout: with_spout,
        optimizer: train.optimizer.clone(),
        loss: LossKind::Original,
        clip_norm: train.clip_norm,
        decay_all: false,
        training: true,
        frozen,
        mesh: (mesh.device_count() > 1).then(|| mesh.clone()),
        compute: train.precision.training_compute()?,
        loss_scale: train.loss_scale.clone(),
    })
}

/// The metrics line of a step; a loss that is no longer finite ends the run.
fn step_metrics(
    step: u64,
    lr: f64,
    s: &StepScalars,
    train: &TrainConfig,
    seconds: f64,
) -> Result<Metrics> {
    if !s.loss.is_finite() {
        bail!(
            "the loss became {} at step {step}; lower the learning rate",
            s.loss
        );
    }
    Ok(Metrics {
        step,
        loss: s.loss,
        ce: s.ce,
        z_loss: s.z_loss,
        balance_loss: s.balance_loss,
        grad_norm: s.grad_norm,
        lr,
        tokens_per_s: (train.batch_size * train.seq_len) as f64 / seconds,
        step_ms: seconds * 1e3,
        eval_loss: None,
        loss_scale: s.loss_scale,
        skipped: s.skipped,
    })
}

/// Held-out evaluation every `eval_every` steps (0: with each checkpoint) and at the end.
fn eval_due(step: u64, train: &TrainConfig) -> bool {
    let every = match train.eval_every {
        0 => train.checkpoint_every.max(1),
        k => k,
    };
    step.checked_rem(every) == Some(0) || step == train.steps
}

/// Redraws `loss.png`; a plot that cannot be drawn is reported, not fatal to training.
fn redraw_plot(out: &std::path::Path) {
    if let Err(e) = plot_run(out, None) {
        eprintln!("warning: cannot redraw the loss plot: {e:#}");
    }
}

/// Downloads the state, writes a checkpoint and returns the parameters. The host RNG is
/// re-seeded from itself so a resumed run draws the same spout vectors.
fn save_checkpoint(
    opts: &RunOptions,
    cfg: &ModelConfig,
    trainer: &Trainer,
    tstate: &mut TrainerState,
    host_rng: &mut Rng,
) -> Result<Vec<Literal>> {
    tstate.host_rng = host_rng.next_u64();
    *host_rng = Rng::new(tstate.host_rng);
    tstate.rng = trainer.rng_state()?;
    let (params, state) = trainer.download()?;
    checkpoint::save(&opts.out, cfg, &params, &state, tstate, 2)?;
    note_checkpoint_for_watchdog(&opts.out, Some(tstate.step));
    Ok(params)
}

fn show_progress(bar: &Option<indicatif::ProgressBar>, m: &Metrics) {
    if let Some(b) = bar {
        b.set_position(m.step);
        b.set_message(format!(
            "loss {:.3}  {:.0} tok/s  {:.0} ms/step",
            m.loss, m.tokens_per_s, m.step_ms
        ));
    }
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

/// The parameter layout over a mesh (re-exported for export and tests).
pub fn sharding_of(spec: &ParamSpec, mesh: &Mesh) -> PartitionSpec {
    param_sharding(spec, mesh)
}
