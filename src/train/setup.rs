//! The first phase of a run: configs (file, built-in default, command-line overrides),
//! the device mesh and the training data, resolved before any device is opened so bad
//! input fails fast.

use super::batches::{split_held_out, Split};
use super::checkpoint::load_model_or_run;
use super::config::{SpoutMode, TrainConfig};
use super::freeze::frozen_names;
use super::run::RunOptions;
use super::run_dir::RunMeta;
use crate::data::source::{self, TrainData};
use crate::model::ModelConfig;
use crate::tokenizer::Tokenizer;
use anyhow::{anyhow, bail, Context, Result};
use hlo::{Literal, Mesh};
use std::path::Path;

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

/// The `[train]` settings given on the command line replace the config's.
pub(crate) fn apply_overrides(train: &mut TrainConfig, opts: &RunOptions) -> Result<()> {
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
    if let Some(f) = opts.eval_fraction {
        train.eval_fraction = f;
    }
    if let Some(k) = opts.eval_every {
        train.eval_every = k;
    }
    if !(0.0..=0.5).contains(&train.eval_fraction) {
        bail!(
            "--eval-fraction {} must be between 0 and 0.5",
            train.eval_fraction
        );
    }
    if let Some(p) = opts.precision {
        train.precision = p;
    }
    train.precision.training_compute()?;
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
pub(crate) fn open_training_data(
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

/// Everything the run was asked for, resolved and checked.
pub(crate) struct Setup {
    pub cfg: ModelConfig,
    pub train: TrainConfig,
    pub mesh: Mesh,
    /// What identifies the run in its folder (`run.json`).
    pub meta: RunMeta,
    pub data: TrainData,
    /// Which examples train and which are held out.
    pub split: Split,
    /// The parameters of `--init`, in `param_specs` order.
    pub init: Option<Vec<Literal>>,
    /// Parameters that do not train (`--train-only`, `--freeze`).
    pub frozen: Vec<String>,
}

/// Configs with their overrides, the mesh and the data, and the run's identity.
pub(crate) fn resolve(opts: &RunOptions) -> Result<Setup> {
    let (cfg, mut train, init) = configs_and_init(opts)?;
    let config_name = match (&opts.init, &opts.config) {
        (Some(dir), _) => format!("the model in {}", dir.display()),
        (None, Some(p)) => p.display().to_string(),
        (None, None) => "configs/tiny.toml".into(),
    };
    let frozen = frozen_names(&cfg, &opts.train_only, &opts.freeze)?;
    apply_overrides(&mut train, opts)?;
    let mesh = match &opts.mesh {
        Some(m) => parse_mesh(m)?,
        None => Mesh::new(&[("data", 1), ("model", 1)]),
    };
    let data =
        open_training_data(opts, &cfg, &mut train, &config_name).with_context(|| {
            match &opts.init {
                Some(dir) => format!("--init {}", dir.display()),
                None => "training data".into(),
            }
        })?;
    let meta = RunMeta {
        model: cfg.clone(),
        train: TrainConfig {
            steps: 0,
            samples: 0,
            checkpoint_every: 0,
            eval_every: 0,
            eval_batches: 0,
            ..train.clone()
        },
        corpus: if data.id.is_some() {
            Vec::new()
        } else {
            opts.corpus.clone()
        },
        mesh: opts.mesh.clone(),
        data: data.id.clone(),
        init: opts.init.as_ref().map(|d| d.display().to_string()),
        frozen: frozen.clone(),
    };
    if data.source.len() < train.batch_size as usize {
        bail!(
            "the corpus gives {} examples, fewer than one batch of {}",
            data.source.len(),
            train.batch_size
        );
    }
    let split = split_held_out(
        data.source.len(),
        train.eval_fraction,
        train.batch_size as usize,
        train.seed,
    );
    tracing::info!(
        examples = data.source.len(),
        held_out = split.held_out.len(),
        "corpus packed"
    );
    Ok(Setup {
        cfg,
        train,
        mesh,
        meta,
        data,
        split,
        init,
        frozen,
    })
}

/// The model config (the `--init` folder's, else the config file's or the built-in one),
/// the `[train]` table, and the `--init` parameters.
#[allow(clippy::type_complexity)]
fn configs_and_init(opts: &RunOptions) -> Result<(ModelConfig, TrainConfig, Option<Vec<Literal>>)> {
    let (cfg, train) = match &opts.config {
        Some(p) => load_configs(p)?,
        None => configs_from_toml(DEFAULT_CONFIG, "the built-in configs/tiny.toml")?,
    };
    let Some(dir) = &opts.init else {
        return Ok((cfg, train, None));
    };
    let (cfg, params) =
        load_model_or_run(dir).with_context(|| format!("--init {}", dir.display()))?;
    Ok((cfg, train, Some(params)))
}
