//! Tensor types: an element type plus static dimensions (rank 0..n).

use crate::dtype::DType;
use std::fmt;

/// A statically shaped tensor type. Dimensions are `i64` as in StableHLO.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Shape {
    pub dtype: DType,
    pub dims: Vec<i64>,
}

impl Shape {
    pub fn new(dtype: DType, dims: impl Into<Vec<i64>>) -> Shape {
        Shape {
            dtype,
            dims: dims.into(),
        }
    }

    pub fn scalar(dtype: DType) -> Shape {
        Shape {
            dtype,
            dims: Vec::new(),
        }
    }

    pub fn rank(&self) -> usize {
        self.dims.len()
    }

    pub fn element_count(&self) -> i64 {
        self.dims.iter().product()
    }

    pub fn size_in_bytes(&self) -> usize {
        self.element_count() as usize * self.dtype.size_in_bytes()
    }

    pub fn with_dtype(&self, dtype: DType) -> Shape {
        Shape {
            dtype,
            dims: self.dims.clone(),
        }
    }

    pub fn with_dims(&self, dims: impl Into<Vec<i64>>) -> Shape {
        Shape {
            dtype: self.dtype,
            dims: dims.into(),
        }
    }

    /// The MLIR tensor type, e.g. `tensor<2x3xf32>` or `tensor<f32>` for a scalar.
    pub fn mlir_type(&self) -> String {
        let mut s = String::from("tensor<");
        for d in &self.dims {
            s.push_str(&d.to_string());
            s.push('x');
        }
        s.push_str(self.dtype.mlir_name());
        s.push('>');
        s
    }
}

impl fmt::Display for Shape {
    /// Human form used in error messages: `f32[2,3]`, `s32[]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[", self.dtype)?;
        for (i, d) in self.dims.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}
