//! `hlo`: a small, general tensor compiler. It knows nothing of GPTSAN.
//!
//! A program is built with a [`builder::Builder`] (shape inference on every op, errors
//! carrying the caller's source location), differentiated in reverse mode by `autodiff`,
//! annotated with [`sharding`] over a device mesh, and emitted as StableHLO MLIR text by
//! [`emit`]. The `runtime` crate compiles and runs that text through PJRT.
//!
//! A composite ([`ir::Op::Composite`]) names a piece of a program and says what it
//! computes by a decomposition into ops (and optionally its own gradient); a backend
//! with its own kernel for that name gets a custom call instead
//! ([`EmitOptions::composite_calls`]), everything else sees the ops.

pub mod autodiff;
pub mod builder;
pub mod cost;
pub mod dtype;
pub mod emit;
pub mod error;
pub mod gradcheck;
pub mod interpret;
pub mod ir;
pub mod literal;
pub mod shape;
pub mod shape_inference;
pub mod sharding;
pub mod vjp_rules;

pub use autodiff::{grad, grad_function, vjp, vjp_function, AutodiffError};
pub use builder::{Builder, Tensor};
pub use cost::{dot_work, DotWork};
pub use dtype::DType;
pub use emit::{to_stablehlo, EmitError, EmitOptions, Partitioner};
pub use error::BuildError;
pub use interpret::{evaluate, InterpretError};
pub use ir::Function;
pub use literal::{Literal, NativeType};
pub use shape::Shape;
pub use sharding::{Mesh, PartitionSpec};
