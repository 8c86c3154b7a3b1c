//! Compiled programs built from the model graph: the research forward pass (optionally
//! with gradients). Generation and training programs live with their features.

use super::config::ModelConfig;
use super::gptsan::{forward, Batch, Params};
use super::loss::lm_head_cross_entropy;
use super::params::{param_sharding, param_specs};
use anyhow::{anyhow, Result};
use hlo::{Builder, DType, Function, Mesh, PartitionSpec, Shape, Tensor};

/// The shapes a forward program is compiled for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ForwardShape {
    pub batch: i64,
    pub len: i64,
    pub spout: bool,
    /// Also compute the gradient of the loss for every parameter (implies `loss`).
    pub grads: bool,
    /// Compute the `loss` output (without labels it is meaningless and costs a pass of
    /// exponentials over all logits).
    pub loss: bool,
    /// How the parameter arguments are stored (f32, or bf16/f16 converted to f32 where
    /// they enter the graph).
    pub weights: DType,
}

/// Argument order of the forward program: every parameter (in `param_specs` order), then
/// these inputs.
pub const FORWARD_INPUTS: [&str; 5] = [
    "input_ids",
    "positions",
    "attention_mask",
    "token_type_ids",
    "labels",
];

/// Declares the token inputs `[B, T]` (all s32) and the optional spout.
pub fn declare_batch(
    b: &Builder,
    cfg: &ModelConfig,
    batch: i64,
    len: i64,
    spout: bool,
) -> (Batch, Tensor) {
    let int = |name: &str| b.parameter(name, Shape::new(DType::S32, vec![batch, len]));
    let ids = int("input_ids");
    let positions = int("positions");
    let mask = int("attention_mask");
    let types = int("token_type_ids");
    let labels = int("labels");
    let zero = b.scalar(0.0, DType::S32);
    let spout = spout.then(|| {
        b.parameter(
            "spout",
            Shape::new(DType::F32, vec![batch, cfg.spout_width]),
        )
    });
    let batch = Batch {
        input_ids: ids,
        positions,
        valid: mask.ne(&zero),
        prefix: types.ne(&zero),
        spout,
        pads_take_capacity: true,
    };
    (batch, labels)
}

/// Builds the forward program. Outputs (named): `logits`, `last_hidden_state`,
/// `hidden_states.{i}`, `router.{l}.probs|expert|kept`, `loss`, and with gradients
/// `grad.<param>` (our stacked names) and `grad_global_norm`.
pub fn forward_program(cfg: &ModelConfig, shape: ForwardShape) -> Result<Function> {
    let b = Builder::new("forward");
    let specs = param_specs(cfg);
    let params = Params::declare_stored(&b, &specs, shape.weights);
    let (batch, labels) = declare_batch(&b, cfg, shape.batch, shape.len, shape.spout);
    let out = forward(cfg, &params, &batch, false, None);
    let with_loss = shape.loss || shape.grads;
    let (loss, _, _) = lm_head_cross_entropy(
        &out.logits,
        &out.last_hidden,
        params.get("model.embed_tokens.weight"),
        params.get("final_logits_bias"),
        &labels,
    );

    let mut named: Vec<(String, Tensor)> = vec![
        ("logits".into(), out.logits.clone()),
        ("last_hidden_state".into(), out.last_hidden.clone()),
    ];
    for (i, h) in out.hidden_states.iter().enumerate() {
        named.push((format!("hidden_states.{i}"), h.clone()));
    }
    for (l, r) in out.routers.iter().enumerate() {
        named.push((format!("router.{l}.probs"), r.probs.clone()));
        named.push((format!("router.{l}.expert"), r.expert.clone()));
        named.push((format!("router.{l}.kept"), r.kept.clone()));
    }
    if with_loss {
        named.push(("loss".into(), loss.clone()));
    }
    if shape.grads {
        let wrt = params.tensors();
        let grads = hlo::autodiff::grad(&loss, &wrt)
            .map_err(|e| anyhow!("differentiating the loss: {e}"))?;
        // The norm covers what the port calls parameters: its `final_logits_bias` is a
        // buffer, not a parameter, so it is left out (its gradient is still reported).
        let mut sq = b.scalar(0.0, DType::F32);
        for (name, g) in params.names().iter().zip(&grads) {
            if name != "final_logits_bias" {
                sq = sq.add(&g.square().sum_all());
            }
            named.push((format!("grad.{name}"), g.clone()));
        }
        named.push(("grad_global_norm".into(), sq.sqrt()));
    }
    let refs: Vec<(&str, &Tensor)> = named.iter().map(|(n, t)| (n.as_str(), t)).collect();
    Ok(b.build_named(&refs)?)
}

/// The forward program's arguments: parameters, then the batch as s32 literals (and the
/// spout). `labels` may be all -100 when no loss is wanted.
pub fn forward_args(
    params: &[hlo::Literal],
    batch: &super::inputs::HostBatch,
    positions: &[i32],
    labels: &[i32],
) -> Result<Vec<hlo::Literal>> {
    let dims = [batch.batch as i64, batch.len as i64];
    let mut args: Vec<hlo::Literal> = params.to_vec();
    for rows in [
        &batch.input_ids[..],
        positions,
        &batch.attention_mask[..],
        &batch.token_type_ids[..],
        labels,
    ] {
        args.push(hlo::Literal::from_slice(&dims, rows)?);
    }
    if let Some(s) = &batch.spout {
        let width = s.len() as i64 / dims[0].max(1);
        args.push(hlo::Literal::from_slice(&[dims[0], width], s)?);
    }
    Ok(args)
}

/// Lays a single-device inference program out over `mesh`: parameters as in training
/// (experts and heads split over `model`), rows of `[B, ...]` inputs split over `data` when
/// they divide evenly, everything else and every output replicated. XLA's SPMD partitioner
/// inserts the collectives; results equal the single-device program.
pub fn on_mesh(mut f: Function, cfg: &ModelConfig, mesh: &Mesh) -> Function {
    let specs = param_specs(cfg);
    let data = mesh.axis_size("data").unwrap_or(1);
    for p in f.params.iter_mut() {
        let rank = p.shape.rank();
        p.sharding = Some(match specs.iter().find(|s| s.name == p.name) {
            Some(s) => param_sharding(s, mesh),
            None if data > 1 && rank > 0 && p.shape.dims[0] % data == 0 => {
                let mut dims: Vec<Option<&str>> = vec![None; rank];
                dims[0] = Some("data");
                PartitionSpec::new(&dims)
            }
            None => PartitionSpec::replicated(rank),
        });
    }
    let ranks: Vec<usize> = f
        .outputs
        .iter()
        .map(|o| f.value_shape(o.value).rank())
        .collect();
    for (o, rank) in f.outputs.iter_mut().zip(ranks) {
        o.sharding = Some(PartitionSpec::replicated(rank));
    }
    f.mesh = Some(mesh.clone());
    f
}

/// What an inference program returns for a batch (no loss, no gradients).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InferOutput {
    /// `logits [B, T, V]`.
    Logits,
    /// `vector [B, L*d]`: every layer's output x at the position given by the extra
    /// argument `pos [B]` (s32), concatenated over layers (the original's vector; with ext
    /// layers, the extra position embedding belongs to the next layer's input, not to the
    /// vector).
    Vector,
}

/// An inference forward program: the batch as in [`forward_args`] (no spout; labels are
/// declared but unused), padding invisible and taking no expert slots, so that a
/// right-padded row computes what it computes alone. [`InferOutput::Vector`] takes one
/// more argument, `pos [B]`.
pub fn infer_program(
    cfg: &ModelConfig,
    what: InferOutput,
    batch: i64,
    len: i64,
    weights: DType,
) -> Result<Function> {
    let b = Builder::new(match what {
        InferOutput::Logits => "logits",
        InferOutput::Vector => "vector",
    });
    let params = Params::declare_stored(&b, &param_specs(cfg), weights);
    let (mut inputs, _labels) = declare_batch(&b, cfg, batch, len, false);
    inputs.pads_take_capacity = false;
    let out = forward(cfg, &params, &inputs, false, None);
    let f = match what {
        InferOutput::Logits => b.build_named(&[("logits", &out.logits)])?,
        InferOutput::Vector => {
            let pos = b.parameter("pos", Shape::new(DType::S32, vec![batch]));
            let vector = vector_at(&out.block_outputs, &pos, len);
            b.build_named(&[("vector", &vector)])?
        }
    };
    Ok(f)
}

/// `[B, L*d]`: row b of every `[B, T, d]` layer output at position `pos[b]`, concatenated.
fn vector_at(layers: &[Tensor], pos: &Tensor, len: i64) -> Tensor {
    let bld = pos.builder().clone();
    let all = bld.concatenate(layers, 2);
    let (batch, width) = (all.dims()[0], all.dims()[2]);
    let rows = bld
        .iota(&Shape::new(DType::S32, vec![batch]), 0)
        .mul(&bld.scalar(len as f64, DType::S32))
        .add(pos);
    all.reshape(&[batch * len, width]).take_rows(&rows)
}
