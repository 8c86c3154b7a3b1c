//! `hlo`: a small, general tensor compiler. It knows nothing of GPTSAN.
//!
//! A program is built with a [`builder`], differentiated in reverse mode by [`autodiff`],
//! annotated with [`sharding`] over a device mesh, and emitted as StableHLO MLIR text by
//! [`emit`]. The `runtime` crate compiles and runs that text through PJRT.

pub mod dtype;
pub mod literal;
pub mod shape;

pub use dtype::DType;
pub use literal::{Literal, NativeType};
pub use shape::Shape;
