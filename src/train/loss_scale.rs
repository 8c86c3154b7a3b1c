//! Dynamic loss scaling for f16 training. f16 gradients flush to zero below about 6e-8,
//! so the step multiplies the loss by a large scale before autodiff and divides the
//! gradients by it afterwards. A step whose gradients are not finite (an overflow) is
//! skipped: parameters and optimizer state keep their values and the scale halves. After
//! `growth_interval` clean steps in a row the scale doubles (PyTorch's `GradScaler`
//! rules). The scale and its counters are optimizer state: donated, checkpointed and
//! restored with it, so a resumed run scales exactly as the uninterrupted one.

use hlo::{Builder, DType, Literal, Shape, Tensor};
use serde::{Deserialize, Serialize};

/// The state's names in checkpoints, in argument order (after the per-parameter state).
pub const STATE_NAMES: [&str; 3] = [
    "loss_scale.scale",
    "loss_scale.good_steps",
    "loss_scale.skipped",
];

/// The `[train.loss_scale]` table (used with `precision = "f16"`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LossScaleConfig {
    /// The first scale.
    pub init: f64,
    /// Clean steps in a row after which the scale doubles.
    pub growth_interval: u64,
}

impl Default for LossScaleConfig {
    fn default() -> Self {
        LossScaleConfig {
            init: 65536.0,
            growth_interval: 2000,
        }
    }
}

impl LossScaleConfig {
    /// The state of a fresh run, in [`STATE_NAMES`] order.
    pub fn initial_state(&self) -> Vec<Literal> {
        vec![
            Literal::scalar(self.init as f32),
            Literal::scalar(0.0f32),
            Literal::scalar(0.0f32),
        ]
    }
}

/// The scale and its counters as values of the train step (f32 scalars).
pub struct LossScale {
    pub scale: Tensor,
    /// Clean steps since the scale last changed.
    pub good_steps: Tensor,
    /// Steps skipped so far: the optimizer counts only the steps it took.
    pub skipped: Tensor,
}

impl LossScale {
    /// Declares the state as the next three arguments.
    pub fn declare(b: &Builder) -> LossScale {
        let arg = |name: &str| b.parameter(name, Shape::scalar(DType::F32));
        LossScale {
            scale: arg(STATE_NAMES[0]),
            good_steps: arg(STATE_NAMES[1]),
            skipped: arg(STATE_NAMES[2]),
        }
    }

    /// Whether a step with this global gradient norm is clean: an infinity or NaN in any
    /// gradient makes the norm infinite or NaN, and NaN < inf is false.
    pub fn is_clean(grad_norm: &Tensor) -> Tensor {
        grad_norm.lt(&grad_norm.scalar_like(f64::INFINITY))
    }

    /// The state after a step (`clean`: a scalar pred).
    pub fn next(&self, clean: &Tensor, cfg: &LossScaleConfig) -> LossScale {
        let good = self.good_steps.add_scalar(1.0);
        let grow = good.ge(&good.scalar_like(cfg.growth_interval as f64));
        let grown = grow.select(&self.scale.mul_scalar(2.0), &self.scale);
        let halved = self.scale.mul_scalar(0.5).max(&self.scale.scalar_like(1.0));
        let zero = good.scalar_like(0.0);
        LossScale {
            scale: clean.select(&grown, &halved),
            good_steps: clean.select(&grow.select(&zero, &good), &zero),
            skipped: clean.select(&self.skipped, &self.skipped.add_scalar(1.0)),
        }
    }

    pub fn tensors(&self) -> Vec<Tensor> {
        vec![
            self.scale.clone(),
            self.good_steps.clone(),
            self.skipped.clone(),
        ]
    }
}

/// `new` after a clean step, `old` after a skipped one.
pub fn keep_unless_clean(clean: &Tensor, new: &Tensor, old: &Tensor) -> Tensor {
    clean.select(new, old)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hlo::interpret::evaluate;

    /// Runs `next` on the interpreter: (scale, good, skipped) after one step.
    fn step(state: [f32; 3], clean: bool, growth: u64) -> [f32; 3] {
        let b = Builder::new("scale");
        let s = LossScale::declare(&b);
        let c = b.parameter("clean", Shape::scalar(DType::Pred));
        let cfg = LossScaleConfig {
            init: 1.0,
            growth_interval: growth,
        };
        let n = s.next(&c, &cfg);
        let f = b
            .build(&[&n.scale, &n.good_steps, &n.skipped])
            .expect("builds");
        let mut args: Vec<Literal> = state.iter().map(|v| Literal::scalar(*v)).collect();
        args.push(Literal::scalar(clean));
        let out = evaluate(&f, &args).expect("runs");
        let v: Vec<f32> = out.iter().map(|l| l.to_vec::<f32>().unwrap()[0]).collect();
        [v[0], v[1], v[2]]
    }

    #[test]
    fn an_overflow_halves_the_scale_and_counts_a_skip() {
        assert_eq!(step([1024.0, 5.0, 2.0], false, 10), [512.0, 0.0, 3.0]);
        // Never below 1.
        assert_eq!(step([1.0, 0.0, 0.0], false, 10), [1.0, 0.0, 1.0]);
    }

    #[test]
    fn clean_steps_count_up_and_double_the_scale_at_the_interval() {
        assert_eq!(step([1024.0, 5.0, 2.0], true, 10), [1024.0, 6.0, 2.0]);
        assert_eq!(step([1024.0, 9.0, 2.0], true, 10), [2048.0, 0.0, 2.0]);
    }
}
