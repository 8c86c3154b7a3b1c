//! The compiled train step with its state on the device(s): parameters and optimizer
//! state stay there between steps (donated and replaced by each call); a step uploads only
//! its scalars and batch, and state comes back to the host only for checkpoints.

use super::config::TrainConfig;
use super::loss_scale::STATE_NAMES;
use super::step::{split_params, train_step_program, StepSpec};
use crate::device::{Device, Program};
use crate::model::ModelConfig;
use anyhow::{anyhow, Context, Result};
use hlo::{DType, Literal, Shape};
use runtime::Buffer;
use std::collections::BTreeMap;
use std::time::Instant;

/// The scalars one step reports.
pub(crate) struct StepScalars {
    pub loss: f64,
    pub ce: f64,
    pub z_loss: f64,
    pub balance_loss: f64,
    pub grad_norm: f64,
    /// f16 runs: the loss scale used and whether an overflow skipped the step.
    pub loss_scale: Option<f64>,
    pub skipped: Option<bool>,
}

/// The train step and its device-resident state.
pub(crate) struct Trainer {
    program: Program,
    /// `[device][argument]` for the persistent arguments (parameters, frozen, optimizer
    /// state); the step's scalars, rng and batch are appended per call.
    args: Vec<Vec<Buffer>>,
    rng: Vec<Buffer>,
    n_params: usize,
    /// Trainable parameters (the first arguments and results); frozen ones follow them
    /// as arguments and are never replaced.
    n_train: usize,
    /// `param_specs` index of each parameter argument (trainable, then frozen).
    order: Vec<usize>,
    /// Optimizer state names (`<param>.<slot>`), in argument order.
    state_names: Vec<String>,
    /// Index of the first scalar output after the state outputs are moved out.
    first_scalar: usize,
    /// Scalar outputs: 5, or 7 with a loss scale.
    n_scalars: usize,
    rng_out: usize,
}

impl Trainer {
    /// Compiles the step and uploads the parameters, optimizer state (zeros when `restored`
    /// is None) and the device RNG state.
    pub fn new(
        device: &Device,
        cfg: &ModelConfig,
        train: &TrainConfig,
        spec: &StepSpec,
        params: &[Literal],
        restored: Option<&BTreeMap<String, Literal>>,
        rng: [u64; 2],
    ) -> Result<Self> {
        let started = Instant::now();
        let program = device.compile(&train_step_program(cfg, spec)?)?;
        eprintln!(
            "compiled the train step in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        let (state_names, state_lits) = optimizer_state(cfg, train, spec, restored)?;
        let (trainable, frozen) = split_params(cfg, &spec.frozen);
        let index: std::collections::HashMap<String, usize> =
            crate::model::params::param_specs(cfg)
                .into_iter()
                .enumerate()
                .map(|(i, s)| (s.name, i))
                .collect();
        let order: Vec<usize> = trainable
            .iter()
            .chain(&frozen)
            .map(|s| index[&s.name])
            .collect();
        let ndev = spec.mesh.as_ref().map_or(1, |m| m.device_count() as usize);
        let mut args: Vec<Vec<Buffer>> = (0..ndev).map(|_| Vec::new()).collect();
        let in_order = order.iter().map(|&i| &params[i]);
        for (i, lit) in in_order.chain(&state_lits).enumerate() {
            for (d, b) in program.upload_arg(i, lit)?.into_iter().enumerate() {
                args[d].push(b);
            }
        }
        let n_params = params.len();
        let rng_arg = n_params + state_names.len() + 2;
        let rng = program.upload_arg(rng_arg, &Literal::from_slice(&[2], &rng)?)?;
        let names = program.output_names();
        let out_index = |n: &str| {
            names
                .iter()
                .position(|x| x == n)
                .ok_or_else(|| anyhow!("no output {n}"))
        };
        let n_train = trainable.len();
        let first_scalar = out_index("loss")? - (n_train + state_names.len() + 1);
        let rng_out = out_index("rng")?;
        let n_scalars = if spec.scales_loss() { 7 } else { 5 };
        Ok(Trainer {
            program,
            args,
            rng,
            n_params,
            n_train,
            order,
            state_names,
            first_scalar,
            n_scalars,
            rng_out,
        })
    }

    /// The parameter buffers of every device (for programs that read them, like eval).
    pub fn param_buffers(&self) -> Vec<Vec<&Buffer>> {
        self.args
            .iter()
            .map(|a| a[..self.n_params].iter().collect())
            .collect()
    }

    /// One step: uploads `step`, `lr` and the batch, runs, keeps the new state.
    pub fn step(&mut self, step: u64, lr: f64, batch: Vec<Literal>) -> Result<StepScalars> {
        let n_state = self.n_params + self.state_names.len();
        let rng_arg = n_state + 2;
        let mut extra = vec![Literal::scalar(step as f32), Literal::scalar(lr as f32)];
        extra.extend(batch);
        let ndev = self.args.len();
        let mut uploaded: Vec<Vec<Buffer>> = (0..ndev).map(|_| Vec::new()).collect();
        for (k, lit) in extra.iter().enumerate() {
            let arg = if k < 2 { n_state + k } else { rng_arg + k - 1 };
            for (d, b) in self.program.upload_arg(arg, lit)?.into_iter().enumerate() {
                uploaded[d].push(b);
            }
        }
        let mut call: Vec<Vec<&Buffer>> = self.args.iter().map(|a| a.iter().collect()).collect();
        for d in 0..ndev {
            // step, lr, rng, then the batch
            call[d].push(&uploaded[d][0]);
            call[d].push(&uploaded[d][1]);
            call[d].push(&self.rng[d]);
            call[d].extend(uploaded[d][2..].iter());
        }
        let mut results = self.program.executable().execute(&call)?;
        drop(call);
        // New parameters and state replace the donated ones.
        for (d, res) in results.iter_mut().enumerate() {
            let mut outs: Vec<Option<Buffer>> = std::mem::take(res).into_iter().map(Some).collect();
            let n_out = self.n_train + self.state_names.len();
            for (i, slot) in outs.iter_mut().take(n_out).enumerate() {
                // Outputs skip the frozen parameters; arguments do not.
                let arg = if i < self.n_train {
                    i
                } else {
                    i + self.n_params - self.n_train
                };
                self.args[d][arg] = slot.take().ok_or_else(|| anyhow!("missing output {i}"))?;
            }
            self.rng[d] = outs[self.rng_out]
                .take()
                .ok_or_else(|| anyhow!("missing rng output"))?;
            *res = outs.into_iter().flatten().collect();
        }
        // Scalars (replicated): from device 0, in the order left after the moves above.
        let vals: Vec<f64> = (0..self.n_scalars)
            .map(|k| Ok(results[0][self.first_scalar + k].to_literal()?.to_f64_vec()[0]))
            .collect::<Result<_>>()?;
        Ok(StepScalars {
            loss: vals[0],
            ce: vals[1],
            z_loss: vals[2],
            balance_loss: vals[3],
            grad_norm: vals[4],
            loss_scale: vals.get(5).copied(),
            skipped: vals.get(6).map(|s| *s != 0.0),
        })
    }

    /// The device RNG state (for checkpoints).
    pub fn rng_state(&self) -> Result<[u64; 2]> {
        let v = self.rng[0].to_literal()?.to_vec::<u64>()?;
        Ok([v[0], v[1]])
    }

    /// Parameters (in `param_specs` order) and named optimizer state, downloaded (and
    /// gathered over the mesh).
    #[allow(clippy::type_complexity)]
    pub fn download(&self) -> Result<(Vec<Literal>, Vec<(String, Literal)>)> {
        let fetch = |i: usize| {
            self.program
                .download_arg(i, &self.args.iter().map(|a| &a[i]).collect::<Vec<_>>())
        };
        let mut params: Vec<Option<Literal>> = vec![None; self.n_params];
        for (arg, &i) in self.order.iter().enumerate() {
            params[i] = Some(fetch(arg)?);
        }
        let params = params.into_iter().flatten().collect();
        let state = self
            .state_names
            .iter()
            .enumerate()
            .map(|(k, n)| Ok((n.clone(), fetch(self.n_params + k)?)))
            .collect::<Result<_>>()?;
        Ok((params, state))
    }
}

/// Optimizer state names and values for the trainable parameters (restored, or zeros),
/// then the loss scale's state when the step scales its loss (restored, or fresh when
/// the checkpoint was not an f16 run).
fn optimizer_state(
    cfg: &ModelConfig,
    train: &TrainConfig,
    spec: &StepSpec,
    restored: Option<&BTreeMap<String, Literal>>,
) -> Result<(Vec<String>, Vec<Literal>)> {
    let (trainable, _) = split_params(cfg, &spec.frozen);
    let mut names = Vec::new();
    let mut lits = Vec::new();
    for s in &trainable {
        let slots = train.optimizer.state_names(s.dims.len());
        for (suffix, dims) in slots.iter().zip(train.optimizer.state_dims(&s.dims)) {
            let name = format!("{}.{suffix}", s.name);
            let lit = match restored {
                Some(m) => m
                    .get(&name)
                    .cloned()
                    .with_context(|| format!("checkpoint has no optimizer state {name}"))?,
                None => Literal::zeros(Shape::new(DType::F32, dims)),
            };
            names.push(name);
            lits.push(lit);
        }
    }
    if spec.scales_loss() {
        let fresh = spec.loss_scale.initial_state();
        for (name, lit) in STATE_NAMES.iter().zip(fresh) {
            names.push(name.to_string());
            lits.push(restored.and_then(|m| m.get(*name).cloned()).unwrap_or(lit));
        }
    }
    Ok((names, lits))
}
