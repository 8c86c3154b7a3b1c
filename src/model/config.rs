//! Model configuration: sizes and routing semantics, from our TOML/JSON configs or a
//! Hugging Face `config.json`.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// How the Switch router assigns tokens to expert slots and treats dropped tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RoutingSemantics {
    /// The Hugging Face port: a fixed capacity per sequence, tokens in position order;
    /// a dropped token's MoE output is `top1_prob * x`.
    Hf,
    /// The original mesh-tensorflow training code: capacity from a capacity factor over
    /// groups of flattened tokens; a dropped token's MoE output is 0.
    Original,
}

/// Router settings. Fields not used by the chosen semantics are ignored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouterConfig {
    pub semantics: RoutingSemantics,
    /// `hf`: slots per expert per sequence.
    pub expert_capacity: i64,
    /// `original`: capacity factor in training and in evaluation.
    pub capacity_factor_train: f64,
    pub capacity_factor_eval: f64,
    /// `original`: the smallest capacity.
    pub min_capacity: i64,
    /// `original`: tokens per routing group (flattened over the batch).
    pub group_size: i64,
    /// Multiplicative router-input noise `x * U(1-j, 1+j)` in training.
    pub jitter: f64,
    /// Weight of the load-balancing loss (summed over switch layers).
    pub balance_loss_coef: f64,
    /// Weight of the z-loss `logsumexp(logits)^2` on the output logits.
    pub z_loss_coef: f64,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            semantics: RoutingSemantics::Original,
            expert_capacity: 128,
            capacity_factor_train: 1.25,
            capacity_factor_eval: 2.0,
            min_capacity: 4,
            group_size: 1024,
            jitter: 0.01,
            balance_loss_coef: 1e-2,
            z_loss_coef: 1e-4,
        }
    }
}

/// The shape of a GPTSAN model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub vocab_size: i64,
    /// Maximum context (rows of the position tables).
    pub context: i64,
    pub d_model: i64,
    pub num_heads: i64,
    pub num_switch_layers: i64,
    #[serde(default)]
    pub num_ext_layers: i64,
    pub num_experts: i64,
    /// Hidden width of each expert FFN.
    pub expert_hidden: i64,
    /// Hidden width of the dense FFN of ext layers.
    #[serde(default = "default_ext_hidden")]
    pub ext_hidden: i64,
    /// Width of the spout vector (0: no spout).
    #[serde(default)]
    pub spout_width: i64,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub router: RouterConfig,
}

fn default_ext_hidden() -> i64 {
    4096
}
fn default_eps() -> f64 {
    1e-5
}

/// The subset of the Hugging Face `GPTSanJapaneseConfig` we read.
#[derive(Deserialize)]
struct HfConfig {
    vocab_size: i64,
    max_position_embeddings: i64,
    d_model: i64,
    num_heads: i64,
    num_switch_layers: i64,
    #[serde(default)]
    num_ext_layers: i64,
    num_experts: i64,
    d_ff: i64,
    #[serde(default = "default_ext_hidden")]
    d_ext: i64,
    #[serde(default)]
    d_spout: i64,
    #[serde(default = "default_eps")]
    layer_norm_epsilon: f64,
    #[serde(default = "default_capacity")]
    expert_capacity: i64,
    #[serde(default)]
    router_jitter_noise: f64,
}

fn default_capacity() -> i64 {
    128
}

impl ModelConfig {
    pub fn num_layers(&self) -> i64 {
        self.num_switch_layers + self.num_ext_layers
    }

    pub fn head_dim(&self) -> i64 {
        self.d_model / self.num_heads
    }

    pub fn has_spout(&self) -> bool {
        self.spout_width > 0
    }

    /// Reads a config: `.toml` (ours), or `.json` (ours, or a Hugging Face `config.json`
    /// recognised by its `model_type`).
    pub fn load(path: &Path) -> Result<ModelConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config {}", path.display()))?;
        let origin = path.display().to_string();
        if path.extension().is_some_and(|e| e == "json") {
            let v: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("{origin} is not valid JSON"))?;
            let cfg = if v.get("model_type").is_some() {
                Self::from_hf_json(&v).with_context(|| format!("in {origin}"))?
            } else {
                serde_json::from_value(v).with_context(|| format!("in config {origin}"))?
            };
            cfg.validate()
                .with_context(|| format!("in config {origin}"))?;
            Ok(cfg)
        } else {
            Self::from_toml(&text, &origin)
        }
    }

    /// From TOML text (`origin` names it in errors). A `[train]` table is ignored here: it
    /// belongs to the trainer (see `train::config`).
    pub fn from_toml(text: &str, origin: &str) -> Result<ModelConfig> {
        let mut table: toml::Table = toml::from_str(text)
            .map_err(|e| anyhow::anyhow!("in config {origin}: {}", e.to_string().trim_end()))?;
        table.remove("train");
        let cfg: ModelConfig = table.try_into().map_err(|e: toml::de::Error| {
            anyhow::anyhow!("in config {origin}: {}", e.to_string().trim_end())
        })?;
        cfg.validate()
            .with_context(|| format!("in config {origin}"))?;
        Ok(cfg)
    }

    /// From a Hugging Face `config.json` value. Port models route with `hf` semantics.
    pub fn from_hf_json(v: &serde_json::Value) -> Result<ModelConfig> {
        let hf: HfConfig = serde_json::from_value(v.clone()).context("not a GPTSAN config.json")?;
        Ok(ModelConfig {
            vocab_size: hf.vocab_size,
            context: hf.max_position_embeddings,
            d_model: hf.d_model,
            num_heads: hf.num_heads,
            num_switch_layers: hf.num_switch_layers,
            num_ext_layers: hf.num_ext_layers,
            num_experts: hf.num_experts,
            expert_hidden: hf.d_ff,
            ext_hidden: hf.d_ext,
            spout_width: hf.d_spout,
            layer_norm_eps: hf.layer_norm_epsilon,
            router: RouterConfig {
                semantics: RoutingSemantics::Hf,
                expert_capacity: hf.expert_capacity,
                jitter: hf.router_jitter_noise,
                ..RouterConfig::default()
            },
        })
    }

    /// The Hugging Face `config.json` for this model (written next to checkpoints).
    pub fn to_hf_json(&self) -> serde_json::Value {
        serde_json::json!({
            "architectures": ["GPTSanJapaneseForConditionalGeneration"],
            "model_type": "gptsan-japanese",
            "vocab_size": self.vocab_size,
            "max_position_embeddings": self.context,
            "d_model": self.d_model,
            "num_heads": self.num_heads,
            "num_layers": self.num_layers(),
            "num_switch_layers": self.num_switch_layers,
            "num_ext_layers": self.num_ext_layers,
            "num_experts": self.num_experts,
            "d_ff": self.expert_hidden,
            "d_ext": self.ext_hidden,
            "d_spout": self.spout_width,
            "layer_norm_epsilon": self.layer_norm_eps,
            "expert_capacity": self.router.expert_capacity,
            "router_jitter_noise": self.router.jitter,
            "router_dtype": "float32",
            "router_bias": false,
            "pad_token_id": self.vocab_size - 5,
            "separator_token_id": self.vocab_size - 2,
            "eos_token_id": self.vocab_size - 1,
        })
    }

    /// Sizes that cannot work are reported before anything is built.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("context", self.context),
            ("d_model", self.d_model),
            ("num_heads", self.num_heads),
            ("num_experts", self.num_experts),
            ("expert_hidden", self.expert_hidden),
        ];
        for (name, v) in positive {
            if v <= 0 {
                bail!("{name} must be positive, got {v}");
            }
        }
        if self.num_switch_layers < 0 || self.num_ext_layers < 0 || self.spout_width < 0 {
            bail!("layer counts and spout_width must not be negative");
        }
        if self.num_layers() == 0 {
            bail!("the model needs at least one layer");
        }
        if self.d_model % self.num_heads != 0 {
            bail!(
                "d_model {} is not divisible by num_heads {}",
                self.d_model,
                self.num_heads
            );
        }
        if self.vocab_size < 8 + 256 {
            bail!(
                "vocab_size {} cannot hold the byte and special tokens",
                self.vocab_size
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_fixture_hf_config() {
        let v: serde_json::Value = serde_json::json!({
            "model_type": "gptsan-japanese", "vocab_size": 36000, "max_position_embeddings": 64,
            "d_model": 32, "num_heads": 4, "num_switch_layers": 2, "num_ext_layers": 0,
            "num_experts": 4, "d_ff": 64, "d_ext": 4096, "d_spout": 16, "expert_capacity": 8,
            "layer_norm_epsilon": 1e-5, "router_jitter_noise": 0.0
        });
        let c = ModelConfig::from_hf_json(&v).unwrap();
        assert_eq!(c.router.semantics, RoutingSemantics::Hf);
        assert_eq!(c.router.expert_capacity, 8);
        assert_eq!(c.head_dim(), 8);
        let back = ModelConfig::from_hf_json(&c.to_hf_json()).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = toml::from_str::<ModelConfig>(
            "vocab_size = 300\ncontext = 8\nd_model = 8\nnum_heads = 2\nnum_switch_layers = 1\nnum_experts = 2\nexpert_hidden = 8\nd_modle = 3\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("d_modle"), "{err}");
    }
}
