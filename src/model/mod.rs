//! The GPTSAN model: configuration, parameters, the graph, losses and checkpoints.

pub mod attention;
pub mod checkpoint;
pub mod config;
pub mod decode;
pub mod expert_mlp;
pub mod gptsan;
pub mod head_logsumexp;
pub mod inputs;
pub mod loss;
pub mod mask;
pub mod masked_attention;
pub mod matmul;
pub mod nn;
pub mod params;
pub mod precision;
pub mod programs;

pub mod switch_ffn;

pub use config::{ModelConfig, RouterConfig, RoutingSemantics};
pub use params::{param_specs, ParamSpec};
