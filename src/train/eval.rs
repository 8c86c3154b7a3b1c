//! Held-out evaluation: a separate compiled program (forward and loss with evaluation
//! behaviour, no gradients, no update) run on the trainer's parameter buffers as they are
//! on the device, over a fixed set of held-out batches, so successive `eval_loss` values
//! are comparable.

use super::batches::batch_literals;
use super::config::TrainConfig;
use super::step::{eval_step_program, StepSpec};
use super::trainer::Trainer;
use crate::data::source::TrainData;
use crate::device::{Device, Program};
use crate::generate::sampling::Rng;
use crate::model::ModelConfig;
use anyhow::{anyhow, Result};
use hlo::Literal;
use runtime::Buffer;

/// Seeds the spout vectors of held-out batches apart from the training stream.
const EVAL_SALT: u64 = 0xe7a1_5eed;

/// The compiled eval program and its held-out batches (uploaded once).
pub(crate) struct Evaluator {
    program: Program,
    /// `[batch][device][argument]`
    batches: Vec<Vec<Vec<Buffer>>>,
    loss_out: usize,
}

impl Evaluator {
    /// Compiles the program and uploads up to `train.eval_batches` batches cut from the
    /// held-out examples (cycling through them when there are fewer than a batch).
    pub fn new(
        device: &Device,
        cfg: &ModelConfig,
        train: &TrainConfig,
        spec: &StepSpec,
        data: &TrainData,
        held_out: &[usize],
    ) -> Result<Self> {
        let examples = &data.source;
        let not = data.tokenizer.special().not as i32;
        let mut eval_spec = spec.clone();
        eval_spec.training = false;
        let program = device.compile(&eval_step_program(cfg, &eval_spec)?)?;
        let n_params = program.function.params.len() - batch_arg_count(spec);
        let b = train.batch_size as usize;
        let n_batches = held_out
            .len()
            .div_ceil(b)
            .clamp(1, train.eval_batches.max(1));
        let mut rng = Rng::new(train.seed ^ EVAL_SALT);
        let picks = spread(held_out, n_batches * b);
        let mut batches = Vec::with_capacity(n_batches);
        for chunk in picks.chunks(b) {
            let picked: Vec<_> = chunk.iter().map(|&i| examples.example(i)).collect();
            let lits = batch_literals(&picked, cfg, train, &mut rng, not)?;
            batches.push(upload(&program, n_params, &lits)?);
        }
        let loss_out = program
            .output_names()
            .iter()
            .position(|n| n == "loss")
            .ok_or_else(|| anyhow!("the eval program has no loss output"))?;
        Ok(Evaluator {
            program,
            batches,
            loss_out,
        })
    }

    /// The mean loss over the held-out batches with the trainer's current parameters.
    pub fn loss(&self, trainer: &Trainer) -> Result<f64> {
        let params = trainer.param_buffers();
        let mut total = 0.0;
        for batch in &self.batches {
            let call: Vec<Vec<&Buffer>> = params
                .iter()
                .zip(batch)
                .map(|(p, b)| p.iter().copied().chain(b.iter()).collect())
                .collect();
            let results = self.program.executable().execute(&call)?;
            total += results[0][self.loss_out].to_literal()?.to_f64_vec()[0];
        }
        Ok(total / self.batches.len() as f64)
    }
}

/// `m` of the held-out examples (ascending, so in corpus order) evenly spaced over all of
/// them, cycling when there are fewer: the evaluated examples stand for the whole corpus,
/// not for whichever document comes first.
fn spread(held_out: &[usize], m: usize) -> Vec<usize> {
    let n = held_out.len();
    if n <= m {
        return (0..m).map(|j| held_out[j % n]).collect();
    }
    (0..m).map(|j| held_out[j * n / m]).collect()
}

/// Batch arguments: five token arrays and the spout when used.
fn batch_arg_count(spec: &StepSpec) -> usize {
    5 + spec.spout as usize
}

/// Uploads one batch (arguments after the parameters), `[device][argument]`.
fn upload(program: &Program, first: usize, lits: &[Literal]) -> Result<Vec<Vec<Buffer>>> {
    let mut out: Vec<Vec<Buffer>> = Vec::new();
    for (k, lit) in lits.iter().enumerate() {
        for (d, buf) in program.upload_arg(first + k, lit)?.into_iter().enumerate() {
            if out.len() <= d {
                out.push(Vec::new());
            }
            out[d].push(buf);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::spread;

    #[test]
    fn the_evaluated_examples_span_the_held_out_set() {
        let held: Vec<usize> = (0..100).map(|i| i * 10).collect();
        assert_eq!(spread(&held, 4), vec![0, 250, 500, 750]);
        assert_eq!(spread(&held[..3], 5), vec![0, 10, 20, 0, 10]);
    }
}
