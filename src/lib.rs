//! gptsan: GPTSAN, the Japanese Switch-Transformer language model, rebuilt in Rust as an
//! XLA compiler frontend. The model is described with the `hlo` builder, differentiated by
//! its autodiff, lowered to StableHLO and run through PJRT plugins by `runtime`.

pub mod atomic_file;
pub mod cli;
pub mod corpus;
pub mod data;
pub mod device;
pub mod generate;
pub mod infer;
pub mod model;
pub mod rng;
pub mod serve;
pub mod tokenizer;
pub mod train;
