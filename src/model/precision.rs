//! Numeric precision of a run (`--precision f32|bf16|f16`).
//!
//! For inference, bf16/f16 keep the weights on the device in 16 bits (half the bytes a
//! decode step reads, and decoding is bound by memory bandwidth) while every operation
//! still computes in f32. For training, bf16 computes the forward and backward passes in
//! bf16 from f32 master weights (softmax, layer norm, router and loss in f32).

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

    /// The element type the train step computes in (bf16 keeps f32 master weights,
    /// gradients and optimizer state). f16 training needs dynamic loss scaling, which is
    /// not built yet.
    pub fn training_compute(self) -> anyhow::Result<DType> {
        match self {
            Precision::F32 => Ok(DType::F32),
            Precision::Bf16 => Ok(DType::Bf16),
            Precision::F16 => anyhow::bail!(
                "training in f16 needs dynamic loss scaling, which is not built yet: use \
                 --precision bf16 or f32"
            ),
        }
    }

    pub fn name(self) -> &'static str {
        self.weights().name()
    }
}
