//! Optimizer updates as graph code, so the whole train step is one compiled program.
//!
//! AdamW follows PyTorch's formulation exactly (decoupled decay applied before the
//! update, bias corrections folded into the step size and the denominator), so one step
//! matches the reference fixture. Adafactor keeps factored second moments for matrices.

use hlo::{DType, Tensor};
use serde::{Deserialize, Serialize};

/// Which optimizer and its hyper-parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum OptimizerConfig {
    Adamw {
        #[serde(default = "beta1")]
        beta1: f64,
        #[serde(default = "beta2")]
        beta2: f64,
        #[serde(default = "eps")]
        eps: f64,
        #[serde(default = "weight_decay")]
        weight_decay: f64,
    },
    Adafactor {
        #[serde(default = "decay_exponent")]
        decay_exponent: f64,
        #[serde(default = "clip_threshold")]
        clip_threshold: f64,
        #[serde(default = "eps1")]
        eps: f64,
    },
}

fn beta1() -> f64 {
    0.9
}
fn beta2() -> f64 {
    0.999
}
fn eps() -> f64 {
    1e-8
}
fn weight_decay() -> f64 {
    0.01
}
fn decay_exponent() -> f64 {
    0.8
}
fn clip_threshold() -> f64 {
    1.0
}
fn eps1() -> f64 {
    1e-30
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        OptimizerConfig::Adamw {
            beta1: beta1(),
            beta2: beta2(),
            eps: eps(),
            weight_decay: weight_decay(),
        }
    }
}

impl OptimizerConfig {
    /// Shapes of the state kept per parameter of shape `dims` (f32).
    pub fn state_dims(&self, dims: &[i64]) -> Vec<Vec<i64>> {
        match self {
            OptimizerConfig::Adamw { .. } => vec![dims.to_vec(), dims.to_vec()],
            OptimizerConfig::Adafactor { .. } => {
                if dims.len() >= 2 {
                    let r = dims.len();
                    let rows: Vec<i64> = dims[..r - 1].to_vec();
                    let mut cols: Vec<i64> = dims[..r - 2].to_vec();
                    cols.push(dims[r - 1]);
                    vec![rows, cols]
                } else {
                    vec![dims.to_vec()]
                }
            }
        }
    }

    /// Names of the state tensors (suffixes in checkpoints).
    pub fn state_names(&self, rank: usize) -> Vec<&'static str> {
        match self {
            OptimizerConfig::Adamw { .. } => vec!["exp_avg", "exp_avg_sq"],
            OptimizerConfig::Adafactor { .. } if rank >= 2 => vec!["row_sq", "col_sq"],
            OptimizerConfig::Adafactor { .. } => vec!["sq"],
        }
    }

    /// One update of parameter `p` with gradient `g` and state `s`. `lr` and `step`
    /// (1-based, f32) are scalars. Returns the new parameter and state.
    pub fn update(
        &self,
        p: &Tensor,
        g: &Tensor,
        state: &[Tensor],
        lr: &Tensor,
        step: &Tensor,
        decay: bool,
    ) -> (Tensor, Vec<Tensor>) {
        match *self {
            OptimizerConfig::Adamw {
                beta1,
                beta2,
                eps,
                weight_decay,
            } => {
                let (m, v) = (&state[0], &state[1]);
                let m = m.mul_scalar(beta1).add(&g.mul_scalar(1.0 - beta1));
                let v = v.mul_scalar(beta2).add(&g.square().mul_scalar(1.0 - beta2));
                let p = if decay && weight_decay != 0.0 {
                    p.mul(&lr.mul_scalar(-weight_decay).add_scalar(1.0))
                } else {
                    p.clone()
                };
                // 1 - beta^t = 1 - exp(t ln beta)
                let bc = |beta: f64| step.mul_scalar(beta.ln()).exp().neg().add_scalar(1.0);
                let step_size = lr.div(&bc(beta1));
                let denom = v.sqrt().div(&bc(beta2).sqrt()).add_scalar(eps);
                let p = p.sub(&m.div(&denom).mul(&step_size));
                (p, vec![m, v])
            }
            OptimizerConfig::Adafactor {
                decay_exponent,
                clip_threshold,
                eps,
            } => {
                // beta2_t = 1 - t^-c
                let beta2 = step
                    .log()
                    .mul_scalar(-decay_exponent)
                    .exp()
                    .neg()
                    .add_scalar(1.0);
                let one_minus = beta2.neg().add_scalar(1.0);
                let g2 = g.square().add_scalar(eps);
                let r = p.rank();
                let (update, new_state) = if r >= 2 {
                    let row = state[0]
                        .mul(&beta2)
                        .add(&g2.mean(&[r as i64 - 1]).mul(&one_minus));
                    let col = state[1]
                        .mul(&beta2)
                        .add(&g2.mean(&[r as i64 - 2]).mul(&one_minus));
                    // v ~ row x col / mean(row)
                    let row_mean = row.mean(&[r as i64 - 2]).expand_dim(-1);
                    let r_factor = row.div(&row_mean).rsqrt().expand_dim(-1);
                    let c_factor = col.rsqrt().expand_dim(r as i64 - 2);
                    (g.mul(&r_factor).mul(&c_factor), vec![row, col])
                } else {
                    let v = state[0].mul(&beta2).add(&g2.mul(&one_minus));
                    (g.mul(&v.rsqrt()), vec![v])
                };
                // Update clipping: divide by max(1, rms(update) / d).
                let rms = update
                    .square()
                    .mean(&(0..r as i64).collect::<Vec<_>>())
                    .sqrt();
                let scale = rms.div_scalar(clip_threshold).max(&rms.scalar_like(1.0));
                let p = p.sub(&update.div(&scale).mul(lr));
                (p, new_state)
            }
        }
    }
}

/// Global L2 norm of all gradients (f32 scalar).
///
/// `one_reduction`: as one reduction over the gradients' concatenation. XLA CPU makes
/// three kernels of each gradient's own sum of squares (the square, and its tree
/// reduction's two stages), about 180 of the `small` train step's 1,300 operations, which
/// the compile and every cached start pay for; the concatenation moves the same bytes.
/// Not for gradients split over a device mesh (concatenating them would gather them).
pub fn global_norm(grads: &[Tensor], one_reduction: bool) -> Tensor {
    let b = grads[0].builder();
    if one_reduction && grads.len() > 1 {
        let flat: Vec<Tensor> = grads
            .iter()
            .map(|g| g.convert(DType::F32).reshape(&[g.dims().iter().product()]))
            .collect();
        return b.concatenate(&flat, 0).square().sum_all().sqrt();
    }
    let mut sq = b.scalar(0.0, DType::F32);
    for g in grads {
        sq = sq.add(&g.convert(DType::F32).square().sum_all());
    }
    sq.sqrt()
}

/// Scales gradients so their global norm is at most `max_norm` (no-op when `max_norm`
/// is 0). Returns the clipped gradients and the norm before clipping. The gradients are
/// multiplied by the scale's reciprocal: XLA CPU duplicates a multiply into the optimizer
/// update's kernels, while it wrote every divided gradient out in a pass of its own.
pub fn clip_by_global_norm(
    grads: &[Tensor],
    max_norm: f64,
    one_reduction: bool,
) -> (Vec<Tensor>, Tensor) {
    let norm = global_norm(grads, one_reduction);
    if max_norm <= 0.0 {
        return (grads.to_vec(), norm);
    }
    let inverse = norm.scalar_like(1.0).div(
        &norm
            .add_scalar(1e-6)
            .div_scalar(max_norm)
            .max(&norm.scalar_like(1.0)),
    );
    (grads.iter().map(|g| g.mul(&inverse)).collect(), norm)
}

/// Learning-rate schedules (computed on the host each step and passed in).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Schedule {
    /// Linear warm-up, then `1/sqrt(max(step, 1/base_lr^2))` as the original.
    InverseSqrt {
        base_lr: f64,
        warmup_steps: u64,
    },
    /// Linear warm-up, then cosine decay to `min_lr` at `total_steps`.
    Cosine {
        base_lr: f64,
        min_lr: f64,
        warmup_steps: u64,
        total_steps: u64,
    },
    Constant {
        lr: f64,
    },
}

impl Schedule {
    /// Replaces the peak learning rate (`train --lr`); the schedule's shape stays.
    pub fn set_base_lr(&mut self, lr: f64) {
        match self {
            Schedule::InverseSqrt { base_lr, .. } | Schedule::Cosine { base_lr, .. } => {
                *base_lr = lr
            }
            Schedule::Constant { lr: l } => *l = lr,
        }
    }

    /// Learning rate for the 1-based `step`.
    pub fn lr(&self, step: u64) -> f64 {
        let s = step.max(1) as f64;
        let warm = |w: u64| if w == 0 { 1.0 } else { (s / w as f64).min(1.0) };
        match *self {
            Schedule::InverseSqrt {
                base_lr,
                warmup_steps,
            } => warm(warmup_steps) / s.max(1.0 / (base_lr * base_lr)).sqrt(),
            Schedule::Cosine {
                base_lr,
                min_lr,
                warmup_steps,
                total_steps,
            } => {
                let span = total_steps.saturating_sub(warmup_steps).max(1) as f64;
                let progress = ((s - warmup_steps as f64) / span).clamp(0.0, 1.0);
                let cos = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
                warm(warmup_steps) * (min_lr + (base_lr - min_lr) * cos)
            }
            Schedule::Constant { lr } => lr,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inverse_sqrt_caps_at_base_lr_then_decays() {
        let s = Schedule::InverseSqrt {
            base_lr: 1e-2,
            warmup_steps: 10,
        };
        assert!((s.lr(5) - 0.5e-2).abs() < 1e-12);
        assert!((s.lr(10) - 1e-2).abs() < 1e-12);
        // 1/sqrt(max(t, 1e4)) stays at 1e-2 until t = 1e4, then decays.
        assert!((s.lr(40_000) - 0.5e-2).abs() < 1e-12);
    }

    #[test]
    fn cosine_reaches_min_lr() {
        let s = Schedule::Cosine {
            base_lr: 1.0,
            min_lr: 0.1,
            warmup_steps: 0,
            total_steps: 100,
        };
        assert!((s.lr(100) - 0.1).abs() < 1e-9);
        assert!((s.lr(50) - 0.55).abs() < 1e-9);
    }

    #[test]
    fn adafactor_state_is_factored() {
        let a = OptimizerConfig::Adafactor {
            decay_exponent: 0.8,
            clip_threshold: 1.0,
            eps: 1e-30,
        };
        assert_eq!(a.state_dims(&[4, 6, 8]), vec![vec![4, 6], vec![4, 8]]);
        assert_eq!(a.state_dims(&[8]), vec![vec![8]]);
    }
}
