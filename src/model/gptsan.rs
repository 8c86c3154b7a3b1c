//! The GPTSAN forward pass, top to bottom, as in SPEC section 4:
//!
//! ```text
//! x = wte[ids] + wpe[pos]
//! for each layer:                       (ext layers first add ete[pos] to x)
//!     x = x + LN_an(SelfAttention(x, past = spout or cache))
//!     x = x + LN_ln(SwitchFFN(x) + tanh(x W_bypass))   | Dense(x) for ext layers
//! h = swish(x W_lp + b_lp);  logits = h wte^T + b_out
//! ```

use super::attention::{self_attention, AttentionWeights};
use super::config::ModelConfig;
use super::mask::prefix_lm_mask;
use super::matmul::matmul_nt;
use super::nn::{layer_norm, linear, linear_bias};
use super::params::{block_prefix, ParamSpec};
use super::switch_ffn::{switch_ffn, SwitchOutput, SwitchWeights};
use hlo::{Builder, DType, Shape, Tensor};
use std::collections::HashMap;

/// The model's parameters as values of one program, by name.
pub struct Params {
    map: HashMap<String, Tensor>,
    order: Vec<String>,
}

impl Params {
    /// Declares every parameter as a program argument, in `specs` order.
    pub fn declare(b: &Builder, specs: &[ParamSpec], dtype: DType) -> Params {
        let mut map = HashMap::new();
        let mut order = Vec::new();
        for s in specs {
            let t = b.parameter(&s.name, Shape::new(dtype, s.dims.clone()));
            map.insert(s.name.clone(), t);
            order.push(s.name.clone());
        }
        Params { map, order }
    }

    /// Declares every parameter as a program argument stored as `stored` (e.g. bf16
    /// weights for inference, half the bytes to read per token) and converts each to f32
    /// where it enters the graph, so the model computes in f32 either way. The expert
    /// tables stay in `stored`: `switch_ffn` converts them layer by layer (only the
    /// chosen rows when decoding), because converted here XLA may convert every layer's
    /// tables at the start of the program and hold all of them at once.
    pub fn declare_stored(b: &Builder, specs: &[ParamSpec], stored: DType) -> Params {
        let mut p = Params::declare(b, specs, stored);
        if stored != DType::F32 {
            for (name, t) in p.map.iter_mut() {
                if !is_expert_table(name) {
                    *t = t.convert(DType::F32);
                }
            }
        }
        p
    }

    /// From already-built tensors (e.g. values after an optimizer update).
    pub fn from_tensors(names: &[String], tensors: Vec<Tensor>) -> Params {
        let map = names.iter().cloned().zip(tensors).collect();
        Params {
            map,
            order: names.to_vec(),
        }
    }

    /// The parameter `name`. Names come from `param_specs`, so a miss is a bug in this
    /// crate, not bad user input.
    pub fn get(&self, name: &str) -> &Tensor {
        self.map
            .get(name)
            .unwrap_or_else(|| panic!("model parameter {name} was not declared"))
    }

    pub fn names(&self) -> &[String] {
        &self.order
    }

    /// Tensors in declaration order.
    pub fn tensors(&self) -> Vec<Tensor> {
        self.order.iter().map(|n| self.map[n].clone()).collect()
    }
}

/// Whether `name` is a switch layer's expert table (`[E, f, d]` or `[E, d, f]`).
fn is_expert_table(name: &str) -> bool {
    name.ends_with(".experts.wi.weight") || name.ends_with(".experts.wo.weight")
}

/// The token inputs of one forward call. Host code computes positions (the reference's
/// rule for parity, or the padding-correct rule for generation).
pub struct Batch {
    /// `[B, T]` s32.
    pub input_ids: Tensor,
    /// `[B, T]` s32, rows of the position table.
    pub positions: Tensor,
    /// `[B, T]` pred: real token (not padding).
    pub valid: Tensor,
    /// `[B, T]` pred: token is in the bidirectional prefix (token_type_id 1).
    pub prefix: Tensor,
    /// `[B, S]` f32 spout vector, for models with a spout.
    pub spout: Option<Tensor>,
    /// Padding takes expert slots like any token (the reference port's behaviour);
    /// false lets a padded row route exactly as it would alone.
    pub pads_take_capacity: bool,
}

/// Everything a forward pass can report.
pub struct ModelOutput {
    /// `[B, T, V]`.
    pub logits: Tensor,
    /// `[B, T, d]` = swish(last_project(x)).
    pub last_hidden: Tensor,
    /// The reference's `hidden_states`: one per layer plus `last_hidden` (with ext
    /// layers, entry L_s-1 already contains the extra position embeddings, as there).
    pub hidden_states: Vec<Tensor>,
    /// The true output of each block.
    pub block_outputs: Vec<Tensor>,
    /// One per switch layer.
    pub routers: Vec<SwitchOutput>,
    /// Keys and values per layer `[B, H, S, dh]`, past positions included.
    pub presents: Vec<(Tensor, Tensor)>,
}

/// Spout vector `[B, S]` -> one past key and value per layer, each `[B, H, 1, dh]`.
pub fn spout_past(cfg: &ModelConfig, p: &Params, spout: &Tensor) -> Vec<(Tensor, Tensor)> {
    let mut s = spout.clone();
    for i in 0..8 {
        s = linear(&s, p.get(&format!("model.spout.{}.weight", 2 * i))).tanh();
    }
    let kv = linear(&s, p.get("model.spout.16.weight"));
    let (b, l, h, dh) = (
        spout.dims()[0],
        cfg.num_layers(),
        cfg.num_heads,
        cfg.head_dim(),
    );
    let kv = kv.reshape(&[b, l, 2, h, 1, dh]);
    (0..l)
        .map(|layer| {
            let pick = |which: i64| {
                kv.slice(
                    &[0, layer, which, 0, 0, 0],
                    &[b, layer + 1, which + 1, h, 1, dh],
                    &[1; 6],
                )
                .reshape(&[b, h, 1, dh])
            };
            (pick(0), pick(1))
        })
        .collect()
}

/// Optional per-call randomness for training (router jitter), one `[B, T, d]` f32
/// multiplier per switch layer.
pub type Jitter = Vec<Tensor>;

/// The attention weights of layer `layer`.
pub fn attention_weights<'a>(p: &'a Params, layer: i64) -> AttentionWeights<'a> {
    let pre = block_prefix(layer);
    AttentionWeights {
        q: p.get(&format!("{pre}.self_attn.self_attn.q_proj.weight")),
        k: p.get(&format!("{pre}.self_attn.self_attn.k_proj.weight")),
        v: p.get(&format!("{pre}.self_attn.self_attn.v_proj.weight")),
        out: p.get(&format!("{pre}.self_attn.self_attn.out_proj.weight")),
    }
}

/// `x + LayerNorm(h)` with the norm of sub-layer `which` (`self_attn` or `feed_forward`).
pub fn add_norm(
    cfg: &ModelConfig,
    p: &Params,
    layer: i64,
    which: &str,
    x: &Tensor,
    h: &Tensor,
) -> Tensor {
    let pre = block_prefix(layer);
    let n = layer_norm(
        h,
        p.get(&format!("{pre}.{which}.norm.weight")),
        p.get(&format!("{pre}.{which}.norm.bias")),
        cfg.layer_norm_eps,
    );
    x.add(&n)
}

/// The feed-forward half of layer `layer`: Switch FFN + soft bypass, or the ext layers'
/// dense FFN. Returns the branch output (before its norm) and the router's outputs.
pub fn feed_forward(
    cfg: &ModelConfig,
    p: &Params,
    layer: i64,
    x: &Tensor,
    training: bool,
    jitter: Option<&Tensor>,
    routed: Option<&Tensor>,
) -> (Tensor, Option<SwitchOutput>) {
    let pre = block_prefix(layer);
    if layer >= cfg.num_switch_layers {
        let h = linear_bias(
            x,
            p.get(&format!("{pre}.feed_forward.mlp.wi.weight")),
            p.get(&format!("{pre}.feed_forward.mlp.wi.bias")),
        )
        .swish();
        let out = linear_bias(
            &h,
            p.get(&format!("{pre}.feed_forward.mlp.wo.weight")),
            p.get(&format!("{pre}.feed_forward.mlp.wo.bias")),
        );
        return (out, None);
    }
    let sw = SwitchWeights {
        router: p.get(&format!("{pre}.feed_forward.mlp.router.classifier.weight")),
        wi: p.get(&format!("{pre}.feed_forward.mlp.experts.wi.weight")),
        wo: p.get(&format!("{pre}.feed_forward.mlp.experts.wo.weight")),
    };
    let routed_out = switch_ffn(x, &sw, &cfg.router, training, jitter, routed);
    let bypass = linear(
        x,
        p.get(&format!("{pre}.feed_forward.soft_bypass_mlp.weight")),
    )
    .tanh();
    (routed_out.out.add(&bypass), Some(routed_out))
}

/// Token plus position embeddings `[B, T, d]`.
pub fn embed(p: &Params, ids: &Tensor, positions: &Tensor) -> Tensor {
    let wte = p.get("model.embed_tokens.weight");
    wte.take_rows(ids).add(
        &p.get("model.position_embeddings.weight")
            .take_rows(positions),
    )
}

/// The extra position embeddings added before the first ext layer.
pub fn extra_positions(p: &Params, positions: &Tensor) -> Tensor {
    p.get("model.extra_position_embeddings.weight")
        .take_rows(positions)
}

/// `swish(x W_lp + b_lp)`, the last hidden state.
pub fn last_project(p: &Params, x: &Tensor) -> Tensor {
    linear_bias(
        x,
        p.get("model.last_project.weight"),
        p.get("model.last_project.bias"),
    )
    .swish()
}

/// The whole forward pass.
pub fn forward(
    cfg: &ModelConfig,
    p: &Params,
    batch: &Batch,
    training: bool,
    jitter: Option<&Jitter>,
) -> ModelOutput {
    let bld = batch.input_ids.builder().clone();
    let (bsz, t) = (batch.input_ids.dims()[0], batch.input_ids.dims()[1]);
    let mut x = embed(p, &batch.input_ids, &batch.positions);

    let past: Option<Vec<(Tensor, Tensor)>> = batch.spout.as_ref().map(|s| spout_past(cfg, p, s));
    let num_past = past.is_some() as i64;
    let past_valid = bld.splat(1.0, &Shape::new(DType::Pred, vec![bsz, num_past]));
    let past_prefix = bld.splat(0.0, &Shape::new(DType::Pred, vec![bsz, num_past]));
    let key_valid = bld.concatenate(&[past_valid, batch.valid.clone()], 1);
    let key_prefix = bld.concatenate(&[past_prefix, batch.prefix.clone()], 1);
    let offset = bld.scalar(num_past as f64, DType::S32);
    let mask = prefix_lm_mask(&key_valid, &key_prefix, t, &offset);
    let routed = (!batch.pads_take_capacity).then_some(&batch.valid);

    let mut hidden_states: Vec<Tensor> = Vec::new();
    let mut block_outputs = Vec::new();
    let mut routers = Vec::new();
    let mut presents = Vec::new();
    for layer in 0..cfg.num_layers() {
        if layer == cfg.num_switch_layers && cfg.num_ext_layers > 0 {
            x = x.add(&extra_positions(p, &batch.positions));
            if let Some(last) = hidden_states.last_mut() {
                *last = x.clone(); // the reference adds in place into the stored tensor
            }
        }
        let layer_past = past
            .as_ref()
            .map(|v| (&v[layer as usize].0, &v[layer as usize].1));
        let attn = self_attention(
            &x,
            &attention_weights(p, layer),
            cfg.num_heads,
            layer_past,
            &mask,
        );
        x = add_norm(cfg, p, layer, "self_attn", &x, &attn.out);
        presents.push((attn.keys, attn.values));

        let j = jitter.map(|j| &j[layer as usize]);
        let (ff, router) = feed_forward(cfg, p, layer, &x, training, j, routed);
        routers.extend(router);
        x = add_norm(cfg, p, layer, "feed_forward", &x, &ff);
        hidden_states.push(x.clone());
        block_outputs.push(x.clone());
    }

    let last_hidden = last_project(p, &x);
    hidden_states.push(last_hidden.clone());
    let logits = lm_head(
        &last_hidden,
        p.get("model.embed_tokens.weight"),
        p.get("final_logits_bias"),
    );
    ModelOutput {
        logits,
        last_hidden,
        hidden_states,
        block_outputs,
        routers,
        presents,
    }
}

/// Positions from which [`lm_head`] folds the bias into its dot.
const BIAS_IN_DOT_POSITIONS: i64 = 256;

/// Tied LM head: ONE dot_general contracting the embedding's d axis (no transposed copy
/// of the embedding), plus the output bias.
///
/// For many positions the bias rides in the dot as one more contraction column
/// (`[h, 1] . [wte, bias]`): XLA CPU cannot fuse an add into a dot, so a separate bias
/// add is a whole extra pass over the `[positions, V]` logits (295 MB for 2,048
/// positions), while the extra column costs nothing measurable (d 257 runs as fast as
/// 256) and the widened embedding is one 37 MB copy. Few positions (decode steps) keep
/// the plain add, which is cheaper than that copy. In f32 that dot is the [`matmul_nt`]
/// composite (our own product where the backend has it).
pub fn lm_head(h: &Tensor, wte: &Tensor, bias: &Tensor) -> Tensor {
    let d = h.dims()[h.rank() - 1];
    let positions = h.dims().iter().product::<i64>() / d;
    if positions < BIAS_IN_DOT_POSITIONS {
        let v = bias.dims()[1];
        return linear(h, wte).add(&bias.reshape(&[v]));
    }
    let (h_ones, wte_bias) = (with_ones_column(h), with_bias_column(wte, bias));
    if h.dtype() != DType::F32 || wte_bias.dtype() != DType::F32 {
        return linear(&h_ones, &wte_bias);
    }
    let mut dims = h.dims().to_vec();
    dims[h.rank() - 1] = wte.dims()[0];
    matmul_nt(&h_ones.reshape(&[positions, d + 1]), &wte_bias).reshape(&dims)
}

/// `[h, 1]`: `h [.., d]` with a column of ones appended, to meet [`with_bias_column`].
pub(crate) fn with_ones_column(h: &Tensor) -> Tensor {
    let last = h.rank() - 1;
    let mut ones_dims = h.dims().to_vec();
    ones_dims[last] = 1;
    let ones = h.builder().scalar(1.0, h.dtype()).broadcast_to(&ones_dims);
    h.builder().concatenate(&[h.clone(), ones], last as i64)
}

/// `[wte, bias^T]`: the embedding `[V, d]` with the output bias `[1, V]` as one more
/// column, so that one dot gives the logits with their bias (and, in a gradient, the
/// bias's gradient as the last column of the embedding's).
pub(crate) fn with_bias_column(wte: &Tensor, bias: &Tensor) -> Tensor {
    let v = bias.dims()[1];
    let column = bias.reshape(&[v, 1]).convert(wte.dtype());
    wte.builder().concatenate(&[wte.clone(), column], 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::{RouterConfig, RoutingSemantics};
    use crate::model::params::param_specs;

    fn tiny(ext: i64, semantics: RoutingSemantics) -> ModelConfig {
        ModelConfig {
            vocab_size: 300,
            context: 64,
            d_model: 32,
            num_heads: 4,
            num_switch_layers: 2,
            num_ext_layers: ext,
            num_experts: 4,
            expert_hidden: 64,
            ext_hidden: 48,
            spout_width: 16,
            layer_norm_eps: 1e-5,
            router: RouterConfig {
                semantics,
                expert_capacity: 8,
                ..RouterConfig::default()
            },
        }
    }

    fn build(cfg: &ModelConfig, with_spout: bool) -> hlo::Function {
        let b = Builder::new("forward");
        let p = Params::declare(&b, &param_specs(cfg), DType::F32);
        let (bs, t) = (2, 20);
        let ids = b.parameter("input_ids", Shape::new(DType::S32, vec![bs, t]));
        let pos = b.parameter("positions", Shape::new(DType::S32, vec![bs, t]));
        let valid = b.parameter("valid", Shape::new(DType::Pred, vec![bs, t]));
        let prefix = b.parameter("prefix", Shape::new(DType::Pred, vec![bs, t]));
        let spout = with_spout.then(|| b.parameter("spout", Shape::new(DType::F32, vec![bs, 16])));
        let batch = Batch {
            input_ids: ids,
            positions: pos,
            valid,
            prefix,
            spout,
            pads_take_capacity: false,
        };
        let out = forward(cfg, &p, &batch, false, None);
        assert_eq!(out.logits.dims(), &[2, 20, 300]);
        assert_eq!(out.hidden_states.len() as i64, cfg.num_layers() + 1);
        let s = if with_spout { 21 } else { 20 };
        assert_eq!(out.presents[0].0.dims(), &[2, 4, s, 8]);
        assert_eq!(out.routers[0].kept.dims(), &[2, 20]);
        b.build(&[&out.logits, &out.routers[0].balance_loss])
            .expect("model graph type-checks")
    }

    #[test]
    fn forward_graph_type_checks() {
        build(&tiny(0, RoutingSemantics::Hf), false);
        build(&tiny(0, RoutingSemantics::Hf), true);
        build(&tiny(2, RoutingSemantics::Original), true);
    }
}
