//! Reverse-mode automatic differentiation on the builder graph.
//!
//! Modelled on JAX's `ad.py` (backward pass over a graph of primitives, one transpose/VJP
//! rule per primitive) and candle's `backprop.rs` (walk the nodes in reverse topological
//! order, accumulate cotangents in a map). The gradient nodes are appended to the *same*
//! builder graph as the forward pass, so a whole train step (forward, loss, gradients,
//! optimizer update) stays one program that is emitted and compiled once.
//!
//! Which nodes get a VJP:
//! - a value is *active* if it is floating point and depends on a `wrt` value through
//!   differentiable ops (integer/boolean values, `stop_gradient`, `compare`,
//!   `bitcast_convert`, `rng_bit_generator`, constants and iotas cut the path);
//! - a node is *wanted* if one of its active outputs reaches an output.
//!
//! Only wanted nodes are visited, so unrelated branches cost nothing, and a `wrt` value
//! that does not influence the outputs gets an explicit zero gradient. The rules
//! themselves live in [`crate::vjp_rules`], one per primitive.

use crate::builder::{Builder, Tensor};
use crate::error::BuildError;
use crate::ir::{Function, Op, ValueRef};
use crate::shape::Shape;
use crate::vjp_rules::{self, RuleInput};
use std::collections::{HashMap, HashSet};

/// Why a gradient could not be built.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum AutodiffError {
    #[error("no VJP rule for `{op}` (node %{node}), which lies on a differentiated path; wrap its input in stop_gradient if no gradient should flow through it")]
    MissingRule { op: &'static str, node: usize },
    #[error("vjp needs one cotangent per output: {outputs} output(s), {cotangents} cotangent(s)")]
    CotangentCount { outputs: usize, cotangents: usize },
    #[error("cotangent {index} has type {got} but output {index} is {expected}")]
    CotangentType {
        index: usize,
        expected: Shape,
        got: Shape,
    },
    #[error("grad needs a scalar floating-point loss, got {0}")]
    NotScalarLoss(Shape),
    #[error("tensors passed to autodiff come from different builders")]
    ForeignTensor,
    #[error("function `{function}` has no parameter {index} (it has {count})")]
    NoSuchParam {
        function: String,
        index: usize,
        count: usize,
    },
    #[error("function `{0}` has no outputs to differentiate")]
    NoOutputs(String),
    #[error(
        "VJP rule of `{op}` (node %{node}) produced {got} for operand {operand} of type {expected}"
    )]
    RuleType {
        op: &'static str,
        node: usize,
        operand: usize,
        expected: Shape,
        got: Shape,
    },
    #[error("the function refers to value %{node}#{output} before (or without) defining it")]
    DanglingValue { node: usize, output: usize },
    #[error("building the gradient failed: {0}")]
    Build(#[from] BuildError),
}

/// Vector-Jacobian product: for each `wrt` value, the sum over outputs of
/// `cotangent_i^T * d output_i / d wrt`, built as new nodes of the outputs' graph.
///
/// `cotangents[i]` must have the type of `outputs[i]`. A `wrt` value the outputs do not
/// depend on (or an integer/boolean one) gets zeros of its own type.
pub fn vjp(
    outputs: &[Tensor],
    cotangents: &[Tensor],
    wrt: &[Tensor],
) -> Result<Vec<Tensor>, AutodiffError> {
    if outputs.len() != cotangents.len() {
        return Err(AutodiffError::CotangentCount {
            outputs: outputs.len(),
            cotangents: cotangents.len(),
        });
    }
    let Some(b) = outputs.first().or(wrt.first()).map(|t| t.builder().clone()) else {
        return Ok(Vec::new());
    };
    if outputs
        .iter()
        .chain(cotangents)
        .chain(wrt)
        .any(|t| !t.builder().same_graph(&b))
    {
        return Err(AutodiffError::ForeignTensor);
    }
    for (index, (o, c)) in outputs.iter().zip(cotangents).enumerate() {
        if o.shape() != c.shape() {
            return Err(AutodiffError::CotangentType {
                index,
                expected: o.shape().clone(),
                got: c.shape().clone(),
            });
        }
    }
    if let Some(e) = b.error() {
        return Err(AutodiffError::Build(e));
    }

    let zeros = |wrt: &[Tensor]| wrt.iter().map(|t| b.zeros(t.shape())).collect::<Vec<_>>();
    let wrt_values: HashSet<ValueRef> = wrt
        .iter()
        .filter(|t| t.dtype().is_differentiable())
        .map(|t| t.value())
        .collect();
    let (Some(lo), Some(hi)) = (
        wrt_values.iter().map(|v| v.node).min(),
        outputs.iter().map(|t| t.value().node).max(),
    ) else {
        return finish(&b, zeros(wrt));
    };
    if lo > hi {
        return finish(&b, zeros(wrt));
    }

    // Forward: which values depend on a wrt value (only nodes lo..=hi can).
    let nodes: Vec<_> = (lo..=hi).map(|id| b.node(id)).collect();
    let mut active: Vec<Vec<bool>> = Vec::with_capacity(nodes.len());
    let is_active = |active: &Vec<Vec<bool>>, v: ValueRef| {
        v.node >= lo && v.node <= hi && active[v.node - lo][v.output]
    };
    for (i, node) in nodes.iter().enumerate() {
        let id = lo + i;
        let through =
            !cuts_gradient(&node.op) && node.operands.iter().any(|&v| is_active(&active, v));
        let flags = node
            .outputs
            .iter()
            .enumerate()
            .map(|(k, s)| {
                s.dtype.is_differentiable()
                    && (through
                        || wrt_values.contains(&ValueRef {
                            node: id,
                            output: k,
                        }))
            })
            .collect();
        active.push(flags);
    }

    // Backward: which nodes have an active output that reaches an output.
    let mut wanted = vec![false; nodes.len()];
    for o in outputs {
        if is_active(&active, o.value()) {
            wanted[o.value().node - lo] = true;
        }
    }
    for i in (0..nodes.len()).rev() {
        if wanted[i] {
            for &v in &nodes[i].operands {
                if is_active(&active, v) {
                    wanted[v.node - lo] = true;
                }
            }
        }
    }

    // Seed and propagate cotangents in reverse topological order.
    let mut cts: HashMap<ValueRef, Tensor> = HashMap::new();
    for (o, c) in outputs.iter().zip(cotangents) {
        if is_active(&active, o.value()) {
            accumulate(&mut cts, o.value(), c.clone());
        }
    }
    let mut grads: HashMap<ValueRef, Tensor> = HashMap::new();
    for i in (0..nodes.len()).rev() {
        if !wanted[i] {
            continue;
        }
        let id = lo + i;
        let node = &nodes[i];
        let out_cts: Vec<Option<Tensor>> = (0..node.outputs.len())
            .map(|k| {
                cts.remove(&ValueRef {
                    node: id,
                    output: k,
                })
            })
            .collect();
        for (k, c) in out_cts.iter().enumerate() {
            let v = ValueRef {
                node: id,
                output: k,
            };
            if let (Some(c), true) = (c, wrt_values.contains(&v)) {
                grads.insert(v, c.clone());
            }
        }
        if node.operands.is_empty() || out_cts.iter().all(Option::is_none) {
            continue;
        }
        let needs: Vec<bool> = node
            .operands
            .iter()
            .map(|&v| is_active(&active, v))
            .collect();
        if !needs.iter().any(|&n| n) {
            continue;
        }
        let operands: Vec<Tensor> = node.operands.iter().map(|&v| b.tensor(v)).collect();
        let outs: Vec<Tensor> = (0..node.outputs.len())
            .map(|k| {
                b.tensor(ValueRef {
                    node: id,
                    output: k,
                })
            })
            .collect();
        let input = RuleInput {
            builder: &b,
            node_id: id,
            node,
            operands: &operands,
            outputs: &outs,
            cotangents: &out_cts,
            needs: &needs,
        };
        let operand_cts = vjp_rules::vjp(&input)?;
        for (j, g) in operand_cts.into_iter().enumerate() {
            let (Some(g), true) = (g, needs.get(j).copied().unwrap_or(false)) else {
                continue;
            };
            if g.shape() != operands[j].shape() {
                return Err(AutodiffError::RuleType {
                    op: node.op.name(),
                    node: id,
                    operand: j,
                    expected: operands[j].shape().clone(),
                    got: g.shape().clone(),
                });
            }
            accumulate(&mut cts, node.operands[j], g);
        }
    }

    let result = wrt
        .iter()
        .map(|t| {
            grads
                .get(&t.value())
                .cloned()
                .unwrap_or_else(|| b.zeros(t.shape()))
        })
        .collect();
    finish(&b, result)
}

/// Gradient of a scalar floating-point `loss` with respect to each `wrt` value (seed 1).
pub fn grad(loss: &Tensor, wrt: &[Tensor]) -> Result<Vec<Tensor>, AutodiffError> {
    if loss.rank() != 0 || !loss.dtype().is_differentiable() {
        return Err(AutodiffError::NotScalarLoss(loss.shape().clone()));
    }
    vjp(std::slice::from_ref(loss), &[loss.scalar_like(1.0)], wrt)
}

/// Ops through which no gradient flows, whatever their operands.
fn cuts_gradient(op: &Op) -> bool {
    matches!(
        op,
        Op::StopGradient
            | Op::Compare { .. }
            | Op::BitcastConvert { .. }
            | Op::RngBitGenerator { .. }
            | Op::Parameter { .. }
            | Op::Constant(_)
            | Op::Iota { .. }
    )
}

fn accumulate(cts: &mut HashMap<ValueRef, Tensor>, v: ValueRef, g: Tensor) {
    let sum = match cts.remove(&v) {
        Some(prev) => prev.add(&g),
        None => g,
    };
    cts.insert(v, sum);
}

/// Reports an error recorded by the builder while the gradient nodes were added.
fn finish(b: &Builder, result: Vec<Tensor>) -> Result<Vec<Tensor>, AutodiffError> {
    match b.error() {
        Some(e) => Err(AutodiffError::Build(e)),
        None => Ok(result),
    }
}

// ---------------------------------------------------------------------------------------
// Function-level helpers

/// Rebuilds `f` in a fresh builder (re-running shape inference on every node). Returns
/// the builder, one tensor per parameter (in parameter order) and one per output.
pub fn replay(f: &Function) -> Result<(Builder, Vec<Tensor>, Vec<Tensor>), AutodiffError> {
    let b = Builder::new(&f.name);
    if let Some(m) = &f.mesh {
        b.set_mesh(m.clone());
    }
    let params: Vec<Tensor> = f
        .params
        .iter()
        .map(|p| match &p.sharding {
            Some(s) => b.parameter_sharded(&p.name, p.shape.clone(), s.clone()),
            None => b.parameter(&p.name, p.shape.clone()),
        })
        .collect();
    let mut values: Vec<Vec<Tensor>> = Vec::with_capacity(f.nodes.len());
    for node in &f.nodes {
        let outs = match &node.op {
            Op::Parameter { index } => {
                let p = params.get(*index).ok_or(AutodiffError::NoSuchParam {
                    function: f.name.clone(),
                    index: *index,
                    count: params.len(),
                })?;
                vec![p.clone()]
            }
            op => {
                let operands = node
                    .operands
                    .iter()
                    .map(|&v| lookup(&values, v))
                    .collect::<Result<Vec<&Tensor>, _>>()?;
                let outs = b.apply(op.clone(), &operands);
                if let (Some(n), Some(t)) = (&node.name, outs.first()) {
                    let _ = t.clone().named(n);
                }
                outs
            }
        };
        values.push(outs);
    }
    if let Some(e) = b.error() {
        return Err(AutodiffError::Build(e));
    }
    let outputs = f
        .outputs
        .iter()
        .map(|o| lookup(&values, o.value).cloned())
        .collect::<Result<Vec<_>, _>>()?;
    Ok((b, params, outputs))
}

/// A replayed value, or an error if a hand-made Function refers to a value that does not
/// exist (yet).
fn lookup(values: &[Vec<Tensor>], v: ValueRef) -> Result<&Tensor, AutodiffError> {
    values
        .get(v.node)
        .and_then(|outs| outs.get(v.output))
        .ok_or(AutodiffError::DanglingValue {
            node: v.node,
            output: v.output,
        })
}

fn check_params(f: &Function, wrt_params: &[usize]) -> Result<(), AutodiffError> {
    match wrt_params.iter().find(|&&i| i >= f.params.len()) {
        Some(&index) => Err(AutodiffError::NoSuchParam {
            function: f.name.clone(),
            index,
            count: f.params.len(),
        }),
        None => Ok(()),
    }
}

/// Finishes a derived function: `f`'s outputs (with their names and shardings) followed
/// by the gradients named `grad_<param>`.
fn derived_function(
    f: &Function,
    b: &Builder,
    outputs: &[Tensor],
    grads: &[Tensor],
    wrt_params: &[usize],
) -> Result<Function, AutodiffError> {
    let grad_names: Vec<String> = wrt_params
        .iter()
        .map(|&i| format!("grad_{}", f.params[i].name))
        .collect();
    let mut named: Vec<(&str, &Tensor)> = f
        .outputs
        .iter()
        .zip(outputs)
        .map(|(o, t)| (o.name.as_deref().unwrap_or(""), t))
        .collect();
    named.extend(grad_names.iter().map(String::as_str).zip(grads));
    let mut g = b.build_named(&named)?;
    for (dst, src) in g.outputs.iter_mut().zip(&f.outputs) {
        dst.sharding = src.sharding.clone();
    }
    for (dst, src) in g.params.iter_mut().zip(&f.params) {
        dst.alias_output = src.alias_output;
    }
    Ok(g)
}

/// A new function computing `f`'s outputs followed by the gradient of output 0 (a
/// floating-point scalar, the loss) with respect to the parameters `wrt_params`.
/// Parameters are unchanged.
pub fn grad_function(f: &Function, wrt_params: &[usize]) -> Result<Function, AutodiffError> {
    check_params(f, wrt_params)?;
    let (b, params, outputs) = replay(f)?;
    let loss = outputs
        .first()
        .ok_or_else(|| AutodiffError::NoOutputs(f.name.clone()))?;
    let wrt: Vec<Tensor> = wrt_params.iter().map(|&i| params[i].clone()).collect();
    let grads = grad(loss, &wrt)?;
    derived_function(f, &b, &outputs, &grads, wrt_params)
}

/// A new function computing `f`'s outputs followed by the vector-Jacobian product with
/// respect to the parameters `wrt_params`. It takes `f`'s parameters followed by one
/// cotangent parameter per output (named `cotangent_<i>`, of that output's type).
pub fn vjp_function(f: &Function, wrt_params: &[usize]) -> Result<Function, AutodiffError> {
    check_params(f, wrt_params)?;
    let (b, params, outputs) = replay(f)?;
    let cts: Vec<Tensor> = outputs
        .iter()
        .enumerate()
        .map(|(i, o)| b.parameter(&format!("cotangent_{i}"), o.shape().clone()))
        .collect();
    let wrt: Vec<Tensor> = wrt_params.iter().map(|&i| params[i].clone()).collect();
    let grads = vjp(&outputs, &cts, &wrt)?;
    derived_function(f, &b, &outputs, &grads, wrt_params)
}
