//! Numeric precision of a run (`--precision f32|bf16|f16`).
//!
//! For inference, bf16/f16 keep the weights on the device in 16 bits (half the bytes a
//! decode step reads, and decoding is bound by memory bandwidth) while every operation
//! still computes in f32. For training, bf16 and f16 compute the forward and backward
//! passes in 16 bits from f32 master weights (softmax, layer norm, router and loss in
//! f32); f16 with dynamic loss scaling (`train::loss_scale`).

use hlo::DType;

#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    F32,
    Bf16,
    F16,
}

impl Precision {
    /// The element type weights are kept in on the device for inference.
    pub fn weights(self) -> DType {
        match self {
            Precision::F32 => DType::F32,
            Precision::Bf16 => DType::Bf16,
            Precision::F16 => DType::F16,
        }
    }

    /// The element type the train step computes in (bf16 and f16 keep f32 master
    /// weights, gradients and optimizer state; f16 also scales the loss dynamically).
    pub fn training_compute(self) -> anyhow::Result<DType> {
        Ok(self.weights())
    }

    pub fn name(self) -> &'static str {
        self.weights().name()
    }
}
