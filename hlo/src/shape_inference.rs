//! Result types of every primitive, computed from its attributes and operand types.
//!
//! Errors are plain sentences naming what was expected; the builder adds the op name, the
//! operand shapes and the caller's source location.

use crate::dtype::DType;
use crate::ir::{BinaryOp, Op, ReduceKind, RngAlgorithm, UnaryOp};
use crate::shape::Shape;

type R = Result<Vec<Shape>, String>;

fn check_dims_in_range(what: &str, dims: &[i64], rank: usize) -> Result<(), String> {
    let mut seen = vec![false; rank];
    for &d in dims {
        if d < 0 || d as usize >= rank {
            return Err(format!(
                "{what} dimension {d} is out of range for rank {rank}"
            ));
        }
        if seen[d as usize] {
            return Err(format!("{what} dimension {d} is repeated"));
        }
        seen[d as usize] = true;
    }
    Ok(())
}

fn same_type(what: &str, a: &Shape, b: &Shape) -> Result<(), String> {
    if a != b {
        return Err(format!("{what} must have equal types, got {a} and {b}"));
    }
    Ok(())
}

fn is_scalar_integer(s: &Shape) -> bool {
    s.rank() == 0 && s.dtype.is_integer()
}

/// Types of the outputs of `op` applied to operands of types `operands`.
/// `Parameter` is not inferred here (its type is declared).
pub fn infer(op: &Op, operands: &[Shape]) -> R {
    let n = operands.len();
    let arity = |k: usize| -> Result<(), String> {
        if n != k {
            Err(format!("expects {k} operand(s), got {n}"))
        } else {
            Ok(())
        }
    };
    match op {
        Op::Parameter { .. } => Err("parameters are declared, not inferred".into()),
        Op::Constant(lit) => {
            arity(0)?;
            Ok(vec![lit.shape().clone()])
        }
        Op::Iota { shape, dim } => {
            arity(0)?;
            if *dim < 0 || *dim as usize >= shape.rank() {
                return Err(format!("iota dimension {dim} is out of range for {shape}"));
            }
            if shape.dtype == DType::Pred {
                return Err("iota needs a numeric element type".into());
            }
            Ok(vec![shape.clone()])
        }
        Op::Convert { to } => {
            arity(1)?;
            Ok(vec![operands[0].with_dtype(*to)])
        }
        Op::BitcastConvert { to } => {
            arity(1)?;
            if operands[0].dtype.size_in_bytes() != to.size_in_bytes() {
                return Err(format!(
                    "bitcast needs element types of equal width, got {} and {to}",
                    operands[0].dtype
                ));
            }
            Ok(vec![operands[0].with_dtype(*to)])
        }
        Op::BroadcastInDim { shape, dims } => {
            arity(1)?;
            let x = &operands[0];
            if dims.len() != x.rank() {
                return Err(format!(
                    "broadcast dims {dims:?} must name one result dimension per operand dimension ({})",
                    x.rank()
                ));
            }
            check_dims_in_range("broadcast", dims, shape.len())?;
            for (i, &d) in dims.iter().enumerate() {
                let (src, dst) = (x.dims[i], shape[d as usize]);
                if src != 1 && src != dst {
                    return Err(format!(
                        "operand dimension {i} (size {src}) cannot broadcast to result dimension {d} (size {dst})"
                    ));
                }
            }
            Ok(vec![Shape::new(x.dtype, shape.clone())])
        }
        Op::Reshape { dims } => {
            arity(1)?;
            let out = operands[0].with_dims(dims.clone());
            if dims.iter().any(|&d| d < 0) || out.element_count() != operands[0].element_count() {
                return Err(format!(
                    "cannot reshape {} to {dims:?}: element counts differ",
                    operands[0]
                ));
            }
            Ok(vec![out])
        }
        Op::Transpose { perm } => {
            arity(1)?;
            let x = &operands[0];
            if perm.len() != x.rank() {
                return Err(format!(
                    "permutation {perm:?} must have {} entries",
                    x.rank()
                ));
            }
            check_dims_in_range("permutation", perm, x.rank())?;
            Ok(vec![x.with_dims(
                perm.iter().map(|&p| x.dims[p as usize]).collect::<Vec<_>>(),
            )])
        }
        Op::Slice {
            start,
            limit,
            strides,
        } => {
            arity(1)?;
            let x = &operands[0];
            let r = x.rank();
            if start.len() != r || limit.len() != r || strides.len() != r {
                return Err(format!("start/limit/strides need {r} entries each"));
            }
            let mut dims = Vec::with_capacity(r);
            for i in 0..r {
                let (s, l, st) = (start[i], limit[i], strides[i]);
                if s < 0 || l > x.dims[i] || s > l || st < 1 {
                    return Err(format!(
                        "dimension {i}: slice [{s}:{l}:{st}] is not within 0..{} with stride >= 1",
                        x.dims[i]
                    ));
                }
                dims.push((l - s + st - 1) / st);
            }
            Ok(vec![x.with_dims(dims)])
        }
        Op::DynamicSlice { sizes } => {
            let x = &operands[0];
            if n != 1 + x.rank() || sizes.len() != x.rank() {
                return Err(format!(
                    "needs the tensor plus {} scalar start indices and {} sizes",
                    x.rank(),
                    x.rank()
                ));
            }
            if !operands[1..].iter().all(is_scalar_integer) {
                return Err("start indices must be integer scalars".into());
            }
            for (i, (&s, &d)) in sizes.iter().zip(&x.dims).enumerate() {
                if s < 0 || s > d {
                    return Err(format!("dimension {i}: size {s} exceeds {d}"));
                }
            }
            Ok(vec![x.with_dims(sizes.clone())])
        }
        Op::DynamicUpdateSlice => {
            if n < 2 {
                return Err("needs a tensor, an update and start indices".into());
            }
            let (x, u) = (&operands[0], &operands[1]);
            if n != 2 + x.rank() || u.rank() != x.rank() || u.dtype != x.dtype {
                return Err(format!(
                    "needs a tensor, an update of the same rank and element type, and {} scalar start indices",
                    x.rank()
                ));
            }
            if !operands[2..].iter().all(is_scalar_integer) {
                return Err("start indices must be integer scalars".into());
            }
            if u.dims.iter().zip(&x.dims).any(|(a, b)| a > b) {
                return Err(format!("update {u} is larger than the tensor {x}"));
            }
            Ok(vec![x.clone()])
        }
        Op::Concatenate { dim } => {
            if n == 0 {
                return Err("needs at least one operand".into());
            }
            let first = &operands[0];
            if *dim < 0 || *dim as usize >= first.rank() {
                return Err(format!("dimension {dim} is out of range for {first}"));
            }
            let mut total = 0;
            for s in operands {
                let mut a = s.dims.clone();
                let mut b = first.dims.clone();
                if s.rank() != first.rank() || s.dtype != first.dtype {
                    return Err(format!(
                        "operands must share rank and element type: {first} vs {s}"
                    ));
                }
                total += a[*dim as usize];
                a[*dim as usize] = 0;
                b[*dim as usize] = 0;
                if a != b {
                    return Err(format!(
                        "operands must agree on every dimension except {dim}: {first} vs {s}"
                    ));
                }
            }
            let mut dims = first.dims.clone();
            dims[*dim as usize] = total;
            Ok(vec![first.with_dims(dims)])
        }
        Op::Pad {
            low,
            high,
            interior,
        } => {
            arity(2)?;
            let (x, v) = (&operands[0], &operands[1]);
            if v.rank() != 0 || v.dtype != x.dtype {
                return Err(format!(
                    "padding value must be a {} scalar, got {v}",
                    x.dtype
                ));
            }
            let r = x.rank();
            if low.len() != r || high.len() != r || interior.len() != r {
                return Err(format!("low/high/interior need {r} entries each"));
            }
            let mut dims = Vec::with_capacity(r);
            for i in 0..r {
                if interior[i] < 0 {
                    return Err("interior padding must be >= 0".into());
                }
                let d = x.dims[i];
                let size = low[i] + high[i] + d + (d - 1).max(0) * interior[i];
                if size < 0 {
                    return Err(format!("dimension {i} would have negative size {size}"));
                }
                dims.push(size);
            }
            Ok(vec![x.with_dims(dims)])
        }
        Op::Select => {
            arity(3)?;
            let (p, t, f) = (&operands[0], &operands[1], &operands[2]);
            same_type("on_true and on_false", t, f)?;
            if p.dtype != DType::Pred || (p.rank() != 0 && p.dims != t.dims) {
                return Err(format!(
                    "predicate must be pred with the branches' dimensions (or scalar), got {p} for {t}"
                ));
            }
            Ok(vec![t.clone()])
        }
        Op::Compare { .. } => {
            arity(2)?;
            same_type("compared operands", &operands[0], &operands[1])?;
            Ok(vec![operands[0].with_dtype(DType::Pred)])
        }
        Op::Clamp => {
            arity(3)?;
            let (lo, x, hi) = (&operands[0], &operands[1], &operands[2]);
            for b in [lo, hi] {
                if b.dtype != x.dtype || (b.rank() != 0 && b.dims != x.dims) {
                    return Err(format!("bounds must be scalars or match {x}, got {b}"));
                }
            }
            Ok(vec![x.clone()])
        }
        Op::Unary(u) => {
            arity(1)?;
            let x = &operands[0];
            let ok = match u {
                UnaryOp::Neg | UnaryOp::Abs | UnaryOp::Sign => {
                    x.dtype.is_float() || x.dtype.is_signed_integer()
                }
                UnaryOp::Not => x.dtype == DType::Pred || x.dtype.is_integer(),
                _ => x.dtype.is_float(),
            };
            if !ok {
                return Err(format!("not defined for element type {}", x.dtype));
            }
            Ok(vec![x.clone()])
        }
        Op::Binary(b) => {
            arity(2)?;
            let (x, y) = (&operands[0], &operands[1]);
            same_type("operands", x, y)?;
            let ok = match b {
                BinaryOp::And | BinaryOp::Or | BinaryOp::Xor => {
                    x.dtype == DType::Pred || x.dtype.is_integer()
                }
                BinaryOp::ShiftLeft | BinaryOp::ShiftRightLogical => x.dtype.is_integer(),
                _ => x.dtype != DType::Pred,
            };
            if !ok {
                return Err(format!("not defined for element type {}", x.dtype));
            }
            Ok(vec![x.clone()])
        }
        Op::DotGeneral { dims } => {
            arity(2)?;
            let (l, r) = (&operands[0], &operands[1]);
            if l.dtype != r.dtype || l.dtype == DType::Pred {
                return Err(format!(
                    "operands need one numeric element type, got {l} and {r}"
                ));
            }
            if dims.lhs_batch.len() != dims.rhs_batch.len()
                || dims.lhs_contracting.len() != dims.rhs_contracting.len()
            {
                return Err("batch and contracting dimension lists must pair up".into());
            }
            let lhs_used: Vec<i64> = dims
                .lhs_batch
                .iter()
                .chain(&dims.lhs_contracting)
                .copied()
                .collect();
            let rhs_used: Vec<i64> = dims
                .rhs_batch
                .iter()
                .chain(&dims.rhs_contracting)
                .copied()
                .collect();
            check_dims_in_range("lhs", &lhs_used, l.rank())?;
            check_dims_in_range("rhs", &rhs_used, r.rank())?;
            for (a, b) in dims.lhs_batch.iter().zip(&dims.rhs_batch) {
                if l.dims[*a as usize] != r.dims[*b as usize] {
                    return Err(format!(
                        "batch dimensions lhs {a} and rhs {b} differ in size"
                    ));
                }
            }
            for (a, b) in dims.lhs_contracting.iter().zip(&dims.rhs_contracting) {
                if l.dims[*a as usize] != r.dims[*b as usize] {
                    return Err(format!(
                        "contracting dimensions lhs {a} (size {}) and rhs {b} (size {}) differ",
                        l.dims[*a as usize], r.dims[*b as usize]
                    ));
                }
            }
            let mut out: Vec<i64> = dims.lhs_batch.iter().map(|&d| l.dims[d as usize]).collect();
            out.extend(
                (0..l.rank() as i64)
                    .filter(|d| !lhs_used.contains(d))
                    .map(|d| l.dims[d as usize]),
            );
            out.extend(
                (0..r.rank() as i64)
                    .filter(|d| !rhs_used.contains(d))
                    .map(|d| r.dims[d as usize]),
            );
            Ok(vec![l.with_dims(out)])
        }
        Op::Reduce { kind, dims } => {
            arity(1)?;
            let x = &operands[0];
            check_dims_in_range("reduce", dims, x.rank())?;
            let logical = matches!(kind, ReduceKind::And | ReduceKind::Or);
            if logical && !(x.dtype == DType::Pred || x.dtype.is_integer()) {
                return Err(format!(
                    "and/or reductions need pred or integers, got {}",
                    x.dtype
                ));
            }
            if !logical && x.dtype == DType::Pred {
                return Err("sum/max/min reductions need numbers, not pred".into());
            }
            let out: Vec<i64> = (0..x.rank() as i64)
                .filter(|d| !dims.contains(d))
                .map(|d| x.dims[d as usize])
                .collect();
            Ok(vec![x.with_dims(out)])
        }
        Op::Gather { dims: g } => {
            arity(2)?;
            let (x, idx) = (&operands[0], &operands[1]);
            if !idx.dtype.is_integer() {
                return Err(format!("indices must be integers, got {idx}"));
            }
            if g.slice_sizes.len() != x.rank() {
                return Err(format!("slice_sizes needs {} entries", x.rank()));
            }
            for (i, (&s, &d)) in g.slice_sizes.iter().zip(&x.dims).enumerate() {
                if s < 0 || s > d {
                    return Err(format!("slice size {s} of dimension {i} exceeds {d}"));
                }
            }
            check_dims_in_range("collapsed slice", &g.collapsed_slice_dims, x.rank())?;
            for &c in &g.collapsed_slice_dims {
                if g.slice_sizes[c as usize] != 1 {
                    return Err(format!("collapsed dimension {c} must have slice size 1"));
                }
            }
            check_dims_in_range("start_index_map", &g.start_index_map, x.rank())?;
            let ivd = g.index_vector_dim;
            if ivd < 0 || ivd as usize > idx.rank() {
                return Err(format!("index_vector_dim {ivd} out of range for {idx}"));
            }
            let index_len = if (ivd as usize) < idx.rank() {
                idx.dims[ivd as usize]
            } else {
                1
            };
            if index_len != g.start_index_map.len() as i64 {
                return Err(format!(
                    "index vectors have {index_len} entries but start_index_map has {}",
                    g.start_index_map.len()
                ));
            }
            let batch: Vec<i64> = (0..idx.rank())
                .filter(|&d| d as i64 != ivd)
                .map(|d| idx.dims[d])
                .collect();
            let offsets: Vec<i64> = (0..x.rank())
                .filter(|&d| !g.collapsed_slice_dims.contains(&(d as i64)))
                .map(|d| g.slice_sizes[d])
                .collect();
            if offsets.len() != g.offset_dims.len() {
                return Err(format!(
                    "offset_dims {:?} must have one entry per uncollapsed slice dimension ({})",
                    g.offset_dims,
                    offsets.len()
                ));
            }
            let rank = batch.len() + offsets.len();
            check_dims_in_range("offset", &g.offset_dims, rank)?;
            let (mut bi, mut oi) = (0, 0);
            let mut out = Vec::with_capacity(rank);
            for d in 0..rank as i64 {
                if g.offset_dims.contains(&d) {
                    out.push(offsets[oi]);
                    oi += 1;
                } else {
                    out.push(batch[bi]);
                    bi += 1;
                }
            }
            Ok(vec![x.with_dims(out)])
        }
        Op::ScatterAdd { dims: s } => {
            arity(3)?;
            let (x, idx, upd) = (&operands[0], &operands[1], &operands[2]);
            if !idx.dtype.is_integer() {
                return Err(format!("indices must be integers, got {idx}"));
            }
            if upd.dtype != x.dtype || x.dtype == DType::Pred {
                return Err(format!(
                    "updates {upd} must be numbers of the tensor's type {x}"
                ));
            }
            let ivd = s.index_vector_dim;
            if ivd < 0 || ivd as usize > idx.rank() {
                return Err(format!("index_vector_dim {ivd} out of range for {idx}"));
            }
            let index_len = if (ivd as usize) < idx.rank() {
                idx.dims[ivd as usize]
            } else {
                1
            };
            if index_len != s.scatter_dims_to_operand_dims.len() as i64 {
                return Err("index vector length must match scatter_dims_to_operand_dims".into());
            }
            check_dims_in_range("inserted window", &s.inserted_window_dims, x.rank())?;
            check_dims_in_range("update window", &s.update_window_dims, upd.rank())?;
            let scatter_batch: Vec<i64> = (0..idx.rank())
                .filter(|&d| d as i64 != ivd)
                .map(|d| idx.dims[d])
                .collect();
            let upd_scatter: Vec<i64> = (0..upd.rank() as i64)
                .filter(|d| !s.update_window_dims.contains(d))
                .map(|d| upd.dims[d as usize])
                .collect();
            if scatter_batch != upd_scatter {
                return Err(format!(
                    "update scatter dimensions {upd_scatter:?} must equal the index batch dimensions {scatter_batch:?}"
                ));
            }
            let window_operand_dims: Vec<i64> = (0..x.rank() as i64)
                .filter(|d| !s.inserted_window_dims.contains(d))
                .map(|d| x.dims[d as usize])
                .collect();
            if window_operand_dims.len() != s.update_window_dims.len() {
                return Err(
                    "update_window_dims must cover every non-inserted tensor dimension".into(),
                );
            }
            for (w, &ud) in s.update_window_dims.iter().enumerate() {
                if upd.dims[ud as usize] > window_operand_dims[w] {
                    return Err(format!(
                        "update window dimension {ud} is larger than the tensor"
                    ));
                }
            }
            Ok(vec![x.clone()])
        }
        Op::RngBitGenerator { algorithm, shape } => {
            arity(1)?;
            let st = &operands[0];
            let ok_len = match algorithm {
                RngAlgorithm::ThreeFry => st.dims == [2],
                RngAlgorithm::Philox => st.dims == [2] || st.dims == [3],
            };
            if st.dtype != DType::U64 || !ok_len {
                return Err(format!(
                    "state must be u64[2] (or u64[3] for philox), got {st}"
                ));
            }
            if !matches!(shape.dtype, DType::U32 | DType::U64) {
                return Err(format!(
                    "random bits must be u32 or u64, got {}",
                    shape.dtype
                ));
            }
            Ok(vec![st.clone(), shape.clone()])
        }
        Op::Sort { dim, .. } => {
            if n == 0 {
                return Err("needs at least one operand".into());
            }
            let first = &operands[0];
            if *dim < 0 || *dim as usize >= first.rank() {
                return Err(format!("dimension {dim} is out of range for {first}"));
            }
            if operands.iter().any(|s| s.dims != first.dims) {
                return Err("all operands must have the same dimensions".into());
            }
            Ok(operands.to_vec())
        }
        Op::ShardingConstraint { spec } => {
            arity(1)?;
            if spec.dims.len() != operands[0].rank() {
                return Err(format!(
                    "partition spec has {} dimensions, tensor {} has {}",
                    spec.dims.len(),
                    operands[0],
                    operands[0].rank()
                ));
            }
            Ok(vec![operands[0].clone()])
        }
        Op::StopGradient => {
            arity(1)?;
            Ok(vec![operands[0].clone()])
        }
        Op::While { cond, body } => {
            if n == 0 {
                return Err("needs at least one loop-carried value".into());
            }
            check_region("condition", cond, operands)?;
            check_region("body", body, operands)?;
            let pred = Shape::scalar(DType::Pred);
            if cond.outputs.len() != 1 || cond.output_shape(0) != Some(&pred) {
                return Err(format!(
                    "the condition must return one {pred}, it returns ({})",
                    region_outputs(cond)
                ));
            }
            let body_out: Vec<Option<&Shape>> = (0..body.outputs.len())
                .map(|k| body.output_shape(k))
                .collect();
            let carried: Vec<Option<&Shape>> = operands.iter().map(Some).collect();
            if body_out != carried {
                return Err(format!(
                    "the body must return the loop-carried types ({}), it returns ({})",
                    join(operands),
                    region_outputs(body)
                ));
            }
            Ok(operands.to_vec())
        }
        Op::Composite {
            decomposition, vjp, ..
        } => {
            let outputs = composite_outputs(decomposition, operands)?;
            if let Some(vjp) = vjp {
                check_vjp(vjp, operands, &outputs)?;
            }
            Ok(outputs)
        }
    }
}

/// A composite's outputs are its decomposition's; the decomposition takes exactly the
/// operands.
fn composite_outputs(f: &crate::ir::Function, operands: &[Shape]) -> Result<Vec<Shape>, String> {
    let params: Vec<&Shape> = f.params.iter().map(|p| &p.shape).collect();
    if params != operands.iter().collect::<Vec<_>>() {
        let params: Vec<String> = params.iter().map(|s| s.to_string()).collect();
        return Err(format!(
            "the decomposition must take the operands' types ({}), it takes ({})",
            join(operands),
            params.join(", ")
        ));
    }
    (0..f.outputs.len())
        .map(|k| {
            f.output_shape(k)
                .cloned()
                .ok_or_else(|| format!("decomposition output {k} refers to no value"))
        })
        .collect()
}

/// A composite's VJP takes the operands, the outputs and their cotangents, and returns
/// one cotangent per operand.
fn check_vjp(f: &crate::ir::Function, operands: &[Shape], outputs: &[Shape]) -> Result<(), String> {
    let want: Vec<Shape> = [operands, outputs, outputs].concat();
    let params: Vec<Shape> = f.params.iter().map(|p| p.shape.clone()).collect();
    let returns: Vec<Option<&Shape>> = (0..f.outputs.len()).map(|k| f.output_shape(k)).collect();
    if params != want || returns != operands.iter().map(Some).collect::<Vec<_>>() {
        return Err(format!(
            "the VJP must take ({}) (operands, outputs, cotangents) and return ({}); it takes ({}) and returns ({})",
            join(&want),
            join(operands),
            join(&params),
            region_outputs(f)
        ));
    }
    Ok(())
}

/// A while loop's condition or body takes exactly the loop-carried values.
fn check_region(what: &str, f: &crate::ir::Function, carried: &[Shape]) -> Result<(), String> {
    let params: Vec<&Shape> = f.params.iter().map(|p| &p.shape).collect();
    if params != carried.iter().collect::<Vec<_>>() {
        let params: Vec<String> = params.iter().map(|s| s.to_string()).collect();
        return Err(format!(
            "the {what} must take the loop-carried types ({}), it takes ({})",
            join(carried),
            params.join(", ")
        ));
    }
    Ok(())
}

fn join(shapes: &[Shape]) -> String {
    let s: Vec<String> = shapes.iter().map(|s| s.to_string()).collect();
    s.join(", ")
}

/// A region's output types, `?` for one that refers to no value.
fn region_outputs(f: &crate::ir::Function) -> String {
    let s: Vec<String> = (0..f.outputs.len())
        .map(|k| f.output_shape(k).map_or("?".to_string(), |s| s.to_string()))
        .collect();
    s.join(", ")
}
