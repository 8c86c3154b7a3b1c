//! Constants as MLIR dense element attributes.
//!
//! Splats (every element equal, scalars included) print one element: `dense<1.5>`. Small
//! arrays print nested lists so the text stays readable; large ones print the raw
//! little-endian bytes as one hex string (`dense<"0x0000803F...">`), which is exact and
//! compact. Floats print in the shortest decimal form that reads back to the same value;
//! infinities and NaNs print as hexadecimal bit patterns, which MLIR also accepts.

use crate::dtype::DType;
use crate::literal::Literal;
use half::{bf16, f16};

/// Arrays with at most this many elements print as nested lists.
const MAX_LIST_ELEMENTS: i64 = 64;

/// The `dense<...>` attribute (without the ` : tensor<...>` type) for a literal.
pub fn dense_attr(lit: &Literal) -> String {
    let shape = lit.shape();
    let width = shape.dtype.size_in_bytes();
    let elems: Vec<&[u8]> = lit.bytes().chunks_exact(width).collect();
    if elems.is_empty() {
        return "dense<>".to_string();
    }
    if elems.iter().all(|e| *e == elems[0]) {
        return format!("dense<{}>", element_text(elems[0], shape.dtype));
    }
    // Pred is stored one byte per element here but bit-packed in MLIR's raw form, so it
    // always uses the list form.
    if shape.element_count() <= MAX_LIST_ELEMENTS || shape.dtype == DType::Pred {
        let texts: Vec<String> = elems.iter().map(|e| element_text(e, shape.dtype)).collect();
        let mut out = String::from("dense<");
        nested_list(&texts, &shape.dims, &mut out);
        out.push('>');
        return out;
    }
    // Large constants (embedding tables baked into a program) can be many megabytes:
    // hex-encode through a table rather than the formatter.
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = Vec::with_capacity(lit.bytes().len() * 2 + 12);
    out.extend_from_slice(b"dense<\"0x");
    for b in lit.bytes() {
        out.push(HEX[(b >> 4) as usize]);
        out.push(HEX[(b & 15) as usize]);
    }
    out.extend_from_slice(b"\">");
    String::from_utf8(out).expect("ASCII hex digits")
}

/// `[[a, b], [c, d]]` over row-major element texts.
fn nested_list(texts: &[String], dims: &[i64], out: &mut String) {
    match dims.split_first() {
        None => out.push_str(&texts[0]),
        Some((&n, rest)) => {
            let stride = rest.iter().product::<i64>() as usize;
            out.push('[');
            for i in 0..n as usize {
                if i > 0 {
                    out.push_str(", ");
                }
                nested_list(&texts[i * stride..(i + 1) * stride], rest, out);
            }
            out.push(']');
        }
    }
}

/// One element in MLIR literal syntax.
fn element_text(bytes: &[u8], dtype: DType) -> String {
    let le = |n: usize| {
        let mut b = [0u8; 8];
        b[..n].copy_from_slice(&bytes[..n]);
        u64::from_le_bytes(b)
    };
    match dtype {
        DType::Pred => (bytes[0] != 0).to_string(),
        DType::S32 => (le(4) as u32 as i32).to_string(),
        DType::S64 => (le(8) as i64).to_string(),
        DType::U32 | DType::U64 => le(dtype.size_in_bytes()).to_string(),
        DType::F16 => {
            let v = f16::from_bits(le(2) as u16);
            float_text(v.is_finite(), v.to_f32() as f64, true, le(2), 4)
        }
        DType::Bf16 => {
            let v = bf16::from_bits(le(2) as u16);
            float_text(v.is_finite(), v.to_f32() as f64, true, le(2), 4)
        }
        DType::F32 => {
            let v = f32::from_bits(le(4) as u32);
            float_text(v.is_finite(), v as f64, true, le(4), 8)
        }
        DType::F64 => {
            let v = f64::from_bits(le(8));
            float_text(v.is_finite(), v, false, le(8), 16)
        }
    }
}

/// A finite float as the shortest decimal that parses back to it (`via_f32`: the value is
/// exactly an f32, so f32's shortest form suffices); otherwise the bit pattern in hex.
fn float_text(finite: bool, v: f64, via_f32: bool, bits: u64, hex_digits: usize) -> String {
    if !finite {
        return format!("0x{bits:0hex_digits$X}");
    }
    let plain = v == 0.0 || (1e-4..1e15).contains(&v.abs());
    let text = match (plain, via_f32) {
        (true, true) => format!("{:?}", v as f32),
        (true, false) => format!("{v:?}"),
        (false, true) => format!("{:e}", v as f32),
        (false, false) => format!("{v:e}"),
    };
    // MLIR float literals need a decimal point in the mantissa: `1e-08` -> `1.0e-08`.
    match text.find('e') {
        Some(e) if !text[..e].contains('.') => format!("{}.0{}", &text[..e], &text[e..]),
        _ => text,
    }
}

/// The identity element of a reduction as a scalar literal of `dtype`: 0 for sums,
/// -inf/+inf (floats) or the integer minimum/maximum for max/min, all-ones/true for `and`,
/// zero/false for `or`.
pub fn reduce_init(kind: crate::ir::ReduceKind, dtype: DType) -> Literal {
    use crate::ir::ReduceKind::*;
    let extreme = |low: bool| -> Literal {
        match dtype {
            DType::S32 => Literal::scalar(if low { i32::MIN } else { i32::MAX }),
            DType::S64 => Literal::scalar(if low { i64::MIN } else { i64::MAX }),
            DType::U32 => Literal::scalar(if low { 0 } else { u32::MAX }),
            DType::U64 => Literal::scalar(if low { 0 } else { u64::MAX }),
            DType::Pred => Literal::scalar(!low),
            _ => Literal::scalar_from_f64(
                if low {
                    f64::NEG_INFINITY
                } else {
                    f64::INFINITY
                },
                dtype,
            ),
        }
    };
    match kind {
        Sum => Literal::scalar_from_f64(0.0, dtype),
        Max => extreme(true),
        Min => extreme(false),
        // All bits set (true for pred): the identity of bitwise and.
        And => match dtype {
            DType::S32 => Literal::scalar(-1i32),
            DType::S64 => Literal::scalar(-1i64),
            _ => extreme(false),
        },
        Or => Literal::scalar_from_f64(0.0, dtype),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::ReduceKind;

    #[test]
    fn scalars_and_splats() {
        assert_eq!(dense_attr(&Literal::scalar(1.5f32)), "dense<1.5>");
        assert_eq!(dense_attr(&Literal::scalar(0.1f32)), "dense<0.1>");
        assert_eq!(dense_attr(&Literal::scalar(1e-8f32)), "dense<1.0e-8>");
        assert_eq!(dense_attr(&Literal::scalar(-2.0f64)), "dense<-2.0>");
        assert_eq!(dense_attr(&Literal::scalar(3i32)), "dense<3>");
        assert_eq!(
            dense_attr(&Literal::scalar(u64::MAX)),
            "dense<18446744073709551615>"
        );
        assert_eq!(dense_attr(&Literal::scalar(true)), "dense<true>");
        assert_eq!(
            dense_attr(&Literal::scalar(f32::NEG_INFINITY)),
            "dense<0xFF800000>"
        );
        assert_eq!(
            dense_attr(&Literal::scalar(bf16::from_f32(f32::INFINITY))),
            "dense<0x7F80>"
        );
        assert_eq!(
            dense_attr(&Literal::scalar(bf16::from_f32(0.1))),
            "dense<0.100097656>"
        );
        let splat = Literal::from_slice(&[2, 2], &[7i32; 4]).unwrap();
        assert_eq!(dense_attr(&splat), "dense<7>");
    }

    #[test]
    fn lists_and_hex() {
        let l = Literal::from_slice(&[2, 2], &[1.0f32, 2.0, 3.0, -4.5]).unwrap();
        assert_eq!(dense_attr(&l), "dense<[[1.0, 2.0], [3.0, -4.5]]>");
        let p = Literal::from_slice(&[3], &[true, false, true]).unwrap();
        assert_eq!(dense_attr(&p), "dense<[true, false, true]>");
        let big: Vec<f32> = (0..100).map(|i| i as f32).collect();
        let text = dense_attr(&Literal::from_slice(&[100], &big).unwrap());
        // 1.0f32 is 0x3F800000, stored little-endian.
        assert!(text.starts_with("dense<\"0x000000000000803F"), "{text}");
        assert_eq!(text.len(), "dense<\"0x\">".len() + 800);
    }

    #[test]
    fn reduction_identities() {
        let t = |k, d| dense_attr(&reduce_init(k, d));
        assert_eq!(t(ReduceKind::Sum, DType::F32), "dense<0.0>");
        assert_eq!(t(ReduceKind::Max, DType::F32), "dense<0xFF800000>");
        assert_eq!(t(ReduceKind::Min, DType::Bf16), "dense<0x7F80>");
        assert_eq!(t(ReduceKind::Max, DType::S32), "dense<-2147483648>");
        assert_eq!(t(ReduceKind::Min, DType::U32), "dense<4294967295>");
        assert_eq!(t(ReduceKind::And, DType::Pred), "dense<true>");
        assert_eq!(t(ReduceKind::And, DType::S32), "dense<-1>");
        assert_eq!(t(ReduceKind::And, DType::U32), "dense<4294967295>");
        assert_eq!(t(ReduceKind::Or, DType::Pred), "dense<false>");
    }
}
