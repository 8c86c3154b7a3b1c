//! One StableHLO operation per IR node.
//!
//! Simple ops use StableHLO's pretty syntax (`%3 = stablehlo.add %1, %2 : tensor<4xf32>`);
//! ops with regions or nested attributes use the generic syntax, whose attribute spelling
//! is stable across StableHLO versions. A while loop's condition and body are emitted as
//! nested regions by the same emitter (one namer, deeper indentation).

use super::constant::{dense_attr, reduce_init};
use super::sharding;
use super::{Emitter, Partitioner};
use crate::dtype::DType;
use crate::ir::{compare_type, CompareDirection, DotDims, Function, Op, ReduceKind, RngAlgorithm};
use crate::shape::Shape;
use std::fmt::Write;

/// Emits node `id` (not a parameter or stop_gradient) into the body. Errors are plain
/// messages; the caller adds the node and op.
pub(super) fn emit<'a>(e: &mut Emitter<'a>, id: usize) -> Result<(), String> {
    let f = e.f;
    let node = &f.nodes[id];
    check_arity(&node.op, node.operands.len(), node.outputs.len())?;
    let mut args: Vec<String> = node.operands.iter().map(|v| e.value(*v)).collect();
    let mut arg_types: Vec<String> = node
        .operands
        .iter()
        .map(|v| f.value_shape(*v).mlir_type())
        .collect();
    // StableHLO wants all start indices of one type; the IR allows any integer scalars.
    let first_index = match node.op {
        Op::DynamicSlice { .. } => 1,
        Op::DynamicUpdateSlice => 2,
        _ => args.len(),
    };
    if args.len() > first_index
        && arg_types[first_index..]
            .iter()
            .any(|t| *t != arg_types[first_index])
    {
        let s64 = Shape::scalar(DType::S64).mlir_type();
        for k in first_index..args.len() {
            if arg_types[k] != s64 {
                let name = format!("%{}", e.namer.fresh(&format!("index_{id}_{k}"), id));
                line(
                    e,
                    &name,
                    &format!(
                        "stablehlo.convert {} : ({}) -> {s64}",
                        args[k], arg_types[k]
                    ),
                );
                args[k] = name;
                arg_types[k] = s64.clone();
            }
        }
    }
    let out_type = results_type(&node.outputs);
    // `(operand types) -> result type(s)`, the functional type most ops print.
    let fn_type = format!("({}) -> {out_type}", arg_types.join(", "));
    let a = args.join(", ");

    let text = match &node.op {
        Op::Constant(lit) => {
            format!("stablehlo.constant {} : {out_type}", dense_attr(lit))
        }
        Op::Iota { dim, .. } => format!("stablehlo.iota dim = {dim} : {out_type}"),
        Op::Convert { .. } => format!("stablehlo.convert {a} : {fn_type}"),
        Op::BitcastConvert { .. } => format!("stablehlo.bitcast_convert {a} : {fn_type}"),
        Op::BroadcastInDim { dims, .. } => {
            format!(
                "stablehlo.broadcast_in_dim {a}, dims = {} : {fn_type}",
                list(dims)
            )
        }
        Op::Reshape { .. } => format!("stablehlo.reshape {a} : {fn_type}"),
        Op::Transpose { perm } => {
            format!("stablehlo.transpose {a}, dims = {} : {fn_type}", list(perm))
        }
        Op::Slice {
            start,
            limit,
            strides,
        } => format!(
            "\"stablehlo.slice\"({a}) <{{limit_indices = {}, start_indices = {}, strides = {}}}> : {fn_type}",
            i64_array(limit),
            i64_array(start),
            i64_array(strides)
        ),
        Op::DynamicSlice { sizes } => {
            format!(
                "stablehlo.dynamic_slice {a}, sizes = {} : {fn_type}",
                list(sizes)
            )
        }
        Op::DynamicUpdateSlice => format!("stablehlo.dynamic_update_slice {a} : {fn_type}"),
        Op::Concatenate { dim } => format!("stablehlo.concatenate {a}, dim = {dim} : {fn_type}"),
        Op::Pad {
            low,
            high,
            interior,
        } => format!(
            "stablehlo.pad {a}, low = {}, high = {}, interior = {} : {fn_type}",
            list(low),
            list(high),
            list(interior)
        ),
        Op::Select => format!("stablehlo.select {a} : {fn_type}"),
        Op::Compare { direction } => {
            let ty = compare_type(f.value_shape(node.operands[0]).dtype);
            format!(
                "stablehlo.compare {}, {a}, {ty} : {fn_type}",
                direction_name(*direction)
            )
        }
        Op::Clamp => format!("stablehlo.clamp {a} : {fn_type}"),
        // Same operand and result type: the short type form.
        Op::Unary(_) | Op::Binary(_) => {
            format!("stablehlo.{} {a} : {out_type}", node.op.name())
        }
        Op::DotGeneral { dims } => {
            let (lhs, rhs) = (f.value_shape(node.operands[0]), f.value_shape(node.operands[1]));
            let call = bf16_dot_call(e, id, dims, (&args[0], lhs), (&args[1], rhs), &node.outputs[0]);
            if let Some(call) = call {
                call
            } else {
            let mut s = format!("stablehlo.dot_general {a}, ");
            if !dims.lhs_batch.is_empty() {
                write!(
                    s,
                    "batching_dims = {} x {}, ",
                    list(&dims.lhs_batch),
                    list(&dims.rhs_batch)
                )
                .expect("writing to a String");
            }
            write!(
                s,
                "contracting_dims = {} x {} : {fn_type}",
                list(&dims.lhs_contracting),
                list(&dims.rhs_contracting)
            )
            .expect("writing to a String");
            s
            }
        }
        Op::Reduce { kind, dims } => {
            let scalar = Shape::scalar(node.outputs[0].dtype);
            let init = e.namer.fresh(&format!("init_{id}"), id);
            line(
                e,
                &format!("%{init}"),
                &format!(
                    "stablehlo.constant {} : {}",
                    dense_attr(&reduce_init(*kind, scalar.dtype)),
                    scalar.mlir_type()
                ),
            );
            format!(
                "stablehlo.reduce({a} init: %{init}) applies stablehlo.{} across dimensions = {} : ({}, {}) -> {out_type}",
                reduce_op(*kind),
                list(dims),
                arg_types[0],
                scalar.mlir_type()
            )
        }
        Op::Gather { dims: g } => {
            let mut dn = Vec::new();
            field(&mut dn, "offset_dims", &g.offset_dims);
            field(&mut dn, "collapsed_slice_dims", &g.collapsed_slice_dims);
            field(&mut dn, "start_index_map", &g.start_index_map);
            dn.push(format!("index_vector_dim = {}", g.index_vector_dim));
            format!(
                "\"stablehlo.gather\"({a}) <{{dimension_numbers = #stablehlo.gather<{}>, indices_are_sorted = false, slice_sizes = {}}}> : {fn_type}",
                dn.join(", "),
                i64_array(&g.slice_sizes)
            )
        }
        Op::ScatterAdd { dims: s } => {
            let mut dn = Vec::new();
            field(&mut dn, "update_window_dims", &s.update_window_dims);
            field(&mut dn, "inserted_window_dims", &s.inserted_window_dims);
            field(
                &mut dn,
                "scatter_dims_to_operand_dims",
                &s.scatter_dims_to_operand_dims,
            );
            dn.push(format!("index_vector_dim = {}", s.index_vector_dim));
            let scalar = Shape::scalar(node.outputs[0].dtype).mlir_type();
            let (x, y, sum) = (
                e.namer.fresh(&format!("acc_{id}"), id),
                e.namer.fresh(&format!("upd_{id}"), id),
                e.namer.fresh(&format!("sum_{id}"), id),
            );
            format!(
                "\"stablehlo.scatter\"({a}) <{{indices_are_sorted = false, scatter_dimension_numbers = #stablehlo.scatter<{}>, unique_indices = false}}> ({{\n      ^bb0(%{x}: {scalar}, %{y}: {scalar}):\n        %{sum} = stablehlo.add %{x}, %{y} : {scalar}\n        stablehlo.return %{sum} : {scalar}\n    }}) : {fn_type}",
                dn.join(", ")
            )
        }
        Op::RngBitGenerator { algorithm, .. } => {
            let alg = match algorithm {
                RngAlgorithm::ThreeFry => "THREE_FRY",
                RngAlgorithm::Philox => "PHILOX",
            };
            format!("stablehlo.rng_bit_generator {a}, algorithm = {alg} : {fn_type}")
        }
        Op::Sort { dim, descending } => {
            // The comparator sees one (lhs, rhs) scalar pair per operand and orders by
            // the first operand only; `is_stable` keeps ties in input order.
            let mut params = Vec::new();
            let mut first = Vec::new();
            for (k, v) in node.operands.iter().enumerate() {
                let t = Shape::scalar(f.value_shape(*v).dtype).mlir_type();
                for side in ["lhs", "rhs"] {
                    let n = e.namer.fresh(&format!("{side}_{id}_{k}"), id);
                    if k == 0 {
                        first.push(n.clone());
                    }
                    params.push(format!("%{n}: {t}"));
                }
            }
            let key = f.value_shape(node.operands[0]).dtype;
            let key_t = Shape::scalar(key).mlir_type();
            let cmp = e.namer.fresh(&format!("cmp_{id}"), id);
            let dir = if *descending { "GT" } else { "LT" };
            format!(
                "\"stablehlo.sort\"({a}) <{{dimension = {dim} : i64, is_stable = true}}> ({{\n      ^bb0({}):\n        %{cmp} = stablehlo.compare {dir}, %{}, %{}, {} : ({key_t}, {key_t}) -> tensor<i1>\n        stablehlo.return %{cmp} : tensor<i1>\n    }}) : {fn_type}",
                params.join(", "),
                first[0],
                first[1],
                compare_type(key)
            )
        }
        Op::ShardingConstraint { spec } => {
            let mesh = e
                .mesh
                .expect("constraints without a mesh are dropped by the caller");
            let shape = &node.outputs[0];
            sharding::validate(spec, mesh, shape.rank(), &format!("node {id}"))
                .map_err(|err| err.to_string())?;
            match e.opts.partitioner {
                Partitioner::Shardy => format!(
                    "sdy.sharding_constraint {a} {} : {out_type}",
                    sharding::shardy_tensor_sharding(spec)
                ),
                Partitioner::Gspmd => format!(
                    "stablehlo.custom_call @Sharding({a}) {{{}}} : {fn_type}",
                    sharding::gspmd_attr(spec, mesh)
                ),
            }
        }
        Op::While { cond, body } => {
            let region = |e: &mut Emitter<'a>, sub: &'a Function, what: &str| {
                e.region(sub, id)
                    .map_err(|err| format!("in the loop {what}: {err}"))
            };
            let c = region(e, cond, "condition")?;
            let b = region(e, body, "body")?;
            let ind = &e.indent;
            format!("\"stablehlo.while\"({a}) ({{\n{c}{ind}}}, {{\n{b}{ind}}}) : {fn_type}")
        }
        Op::Parameter { .. } | Op::StopGradient | Op::Composite { .. } => {
            return Err("handled by the caller".to_string());
        }
    };
    let lhs = e.define(id);
    line(e, &lhs, &text);
    Ok(())
}

/// Node `id` (a composite) as a call of the backend's kernel `target`, with the
/// composite's operands and result types.
pub(super) fn custom_call(e: &mut Emitter, id: usize, target: &str) -> Result<(), String> {
    let node = &e.f.nodes[id];
    let args: Vec<String> = node.operands.iter().map(|v| e.value(*v)).collect();
    let types: Vec<String> = node
        .operands
        .iter()
        .map(|v| e.f.value_shape(*v).mlir_type())
        .collect();
    if node.outputs.is_empty() {
        return Err("a call needs at least one result".into());
    }
    let text = format!(
        "stablehlo.custom_call @{target}({}) {{api_version = 4 : i32}} : ({}) -> {}",
        args.join(", "),
        types.join(", "),
        results_type(&node.outputs)
    );
    let lhs = e.define(id);
    line(e, &lhs, &text);
    Ok(())
}

/// Appends `    lhs = text`.
fn line(e: &mut Emitter, lhs: &str, text: &str) {
    writeln!(e.body, "{}{lhs} = {text}", e.indent).expect("writing to a String");
}

/// Checks operand and result counts, which the text depends on.
fn check_arity(op: &Op, operands: usize, outputs: usize) -> Result<(), String> {
    let (min, max) = match op {
        Op::Constant(_) | Op::Iota { .. } | Op::Parameter { .. } => (0, 0),
        Op::Convert { .. }
        | Op::BitcastConvert { .. }
        | Op::BroadcastInDim { .. }
        | Op::Reshape { .. }
        | Op::Transpose { .. }
        | Op::Slice { .. }
        | Op::Unary(_)
        | Op::Reduce { .. }
        | Op::RngBitGenerator { .. }
        | Op::ShardingConstraint { .. }
        | Op::StopGradient => (1, 1),
        Op::Compare { .. } | Op::Binary(_) | Op::DotGeneral { .. } | Op::Gather { .. } => (2, 2),
        Op::Pad { .. } => (2, 2),
        Op::Select | Op::Clamp | Op::ScatterAdd { .. } => (3, 3),
        Op::DynamicSlice { .. } | Op::Concatenate { .. } | Op::Sort { .. } | Op::While { .. } => {
            (1, usize::MAX)
        }
        Op::DynamicUpdateSlice => (2, usize::MAX),
        Op::Composite { .. } => (0, usize::MAX),
    };
    if operands < min || operands > max {
        return Err(format!("unexpected number of operands: {operands}"));
    }
    let want = match op {
        Op::RngBitGenerator { .. } => 2,
        Op::Sort { .. } | Op::While { .. } => operands,
        Op::Composite { .. } => outputs,
        _ => 1,
    };
    if outputs != want {
        return Err(format!("expected {want} result type(s), found {outputs}"));
    }
    Ok(())
}

/// `tensor<..>` or `(tensor<..>, tensor<..>)`.
fn results_type(outputs: &[Shape]) -> String {
    let types: Vec<String> = outputs.iter().map(|s| s.mlir_type()).collect();
    if types.len() == 1 {
        types[0].clone()
    } else {
        format!("({})", types.join(", "))
    }
}

/// `[1, 2, 3]`.
fn list(v: &[i64]) -> String {
    let items: Vec<String> = v.iter().map(|x| x.to_string()).collect();
    format!("[{}]", items.join(", "))
}

/// `array<i64: 1, 2>` (a dense i64 array attribute; `array<i64>` when empty).
fn i64_array(v: &[i64]) -> String {
    if v.is_empty() {
        return "array<i64>".to_string();
    }
    let items: Vec<String> = v.iter().map(|x| x.to_string()).collect();
    format!("array<i64: {}>", items.join(", "))
}

/// A dimension-number field, omitted when empty (as the StableHLO printer does).
fn field(out: &mut Vec<String>, name: &str, v: &[i64]) {
    if !v.is_empty() {
        out.push(format!("{name} = {}", list(v)));
    }
}

fn direction_name(d: CompareDirection) -> &'static str {
    match d {
        CompareDirection::Eq => "EQ",
        CompareDirection::Ne => "NE",
        CompareDirection::Lt => "LT",
        CompareDirection::Le => "LE",
        CompareDirection::Gt => "GT",
        CompareDirection::Ge => "GE",
    }
}

/// The StableHLO op a reduction's body applies.
fn reduce_op(kind: ReduceKind) -> &'static str {
    match kind {
        ReduceKind::Sum => "add",
        ReduceKind::Max => "maximum",
        ReduceKind::Min => "minimum",
        ReduceKind::And => "and",
        ReduceKind::Or => "or",
    }
}

/// Products smaller than this many multiply-adds stay XLA's dots: a call's fixed costs
/// (threads, packing) would outweigh them.
const MIN_CALL_PRODUCT: i64 = 1 << 20;

/// Emits a `dot_general` as [`EmitOptions::bf16_dot_call`]'s custom call when it takes it
/// (bf16 operands and result, at least [`MIN_CALL_PRODUCT`] multiply-adds): the call
/// `{prefix}_{l}{r}` multiplies rank-3 operands `[B, M, K]` (`l` = `n`) or `[B, K, M]`
/// (`t`) by `[B, K, N]` (`r` = `n`) or `[B, N, K]` (`t`), each operand reshaped (and
/// transposed only when needed, see [`rank3_operand`]) to one of them. Returns the node's own text: the call, or a reshape of its
/// `[B, M, N]` result to the dot's result.
fn bf16_dot_call(
    e: &mut Emitter,
    id: usize,
    dims: &DotDims,
    lhs: (&str, &Shape),
    rhs: (&str, &Shape),
    out: &Shape,
) -> Option<String> {
    let prefix = e.opts.bf16_dot_call.clone()?;
    let all_bf16 = [lhs.1.dtype, rhs.1.dtype, out.dtype]
        .iter()
        .all(|t| *t == DType::Bf16);
    let free = |shape: &Shape, batch: &[i64], contract: &[i64]| -> Vec<i64> {
        (0..shape.rank() as i64)
            .filter(|d| !batch.contains(d) && !contract.contains(d))
            .collect()
    };
    let size =
        |shape: &Shape, ds: &[i64]| -> i64 { ds.iter().map(|d| shape.dims[*d as usize]).product() };
    let (lb, lc) = (&dims.lhs_batch, &dims.lhs_contracting);
    let (rb, rc) = (&dims.rhs_batch, &dims.rhs_contracting);
    let (lf, rf) = (free(lhs.1, lb, lc), free(rhs.1, rb, rc));
    let (b, m, k, n) = (
        size(lhs.1, lb),
        size(lhs.1, &lf),
        size(lhs.1, lc),
        size(rhs.1, &rf),
    );
    if !all_bf16 || b * m * k * n < MIN_CALL_PRODUCT || b * m * k * n == 0 {
        return None;
    }
    let cat = |parts: [&[i64]; 3]| parts.concat();
    let (lpick, lname) = rank3_operand(
        e,
        id,
        "lhs",
        lhs,
        [cat([lb, &lf, lc]), cat([lb, lc, &lf])],
        [[b, m, k], [b, k, m]],
    );
    let (rpick, rname) = rank3_operand(
        e,
        id,
        "rhs",
        rhs,
        [cat([rb, rc, &rf]), cat([rb, &rf, rc])],
        [[b, k, n], [b, n, k]],
    );
    let ltype = Shape::new(DType::Bf16, [[b, m, k], [b, k, m]][lpick].to_vec()).mlir_type();
    let rtype = Shape::new(DType::Bf16, [[b, k, n], [b, n, k]][rpick].to_vec()).mlir_type();
    let result = Shape::new(DType::Bf16, vec![b, m, n]).mlir_type();
    let layout = |pick: usize| if pick == 0 { "n" } else { "t" };
    let call = format!(
        "stablehlo.custom_call @{prefix}_{}{}({lname}, {rname}) {{api_version = 4 : i32}} : ({ltype}, {rtype}) -> {result}",
        layout(lpick),
        layout(rpick),
    );
    let out_type = out.mlir_type();
    if result == out_type {
        return Some(call);
    }
    let tmp = format!("%{}", e.namer.fresh(&format!("bf16_dot_{id}"), id));
    line(e, &tmp, &call);
    Some(format!(
        "stablehlo.reshape {tmp} : ({result}) -> {out_type}"
    ))
}

/// One operand of [`bf16_dot_call`] in one of its two `forms` (a permutation of its
/// dimensions and the rank-3 shape that gives): one that needs no transpose, else one
/// whose transpose keeps the contiguous last dimension, else the first; reshaped to rank
/// 3. Returns which form and the emitted value's name.
fn rank3_operand(
    e: &mut Emitter,
    id: usize,
    what: &str,
    (name, shape): (&str, &Shape),
    perms: [Vec<i64>; 2],
    forms: [[i64; 3]; 2],
) -> (usize, String) {
    let identity: Vec<i64> = (0..shape.rank() as i64).collect();
    // No transpose if possible, else one that keeps the contiguous last dimension.
    let last = shape.rank() as i64 - 1;
    let pick = perms
        .iter()
        .position(|p| *p == identity)
        .or_else(|| perms.iter().position(|p| p.last() == Some(&last)))
        .unwrap_or(0);
    let mut current = name.to_string();
    let mut current_type = shape.mlir_type();
    if perms[pick] != identity {
        let dims: Vec<i64> = perms[pick]
            .iter()
            .map(|d| shape.dims[*d as usize])
            .collect();
        let t = Shape::new(shape.dtype, dims).mlir_type();
        let tmp = format!("%{}", e.namer.fresh(&format!("{what}_t_{id}"), id));
        let perm = list(&perms[pick]);
        line(
            e,
            &tmp,
            &format!("stablehlo.transpose {current}, dims = {perm} : ({current_type}) -> {t}"),
        );
        current = tmp;
        current_type = t;
    }
    let rank3 = Shape::new(shape.dtype, forms[pick].to_vec()).mlir_type();
    if rank3 != current_type {
        let tmp = format!("%{}", e.namer.fresh(&format!("{what}_r_{id}"), id));
        line(
            e,
            &tmp,
            &format!("stablehlo.reshape {current} : ({current_type}) -> {rank3}"),
        );
        current = tmp;
    }
    (pick, current)
}
