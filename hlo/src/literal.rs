//! Host-side tensor values: a [`Shape`] plus dense little-endian row-major bytes.
//!
//! Used for constants in programs and for moving data to and from devices.

use crate::dtype::DType;
use crate::shape::Shape;
use half::{bf16, f16};

/// Element types that have a host representation.
pub trait NativeType: Copy + 'static {
    const DTYPE: DType;
    fn write_le(self, out: &mut Vec<u8>);
    fn read_le(bytes: &[u8]) -> Self;
}

macro_rules! native {
    ($t:ty, $d:expr) => {
        impl NativeType for $t {
            const DTYPE: DType = $d;
            fn write_le(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn read_le(bytes: &[u8]) -> Self {
                <$t>::from_le_bytes(bytes.try_into().expect("slice length checked by caller"))
            }
        }
    };
}
native!(i32, DType::S32);
native!(i64, DType::S64);
native!(u32, DType::U32);
native!(u64, DType::U64);
native!(f32, DType::F32);
native!(f64, DType::F64);
native!(f16, DType::F16);
native!(bf16, DType::Bf16);

impl NativeType for bool {
    const DTYPE: DType = DType::Pred;
    fn write_le(self, out: &mut Vec<u8>) {
        out.push(self as u8);
    }
    fn read_le(bytes: &[u8]) -> Self {
        bytes[0] != 0
    }
}

/// Why a literal could not be made or read.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum LiteralError {
    #[error("literal of shape {shape} needs {expected} elements, got {got}")]
    ElementCount {
        shape: Shape,
        expected: i64,
        got: usize,
    },
    #[error("literal of shape {shape} needs {expected} bytes, got {got}")]
    ByteCount {
        shape: Shape,
        expected: usize,
        got: usize,
    },
    #[error("literal has element type {actual}, asked for {asked}")]
    DType { actual: DType, asked: DType },
}

/// A dense host tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Literal {
    shape: Shape,
    bytes: Vec<u8>,
}

impl Literal {
    /// From typed values in row-major order.
    pub fn from_slice<T: NativeType>(dims: &[i64], values: &[T]) -> Result<Literal, LiteralError> {
        let shape = Shape::new(T::DTYPE, dims.to_vec());
        if shape.element_count() != values.len() as i64 {
            return Err(LiteralError::ElementCount {
                expected: shape.element_count(),
                got: values.len(),
                shape,
            });
        }
        let mut bytes = Vec::with_capacity(shape.size_in_bytes());
        for v in values {
            v.write_le(&mut bytes);
        }
        Ok(Literal { shape, bytes })
    }

    pub fn scalar<T: NativeType>(value: T) -> Literal {
        let mut bytes = Vec::new();
        value.write_le(&mut bytes);
        Literal {
            shape: Shape::scalar(T::DTYPE),
            bytes,
        }
    }

    /// From raw little-endian bytes (e.g. read from a safetensors file).
    pub fn from_bytes(shape: Shape, bytes: Vec<u8>) -> Result<Literal, LiteralError> {
        if bytes.len() != shape.size_in_bytes() {
            return Err(LiteralError::ByteCount {
                expected: shape.size_in_bytes(),
                got: bytes.len(),
                shape,
            });
        }
        Ok(Literal { shape, bytes })
    }

    /// A scalar of any element type from an f64 value (rounded/truncated as `as` does;
    /// pred is `v != 0`).
    pub fn scalar_from_f64(value: f64, dtype: DType) -> Literal {
        match dtype {
            DType::Pred => Literal::scalar(value != 0.0),
            DType::S32 => Literal::scalar(value as i32),
            DType::S64 => Literal::scalar(value as i64),
            DType::U32 => Literal::scalar(value as u32),
            DType::U64 => Literal::scalar(value as u64),
            DType::F16 => Literal::scalar(f16::from_f64(value)),
            DType::Bf16 => Literal::scalar(bf16::from_f64(value)),
            DType::F32 => Literal::scalar(value as f32),
            DType::F64 => Literal::scalar(value),
        }
    }

    /// All-zero literal of a shape.
    pub fn zeros(shape: Shape) -> Literal {
        let bytes = vec![0u8; shape.size_in_bytes()];
        Literal { shape, bytes }
    }

    pub fn shape(&self) -> &Shape {
        &self.shape
    }

    pub fn dtype(&self) -> DType {
        self.shape.dtype
    }

    pub fn dims(&self) -> &[i64] {
        &self.shape.dims
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// Typed copy of the elements; the element type must match exactly.
    pub fn to_vec<T: NativeType>(&self) -> Result<Vec<T>, LiteralError> {
        if self.shape.dtype != T::DTYPE {
            return Err(LiteralError::DType {
                actual: self.shape.dtype,
                asked: T::DTYPE,
            });
        }
        let w = T::DTYPE.size_in_bytes();
        Ok(self.bytes.chunks_exact(w).map(T::read_le).collect())
    }

    /// The same values in another floating-point type, rounded to nearest even (a host-side
    /// cast, e.g. f32 weights kept as bf16 for inference). Both types must be floats.
    pub fn convert_float(&self, to: DType) -> Result<Literal, LiteralError> {
        let from = self.shape.dtype;
        let is_float = |d: DType| matches!(d, DType::F16 | DType::Bf16 | DType::F32 | DType::F64);
        if !is_float(from) || !is_float(to) {
            return Err(LiteralError::DType {
                actual: from,
                asked: to,
            });
        }
        if from == to {
            return Ok(self.clone());
        }
        let shape = Shape::new(to, self.shape.dims.clone());
        let mut bytes = Vec::with_capacity(shape.size_in_bytes());
        for b in self.bytes.chunks_exact(from.size_in_bytes()) {
            let x = match from {
                DType::F16 => f16::read_le(b).to_f64(),
                DType::Bf16 => bf16::read_le(b).to_f64(),
                DType::F32 => f32::read_le(b) as f64,
                _ => f64::read_le(b),
            };
            match to {
                DType::F16 => f16::from_f64(x).write_le(&mut bytes),
                DType::Bf16 => bf16::from_f64(x).write_le(&mut bytes),
                DType::F32 => (x as f32).write_le(&mut bytes),
                _ => x.write_le(&mut bytes),
            }
        }
        Ok(Literal { shape, bytes })
    }

    /// The elements converted to f64, whatever the element type (for comparisons in tests
    /// and for printing).
    pub fn to_f64_vec(&self) -> Vec<f64> {
        let w = self.shape.dtype.size_in_bytes();
        self.bytes
            .chunks_exact(w)
            .map(|b| match self.shape.dtype {
                DType::Pred => (b[0] != 0) as u8 as f64,
                DType::S32 => i32::read_le(b) as f64,
                DType::S64 => i64::read_le(b) as f64,
                DType::U32 => u32::read_le(b) as f64,
                DType::U64 => u64::read_le(b) as f64,
                DType::F16 => f16::read_le(b).to_f64(),
                DType::Bf16 => bf16::read_le(b).to_f64(),
                DType::F32 => f32::read_le(b) as f64,
                DType::F64 => f64::read_le(b),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_literals_convert_with_rounding() {
        let x = Literal::from_slice(&[3], &[1.0f32, 1.0 + 1.0 / 512.0, -3.5]).unwrap();
        let b = x.convert_float(DType::Bf16).unwrap();
        assert_eq!(b.dtype(), DType::Bf16);
        assert_eq!(b.to_f64_vec(), vec![1.0, 1.0, -3.5]);
        assert_eq!(
            b.convert_float(DType::F32)
                .unwrap()
                .to_vec::<f32>()
                .unwrap(),
            vec![1.0, 1.0, -3.5]
        );
        let i = Literal::from_slice(&[1], &[3i32]).unwrap();
        assert!(i.convert_float(DType::F32).is_err());
    }

    #[test]
    fn round_trips_typed_values() {
        let l = Literal::from_slice(&[2, 2], &[1.0f32, 2.0, 3.0, -4.5]).unwrap();
        assert_eq!(l.shape().mlir_type(), "tensor<2x2xf32>");
        assert_eq!(l.to_vec::<f32>().unwrap(), vec![1.0, 2.0, 3.0, -4.5]);
        assert!(l.to_vec::<i32>().is_err());
        let b = Literal::from_slice(&[3], &[bf16::from_f32(1.5); 3]).unwrap();
        assert_eq!(b.to_f64_vec(), vec![1.5; 3]);
    }

    #[test]
    fn rejects_wrong_sizes() {
        assert!(Literal::from_slice(&[2, 3], &[1i32; 5]).is_err());
        assert!(Literal::from_bytes(Shape::new(DType::F32, [2]), vec![0; 7]).is_err());
    }
}
