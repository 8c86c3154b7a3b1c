//! What an optimized program communicates (its collectives: kind, count, bytes) and what
//! it is made of (every instruction's opcode and shape), read from the `HloModuleProto`
//! that [`crate::Executable::optimized_program`] returns.
//!
//! Only the few proto fields needed are declared (numbers from `xla/service/hlo.proto` and
//! `xla/xla_data.proto`); prost skips the rest.

use crate::error::{Error, Result};
use prost::Message;
use std::collections::BTreeMap;

/// One kind of collective in a program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CollectiveStat {
    /// The HLO opcode without an async `-start`/`-done` suffix: `all-reduce`,
    /// `all-gather`, `all-to-all`, `reduce-scatter`, `collective-permute`, ...
    pub kind: String,
    pub count: usize,
    /// Bytes of the results on one device, summed over the instructions.
    pub bytes: u64,
}

const KINDS: [&str; 6] = [
    "all-reduce",
    "all-gather",
    "all-to-all",
    "reduce-scatter",
    "collective-permute",
    "collective-broadcast",
];

/// One instruction of an optimized program, in any of its computations (fused ones
/// included): what tests read to check what XLA made of a program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstructionShape {
    /// The HLO opcode (`dot`, `fusion`, `transpose`, `copy`, ...).
    pub opcode: String,
    /// The result's dimensions (empty for a tuple).
    pub dims: Vec<i64>,
}

/// Every instruction of a serialized optimized program, with its result's dimensions.
pub fn instructions(optimized_program: &[u8]) -> Result<Vec<InstructionShape>> {
    let module = decode_module(optimized_program)?;
    Ok(module
        .computations
        .iter()
        .flat_map(|c| &c.instructions)
        .map(|inst| InstructionShape {
            opcode: inst.opcode.clone(),
            dims: inst
                .shape
                .as_ref()
                .map_or_else(Vec::new, |s| s.dimensions.clone()),
        })
        .collect())
}

/// A serialized optimized program: `HloModuleProtoWithConfig`, as the CPU plugin returns
/// it, or a bare `HloModuleProto`.
fn decode_module(optimized_program: &[u8]) -> Result<proto::HloModuleProto> {
    let wrapped = proto::HloModuleProtoWithConfig::decode(optimized_program)
        .ok()
        .and_then(|w| w.hlo_module)
        .filter(|m| !m.computations.is_empty());
    match wrapped {
        Some(m) => Ok(m),
        None => proto::HloModuleProto::decode(optimized_program)
            .map_err(|e| Error::invalid(format!("not an HloModuleProto: {e}"))),
    }
}

/// The collectives of a serialized optimized program, by kind (sorted).
pub fn collectives(optimized_program: &[u8]) -> Result<Vec<CollectiveStat>> {
    let module = decode_module(optimized_program)?;
    let mut by_kind: BTreeMap<String, CollectiveStat> = BTreeMap::new();
    for inst in module.computations.iter().flat_map(|c| &c.instructions) {
        if inst.opcode.ends_with("-done") {
            continue; // counted at its -start
        }
        let kind = inst.opcode.trim_end_matches("-start");
        if !KINDS.contains(&kind) {
            continue;
        }
        let stat = by_kind
            .entry(kind.to_string())
            .or_insert_with(|| CollectiveStat {
                kind: kind.to_string(),
                count: 0,
                bytes: 0,
            });
        stat.count += 1;
        stat.bytes += inst.shape.as_ref().map_or(0, shape_bytes);
    }
    Ok(by_kind.into_values().collect())
}

/// Bytes of an array shape, or of a tuple's arrays.
fn shape_bytes(s: &proto::ShapeProto) -> u64 {
    if !s.tuple_shapes.is_empty() {
        return s.tuple_shapes.iter().map(shape_bytes).sum();
    }
    let width = match s.element_type {
        1..=2 | 6 => 1,       // PRED, S8, U8
        3 | 7 | 10 | 16 => 2, // S16, U16, F16, BF16
        4 | 8 | 11 => 4,      // S32, U32, F32
        5 | 9 | 12 | 15 => 8, // S64, U64, F64, C64
        18 => 16,             // C128
        _ => 0,               // tokens, opaque
    };
    width
        * s.dimensions
            .iter()
            .map(|&d| d.max(0) as u64)
            .product::<u64>()
}

mod proto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct HloModuleProtoWithConfig {
        #[prost(message, optional, tag = "1")]
        pub hlo_module: Option<HloModuleProto>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct HloModuleProto {
        #[prost(message, repeated, tag = "3")]
        pub computations: Vec<HloComputationProto>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct HloComputationProto {
        #[prost(message, repeated, tag = "2")]
        pub instructions: Vec<HloInstructionProto>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct HloInstructionProto {
        #[prost(string, tag = "2")]
        pub opcode: String,
        #[prost(message, optional, tag = "3")]
        pub shape: Option<ShapeProto>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ShapeProto {
        #[prost(int32, tag = "2")]
        pub element_type: i32,
        #[prost(int64, repeated, tag = "3")]
        pub dimensions: Vec<i64>,
        #[prost(message, repeated, tag = "4")]
        pub tuple_shapes: Vec<ShapeProto>,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(opcode: &str, dims: &[i64]) -> proto::HloInstructionProto {
        proto::HloInstructionProto {
            opcode: opcode.into(),
            shape: Some(proto::ShapeProto {
                element_type: 11,
                dimensions: dims.to_vec(),
                tuple_shapes: vec![],
            }),
        }
    }

    #[test]
    fn counts_collectives_by_kind_with_their_bytes() {
        let module = proto::HloModuleProto {
            computations: vec![proto::HloComputationProto {
                instructions: vec![
                    inst("all-reduce", &[4, 8]),
                    inst("add", &[4, 8]),
                    inst("all-to-all-start", &[2, 2]),
                    inst("all-to-all-done", &[2, 2]),
                    inst("all-reduce", &[1]),
                ],
            }],
        };
        let stats = collectives(&module.encode_to_vec()).unwrap();
        assert_eq!(
            stats,
            vec![
                CollectiveStat {
                    kind: "all-reduce".into(),
                    count: 2,
                    bytes: 4 * 33
                },
                CollectiveStat {
                    kind: "all-to-all".into(),
                    count: 1,
                    bytes: 16
                },
            ]
        );
    }
}
