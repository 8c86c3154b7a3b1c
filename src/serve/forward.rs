//! One-forward requests, run by the engine on its device with the generator's parameters:
//! a prompt's routing (`/v1/inspect`: `gptsan forward`'s program, kept to its router
//! outputs, so the values are forward's) and mask filling (`/v1/fill-mask`: `gptsan
//! fill-mask`'s program and rule). Programs are compiled per input length on first use.

use crate::device::Program;
use crate::generate::Generator;
use crate::infer::fill_mask::{fill_from_logits, Filled};
use crate::infer::{batch_args, Row};
use crate::model::inputs::{HostBatch, PositionRule};
use crate::model::programs::{
    forward_args, forward_program, infer_program, ForwardShape, InferOutput,
};
use crate::model::ModelConfig;
use anyhow::{anyhow, bail, Result};
use hlo::{Function, Literal};
use serde::Serialize;
use std::collections::HashMap;
use tokio::sync::oneshot;

/// Compiled programs kept at most (one per kind and length); older ones are dropped.
const MAX_PROGRAMS: usize = 32;

/// What to compute for one checked input.
#[derive(Debug)]
pub enum Task {
    /// Router outputs of `ids` with prefix flags `types`.
    Inspect { ids: Vec<i32>, types: Vec<i32> },
    /// `[SOT] + tokens` with at least one MSK.
    FillMask { ids: Vec<u32> },
}

/// The result of a [`Task`].
#[derive(Debug)]
pub enum Answer {
    Routing(Vec<RouterLayer>),
    Filled(Filled),
}

/// A task and where its answer goes.
pub struct ForwardJob {
    pub task: Task,
    pub reply: oneshot::Sender<Result<Answer, String>>,
}

/// One switch layer's routing of every token (forward's `router.{l}.*`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RouterLayer {
    /// The top-1 expert before capacity.
    pub expert: Vec<i32>,
    /// The router probability of that expert.
    pub prob: Vec<f32>,
    /// 1 if the token got a slot, 0 if it was dropped for capacity.
    pub kept: Vec<i32>,
    /// The whole router distribution per token.
    pub probs: Vec<Vec<f32>>,
}

/// The engine's one-forward programs.
#[derive(Default)]
pub struct Forwards {
    programs: HashMap<(bool, usize), Program>,
}

impl Forwards {
    /// Answers `job` (a client that has gone is ignored).
    pub fn run(&mut self, gen: &Generator, cfg: &ModelConfig, job: ForwardJob) {
        let _awake = gen.device().keep_cores_awake();
        let answer = match job.task {
            Task::Inspect { ids, types } => self.routing(gen, cfg, ids, types).map(Answer::Routing),
            Task::FillMask { ids } => self.fill(gen, cfg, ids).map(Answer::Filled),
        };
        let _ = job.reply.send(answer.map_err(|e| format!("{e:#}")));
    }

    /// Forward's router outputs for one unpadded row.
    fn routing(
        &mut self,
        gen: &Generator,
        cfg: &ModelConfig,
        ids: Vec<i32>,
        types: Vec<i32>,
    ) -> Result<Vec<RouterLayer>> {
        let n = ids.len();
        let batch = HostBatch {
            batch: 1,
            len: n,
            input_ids: ids,
            attention_mask: vec![1; n],
            token_type_ids: types,
            spout: None,
        };
        batch.validate(cfg.vocab_size, cfg.context, 0)?;
        let positions = batch.positions(cfg.context, PositionRule::Reference);
        let args = forward_args(&[], &batch, &positions, &vec![-100; n])?;
        let program = self.program(gen, (true, n), || {
            router_program(cfg, n as i64, gen.weights())
        })?;
        let outputs = gen.run_outputs(program, &args)?;
        router_layers(&program.output_names(), &outputs, n)
    }

    /// Fill-mask's rule on the inference program's logits.
    fn fill(&mut self, gen: &Generator, cfg: &ModelConfig, ids: Vec<u32>) -> Result<Filled> {
        let row = Row::hybrid(ids);
        let (dims, args) = batch_args(std::slice::from_ref(&row), cfg)?;
        let n = dims[1] as usize;
        let program = self.program(gen, (false, n), || {
            infer_program(cfg, InferOutput::Logits, 1, n as i64, gen.weights())
        })?;
        let logits = gen
            .run_outputs(program, &args)?
            .pop()
            .ok_or_else(|| anyhow!("the logits program returned nothing"))?
            .to_vec::<f32>()?;
        let vocab = cfg.vocab_size as usize;
        Ok(fill_from_logits(
            &row.ids,
            &logits,
            vocab,
            (vocab - 6) as u32,
        ))
    }

    /// The program for `key`, built and compiled on first use.
    fn program(
        &mut self,
        gen: &Generator,
        key: (bool, usize),
        build: impl FnOnce() -> Result<Function>,
    ) -> Result<&Program> {
        if !self.programs.contains_key(&key) {
            if self.programs.len() >= MAX_PROGRAMS {
                self.programs.clear();
            }
            let program = gen.compile(build()?)?;
            self.programs.insert(key, program);
        }
        Ok(&self.programs[&key])
    }
}

/// `gptsan forward`'s program for one row of `len` tokens with only its `router.*`
/// outputs (XLA drops what they do not need: the logits, the loss).
fn router_program(cfg: &ModelConfig, len: i64, weights: hlo::DType) -> Result<Function> {
    let shape = ForwardShape {
        batch: 1,
        len,
        spout: false,
        grads: false,
        loss: false,
        weights,
    };
    let mut f = forward_program(cfg, shape)?;
    f.outputs
        .retain(|o| o.name.as_deref().is_some_and(|n| n.starts_with("router.")));
    Ok(f)
}

/// Groups `router.{l}.probs|expert|kept` outputs (one row of `n` tokens) by layer.
fn router_layers(names: &[String], outputs: &[Literal], n: usize) -> Result<Vec<RouterLayer>> {
    let find = |name: String| -> Result<&Literal> {
        names
            .iter()
            .position(|x| *x == name)
            .map(|i| &outputs[i])
            .ok_or_else(|| anyhow!("the router program has no {name} output"))
    };
    let layers = names.iter().filter(|n| n.ends_with(".expert")).count();
    (0..layers)
        .map(|l| {
            let expert = find(format!("router.{l}.expert"))?.to_vec::<i32>()?;
            let kept = find(format!("router.{l}.kept"))?.to_vec::<i32>()?;
            let flat = find(format!("router.{l}.probs"))?.to_vec::<f32>()?;
            if expert.len() != n || kept.len() != n || flat.len() % n.max(1) != 0 {
                bail!("router.{l}: outputs of unexpected sizes for {n} tokens");
            }
            let probs: Vec<Vec<f32>> = flat.chunks(flat.len() / n).map(<[f32]>::to_vec).collect();
            let prob = expert
                .iter()
                .zip(&probs)
                .map(|(&e, p)| p.get(e as usize).copied().unwrap_or(0.0))
                .collect();
            Ok(RouterLayer {
                expert,
                prob,
                kept,
                probs,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn router_outputs_are_grouped_by_layer() {
        let names: Vec<String> = ["router.0.probs", "router.0.expert", "router.0.kept"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let outputs = vec![
            Literal::from_slice(&[1, 2, 2], &[0.25f32, 0.75, 0.9, 0.1]).unwrap(),
            Literal::from_slice(&[1, 2], &[1i32, 0]).unwrap(),
            Literal::from_slice(&[1, 2], &[1i32, 0]).unwrap(),
        ];
        let layers = router_layers(&names, &outputs, 2).unwrap();
        assert_eq!(layers.len(), 1);
        assert_eq!(layers[0].expert, vec![1, 0]);
        assert_eq!(layers[0].prob, vec![0.75, 0.9]);
        assert_eq!(layers[0].kept, vec![1, 0]);
        assert_eq!(layers[0].probs, vec![vec![0.25, 0.75], vec![0.9, 0.1]]);
    }
}
