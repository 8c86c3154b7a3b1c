//! Element types of tensors, with the facts every layer needs: byte width, MLIR spelling,
//! and whether values carry gradients.

use std::fmt;

/// An element type. The set mirrors what GPTSAN needs from StableHLO.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    Pred,
    S32,
    S64,
    U32,
    U64,
    F16,
    Bf16,
    F32,
    F64,
}

impl DType {
    pub const ALL: [DType; 9] = [
        DType::Pred,
        DType::S32,
        DType::S64,
        DType::U32,
        DType::U64,
        DType::F16,
        DType::Bf16,
        DType::F32,
        DType::F64,
    ];

    /// Bytes per element in a dense host buffer (pred is one byte, as PJRT stores it).
    pub fn size_in_bytes(self) -> usize {
        match self {
            DType::Pred => 1,
            DType::F16 | DType::Bf16 => 2,
            DType::S32 | DType::U32 | DType::F32 => 4,
            DType::S64 | DType::U64 | DType::F64 => 8,
        }
    }

    /// The element type as written in MLIR tensor types (`tensor<2x3xf32>`).
    pub fn mlir_name(self) -> &'static str {
        match self {
            DType::Pred => "i1",
            DType::S32 => "i32",
            DType::S64 => "i64",
            DType::U32 => "ui32",
            DType::U64 => "ui64",
            DType::F16 => "f16",
            DType::Bf16 => "bf16",
            DType::F32 => "f32",
            DType::F64 => "f64",
        }
    }

    /// The short name users see (`f32`, `bf16`, `s32`, `pred`), also used in manifests.
    pub fn name(self) -> &'static str {
        match self {
            DType::Pred => "pred",
            DType::S32 => "s32",
            DType::S64 => "s64",
            DType::U32 => "u32",
            DType::U64 => "u64",
            DType::F16 => "f16",
            DType::Bf16 => "bf16",
            DType::F32 => "f32",
            DType::F64 => "f64",
        }
    }

    /// Parses the names of [`DType::name`] plus common aliases (`float32`, `int64`, `bool`).
    pub fn parse(s: &str) -> Option<DType> {
        Some(match s.to_ascii_lowercase().as_str() {
            "pred" | "bool" | "i1" => DType::Pred,
            "s32" | "i32" | "int32" => DType::S32,
            "s64" | "i64" | "int64" => DType::S64,
            "u32" | "ui32" | "uint32" => DType::U32,
            "u64" | "ui64" | "uint64" => DType::U64,
            "f16" | "float16" | "half" => DType::F16,
            "bf16" | "bfloat16" => DType::Bf16,
            "f32" | "float32" | "float" => DType::F32,
            "f64" | "float64" | "double" => DType::F64,
            _ => return None,
        })
    }

    pub fn is_float(self) -> bool {
        matches!(self, DType::F16 | DType::Bf16 | DType::F32 | DType::F64)
    }

    pub fn is_integer(self) -> bool {
        matches!(self, DType::S32 | DType::S64 | DType::U32 | DType::U64)
    }

    pub fn is_signed_integer(self) -> bool {
        matches!(self, DType::S32 | DType::S64)
    }

    pub fn is_unsigned_integer(self) -> bool {
        matches!(self, DType::U32 | DType::U64)
    }

    /// Only floating-point values carry gradients; integer and boolean paths are cut.
    pub fn is_differentiable(self) -> bool {
        self.is_float()
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
