//! Training settings: the `[train]` table of a config file, overridable from the command
//! line.

use super::loss_scale::LossScaleConfig;
use super::optimizer::{OptimizerConfig, Schedule};
use crate::model::precision::Precision;
use serde::{Deserialize, Serialize};

/// How the spout input is fed during training.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SpoutMode {
    /// No spout position.
    None,
    /// A uniform random vector per example (how the released model was trained).
    Uniform,
    /// The one-hot class id of the example (class-conditioned training).
    Onehot,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    pub batch_size: i64,
    pub seq_len: i64,
    pub steps: u64,
    pub schedule: Schedule,
    pub optimizer: OptimizerConfig,
    /// Global-norm clipping (0: off).
    pub clip_norm: f64,
    pub checkpoint_every: u64,
    pub seed: u64,
    pub spout: SpoutMode,
    /// Samples printed at the end of training.
    pub samples: usize,
    pub sample_tokens: usize,
    /// Fraction of the examples held out for evaluation (0: none).
    pub eval_fraction: f64,
    /// Evaluate the held-out loss every K steps (0: at each checkpoint).
    pub eval_every: u64,
    /// Held-out batches per evaluation (a fixed set, so values compare over time).
    pub eval_batches: usize,
    /// `f32`, or `bf16`/`f16` compute with f32 master weights.
    pub precision: Precision,
    /// Dynamic loss scaling of f16 runs.
    pub loss_scale: LossScaleConfig,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            batch_size: 8,
            seq_len: 64,
            steps: 300,
            schedule: Schedule::InverseSqrt {
                base_lr: 3e-3,
                warmup_steps: 30,
            },
            optimizer: OptimizerConfig::default(),
            clip_norm: 1.0,
            checkpoint_every: 100,
            seed: 1234,
            spout: SpoutMode::None,
            samples: 3,
            sample_tokens: 40,
            eval_fraction: 0.02,
            eval_every: 0,
            eval_batches: 4,
            precision: Precision::F32,
            loss_scale: LossScaleConfig::default(),
        }
    }
}
