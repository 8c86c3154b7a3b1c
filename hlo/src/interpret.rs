//! A small reference interpreter of the IR on host [`Literal`]s, over `ndarray`.
//!
//! It exists to check other parts of the compiler independently of XLA: autodiff is tested
//! by comparing its gradients with finite differences computed here, and emitted programs
//! can be compared with it. It favours being obviously right over being fast: floats are
//! computed in f64 and rounded back to the declared element type after every op; integers
//! are computed in i128 and wrapped to their width.
//!
//! Semantics follow XLA where StableHLO leaves them open: gather and dynamic_slice clamp
//! their start indices so the window fits, scatter skips an update window that does not
//! fit, integer division by zero gives -1 (all bits set) and remainder by zero gives the
//! dividend, sort is stable. `rng_bit_generator` is not supported (a clear error). A
//! `while` loop evaluates its condition and body functions recursively.

use crate::dtype::DType;
use crate::ir::{
    BinaryOp, CompareDirection, DotDims, Function, GatherDims, Node, Op, ReduceKind, ScatterDims,
    UnaryOp,
};
use crate::literal::Literal;
use crate::shape::Shape;
use crate::shape_inference::infer;
use half::{bf16, f16};
use ndarray::{ArrayD, Axis, IxDyn, Slice};
use std::cmp::Ordering;

/// Why a function could not be evaluated.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum InterpretError {
    #[error("function `{function}` takes {expected} arguments, got {got}")]
    ArgCount {
        function: String,
        expected: usize,
        got: usize,
    },
    #[error("argument {index} (`{name}`) must be {expected}, got {got}")]
    ArgType {
        index: usize,
        name: String,
        expected: Shape,
        got: Shape,
    },
    #[error("node %{node} ({op}) is not supported by the reference interpreter: {reason}")]
    Unsupported {
        node: usize,
        op: &'static str,
        reason: String,
    },
    #[error("node %{node} ({op}): {message}")]
    Invalid {
        node: usize,
        op: &'static str,
        message: String,
    },
}

/// Evaluates `f` on `args` (one literal per parameter, of the declared types) and returns
/// one literal per output. Pure: no state, no devices.
pub fn evaluate(f: &Function, args: &[Literal]) -> Result<Vec<Literal>, InterpretError> {
    if args.len() != f.params.len() {
        return Err(InterpretError::ArgCount {
            function: f.name.clone(),
            expected: f.params.len(),
            got: args.len(),
        });
    }
    for (index, (p, a)) in f.params.iter().zip(args).enumerate() {
        if &p.shape != a.shape() {
            return Err(InterpretError::ArgType {
                index,
                name: p.name.clone(),
                expected: p.shape.clone(),
                got: a.shape().clone(),
            });
        }
    }
    let live = live_nodes(f)?;
    let mut values: Vec<Option<Vec<Value>>> = vec![None; f.nodes.len()];
    for (id, node) in f.nodes.iter().enumerate() {
        if !live[id] {
            continue;
        }
        let invalid = |message: String| InterpretError::Invalid {
            node: id,
            op: node.op.name(),
            message,
        };
        let mut operands = Vec::with_capacity(node.operands.len());
        for v in &node.operands {
            let val = values
                .get(v.node)
                .and_then(|o| o.as_ref())
                .and_then(|outs| outs.get(v.output))
                .ok_or_else(|| {
                    invalid(format!(
                        "operand %{}#{} is not computed before it",
                        v.node, v.output
                    ))
                })?;
            operands.push(val);
        }
        if let Op::RngBitGenerator { .. } = node.op {
            return Err(InterpretError::Unsupported {
                node: id,
                op: node.op.name(),
                reason: "random bit generation is left to XLA".into(),
            });
        }
        // A hand-made Function may be inconsistent: re-check arity and types first so
        // that evaluation below can rely on them.
        if !matches!(node.op, Op::Parameter { .. }) {
            let shapes: Vec<Shape> = node
                .operands
                .iter()
                .map(|&v| f.value_shape(v).clone())
                .collect();
            match infer(&node.op, &shapes) {
                Ok(outs) if outs == node.outputs => {}
                Ok(outs) => {
                    return Err(invalid(format!(
                        "node declares {:?} but its operands give {:?}",
                        node.outputs, outs
                    )))
                }
                Err(message) => return Err(invalid(message)),
            }
        }
        let outs = eval_node(node, &operands, args).map_err(invalid)?;
        for (o, s) in outs.iter().zip(&node.outputs) {
            if o.dtype != s.dtype || o.dims() != s.dims {
                return Err(invalid(format!(
                    "computed {}{:?} but the node declares {s}",
                    o.dtype,
                    o.dims()
                )));
            }
        }
        values[id] = Some(outs);
    }
    f.outputs
        .iter()
        .map(|o| {
            values[o.value.node]
                .as_ref()
                .and_then(|outs| outs.get(o.value.output))
                .map(Value::to_literal)
                .ok_or_else(|| InterpretError::Invalid {
                    node: o.value.node,
                    op: "output",
                    message: "output value was not computed".into(),
                })
        })
        .collect()
}

/// Which nodes the outputs need, checking that every operand refers to an earlier node
/// (so a malformed hand-made Function is an error, not a panic).
fn live_nodes(f: &Function) -> Result<Vec<bool>, InterpretError> {
    let n = f.nodes.len();
    let mut live = vec![false; n];
    for o in &f.outputs {
        if o.value.node >= n {
            return Err(InterpretError::Invalid {
                node: o.value.node,
                op: "output",
                message: format!("refers to node %{} of {n}", o.value.node),
            });
        }
        live[o.value.node] = true;
    }
    for id in (0..n).rev() {
        if !live[id] {
            continue;
        }
        for v in &f.nodes[id].operands {
            if v.node >= id {
                return Err(InterpretError::Invalid {
                    node: id,
                    op: f.nodes[id].op.name(),
                    message: format!("operand %{} does not come before it", v.node),
                });
            }
            live[v.node] = true;
        }
    }
    Ok(live)
}

// ---------------------------------------------------------------------------------------
// Values

/// Element storage: floats in f64, integers in i128 (holds every s/u 32/64 value), preds.
#[derive(Clone, Debug)]
enum Data {
    F(ArrayD<f64>),
    I(ArrayD<i128>),
    P(ArrayD<bool>),
}

#[derive(Clone, Debug)]
struct Value {
    dtype: DType,
    data: Data,
}

type R<T> = Result<T, String>;

/// Applies a generic expression to whichever storage a `Data` holds, keeping the kind.
macro_rules! each {
    ($data:expr, $a:ident => $body:expr) => {
        match $data {
            Data::F($a) => Data::F($body),
            Data::I($a) => Data::I($body),
            Data::P($a) => Data::P($body),
        }
    };
}

fn udims(dims: &[i64]) -> Vec<usize> {
    dims.iter().map(|&d| d as usize).collect()
}

fn array<T>(dims: &[usize], v: Vec<T>) -> R<ArrayD<T>> {
    ArrayD::from_shape_vec(IxDyn(dims), v).map_err(|e| e.to_string())
}

/// Rounds an f64 to the nearest value of a float element type.
fn round_float(dtype: DType, x: f64) -> f64 {
    match dtype {
        DType::F32 => x as f32 as f64,
        DType::F16 => f16::from_f64(x).to_f64(),
        DType::Bf16 => bf16::from_f64(x).to_f64(),
        _ => x,
    }
}

/// Wraps an integer to the width and signedness of an integer element type.
fn wrap_int(dtype: DType, v: i128) -> i128 {
    match dtype {
        DType::S32 => v as i32 as i128,
        DType::S64 => v as i64 as i128,
        DType::U32 => v as u32 as i128,
        DType::U64 => v as u64 as i128,
        _ => v,
    }
}

fn int_bits(dtype: DType) -> u32 {
    (dtype.size_in_bytes() * 8) as u32
}

impl Value {
    fn dims(&self) -> Vec<i64> {
        let shape = match &self.data {
            Data::F(a) => a.shape(),
            Data::I(a) => a.shape(),
            Data::P(a) => a.shape(),
        };
        shape.iter().map(|&d| d as i64).collect()
    }

    fn new(dtype: DType, data: Data) -> Value {
        Value { dtype, data }.normalized()
    }

    /// Rounds floats / wraps integers to the declared element type.
    fn normalized(mut self) -> Value {
        let dt = self.dtype;
        match &mut self.data {
            Data::F(a) if dt != DType::F64 => a.mapv_inplace(|x| round_float(dt, x)),
            Data::I(a) => a.mapv_inplace(|x| wrap_int(dt, x)),
            _ => {}
        }
        self
    }

    fn from_literal(l: &Literal) -> R<Value> {
        let dims = udims(l.dims());
        let e = |e: crate::literal::LiteralError| e.to_string();
        let dtype = l.dtype();
        let data = match dtype {
            DType::F16 | DType::Bf16 | DType::F32 | DType::F64 => {
                Data::F(array(&dims, l.to_f64_vec())?)
            }
            DType::S32 => Data::I(array(
                &dims,
                l.to_vec::<i32>()
                    .map_err(e)?
                    .into_iter()
                    .map(i128::from)
                    .collect(),
            )?),
            DType::S64 => Data::I(array(
                &dims,
                l.to_vec::<i64>()
                    .map_err(e)?
                    .into_iter()
                    .map(i128::from)
                    .collect(),
            )?),
            DType::U32 => Data::I(array(
                &dims,
                l.to_vec::<u32>()
                    .map_err(e)?
                    .into_iter()
                    .map(i128::from)
                    .collect(),
            )?),
            DType::U64 => Data::I(array(
                &dims,
                l.to_vec::<u64>()
                    .map_err(e)?
                    .into_iter()
                    .map(i128::from)
                    .collect(),
            )?),
            DType::Pred => Data::P(array(&dims, l.to_vec::<bool>().map_err(e)?)?),
        };
        Ok(Value { dtype, data })
    }

    fn to_literal(&self) -> Literal {
        let dims = self.dims();
        let shape = Shape::new(self.dtype, dims);
        let mut bytes = Vec::with_capacity(shape.size_in_bytes());
        match &self.data {
            Data::F(a) => {
                for &x in a.iter() {
                    match self.dtype {
                        DType::F16 => bytes.extend_from_slice(&f16::from_f64(x).to_le_bytes()),
                        DType::Bf16 => bytes.extend_from_slice(&bf16::from_f64(x).to_le_bytes()),
                        DType::F32 => bytes.extend_from_slice(&(x as f32).to_le_bytes()),
                        _ => bytes.extend_from_slice(&x.to_le_bytes()),
                    }
                }
            }
            Data::I(a) => {
                let w = self.dtype.size_in_bytes();
                for &x in a.iter() {
                    bytes.extend_from_slice(&x.to_le_bytes()[..w]);
                }
            }
            Data::P(a) => bytes.extend(a.iter().map(|&b| b as u8)),
        }
        Literal::from_bytes(shape, bytes).expect("byte count follows the shape")
    }

    fn floats(&self) -> R<&ArrayD<f64>> {
        match &self.data {
            Data::F(a) => Ok(a),
            _ => Err(format!("expected a float tensor, got {}", self.dtype)),
        }
    }

    fn ints(&self) -> R<&ArrayD<i128>> {
        match &self.data {
            Data::I(a) => Ok(a),
            _ => Err(format!("expected an integer tensor, got {}", self.dtype)),
        }
    }

    fn preds(&self) -> R<&ArrayD<bool>> {
        match &self.data {
            Data::P(a) => Ok(a),
            _ => Err(format!("expected a pred tensor, got {}", self.dtype)),
        }
    }

    /// An integer scalar (start indices).
    fn scalar_int(&self) -> R<i64> {
        let a = self.ints()?;
        a.iter()
            .next()
            .map(|&v| v.clamp(i64::MIN as i128, i64::MAX as i128) as i64)
            .ok_or_else(|| "empty index".to_string())
    }

    /// Every element as f64 (for converts).
    fn as_f64(&self) -> ArrayD<f64> {
        match &self.data {
            Data::F(a) => a.clone(),
            Data::I(a) => a.mapv(|x| x as f64),
            Data::P(a) => a.mapv(|x| x as u8 as f64),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Generic structural helpers

/// Elements in row-major order.
fn flat<T: Clone>(a: &ArrayD<T>) -> Vec<T> {
    match a.as_slice() {
        Some(s) => s.to_vec(),
        None => a.iter().cloned().collect(),
    }
}

/// Row-major strides of `dims`.
fn row_major_strides(dims: &[usize]) -> Vec<usize> {
    let mut st = vec![1usize; dims.len()];
    for d in (0..dims.len().saturating_sub(1)).rev() {
        st[d] = st[d + 1] * dims[d + 1];
    }
    st
}

/// Copies `out_dims` elements out of `src`: element `idx` comes from
/// `src[base + sum(idx[d] * strides[d])]` (stride 0 broadcasts). The workhorse of
/// transpose, slice and broadcast; an odometer avoids per-element index vectors.
fn strided_copy<T: Clone>(src: &[T], base: usize, out_dims: &[usize], strides: &[usize]) -> Vec<T> {
    let total: usize = out_dims.iter().product();
    let mut out = Vec::with_capacity(total);
    if total == 0 {
        return out;
    }
    let r = out_dims.len();
    let mut idx = vec![0usize; r];
    let mut off = base;
    for _ in 0..total {
        out.push(src[off].clone());
        let mut d = r;
        while d > 0 {
            d -= 1;
            idx[d] += 1;
            off += strides[d];
            if idx[d] < out_dims[d] {
                break;
            }
            off -= strides[d] * out_dims[d];
            idx[d] = 0;
        }
    }
    out
}

fn reshape<T: Clone>(a: &ArrayD<T>, dims: &[usize]) -> R<ArrayD<T>> {
    array(dims, flat(a))
}

/// Result dimension i is operand dimension `perm[i]`.
fn transpose<T: Clone>(a: &ArrayD<T>, perm: &[usize]) -> R<ArrayD<T>> {
    let src = flat(a);
    if perm.iter().enumerate().all(|(i, &p)| i == p) {
        return array(a.shape(), src);
    }
    let st = row_major_strides(a.shape());
    let out_dims: Vec<usize> = perm.iter().map(|&p| a.shape()[p]).collect();
    let strides: Vec<usize> = perm.iter().map(|&p| st[p]).collect();
    array(&out_dims, strided_copy(&src, 0, &out_dims, &strides))
}

fn broadcast_in_dim<T: Clone>(a: &ArrayD<T>, shape: &[usize], dims: &[usize]) -> R<ArrayD<T>> {
    let src = flat(a);
    let st = row_major_strides(a.shape());
    // Operand dimension i walks result dimension dims[i]; size-1 dimensions repeat.
    let mut strides = vec![0usize; shape.len()];
    for (i, &d) in dims.iter().enumerate() {
        if a.shape()[i] != 1 {
            if a.shape()[i] != shape[d] {
                return Err(format!("cannot broadcast {:?} to {shape:?}", a.shape()));
            }
            strides[d] = st[i];
        }
    }
    array(shape, strided_copy(&src, 0, shape, &strides))
}

fn slice<T: Clone>(a: &ArrayD<T>, start: &[i64], limit: &[i64], strides: &[i64]) -> R<ArrayD<T>> {
    let src = flat(a);
    let st = row_major_strides(a.shape());
    let r = a.ndim();
    let base: usize = (0..r).map(|d| start[d] as usize * st[d]).sum();
    let out_dims: Vec<usize> = (0..r)
        .map(|d| ((limit[d] - start[d] + strides[d] - 1) / strides[d]).max(0) as usize)
        .collect();
    let steps: Vec<usize> = (0..r).map(|d| st[d] * strides[d] as usize).collect();
    array(&out_dims, strided_copy(&src, base, &out_dims, &steps))
}

/// Clamps a window start so that `[start, start+size)` lies in `0..dim`.
fn clamp_start(start: i64, size: i64, dim: i64) -> i64 {
    start.clamp(0, (dim - size).max(0))
}

fn dynamic_slice<T: Clone>(a: &ArrayD<T>, starts: &[i64], sizes: &[i64]) -> R<ArrayD<T>> {
    let dims: Vec<i64> = a.shape().iter().map(|&d| d as i64).collect();
    let s: Vec<i64> = (0..dims.len())
        .map(|i| clamp_start(starts[i], sizes[i], dims[i]))
        .collect();
    let l: Vec<i64> = (0..dims.len()).map(|i| s[i] + sizes[i]).collect();
    slice(a, &s, &l, &vec![1; dims.len()])
}

fn dynamic_update_slice<T: Clone>(a: &ArrayD<T>, u: &ArrayD<T>, starts: &[i64]) -> R<ArrayD<T>> {
    let mut out = a.clone();
    let s: Vec<i64> = (0..a.ndim())
        .map(|i| clamp_start(starts[i], u.shape()[i] as i64, a.shape()[i] as i64))
        .collect();
    {
        let mut view = out.slice_each_axis_mut(|ax| {
            let i = ax.axis.index();
            Slice::from(s[i] as isize..s[i] as isize + u.shape()[i] as isize)
        });
        view.assign(u);
    }
    Ok(out)
}

fn concatenate<T: Clone>(parts: &[&ArrayD<T>], dim: usize) -> R<ArrayD<T>> {
    let views: Vec<_> = parts.iter().map(|a| a.view()).collect();
    ndarray::concatenate(Axis(dim), &views).map_err(|e| e.to_string())
}

fn pad<T: Clone>(
    a: &ArrayD<T>,
    v: &T,
    low: &[i64],
    high: &[i64],
    interior: &[i64],
) -> R<ArrayD<T>> {
    let r = a.ndim();
    let out_dims: Vec<i64> = (0..r)
        .map(|i| {
            let d = a.shape()[i] as i64;
            low[i] + high[i] + d + (d - 1).max(0) * interior[i]
        })
        .collect();
    if out_dims.iter().any(|&d| d < 0) {
        return Err("negative padded size".into());
    }
    let mut out = ArrayD::from_elem(IxDyn(&udims(&out_dims)), v.clone());
    let mut pos = vec![0usize; r];
    'elems: for (idx, x) in a.indexed_iter() {
        for i in 0..r {
            let p = low[i] + idx[i] as i64 * (interior[i] + 1);
            if p < 0 || p >= out_dims[i] {
                continue 'elems;
            }
            pos[i] = p as usize;
        }
        out[IxDyn(&pos)] = x.clone();
    }
    Ok(out)
}

fn select<T: Clone>(p: &ArrayD<bool>, t: &ArrayD<T>, f: &ArrayD<T>) -> R<ArrayD<T>> {
    if p.ndim() == 0 {
        let take = p.iter().next().copied().unwrap_or(false);
        return Ok(if take { t.clone() } else { f.clone() });
    }
    let v: Vec<T> = p
        .iter()
        .zip(t.iter().zip(f.iter()))
        .map(|(&c, (a, b))| if c { a.clone() } else { b.clone() })
        .collect();
    array(t.shape(), v)
}

/// Reduces `dims` away with `f`, starting each lane from `init`.
fn reduce<T: Clone>(
    a: &ArrayD<T>,
    dims: &[usize],
    init: T,
    f: impl Fn(T, &T) -> T,
) -> R<ArrayD<T>> {
    let kept: Vec<usize> = (0..a.ndim()).filter(|d| !dims.contains(d)).collect();
    let mut perm = kept.clone();
    perm.extend_from_slice(dims);
    let t = transpose(a, &perm)?;
    let lane: usize = dims.iter().map(|&d| a.shape()[d]).product();
    let out_dims: Vec<usize> = kept.iter().map(|&d| a.shape()[d]).collect();
    let count: usize = out_dims.iter().product();
    let data = flat(&t);
    let v: Vec<T> = (0..count)
        .map(|i| data[i * lane..(i + 1) * lane].iter().fold(init.clone(), &f))
        .collect();
    array(&out_dims, v)
}

/// Applies a permutation (one per lane along `dim`, in row-major lane order) to `a`.
fn permute_lanes<T: Clone>(a: &ArrayD<T>, dim: usize, perms: &[Vec<usize>]) -> R<ArrayD<T>> {
    let r = a.ndim();
    let mut to_last: Vec<usize> = (0..r).filter(|&d| d != dim).collect();
    to_last.push(dim);
    let t = transpose(a, &to_last)?;
    let n = a.shape()[dim];
    let data = flat(&t);
    let mut out = Vec::with_capacity(data.len());
    if n > 0 {
        for (lane, p) in data.chunks(n).zip(perms) {
            out.extend(p.iter().map(|&i| lane[i].clone()));
        }
    }
    let t = array(t.shape(), out)?;
    let mut back = vec![0; r];
    for (i, &d) in to_last.iter().enumerate() {
        back[d] = i;
    }
    transpose(&t, &back)
}

/// Lanes along `dim` in row-major order of the other dimensions.
fn lanes<T: Clone>(a: &ArrayD<T>, dim: usize) -> R<Vec<Vec<T>>> {
    let r = a.ndim();
    let mut to_last: Vec<usize> = (0..r).filter(|&d| d != dim).collect();
    to_last.push(dim);
    let t = transpose(a, &to_last)?;
    let n = a.shape()[dim];
    if n == 0 {
        return Ok(Vec::new());
    }
    Ok(flat(&t).chunks(n).map(|c| c.to_vec()).collect())
}

/// All multi-indices of `dims` in row-major order.
fn for_each_index(dims: &[usize], mut f: impl FnMut(&[usize]) -> R<()>) -> R<()> {
    if dims.contains(&0) {
        return Ok(());
    }
    let mut idx = vec![0usize; dims.len()];
    loop {
        f(&idx)?;
        let mut d = dims.len();
        loop {
            if d == 0 {
                return Ok(());
            }
            d -= 1;
            idx[d] += 1;
            if idx[d] < dims[d] {
                break;
            }
            idx[d] = 0;
        }
    }
}

/// The index vector of `indices` at batch position `batch` (index_vector_dim re-inserted).
fn index_vector(indices: &ArrayD<i128>, batch: &[usize], ivd: usize) -> Vec<i64> {
    let to_i64 = |v: i128| v.clamp(i64::MIN as i128, i64::MAX as i128) as i64;
    if ivd >= indices.ndim() {
        return vec![to_i64(indices[IxDyn(batch)])];
    }
    let mut full: Vec<usize> = batch.to_vec();
    full.insert(ivd, 0);
    (0..indices.shape()[ivd])
        .map(|k| {
            full[ivd] = k;
            to_i64(indices[IxDyn(&full)])
        })
        .collect()
}

fn gather<T: Clone>(
    a: &ArrayD<T>,
    indices: &ArrayD<i128>,
    g: &GatherDims,
    out_dims: &[usize],
) -> R<ArrayD<T>> {
    let r = a.ndim();
    let ivd = g.index_vector_dim as usize;
    let offset_dims: Vec<usize> = g.offset_dims.iter().map(|&d| d as usize).collect();
    let window_operand_dims: Vec<usize> = (0..r)
        .filter(|d| !g.collapsed_slice_dims.contains(&(*d as i64)))
        .collect();
    let mut out = Vec::with_capacity(out_dims.iter().product());
    for_each_index(out_dims, |o| {
        let batch: Vec<usize> = (0..o.len())
            .filter(|d| !offset_dims.contains(d))
            .map(|d| o[d])
            .collect();
        let offs: Vec<usize> = offset_dims.iter().map(|&d| o[d]).collect();
        let iv = index_vector(indices, &batch, ivd);
        let mut pos = vec![0i64; r];
        for (k, &od) in g.start_index_map.iter().enumerate() {
            let od = od as usize;
            pos[od] = clamp_start(iv[k], g.slice_sizes[od], a.shape()[od] as i64);
        }
        for (w, &od) in window_operand_dims.iter().enumerate() {
            pos[od] += offs[w] as i64;
        }
        out.push(a[IxDyn(&udims(&pos))].clone());
        Ok(())
    })?;
    array(out_dims, out)
}

fn scatter_add<T: Clone>(
    a: &ArrayD<T>,
    indices: &ArrayD<i128>,
    u: &ArrayD<T>,
    s: &ScatterDims,
    add: impl Fn(&T, &T) -> T,
) -> R<ArrayD<T>> {
    let r = a.ndim();
    let ivd = s.index_vector_dim as usize;
    let uwd: Vec<usize> = s.update_window_dims.iter().map(|&d| d as usize).collect();
    let window_operand_dims: Vec<usize> = (0..r)
        .filter(|d| !s.inserted_window_dims.contains(&(*d as i64)))
        .collect();
    // Window size per operand dimension (1 for inserted ones).
    let mut window = vec![1i64; r];
    for (w, &od) in window_operand_dims.iter().enumerate() {
        window[od] = u.shape()[uwd[w]] as i64;
    }
    let mut out = a.clone();
    for_each_index(u.shape(), |ui| {
        let batch: Vec<usize> = (0..ui.len())
            .filter(|d| !uwd.contains(d))
            .map(|d| ui[d])
            .collect();
        let iv = index_vector(indices, &batch, ivd);
        let mut start = vec![0i64; r];
        for (k, &od) in s.scatter_dims_to_operand_dims.iter().enumerate() {
            start[od as usize] = iv[k];
        }
        // XLA skips a whole update window that does not fit in the operand.
        if (0..r).any(|d| start[d] < 0 || start[d] + window[d] > a.shape()[d] as i64) {
            return Ok(());
        }
        let mut pos = start;
        for (w, &od) in window_operand_dims.iter().enumerate() {
            pos[od] += ui[uwd[w]] as i64;
        }
        let p = IxDyn(&udims(&pos));
        let sum = add(&out[p.clone()], &u[IxDyn(ui)]);
        out[p] = sum;
        Ok(())
    })?;
    Ok(out)
}

/// Generic dot_general over a ring given by `zero`, `mul` and `add`.
/// `matmul(a, b, m, k, n)` multiplies one batch's row-major `[m, k]` and `[k, n]`.
fn dot_general<T: Clone>(
    l: &ArrayD<T>,
    r: &ArrayD<T>,
    d: &DotDims,
    matmul: impl Fn(&[T], &[T], usize, usize, usize) -> Vec<T>,
) -> R<ArrayD<T>> {
    let u = |v: &[i64]| -> Vec<usize> { v.iter().map(|&x| x as usize).collect() };
    let (lb, rb, lc, rc) = (
        u(&d.lhs_batch),
        u(&d.rhs_batch),
        u(&d.lhs_contracting),
        u(&d.rhs_contracting),
    );
    let lf: Vec<usize> = (0..l.ndim())
        .filter(|x| !lb.contains(x) && !lc.contains(x))
        .collect();
    let rf: Vec<usize> = (0..r.ndim())
        .filter(|x| !rb.contains(x) && !rc.contains(x))
        .collect();
    let size =
        |a: &ArrayD<T>, ds: &[usize]| -> usize { ds.iter().map(|&x| a.shape()[x]).product() };
    let (nb, m, k, n) = (size(l, &lb), size(l, &lf), size(l, &lc), size(r, &rf));
    let lt = flat(&transpose(
        l,
        &[lb.clone(), lf.clone(), lc.clone()].concat(),
    )?);
    let rt = flat(&transpose(
        r,
        &[rb.clone(), rc.clone(), rf.clone()].concat(),
    )?);
    let mut out = Vec::with_capacity(nb * m * n);
    for b in 0..nb {
        let a = &lt[b * m * k..(b + 1) * m * k];
        let c = &rt[b * k * n..(b + 1) * k * n];
        out.extend(matmul(a, c, m, k, n));
    }
    let mut dims: Vec<usize> = lb.iter().map(|&x| l.shape()[x]).collect();
    dims.extend(lf.iter().map(|&x| l.shape()[x]));
    dims.extend(rf.iter().map(|&x| r.shape()[x]));
    array(&dims, out)
}

/// f64 matrix product through ndarray (a blocked kernel; the model tests run whole
/// programs on the interpreter).
fn matmul_f64(a: &[f64], b: &[f64], m: usize, k: usize, n: usize) -> Vec<f64> {
    match (
        ndarray::ArrayView2::from_shape((m, k), a),
        ndarray::ArrayView2::from_shape((k, n), b),
    ) {
        (Ok(a), Ok(b)) => a.dot(&b).iter().copied().collect(),
        _ => vec![f64::NAN; m * n],
    }
}

/// Wrapping integer matrix product, wrapped to `dtype` after every step.
fn matmul_int(dtype: DType, a: &[i128], b: &[i128], m: usize, k: usize, n: usize) -> Vec<i128> {
    let mut out = vec![0i128; m * n];
    for i in 0..m {
        for c in 0..k {
            let x = a[i * k + c];
            for j in 0..n {
                let o = &mut out[i * n + j];
                *o = wrap_int(dtype, o.wrapping_add(x.wrapping_mul(b[c * n + j])));
            }
        }
    }
    out
}

fn zip_map<A: Clone, B>(x: &ArrayD<A>, y: &ArrayD<A>, f: impl Fn(A, A) -> B) -> R<ArrayD<B>> {
    if x.shape() != y.shape() {
        return Err(format!(
            "operand shapes differ: {:?} vs {:?}",
            x.shape(),
            y.shape()
        ));
    }
    let v = x
        .iter()
        .zip(y.iter())
        .map(|(a, b)| f(a.clone(), b.clone()))
        .collect();
    array(x.shape(), v)
}

/// Broadcasts a scalar operand to `dims` (clamp bounds), or checks the shape matches.
fn scalar_or_same<T: Clone>(a: &ArrayD<T>, dims: &[usize]) -> R<ArrayD<T>> {
    if a.shape() == dims {
        return Ok(a.clone());
    }
    if a.ndim() == 0 {
        return broadcast_in_dim(a, dims, &[]);
    }
    Err(format!(
        "{:?} is neither a scalar nor of shape {dims:?}",
        a.shape()
    ))
}

// ---------------------------------------------------------------------------------------
// Elementwise semantics

fn nan_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

fn nan_min(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.min(b)
    }
}

fn float_unary(u: UnaryOp, x: f64) -> R<f64> {
    Ok(match u {
        UnaryOp::Neg => -x,
        UnaryOp::Abs => x.abs(),
        UnaryOp::Exp => x.exp(),
        UnaryOp::Log => x.ln(),
        UnaryOp::Log1p => x.ln_1p(),
        UnaryOp::Tanh => x.tanh(),
        UnaryOp::Logistic => 1.0 / (1.0 + (-x).exp()),
        UnaryOp::Sqrt => x.sqrt(),
        UnaryOp::Rsqrt => 1.0 / x.sqrt(),
        UnaryOp::Sign => {
            if x.is_nan() || x == 0.0 {
                x
            } else {
                x.signum()
            }
        }
        UnaryOp::Floor => x.floor(),
        UnaryOp::Cos => x.cos(),
        UnaryOp::Sin => x.sin(),
        UnaryOp::Not => return Err("not is undefined on floats".into()),
    })
}

fn int_unary(u: UnaryOp, x: i128) -> R<i128> {
    Ok(match u {
        UnaryOp::Neg => x.wrapping_neg(),
        UnaryOp::Abs => x.wrapping_abs(),
        UnaryOp::Sign => x.signum(),
        UnaryOp::Not => !x,
        _ => return Err(format!("{u:?} is undefined on integers")),
    })
}

fn float_binary(b: BinaryOp, x: f64, y: f64) -> R<f64> {
    Ok(match b {
        BinaryOp::Add => x + y,
        BinaryOp::Sub => x - y,
        BinaryOp::Mul => x * y,
        BinaryOp::Div => x / y,
        BinaryOp::Max => nan_max(x, y),
        BinaryOp::Min => nan_min(x, y),
        BinaryOp::Pow => x.powf(y),
        // Rust's % on floats is C's fmod (sign of the dividend), as XLA's remainder.
        BinaryOp::Rem => x % y,
        _ => return Err(format!("{b:?} is undefined on floats")),
    })
}

fn int_pow(x: i128, y: i128, dtype: DType) -> i128 {
    if y < 0 {
        return match x {
            1 => 1,
            -1 => {
                if y % 2 == 0 {
                    1
                } else {
                    -1
                }
            }
            _ => 0,
        };
    }
    let (mut base, mut e, mut acc) = (x, y, 1i128);
    while e > 0 {
        if e & 1 == 1 {
            acc = wrap_int(dtype, acc.wrapping_mul(base));
        }
        base = wrap_int(dtype, base.wrapping_mul(base));
        e >>= 1;
    }
    acc
}

fn int_binary(b: BinaryOp, dtype: DType, x: i128, y: i128) -> R<i128> {
    let bits = int_bits(dtype);
    let mask: i128 = (1i128 << bits) - 1;
    Ok(match b {
        BinaryOp::Add => x.wrapping_add(y),
        BinaryOp::Sub => x.wrapping_sub(y),
        BinaryOp::Mul => x.wrapping_mul(y),
        BinaryOp::Div => {
            if y == 0 {
                -1
            } else {
                x.wrapping_div(y)
            }
        }
        BinaryOp::Rem => {
            if y == 0 {
                x
            } else {
                x.wrapping_rem(y)
            }
        }
        BinaryOp::Max => x.max(y),
        BinaryOp::Min => x.min(y),
        BinaryOp::Pow => int_pow(x, y, dtype),
        BinaryOp::And => x & y,
        BinaryOp::Or => x | y,
        BinaryOp::Xor => x ^ y,
        BinaryOp::ShiftLeft => {
            if y < 0 || y >= bits as i128 {
                0
            } else {
                (x & mask) << y
            }
        }
        BinaryOp::ShiftRightLogical => {
            if y < 0 || y >= bits as i128 {
                0
            } else {
                (x & mask) >> y
            }
        }
    })
}

fn pred_binary(b: BinaryOp, x: bool, y: bool) -> R<bool> {
    Ok(match b {
        BinaryOp::And | BinaryOp::Min | BinaryOp::Mul => x & y,
        BinaryOp::Or | BinaryOp::Max | BinaryOp::Add => x | y,
        BinaryOp::Xor => x ^ y,
        _ => return Err(format!("{b:?} is undefined on pred")),
    })
}

fn compare<T: PartialOrd>(d: CompareDirection, x: T, y: T) -> bool {
    match d {
        CompareDirection::Eq => x == y,
        CompareDirection::Ne => x != y,
        CompareDirection::Lt => x < y,
        CompareDirection::Le => x <= y,
        CompareDirection::Gt => x > y,
        CompareDirection::Ge => x >= y,
    }
}

/// Sort order of keys: NaNs after every number (ascending).
fn key_order(i: usize, j: usize, lane: &LaneKeys) -> Ordering {
    match lane {
        LaneKeys::F(v) => v[i]
            .partial_cmp(&v[j])
            .unwrap_or_else(|| v[i].is_nan().cmp(&v[j].is_nan())),
        LaneKeys::I(v) => v[i].cmp(&v[j]),
        LaneKeys::P(v) => v[i].cmp(&v[j]),
    }
}

enum LaneKeys {
    F(Vec<f64>),
    I(Vec<i128>),
    P(Vec<bool>),
}

// ---------------------------------------------------------------------------------------
// One node

fn eval_node(node: &Node, ops: &[&Value], args: &[Literal]) -> R<Vec<Value>> {
    let out_shape = &node.outputs[0];
    let dt = out_shape.dtype;
    let one = |data: Data| Ok(vec![Value::new(dt, data)]);
    let x = || {
        ops.first()
            .copied()
            .ok_or_else(|| "missing operand".to_string())
    };
    match &node.op {
        Op::Parameter { index } => {
            let lit = args
                .get(*index)
                .ok_or_else(|| format!("no argument {index}"))?;
            Ok(vec![Value::from_literal(lit)?])
        }
        Op::Constant(lit) => Ok(vec![Value::from_literal(lit)?]),
        Op::Iota { shape, dim } => {
            let dims = udims(&shape.dims);
            let d = *dim as usize;
            let data = if shape.dtype.is_float() {
                Data::F(ArrayD::from_shape_fn(IxDyn(&dims), |i| i[d] as f64))
            } else {
                Data::I(ArrayD::from_shape_fn(IxDyn(&dims), |i| i[d] as i128))
            };
            one(data)
        }
        Op::Convert { to } => {
            let v = x()?;
            let data = match (&v.data, to.is_float(), *to == DType::Pred) {
                (_, true, _) => Data::F(v.as_f64()),
                (Data::F(a), false, true) => Data::P(a.mapv(|x| x != 0.0)),
                (Data::I(a), false, true) => Data::P(a.mapv(|x| x != 0)),
                (Data::P(a), false, true) => Data::P(a.clone()),
                // Float to integer truncates toward zero and saturates (NaN -> 0).
                (Data::F(a), false, false) => {
                    let (lo, hi) = match to {
                        DType::S32 => (i32::MIN as f64, i32::MAX as f64),
                        DType::S64 => (i64::MIN as f64, i64::MAX as f64),
                        DType::U32 => (0.0, u32::MAX as f64),
                        _ => (0.0, u64::MAX as f64),
                    };
                    Data::I(a.mapv(|x| {
                        if x.is_nan() {
                            0
                        } else {
                            x.trunc().clamp(lo, hi) as i128
                        }
                    }))
                }
                (Data::I(a), false, false) => Data::I(a.clone()),
                (Data::P(a), false, false) => Data::I(a.mapv(|x| x as i128)),
            };
            one(data)
        }
        Op::BitcastConvert { to } => {
            let lit = x()?.to_literal();
            let re = Literal::from_bytes(lit.shape().with_dtype(*to), lit.into_bytes())
                .map_err(|e| e.to_string())?;
            Ok(vec![Value::from_literal(&re)?])
        }
        Op::BroadcastInDim { shape, dims } => {
            let (s, d) = (udims(shape), udims(dims));
            one(each!(&x()?.data, a => broadcast_in_dim(a, &s, &d)?))
        }
        Op::Reshape { dims } => {
            let d = udims(dims);
            one(each!(&x()?.data, a => reshape(a, &d)?))
        }
        Op::Transpose { perm } => {
            let p = udims(perm);
            one(each!(&x()?.data, a => transpose(a, &p)?))
        }
        Op::Slice {
            start,
            limit,
            strides,
        } => one(each!(&x()?.data, a => slice(a, start, limit, strides)?)),
        Op::DynamicSlice { sizes } => {
            let starts = ops[1..]
                .iter()
                .map(|v| v.scalar_int())
                .collect::<R<Vec<_>>>()?;
            one(each!(&x()?.data, a => dynamic_slice(a, &starts, sizes)?))
        }
        Op::DynamicUpdateSlice => {
            let starts = ops[2..]
                .iter()
                .map(|v| v.scalar_int())
                .collect::<R<Vec<_>>>()?;
            let data = match (&ops[0].data, &ops[1].data) {
                (Data::F(a), Data::F(u)) => Data::F(dynamic_update_slice(a, u, &starts)?),
                (Data::I(a), Data::I(u)) => Data::I(dynamic_update_slice(a, u, &starts)?),
                (Data::P(a), Data::P(u)) => Data::P(dynamic_update_slice(a, u, &starts)?),
                _ => return Err("tensor and update differ in kind".into()),
            };
            one(data)
        }
        Op::Concatenate { dim } => {
            let d = *dim as usize;
            let data = match &x()?.data {
                Data::F(_) => Data::F(concatenate(
                    &ops.iter().map(|v| v.floats()).collect::<R<Vec<_>>>()?,
                    d,
                )?),
                Data::I(_) => Data::I(concatenate(
                    &ops.iter().map(|v| v.ints()).collect::<R<Vec<_>>>()?,
                    d,
                )?),
                Data::P(_) => Data::P(concatenate(
                    &ops.iter().map(|v| v.preds()).collect::<R<Vec<_>>>()?,
                    d,
                )?),
            };
            one(data)
        }
        Op::Pad {
            low,
            high,
            interior,
        } => {
            let data = match (&ops[0].data, &ops[1].data) {
                (Data::F(a), Data::F(v)) => Data::F(pad(a, &flat(v)[0], low, high, interior)?),
                (Data::I(a), Data::I(v)) => Data::I(pad(a, &flat(v)[0], low, high, interior)?),
                (Data::P(a), Data::P(v)) => Data::P(pad(a, &flat(v)[0], low, high, interior)?),
                _ => return Err("tensor and padding value differ in kind".into()),
            };
            one(data)
        }
        Op::Select => {
            let p = ops[0].preds()?;
            let data = match (&ops[1].data, &ops[2].data) {
                (Data::F(t), Data::F(f)) => Data::F(select(p, t, f)?),
                (Data::I(t), Data::I(f)) => Data::I(select(p, t, f)?),
                (Data::P(t), Data::P(f)) => Data::P(select(p, t, f)?),
                _ => return Err("branches differ in kind".into()),
            };
            one(data)
        }
        Op::Compare { direction } => {
            let d = *direction;
            let data = match (&ops[0].data, &ops[1].data) {
                (Data::F(a), Data::F(b)) => zip_map(a, b, |x, y| compare(d, x, y))?,
                (Data::I(a), Data::I(b)) => zip_map(a, b, |x, y| compare(d, x, y))?,
                (Data::P(a), Data::P(b)) => zip_map(a, b, |x, y| compare(d, x, y))?,
                _ => return Err("compared operands differ in kind".into()),
            };
            one(Data::P(data))
        }
        Op::Clamp => {
            let dims = udims(&ops[1].dims());
            let data = match (&ops[0].data, &ops[1].data, &ops[2].data) {
                (Data::F(lo), Data::F(v), Data::F(hi)) => {
                    let lo = scalar_or_same(lo, &dims)?;
                    let hi = scalar_or_same(hi, &dims)?;
                    let m = zip_map(v, &lo, nan_max)?;
                    Data::F(zip_map(&m, &hi, nan_min)?)
                }
                (Data::I(lo), Data::I(v), Data::I(hi)) => {
                    let lo = scalar_or_same(lo, &dims)?;
                    let hi = scalar_or_same(hi, &dims)?;
                    let m = zip_map(v, &lo, |a, b| a.max(b))?;
                    Data::I(zip_map(&m, &hi, |a, b| a.min(b))?)
                }
                _ => return Err("clamp needs numbers of one kind".into()),
            };
            one(data)
        }
        // Each elementwise op is probed once for whether it is defined on the element
        // kind, then mapped without per-element error handling.
        Op::Unary(u) => {
            let u = *u;
            let data = match &x()?.data {
                Data::F(a) => {
                    float_unary(u, 0.0)?;
                    Data::F(a.mapv(|v| float_unary(u, v).unwrap_or(f64::NAN)))
                }
                Data::I(a) => {
                    int_unary(u, 0)?;
                    Data::I(a.mapv(|v| int_unary(u, v).unwrap_or(0)))
                }
                Data::P(a) if u == UnaryOp::Not => Data::P(a.mapv(|b| !b)),
                Data::P(_) => return Err(format!("{u:?} is undefined on pred")),
            };
            one(data)
        }
        Op::Binary(b) => {
            let b = *b;
            let data = match (&ops[0].data, &ops[1].data) {
                (Data::F(x), Data::F(y)) => {
                    float_binary(b, 0.0, 1.0)?;
                    Data::F(zip_map(x, y, |p, q| {
                        float_binary(b, p, q).unwrap_or(f64::NAN)
                    })?)
                }
                (Data::I(x), Data::I(y)) => {
                    int_binary(b, dt, 0, 1)?;
                    Data::I(zip_map(x, y, |p, q| int_binary(b, dt, p, q).unwrap_or(0))?)
                }
                (Data::P(x), Data::P(y)) => {
                    pred_binary(b, false, true)?;
                    Data::P(zip_map(x, y, |p, q| pred_binary(b, p, q).unwrap_or(false))?)
                }
                _ => return Err("operands differ in kind".into()),
            };
            one(data)
        }
        Op::DotGeneral { dims } => {
            let data = match (&ops[0].data, &ops[1].data) {
                (Data::F(l), Data::F(r)) => Data::F(dot_general(l, r, dims, matmul_f64)?),
                (Data::I(l), Data::I(r)) => Data::I(dot_general(l, r, dims, |a, b, m, k, n| {
                    matmul_int(dt, a, b, m, k, n)
                })?),
                _ => return Err("dot_general needs numbers of one kind".into()),
            };
            one(data)
        }
        Op::Reduce { kind, dims } => {
            let d = udims(dims);
            let data = match (&x()?.data, kind) {
                (Data::F(a), ReduceKind::Sum) => Data::F(reduce(a, &d, 0.0, |s, v| s + v)?),
                (Data::F(a), ReduceKind::Max) => {
                    Data::F(reduce(a, &d, f64::NEG_INFINITY, |s, v| nan_max(s, *v))?)
                }
                (Data::F(a), ReduceKind::Min) => {
                    Data::F(reduce(a, &d, f64::INFINITY, |s, v| nan_min(s, *v))?)
                }
                (Data::I(a), ReduceKind::Sum) => {
                    Data::I(reduce(a, &d, 0, |s, v| s.wrapping_add(*v))?)
                }
                (Data::I(a), ReduceKind::Max) => {
                    Data::I(reduce(a, &d, i128::MIN, |s, v| s.max(*v))?)
                }
                (Data::I(a), ReduceKind::Min) => {
                    Data::I(reduce(a, &d, i128::MAX, |s, v| s.min(*v))?)
                }
                (Data::I(a), ReduceKind::And) => Data::I(reduce(a, &d, -1, |s, v| s & v)?),
                (Data::I(a), ReduceKind::Or) => Data::I(reduce(a, &d, 0, |s, v| s | v)?),
                (Data::P(a), ReduceKind::And) => Data::P(reduce(a, &d, true, |s, v| s && *v)?),
                (Data::P(a), ReduceKind::Or) => Data::P(reduce(a, &d, false, |s, v| s || *v)?),
                _ => return Err(format!("{kind:?} reduction undefined on {}", x()?.dtype)),
            };
            // Integer max/min of an empty lane: the type's extreme value.
            let data = match (data, kind) {
                (Data::I(a), ReduceKind::Max | ReduceKind::Min) => Data::I(a.mapv(|v| {
                    let (lo, hi) = int_range(dt);
                    v.clamp(lo, hi)
                })),
                (d, _) => d,
            };
            one(data)
        }
        Op::Gather { dims } => {
            let idx = ops[1].ints()?;
            let out = udims(&out_shape.dims);
            one(each!(&x()?.data, a => gather(a, idx, dims, &out)?))
        }
        Op::ScatterAdd { dims } => {
            let idx = ops[1].ints()?;
            let data = match (&ops[0].data, &ops[2].data) {
                (Data::F(a), Data::F(u)) => Data::F(scatter_add(a, idx, u, dims, |p, q| p + q)?),
                (Data::I(a), Data::I(u)) => {
                    Data::I(scatter_add(a, idx, u, dims, |p, q| p.wrapping_add(*q))?)
                }
                _ => return Err("scatter_add needs numbers of one kind".into()),
            };
            one(data)
        }
        Op::Sort { dim, descending } => {
            let d = *dim as usize;
            let keys = x()?;
            let key_lanes = match &keys.data {
                Data::F(a) => lanes(a, d)?
                    .into_iter()
                    .map(LaneKeys::F)
                    .collect::<Vec<_>>(),
                Data::I(a) => lanes(a, d)?.into_iter().map(LaneKeys::I).collect(),
                Data::P(a) => lanes(a, d)?.into_iter().map(LaneKeys::P).collect(),
            };
            let n = keys.dims().get(d).copied().unwrap_or(0) as usize;
            let perms: Vec<Vec<usize>> = key_lanes
                .iter()
                .map(|lane| {
                    let mut p: Vec<usize> = (0..n).collect();
                    // Stable either way: equal keys keep their original order.
                    if *descending {
                        p.sort_by(|&i, &j| key_order(j, i, lane));
                    } else {
                        p.sort_by(|&i, &j| key_order(i, j, lane));
                    }
                    p
                })
                .collect();
            ops.iter()
                .map(|v| {
                    Ok(Value::new(
                        v.dtype,
                        each!(&v.data, a => permute_lanes(a, d, &perms)?),
                    ))
                })
                .collect()
        }
        Op::RngBitGenerator { .. } => Err("random bit generation is left to XLA".into()),
        Op::While { cond, body } => {
            let mut state: Vec<Literal> = ops.iter().map(|v| v.to_literal()).collect();
            while run_condition(cond, &state)? {
                state = evaluate(body, &state).map_err(|e| format!("in the body: {e}"))?;
            }
            state.iter().map(Value::from_literal).collect()
        }
        Op::Composite {
            name,
            decomposition,
            ..
        } => {
            let args: Vec<Literal> = ops.iter().map(|v| v.to_literal()).collect();
            let out = evaluate(decomposition, &args).map_err(|e| format!("in `{name}`: {e}"))?;
            out.iter().map(Value::from_literal).collect()
        }
        Op::ShardingConstraint { .. } | Op::StopGradient => Ok(vec![x()?.clone()]),
    }
}

/// Evaluates a while loop's condition on the carried values.
fn run_condition(cond: &Function, state: &[Literal]) -> R<bool> {
    let out = evaluate(cond, state).map_err(|e| format!("in the condition: {e}"))?;
    let go = out
        .first()
        .map(|l| l.to_vec::<bool>())
        .ok_or("the condition returned nothing")?
        .map_err(|e| format!("the condition's result: {e}"))?;
    go.first()
        .copied()
        .ok_or_else(|| "the condition returned an empty value".into())
}

fn int_range(dtype: DType) -> (i128, i128) {
    match dtype {
        DType::S32 => (i32::MIN as i128, i32::MAX as i128),
        DType::S64 => (i64::MIN as i128, i64::MAX as i128),
        DType::U32 => (0, u32::MAX as i128),
        _ => (0, u64::MAX as i128),
    }
}
