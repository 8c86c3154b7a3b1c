//! Numeric precision of a run (`--precision f32|bf16|f16`).
//!
//! For inference, bf16/f16 keep the weights on the device in 16 bits (half the bytes a
//! decode step reads, and decoding is bound by memory bandwidth) while every operation
//! still computes in f32.

use hlo::DType;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
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

    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::F16 => "f16",
        }
    }
}
