//! Where a run starts: fresh parameters from a seed, or the newest intact checkpoint of
//! the run folder (`--resume`), with the optimizer state and the data and RNG positions.

use super::checkpoint::{self, TrainerState};
use super::config::TrainConfig;
use crate::generate::sampling::Rng;
use crate::model::params::{param_specs, Init, ParamSpec};
use crate::model::ModelConfig;
use anyhow::Result;
use hlo::Literal;
use std::collections::BTreeMap;
use std::path::Path;

/// Parameters (in `param_specs` order), optimizer state if restored, and positions.
pub(crate) struct StartState {
    pub params: Vec<Literal>,
    pub optimizer: Option<BTreeMap<String, Literal>>,
    pub trainer: TrainerState,
}

/// A fresh start (from `init`, the parameters of `--init`, or a seeded draw), or the
/// newest checkpoint of `out` that reads back whole.
pub(crate) fn initial_or_restored(
    out: &Path,
    resume: bool,
    init: Option<Vec<Literal>>,
    cfg: &ModelConfig,
    train: &TrainConfig,
) -> Result<StartState> {
    if resume {
        let r = checkpoint::restore_newest_intact(out)?;
        eprintln!("resuming from {} (step {})", r.dir.display(), r.state.step);
        return Ok(StartState {
            params: r.params,
            optimizer: Some(r.optimizer),
            trainer: r.state,
        });
    }
    Ok(StartState {
        params: match init {
            Some(p) => p,
            None => init_params(&param_specs(cfg), train.seed),
        },
        optimizer: None,
        trainer: TrainerState {
            step: 0,
            cursor: 0,
            rng: [train.seed, 0],
            host_rng: train.seed ^ 0x5eed,
        },
    })
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
