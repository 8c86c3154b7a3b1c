//! The model's parameters: names, shapes, groups and initialisation, in one list.
//!
//! Names and layouts are the Hugging Face port's (PyTorch Linear weights are `[out, in]`),
//! with one exception: the experts of a switch layer are stacked into one tensor per
//! projection (`...mlp.experts.wi.weight [E, f, d]`, `...wo.weight [E, d, f]`) so they can
//! be sharded over the `model` mesh axis. Checkpoints convert to and from the port's
//! per-expert tensors (see `checkpoint`).

use super::config::ModelConfig;
use hlo::{Mesh, PartitionSpec};

/// What a parameter is for (the breakdown of `gptsan params`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Group {
    Embeddings,
    Attention,
    Routers,
    Experts,
    Bypass,
    Norms,
    Head,
    Spout,
    Ext,
}

impl Group {
    pub const ALL: [Group; 9] = [
        Group::Embeddings,
        Group::Attention,
        Group::Routers,
        Group::Experts,
        Group::Bypass,
        Group::Norms,
        Group::Head,
        Group::Spout,
        Group::Ext,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Group::Embeddings => "embeddings",
            Group::Attention => "attention",
            Group::Routers => "routers",
            Group::Experts => "experts",
            Group::Bypass => "bypass",
            Group::Norms => "norms",
            Group::Head => "head",
            Group::Spout => "spout",
            Group::Ext => "ext",
        }
    }
}

/// How a fresh model fills a parameter.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    Zeros,
    Ones,
    Normal { std: f64 },
}

/// One parameter of the model.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamSpec {
    pub name: String,
    pub dims: Vec<i64>,
    pub group: Group,
    pub init: Init,
    /// AdamW weight decay applies (not to LayerNorm parameters and biases).
    pub decay: bool,
}

impl ParamSpec {
    pub fn numel(&self) -> i64 {
        self.dims.iter().product()
    }
}

pub fn block_prefix(layer: i64) -> String {
    format!("model.blocks.{layer}")
}

/// Every parameter of a model with this config, in a fixed order (the argument order of
/// compiled programs).
pub fn param_specs(cfg: &ModelConfig) -> Vec<ParamSpec> {
    let (v, c, d) = (cfg.vocab_size, cfg.context, cfg.d_model);
    let mut out = Vec::new();
    let mut add = |name: String, dims: Vec<i64>, group: Group, init: Init, decay: bool| {
        out.push(ParamSpec {
            name,
            dims,
            group,
            init,
            decay,
        });
    };
    let small = Init::Normal { std: 0.02 };
    add(
        "model.embed_tokens.weight".into(),
        vec![v, d],
        Group::Embeddings,
        small,
        true,
    );
    add(
        "model.position_embeddings.weight".into(),
        vec![c, d],
        Group::Embeddings,
        small,
        true,
    );
    if cfg.num_ext_layers > 0 {
        // Zero so that appending ext layers starts from the switch model's function.
        add(
            "model.extra_position_embeddings.weight".into(),
            vec![c, d],
            Group::Ext,
            Init::Zeros,
            true,
        );
    }
    for l in 0..cfg.num_layers() {
        let p = block_prefix(l);
        let ext = l >= cfg.num_switch_layers;
        let attn_group = if ext { Group::Ext } else { Group::Attention };
        let norm_group = if ext { Group::Ext } else { Group::Norms };
        for proj in ["q_proj", "k_proj", "v_proj", "out_proj"] {
            add(
                format!("{p}.self_attn.self_attn.{proj}.weight"),
                vec![d, d],
                attn_group,
                small,
                true,
            );
        }
        add(
            format!("{p}.self_attn.norm.weight"),
            vec![d],
            norm_group,
            Init::Ones,
            false,
        );
        add(
            format!("{p}.self_attn.norm.bias"),
            vec![d],
            norm_group,
            Init::Zeros,
            false,
        );
        if ext {
            let x = cfg.ext_hidden;
            add(
                format!("{p}.feed_forward.mlp.wi.weight"),
                vec![x, d],
                Group::Ext,
                small,
                true,
            );
            add(
                format!("{p}.feed_forward.mlp.wi.bias"),
                vec![x],
                Group::Ext,
                Init::Zeros,
                false,
            );
            add(
                format!("{p}.feed_forward.mlp.wo.weight"),
                vec![d, x],
                Group::Ext,
                small,
                true,
            );
            add(
                format!("{p}.feed_forward.mlp.wo.bias"),
                vec![d],
                Group::Ext,
                Init::Zeros,
                false,
            );
        } else {
            let (e, f) = (cfg.num_experts, cfg.expert_hidden);
            add(
                format!("{p}.feed_forward.mlp.router.classifier.weight"),
                vec![e, d],
                Group::Routers,
                small,
                true,
            );
            add(
                format!("{p}.feed_forward.mlp.experts.wi.weight"),
                vec![e, f, d],
                Group::Experts,
                small,
                true,
            );
            add(
                format!("{p}.feed_forward.mlp.experts.wo.weight"),
                vec![e, d, f],
                Group::Experts,
                small,
                true,
            );
            add(
                format!("{p}.feed_forward.soft_bypass_mlp.weight"),
                vec![d, d],
                Group::Bypass,
                small,
                true,
            );
        }
        add(
            format!("{p}.feed_forward.norm.weight"),
            vec![d],
            norm_group,
            Init::Ones,
            false,
        );
        add(
            format!("{p}.feed_forward.norm.bias"),
            vec![d],
            norm_group,
            Init::Zeros,
            false,
        );
    }
    add(
        "model.last_project.weight".into(),
        vec![d, d],
        Group::Head,
        small,
        true,
    );
    add(
        "model.last_project.bias".into(),
        vec![d],
        Group::Head,
        Init::Zeros,
        false,
    );
    add(
        "final_logits_bias".into(),
        vec![1, v],
        Group::Head,
        Init::Zeros,
        false,
    );
    if cfg.has_spout() {
        let s = cfg.spout_width;
        // 1/sqrt(s) keeps the signal alive through the 8 tanh layers.
        let hidden = Init::Normal {
            std: 1.0 / (s as f64).sqrt(),
        };
        for i in 0..8 {
            add(
                format!("model.spout.{}.weight", 2 * i),
                vec![s, s],
                Group::Spout,
                hidden,
                true,
            );
        }
        add(
            "model.spout.16.weight".into(),
            vec![cfg.num_layers() * 2 * d, s],
            Group::Spout,
            small,
            true,
        );
    }
    out
}

/// Parameter counts per group, in [`Group::ALL`] order (groups with none included).
pub fn counts_by_group(specs: &[ParamSpec]) -> Vec<(Group, i64)> {
    Group::ALL
        .iter()
        .map(|g| {
            (
                *g,
                specs
                    .iter()
                    .filter(|p| p.group == *g)
                    .map(ParamSpec::numel)
                    .sum(),
            )
        })
        .collect()
}

/// How a parameter is laid out over a `data` x `model` mesh: experts and attention heads
/// split over `model`, everything else replicated.
pub fn param_sharding(spec: &ParamSpec, mesh: &Mesh) -> PartitionSpec {
    let rank = spec.dims.len();
    let mut dims: Vec<Option<&str>> = vec![None; rank];
    if mesh.axis_size("model").unwrap_or(1) > 1 {
        let n = &spec.name;
        // Experts split on E; q/k/v on their output (head) axis; out_proj on its input.
        let heads_out = ["q_proj.weight", "k_proj.weight", "v_proj.weight"]
            .iter()
            .any(|p| n.ends_with(p));
        if n.contains(".mlp.experts.") || heads_out {
            dims[0] = Some("model");
        } else if n.ends_with("out_proj.weight") {
            dims[1] = Some("model");
        }
    }
    PartitionSpec::new(&dims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::{ModelConfig, RouterConfig};

    fn released() -> ModelConfig {
        ModelConfig {
            vocab_size: 36000,
            context: 1280,
            d_model: 1024,
            num_heads: 16,
            num_switch_layers: 10,
            num_ext_layers: 0,
            num_experts: 16,
            expert_hidden: 8192,
            ext_hidden: 4096,
            spout_width: 128,
            layer_norm_eps: 1e-5,
            router: RouterConfig::default(),
        }
    }

    #[test]
    fn released_model_has_2_8b_parameters() {
        let specs = param_specs(&released());
        let total: i64 = specs.iter().map(ParamSpec::numel).sum();
        // 10 layers x 16 experts x 2 x 1024 x 8192 = 2.68B in experts alone.
        assert!((2_700_000_000..2_900_000_000).contains(&total), "{total}");
        let experts = counts_by_group(&specs)
            .into_iter()
            .find(|(g, _)| *g == Group::Experts)
            .unwrap()
            .1;
        assert_eq!(experts, 10 * 16 * 2 * 1024 * 8192);
    }
}
