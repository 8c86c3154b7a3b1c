//! The compiled train step: forward, loss, gradients (our autodiff), clipping and the
//! optimizer update, as ONE program whose parameters and optimizer state are donated so
//! they are updated in place on the device.
//!
//! Argument order: trainable parameters, frozen parameters, optimizer state (per
//! trainable parameter, [`OptimizerConfig::state_names`] order; then, in f16, the loss
//! scale's state, [`loss_scale::STATE_NAMES`]), `step` f32, `lr` f32,
//! `rng` u64[2], then the batch (`input_ids`, `positions`, `attention_mask`,
//! `token_type_ids`, `labels`, all s32 `[B, T]`, and `spout` f32 `[B, S]` if used).
//! Results: new trainable parameters, new optimizer state, new `rng`, then the scalars
//! `loss`, `ce`, `z_loss`, `balance_loss`, `grad_norm` (and in f16 `loss_scale`, the
//! scale this step used, and `skipped`, 1 when an overflow skipped it).

use super::config::TrainConfig;
use super::loss_scale::{keep_unless_clean, LossScale, LossScaleConfig};
use super::optimizer::{clip_by_global_norm, OptimizerConfig};
use crate::model::gptsan::{forward, Batch, Jitter, Params};
use crate::model::loss::{chunked_head_loss, HeadLoss};
pub use crate::model::params::param_sharding;
use crate::model::params::{param_specs, ParamSpec};
use crate::model::programs::declare_batch;
use crate::model::ModelConfig;
use anyhow::{anyhow, Result};
use hlo::{Builder, DType, Function, Mesh, PartitionSpec, Shape, Tensor};

/// Which loss the step minimises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LossKind {
    /// The port's plain mean cross entropy (for parity with its fixtures).
    Plain,
    /// The original's: cross entropy + z-loss + load balancing (SPEC 4.2).
    Original,
}

/// Everything that fixes the train step's program.
#[derive(Clone, Debug)]
pub struct StepSpec {
    pub batch: i64,
    pub len: i64,
    pub spout: bool,
    pub optimizer: OptimizerConfig,
    pub loss: LossKind,
    /// Global-norm clipping threshold (0: none).
    pub clip_norm: f64,
    /// Apply weight decay to every parameter (PyTorch's default), not only to the
    /// matrices marked for it.
    pub decay_all: bool,
    /// Router jitter and capacity factor of training (false: evaluation behaviour).
    pub training: bool,
    /// Names of parameters that are not trained (no gradient, no optimizer state).
    pub frozen: Vec<String>,
    /// Device mesh for SPMD (None: one device).
    pub mesh: Option<Mesh>,
    /// The type the model computes in: f32, or bf16/f16 with f32 master weights (the
    /// parameters, gradients and optimizer state stay f32; softmax, layer norm, router
    /// and loss compute in f32). f16 scales the loss dynamically.
    pub compute: DType,
    /// The loss scale's rules (used when `compute` is f16).
    pub loss_scale: LossScaleConfig,
}

impl StepSpec {
    /// The step `gptsan bench train` times: one device, the original's loss, `train`'s
    /// optimizer and loss scale, clipping at 1, every parameter trained.
    pub fn benchmark(batch: i64, len: i64, train: &TrainConfig, compute: DType) -> StepSpec {
        StepSpec {
            batch,
            len,
            spout: false,
            optimizer: train.optimizer.clone(),
            loss: LossKind::Original,
            clip_norm: 1.0,
            decay_all: false,
            training: true,
            frozen: Vec::new(),
            mesh: None,
            compute,
            loss_scale: train.loss_scale.clone(),
        }
    }

    /// Whether the step scales its loss (f16 compute).
    pub fn scales_loss(&self) -> bool {
        self.compute == DType::F16
    }
}

/// The parameters split into trainable and frozen, in argument order.
pub fn split_params(cfg: &ModelConfig, frozen: &[String]) -> (Vec<ParamSpec>, Vec<ParamSpec>) {
    param_specs(cfg)
        .into_iter()
        .partition(|s| !frozen.contains(&s.name))
}

fn batch_sharding(mesh: Option<&Mesh>, rank: usize) -> Option<PartitionSpec> {
    let mesh = mesh?;
    let mut dims: Vec<Option<&str>> = vec![None; rank];
    if mesh.axis_size("data").unwrap_or(1) > 1 {
        dims[0] = Some("data");
    }
    Some(PartitionSpec::new(&dims))
}

/// Builds the train-step program.
pub fn train_step_program(cfg: &ModelConfig, spec: &StepSpec) -> Result<Function> {
    let b = Builder::new("train_step");
    if let Some(m) = &spec.mesh {
        b.set_mesh(m.clone());
    }
    let (trainable, frozen) = split_params(cfg, &spec.frozen);
    let declare = |s: &ParamSpec| match &spec.mesh {
        Some(m) => b.parameter_sharded(
            &s.name,
            Shape::new(DType::F32, s.dims.clone()),
            param_sharding(s, m),
        ),
        None => b.parameter(&s.name, Shape::new(DType::F32, s.dims.clone())),
    };
    let train_t: Vec<Tensor> = trainable.iter().map(declare).collect();
    let frozen_t: Vec<Tensor> = frozen.iter().map(declare).collect();
    let mut state_t: Vec<Vec<Tensor>> = Vec::new();
    for s in &trainable {
        let names = spec.optimizer.state_names(s.dims.len());
        let dims = spec.optimizer.state_dims(&s.dims);
        let same_layout = dims[0] == s.dims;
        let st = names
            .iter()
            .zip(dims)
            .map(|(suffix, d)| {
                let name = format!("{}.{suffix}", s.name);
                match &spec.mesh {
                    Some(m) if same_layout => {
                        b.parameter_sharded(&name, Shape::new(DType::F32, d), param_sharding(s, m))
                    }
                    _ => b.parameter(&name, Shape::new(DType::F32, d)),
                }
            })
            .collect();
        state_t.push(st);
    }
    let scaling = spec.scales_loss().then(|| LossScale::declare(&b));
    let step = b.parameter("step", Shape::scalar(DType::F32));
    let lr = b.parameter("lr", Shape::scalar(DType::F32));
    let rng = b.parameter("rng", Shape::new(DType::U64, vec![2]));
    let (batch, labels) = declare_batch(&b, cfg, spec.batch, spec.len, spec.spout);

    let mut names: Vec<String> = trainable.iter().map(|s| s.name.clone()).collect();
    names.extend(frozen.iter().map(|s| s.name.clone()));
    let mut all = train_t.clone();
    all.extend(frozen_t.iter().cloned());
    let params = Params::from_tensors(&names, compute_copies(&all, spec.compute));

    // Router jitter: x * U(1-j, 1+j), one draw for all switch layers (XLA expands each
    // draw into its own threefry computation: one draw instead of one per layer took the
    // optimized `small` train step from 9,593 to 9,027 instructions).
    let layers = cfg.num_switch_layers;
    let (rng_state, jitter) = if spec.training && cfg.router.jitter > 0.0 && layers > 0 {
        let dims = [layers, spec.batch, spec.len, cfg.d_model];
        let (state, u) = b.uniform(
            &rng,
            &dims,
            1.0 - cfg.router.jitter,
            1.0 + cfg.router.jitter,
        );
        let per_layer = |l: i64| u.slice_dim(0, l, l + 1).reshape(&dims[1..]);
        (state, Some((0..layers).map(per_layer).collect::<Vec<_>>()))
    } else {
        (rng.clone(), None)
    };
    let LossTerms {
        loss,
        ce,
        z_loss: z,
        balance,
    } = loss_terms(cfg, spec, &params, &batch, &labels, jitter.as_ref());

    let grads = scaled_grads(&loss, &train_t, scaling.as_ref())?;
    let (grads, grad_norm) = clip_by_global_norm(&grads, spec.clip_norm, spec.mesh.is_none());
    // With loss scaling the optimizer counts only the steps it took.
    let opt_step = match &scaling {
        Some(s) => step.sub(&s.skipped),
        None => step.clone(),
    };
    let clean = scaling.as_ref().map(|_| LossScale::is_clean(&grad_norm));
    let mut new_params = Vec::new();
    let mut new_state = Vec::new();
    for (i, s) in trainable.iter().enumerate() {
        let decay = spec.decay_all || s.decay;
        let (mut p, mut st) =
            spec.optimizer
                .update(&train_t[i], &grads[i], &state_t[i], &lr, &opt_step, decay);
        if let Some(c) = &clean {
            // An overflow skips the step: everything keeps its value.
            p = keep_unless_clean(c, &p, &train_t[i]);
            st = st
                .iter()
                .zip(&state_t[i])
                .map(|(new, old)| keep_unless_clean(c, new, old))
                .collect();
        }
        new_params.push(p);
        new_state.extend(st);
    }
    let mut flat_state: Vec<Tensor> = state_t.iter().flatten().cloned().collect();
    let mut scale_outputs = Vec::new();
    if let (Some(s), Some(c)) = (&scaling, &clean) {
        flat_state.extend(s.tensors());
        new_state.extend(s.next(c, &spec.loss_scale).tensors());
        let skipped = c.not().convert(DType::F32);
        scale_outputs = vec![("loss_scale", s.scale.clone()), ("skipped", skipped)];
    }

    let mut outputs: Vec<(String, Tensor)> = Vec::new();
    for (s, p) in trainable.iter().zip(&new_params) {
        outputs.push((s.name.clone(), p.clone()));
    }
    for (i, st) in new_state.iter().enumerate() {
        outputs.push((format!("state.{i}"), st.clone()));
    }
    outputs.push(("rng".into(), rng_state));
    for (n, t) in [
        ("loss", &loss),
        ("ce", &ce),
        ("z_loss", &z),
        ("balance_loss", &balance),
        ("grad_norm", &grad_norm),
    ] {
        outputs.push((n.into(), t.clone()));
    }
    for (n, t) in scale_outputs {
        outputs.push((n.into(), t));
    }
    let refs: Vec<(&str, &Tensor)> = outputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut f = b.build_named(&refs)?;

    // Donate parameters, optimizer state and the rng state to their new values.
    let n_train = trainable.len();
    let n_frozen = frozen.len();
    for i in 0..n_train {
        f.donate(i, i).map_err(|e| anyhow!(e))?;
    }
    let state_base = n_train + n_frozen;
    for i in 0..flat_state.len() {
        f.donate(state_base + i, n_train + i)
            .map_err(|e| anyhow!(e))?;
    }
    let rng_arg = state_base + flat_state.len() + 2;
    f.donate(rng_arg, n_train + flat_state.len())
        .map_err(|e| anyhow!(e))?;
    if let Some(mesh) = &spec.mesh {
        shard_outputs(&mut f, &trainable, mesh);
        shard_batch_args(&mut f, rng_arg + 1, mesh);
    }
    Ok(f)
}

/// Gradients of `loss` for `wrt`; with a loss scale, of `loss * scale`, divided by the
/// scale again (so small f16 gradients do not flush to zero on the way).
fn scaled_grads(loss: &Tensor, wrt: &[Tensor], scaling: Option<&LossScale>) -> Result<Vec<Tensor>> {
    let seed = match scaling {
        Some(s) => loss.mul(&s.scale),
        None => loss.clone(),
    };
    let grads =
        hlo::autodiff::grad(&seed, wrt).map_err(|e| anyhow!("differentiating the loss: {e}"))?;
    Ok(match scaling {
        Some(s) => grads.iter().map(|g| g.div(&s.scale)).collect(),
        None => grads,
    })
}

/// The parameters as the model reads them: the f32 masters themselves, or their copies
/// in the compute type (the gradient flows back through the conversion to the master).
fn compute_copies(masters: &[Tensor], compute: DType) -> Vec<Tensor> {
    masters.iter().map(|t| t.convert(compute)).collect()
}

/// The loss and its parts, as the train step minimises them.
struct LossTerms {
    loss: Tensor,
    ce: Tensor,
    z_loss: Tensor,
    balance: Tensor,
}

/// Forward pass and loss (SPEC 4.2), shared by the train and eval programs.
fn loss_terms(
    cfg: &ModelConfig,
    spec: &StepSpec,
    params: &Params,
    batch: &Batch,
    labels: &Tensor,
    jitter: Option<&Jitter>,
) -> LossTerms {
    let out = forward(cfg, params, batch, spec.training, jitter);
    // Chunked over tokens: no [B*T, V] logits or logits gradient in the step.
    let HeadLoss { ce, z } = chunked_head_loss(
        &out.last_hidden,
        params.get("model.embed_tokens.weight"),
        params.get("final_logits_bias"),
        labels,
    );
    let b = ce.builder().clone();
    let mut balance = b.scalar(0.0, DType::F32);
    for r in &out.routers {
        balance = balance.add(&r.balance_loss);
    }
    let loss = match spec.loss {
        LossKind::Plain => ce.clone(),
        LossKind::Original => ce
            .add(&z.mul_scalar(cfg.router.z_loss_coef))
            .add(&balance.mul_scalar(cfg.router.balance_loss_coef)),
    };
    LossTerms {
        loss,
        ce,
        z_loss: z,
        balance,
    }
}

/// The held-out evaluation program: forward and loss as the step computes them (with
/// `spec.training` deciding jitter and capacity), without gradients or an update.
/// Arguments: the parameters in the train step's order (trainable, then frozen), so the
/// step's device buffers are passed as they are, then the batch. Results: `loss`, `ce`.
pub fn eval_step_program(cfg: &ModelConfig, spec: &StepSpec) -> Result<Function> {
    let b = Builder::new("eval_step");
    if let Some(m) = &spec.mesh {
        b.set_mesh(m.clone());
    }
    let (trainable, frozen) = split_params(cfg, &spec.frozen);
    let specs: Vec<ParamSpec> = trainable.into_iter().chain(frozen).collect();
    let tensors: Vec<Tensor> = specs
        .iter()
        .map(|s| match &spec.mesh {
            Some(m) => b.parameter_sharded(
                &s.name,
                Shape::new(DType::F32, s.dims.clone()),
                param_sharding(s, m),
            ),
            None => b.parameter(&s.name, Shape::new(DType::F32, s.dims.clone())),
        })
        .collect();
    let (batch, labels) = declare_batch(&b, cfg, spec.batch, spec.len, spec.spout);
    let names: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
    let params = Params::from_tensors(&names, compute_copies(&tensors, spec.compute));
    let terms = loss_terms(cfg, spec, &params, &batch, &labels, None);
    let mut f = b.build_named(&[("loss", &terms.loss), ("ce", &terms.ce)])?;
    if let Some(mesh) = &spec.mesh {
        for o in f.outputs.iter_mut() {
            o.sharding = Some(PartitionSpec::replicated(0));
        }
        shard_batch_args(&mut f, specs.len(), mesh);
    }
    Ok(f)
}

/// New parameters and state keep their inputs' layout; scalars are replicated.
fn shard_outputs(f: &mut Function, trainable: &[ParamSpec], mesh: &Mesh) {
    let n = trainable.len();
    for (i, s) in trainable.iter().enumerate() {
        f.outputs[i].sharding = Some(param_sharding(s, mesh));
    }
    for i in n..f.outputs.len() {
        let out_shape = f.value_shape(f.outputs[i].value).clone();
        // Optimizer state outputs mirror the matching state argument's layout.
        let spec = f
            .params
            .iter()
            .find(|p| p.alias_output == Some(i))
            .and_then(|p| p.sharding.clone())
            .unwrap_or_else(|| PartitionSpec::replicated(out_shape.rank()));
        f.outputs[i].sharding = Some(spec);
    }
}

/// The batch arguments split over `data`.
fn shard_batch_args(f: &mut Function, first_batch_arg: usize, mesh: &Mesh) {
    for p in f.params.iter_mut().skip(first_batch_arg) {
        p.sharding = batch_sharding(Some(mesh), p.shape.rank());
    }
    for p in f.params.iter_mut() {
        if p.sharding.is_none() {
            p.sharding = Some(PartitionSpec::replicated(p.shape.rank()));
        }
    }
}
