//! One VJP rule per primitive, all registered in `vjp` (a single `match` over `ir::Op`).
//!
//! A rule receives the node, its operand and output tensors, the cotangent of each output
//! (`None`: nothing flowed into it, i.e. zero) and which operands need a cotangent, and
//! returns one optional cotangent per operand (`None`: zero / not needed). Rules only
//! build new nodes with the ordinary builder methods, so gradients are ordinary graph
//! values (and could be differentiated again, though nothing relies on that yet).
//!
//! Conventions at non-differentiable points (documented here, tested in `hlo/tests`):
//! - `maximum`/`minimum`: on ties (x == y) the cotangent is split half and half.
//! - `reduce` max/min: the cotangent is split equally between all positions that attain
//!   the extreme value (like JAX).
//! - `clamp(lo, x, hi)`: x gets the cotangent where lo <= x <= hi (ties go to x), lo where
//!   x < lo (and lo <= hi), hi everywhere else.
//! - `abs` at 0, `sign`, `floor`: zero.
//! - `power`: d/dx is 0 where y == 0; d/dy is 0 where x == 0.
//! - `gather`: the gradient uses the same clamped start indices as XLA's gather.
//!   `scatter_add` w.r.t. updates is a gather, so an update window that XLA skipped
//!   (out of bounds) still gets the clamped window's cotangent: keep indices in bounds.
//! - `sort`: gradients flow to the sorted values (all floating-point operands) through
//!   the stable sort permutation.
//! - `composite`: its own VJP function if it has one, inlined; else the gradient of its
//!   decomposition, inlined into the graph (so a backend's own kernel for the composite
//!   then runs only where nothing differentiates it).
//! - `remainder` and `while` have no rule (a clear [`AutodiffError::MissingRule`]):
//!   nothing in GPTSAN differentiates them (the while loop runs generation, which is
//!   inference only).

use crate::autodiff::AutodiffError;
use crate::builder::{Builder, Tensor};
use crate::dtype::DType;
use crate::ir::{BinaryOp, DotDims, GatherDims, Node, Op, ReduceKind, ScatterDims, UnaryOp};

/// Everything a rule may look at.
pub(crate) struct RuleInput<'a> {
    pub builder: &'a Builder,
    pub node_id: usize,
    pub node: &'a Node,
    pub operands: &'a [Tensor],
    pub outputs: &'a [Tensor],
    /// Cotangent per output; `None` means zero.
    pub cotangents: &'a [Option<Tensor>],
    /// Whether operand i needs a cotangent (it is active).
    pub needs: &'a [bool],
}

type Cts = Result<Vec<Option<Tensor>>, AutodiffError>;

impl RuleInput<'_> {
    /// The cotangent of output `k`, materialising zeros if none flowed in.
    fn ct(&self, k: usize) -> Tensor {
        self.cotangents[k]
            .clone()
            .unwrap_or_else(|| self.builder.zeros(self.outputs[k].shape()))
    }

    fn need(&self, i: usize) -> bool {
        self.needs.get(i).copied().unwrap_or(false)
    }

    /// `Some(f())` for operand i if it needs a cotangent.
    fn when(&self, i: usize, f: impl FnOnce() -> Tensor) -> Option<Tensor> {
        self.need(i).then(f)
    }

    fn none(&self) -> Vec<Option<Tensor>> {
        vec![None; self.operands.len()]
    }
}

/// The VJP of one node: cotangents of its operands given those of its outputs.
pub(crate) fn vjp(r: &RuleInput) -> Cts {
    let b = r.builder;
    let ops = r.operands;
    match &r.node.op {
        // Leaves and ops through which nothing differentiable flows.
        Op::Parameter { .. } | Op::Constant(_) | Op::Iota { .. } => Ok(Vec::new()),
        Op::BitcastConvert { .. }
        | Op::Compare { .. }
        | Op::RngBitGenerator { .. }
        | Op::StopGradient
        | Op::Unary(UnaryOp::Not | UnaryOp::Sign | UnaryOp::Floor)
        | Op::Binary(
            BinaryOp::And
            | BinaryOp::Or
            | BinaryOp::Xor
            | BinaryOp::ShiftLeft
            | BinaryOp::ShiftRightLogical,
        )
        | Op::Reduce {
            kind: ReduceKind::And | ReduceKind::Or,
            ..
        } => Ok(r.none()),

        Op::Convert { .. } => {
            let x = &ops[0];
            let ok = x.dtype().is_differentiable() && r.outputs[0].dtype().is_differentiable();
            Ok(vec![if ok {
                r.when(0, || r.ct(0).convert(x.dtype()))
            } else {
                None
            }])
        }
        Op::BroadcastInDim { shape, dims } => {
            Ok(vec![r.when(0, || {
                unbroadcast(&r.ct(0), ops[0].dims(), shape, dims)
            })])
        }
        Op::Reshape { .. } => Ok(vec![r.when(0, || r.ct(0).reshape(ops[0].dims()))]),
        Op::Transpose { perm } => {
            let mut inv = vec![0i64; perm.len()];
            for (i, &p) in perm.iter().enumerate() {
                inv[p as usize] = i as i64;
            }
            Ok(vec![r.when(0, || r.ct(0).transpose(&inv))])
        }
        Op::Slice { start, strides, .. } => Ok(vec![
            r.when(0, || slice_vjp(&r.ct(0), &ops[0], start, strides))
        ]),
        Op::DynamicSlice { .. } => {
            let starts = &ops[1..];
            let mut out = r.none();
            out[0] = r.when(0, || {
                b.zeros(ops[0].shape())
                    .dynamic_update_slice(&r.ct(0), starts)
            });
            Ok(out)
        }
        Op::DynamicUpdateSlice => {
            let (u, starts) = (&ops[1], &ops[2..]);
            let g = r.ct(0);
            let mut out = r.none();
            out[0] = r.when(0, || g.dynamic_update_slice(&b.zeros(u.shape()), starts));
            out[1] = r.when(1, || g.dynamic_slice(starts, u.dims()));
            Ok(out)
        }
        Op::Concatenate { dim } => {
            let g = r.ct(0);
            let mut offset = 0;
            Ok(ops
                .iter()
                .enumerate()
                .map(|(i, x)| {
                    let size = x.dims()[*dim as usize];
                    let part = r.when(i, || g.slice_dim(*dim, offset, offset + size));
                    offset += size;
                    part
                })
                .collect())
        }
        Op::Pad {
            low,
            high,
            interior,
        } => Ok(pad_vjp(r, low, high, interior)),
        Op::Select => {
            let (p, g) = (&ops[0], r.ct(0));
            let zero = b.zeros(g.shape());
            Ok(vec![
                None,
                r.when(1, || p.select(&g, &zero)),
                r.when(2, || p.select(&zero, &g)),
            ])
        }
        Op::Clamp => Ok(clamp_vjp(r)),
        Op::Unary(u) => {
            Ok(vec![r.when(0, || {
                unary_vjp(*u, &ops[0], &r.outputs[0], &r.ct(0))
            })])
        }
        Op::Binary(BinaryOp::Rem) | Op::While { .. } => Err(AutodiffError::MissingRule {
            op: r.node.op.name(),
            node: r.node_id,
        }),
        Op::Binary(op) => Ok(binary_vjp(r, *op)),
        Op::Composite {
            decomposition,
            vjp: None,
            ..
        } => composite_vjp(r, decomposition),
        Op::Composite { vjp: Some(vjp), .. } => custom_vjp(r, vjp),
        Op::DotGeneral { dims } => {
            let g = r.ct(0);
            Ok(vec![
                r.when(0, || dot_lhs_vjp(&g, &ops[0], &ops[1], dims)),
                r.when(1, || dot_rhs_vjp(&g, &ops[0], &ops[1], dims)),
            ])
        }
        Op::Reduce { kind, dims } => Ok(vec![r.when(0, || {
            reduce_vjp(*kind, &ops[0], &r.outputs[0], &r.ct(0), dims)
        })]),
        Op::Gather { dims } => Ok(vec![
            r.when(0, || gather_vjp(b, &r.ct(0), &ops[0], &ops[1], dims)),
            None,
        ]),
        Op::ScatterAdd { dims } => {
            let g = r.ct(0);
            Ok(vec![
                r.when(0, || g.clone()),
                None,
                r.when(2, || {
                    scatter_updates_vjp(&g, &ops[0], &ops[1], &ops[2], dims)
                }),
            ])
        }
        Op::Sort { dim, descending } => Ok(sort_vjp(r, *dim, *descending)),
        Op::ShardingConstraint { spec } => {
            Ok(vec![r.when(0, || r.ct(0).with_sharding(spec.clone()))])
        }
    }
}

/// Sums a broadcast cotangent back to the operand: over result dimensions the operand
/// lacks and over operand dimensions of size 1 that were expanded; then restores the
/// operand's dimension order and size-1 dimensions.
fn unbroadcast(g: &Tensor, x_dims: &[i64], shape: &[i64], dims: &[i64]) -> Tensor {
    let mut summed: Vec<i64> = (0..shape.len() as i64)
        .filter(|d| !dims.contains(d))
        .collect();
    // Operand dimensions that survive the sum, ordered as in the result.
    let mut kept: Vec<(i64, usize)> = Vec::new();
    for (i, &d) in dims.iter().enumerate() {
        if x_dims[i] == 1 && shape[d as usize] != 1 {
            summed.push(d);
        } else {
            kept.push((d, i));
        }
    }
    summed.sort_unstable();
    let mut t = if summed.is_empty() {
        g.clone()
    } else {
        g.reduce_sum(&summed)
    };
    kept.sort_unstable();
    // kept[j] is axis j of `t`; put them in operand order.
    let mut order: Vec<usize> = (0..kept.len()).collect();
    order.sort_by_key(|&j| kept[j].1);
    let perm: Vec<i64> = order.iter().map(|&j| j as i64).collect();
    t = t.transpose(&perm);
    t.reshape(x_dims)
}

/// Scatters the slice's cotangent back with zero padding (interior padding for strides).
fn slice_vjp(g: &Tensor, x: &Tensor, start: &[i64], strides: &[i64]) -> Tensor {
    let r = x.rank();
    let zero = g.scalar_like(0.0);
    let mut high = vec![0; r];
    let mut interior = vec![0; r];
    for i in 0..r {
        let out = g.dims()[i];
        interior[i] = strides[i] - 1;
        let covered = if out > 0 {
            start[i] + (out - 1) * strides[i] + 1
        } else {
            start[i]
        };
        high[i] = x.dims()[i] - covered;
    }
    g.pad(&zero, start, &high, &interior)
}

/// Operand: the cotangent at the operand's positions (undoing negative padding first);
/// padding value: the sum of the cotangent everywhere else.
fn pad_vjp(r: &RuleInput, low: &[i64], high: &[i64], interior: &[i64]) -> Vec<Option<Tensor>> {
    let (x, g) = (&r.operands[0], r.ct(0));
    let rank = x.rank();
    let zero = g.scalar_like(0.0);
    let grad_x = || {
        // Negative low/high trimmed operand elements: add back zeros so that every
        // operand element has a position.
        let un_low: Vec<i64> = low.iter().map(|&l| (-l).max(0)).collect();
        let un_high: Vec<i64> = high.iter().map(|&h| (-h).max(0)).collect();
        let full = if un_low.iter().chain(&un_high).any(|&p| p > 0) {
            g.pad(&zero, &un_low, &un_high, &vec![0; rank])
        } else {
            g.clone()
        };
        let start: Vec<i64> = low.iter().map(|&l| l.max(0)).collect();
        let strides: Vec<i64> = interior.iter().map(|&i| i + 1).collect();
        let limit: Vec<i64> = (0..rank)
            .map(|i| start[i] + (x.dims()[i] - 1).max(0) * strides[i] + (x.dims()[i] > 0) as i64)
            .collect();
        full.slice(&start, &limit, &strides)
    };
    // The padding value's cotangent is everything not at an operand position.
    let gx = (r.need(0) || r.need(1)).then(grad_x);
    let gv = r.when(1, || {
        let inside = gx
            .as_ref()
            .map(|t| t.sum_all())
            .unwrap_or_else(|| zero.clone());
        g.sum_all().sub(&inside)
    });
    vec![gx.filter(|_| r.need(0)), gv]
}

fn clamp_vjp(r: &RuleInput) -> Vec<Option<Tensor>> {
    let (lo, x, hi) = (&r.operands[0], &r.operands[1], &r.operands[2]);
    let g = r.ct(0);
    let zero = r.builder.zeros(g.shape());
    let in_range = x.ge(lo).and(&x.le(hi));
    let below = x.lt(lo).and(&lo.le(hi));
    let to_bound = |mask: &Tensor, bound: &Tensor| {
        let t = mask.select(&g, &zero);
        if bound.rank() == 0 {
            t.sum_all()
        } else {
            t
        }
    };
    vec![
        r.when(0, || to_bound(&below, lo)),
        r.when(1, || in_range.select(&g, &zero)),
        r.when(2, || to_bound(&in_range.or(&below).not(), hi)),
    ]
}

fn unary_vjp(u: UnaryOp, x: &Tensor, y: &Tensor, g: &Tensor) -> Tensor {
    let one = || x.scalar_like(1.0);
    match u {
        UnaryOp::Neg => g.neg(),
        UnaryOp::Abs => g.mul(&x.sign()),
        UnaryOp::Exp => g.mul(y),
        UnaryOp::Log => g.div(x),
        UnaryOp::Log1p => g.div(&x.add(&one())),
        UnaryOp::Tanh => g.mul(&one().sub(&y.mul(y))),
        UnaryOp::Logistic => g.mul(&y.mul(&one().sub(y))),
        UnaryOp::Sqrt => g.div(&y.mul_scalar(2.0)),
        // d x^-1/2 = -1/2 x^-3/2 = -1/2 * y / x
        UnaryOp::Rsqrt => g.mul(&y.div(x).mul_scalar(-0.5)),
        UnaryOp::Cos => g.mul(&x.sin()).neg(),
        UnaryOp::Sin => g.mul(&x.cos()),
        // Piecewise constant or integer-only: handled before dispatch; zero here too.
        UnaryOp::Sign | UnaryOp::Floor | UnaryOp::Not => g.mul_scalar(0.0),
    }
}

fn binary_vjp(r: &RuleInput, op: BinaryOp) -> Vec<Option<Tensor>> {
    let (x, y, z) = (&r.operands[0], &r.operands[1], &r.outputs[0]);
    let g = r.ct(0);
    let zero = || r.builder.zeros(g.shape());
    match op {
        BinaryOp::Add => vec![r.when(0, || g.clone()), r.when(1, || g.clone())],
        BinaryOp::Sub => vec![r.when(0, || g.clone()), r.when(1, || g.neg())],
        BinaryOp::Mul => vec![r.when(0, || g.mul(y)), r.when(1, || g.mul(x))],
        BinaryOp::Div => vec![
            r.when(0, || g.div(y)),
            // d(x/y)/dy = -x/y^2 = -z/y
            r.when(1, || g.mul(z).div(y).neg()),
        ],
        BinaryOp::Max | BinaryOp::Min => {
            let wins = if op == BinaryOp::Max {
                x.gt(y)
            } else {
                x.lt(y)
            };
            let half = g.mul_scalar(0.5);
            let gx = wins.select(&g, &x.eq(y).select(&half, &zero()));
            let gy = r.when(1, || g.sub(&gx));
            vec![r.when(0, || gx.clone()), gy]
        }
        BinaryOp::Pow => {
            let gx = r.when(0, || {
                let d = y.mul(&x.pow(&y.sub_scalar(1.0)));
                y.eq(&y.scalar_like(0.0)).select(&zero(), &g.mul(&d))
            });
            let gy = r.when(1, || {
                let x_zero = x.eq(&x.scalar_like(0.0));
                // log of 1 where x == 0, so the masked-out branch stays finite.
                let safe = x_zero.select(&x.scalar_like(1.0).broadcast_to(x.dims()), x);
                x_zero.select(&zero(), &g.mul(z).mul(&safe.log()))
            });
            vec![gx, gy]
        }
        // Integer-only ops and remainder are dispatched before reaching here.
        _ => r.none(),
    }
}

/// Inverse of a permutation given as "result axis k comes from axis src[k]".
fn inverse(src: &[i64]) -> Vec<i64> {
    let mut inv = vec![0i64; src.len()];
    for (k, &a) in src.iter().enumerate() {
        inv[a as usize] = k as i64;
    }
    inv
}

fn free_dims(rank: usize, batch: &[i64], contracting: &[i64]) -> Vec<i64> {
    (0..rank as i64)
        .filter(|d| !batch.contains(d) && !contracting.contains(d))
        .collect()
}

/// d lhs = g (contract rhs-free dims with rhs) then transposed into lhs layout.
fn dot_lhs_vjp(g: &Tensor, lhs: &Tensor, rhs: &Tensor, d: &DotDims) -> Tensor {
    let nb = d.lhs_batch.len() as i64;
    let lf = free_dims(lhs.rank(), &d.lhs_batch, &d.lhs_contracting);
    let rf = free_dims(rhs.rank(), &d.rhs_batch, &d.rhs_contracting);
    let nlf = lf.len() as i64;
    let t = g.dot_general(
        rhs,
        DotDims {
            lhs_batch: (0..nb).collect(),
            rhs_batch: d.rhs_batch.clone(),
            lhs_contracting: (nb + nlf..nb + nlf + rf.len() as i64).collect(),
            rhs_contracting: rf,
        },
    );
    // Result axes: batch, lhs free, then rhs contracting dims in ascending rhs order.
    let mut src: Vec<i64> = d.lhs_batch.clone();
    src.extend(&lf);
    let mut rc_sorted = d.rhs_contracting.clone();
    rc_sorted.sort_unstable();
    for rc in rc_sorted {
        let pos = d.rhs_contracting.iter().position(|&c| c == rc).unwrap_or(0);
        src.push(d.lhs_contracting[pos]);
    }
    t.transpose(&inverse(&src))
}

/// d rhs = g (contract lhs-free dims with lhs) then transposed into rhs layout.
///
/// Both of g and lhs are contracted over their leading (non-batch) dimensions. XLA's CPU
/// dot wants the left operand's contracting dimensions last, so whichever of the two is
/// the left operand gets physically transposed: the smaller one is put there. For a tied
/// LM head that keeps the `[tokens, vocab]` gradient from being transposed on every step.
fn dot_rhs_vjp(g: &Tensor, lhs: &Tensor, rhs: &Tensor, d: &DotDims) -> Tensor {
    let nb = d.lhs_batch.len() as i64;
    let lf = free_dims(lhs.rank(), &d.lhs_batch, &d.lhs_contracting);
    let rf = free_dims(rhs.rank(), &d.rhs_batch, &d.rhs_contracting);
    let g_dims = DotDims {
        lhs_batch: (0..nb).collect(),
        rhs_batch: d.lhs_batch.clone(),
        lhs_contracting: (nb..nb + lf.len() as i64).collect(),
        rhs_contracting: lf,
    };
    // The rhs dimensions that the lhs contracting dims came from, in ascending lhs order.
    let mut lc_sorted = d.lhs_contracting.clone();
    lc_sorted.sort_unstable();
    let from_lhs: Vec<i64> = lc_sorted
        .iter()
        .map(|lc| {
            let pos = d.lhs_contracting.iter().position(|c| c == lc).unwrap_or(0);
            d.rhs_contracting[pos]
        })
        .collect();
    let mut src: Vec<i64> = d.rhs_batch.clone();
    let t = if g.shape().element_count() > lhs.shape().element_count() {
        // lhs on the left: result axes batch, lhs contracting (as rhs dims), rhs free.
        let swapped = DotDims {
            lhs_batch: g_dims.rhs_batch.clone(),
            rhs_batch: g_dims.lhs_batch.clone(),
            lhs_contracting: g_dims.rhs_contracting.clone(),
            rhs_contracting: g_dims.lhs_contracting.clone(),
        };
        src.extend(&from_lhs);
        src.extend(&rf);
        lhs.dot_general(g, swapped)
    } else {
        // g on the left: result axes batch, rhs free, lhs contracting (as rhs dims).
        src.extend(&rf);
        src.extend(&from_lhs);
        g.dot_general(lhs, g_dims)
    };
    t.transpose(&inverse(&src))
}

fn reduce_vjp(kind: ReduceKind, x: &Tensor, y: &Tensor, g: &Tensor, dims: &[i64]) -> Tensor {
    let kept: Vec<i64> = (0..x.rank() as i64).filter(|d| !dims.contains(d)).collect();
    let back = |t: &Tensor| t.broadcast_in_dim(x.dims(), &kept);
    match kind {
        ReduceKind::Sum => back(g),
        ReduceKind::Max | ReduceKind::Min => {
            // Split equally among every position attaining the extreme.
            let hit = x.eq(&back(y)).convert(x.dtype());
            let count = hit.reduce_sum(dims);
            hit.mul(&back(&g.div(&count)))
        }
        // Integer-only, dispatched before reaching here.
        ReduceKind::And | ReduceKind::Or => g.mul_scalar(0.0),
    }
}

/// Gather's start indices clamped like XLA does, so the scatter hits the same windows.
fn clamped_indices(b: &Builder, x: &Tensor, idx: &Tensor, d: &GatherDims) -> Tensor {
    let dt = idx.dtype();
    let ivd = d.index_vector_dim as usize;
    let bound = |k: usize| {
        let od = d.start_index_map[k] as usize;
        (x.dims()[od] - d.slice_sizes[od]).max(0) as f64
    };
    let hi = if ivd >= idx.rank() {
        b.scalar(bound(0), dt).broadcast_to(idx.dims())
    } else {
        let mut one_dims = idx.dims().to_vec();
        one_dims[ivd] = 1;
        let parts: Vec<Tensor> = (0..d.start_index_map.len())
            .map(|k| b.scalar(bound(k), dt).broadcast_in_dim(&one_dims, &[]))
            .collect();
        b.concatenate(&parts, ivd as i64)
    };
    idx.clamp(&b.scalar(0.0, dt), &hi)
}

fn gather_vjp(b: &Builder, g: &Tensor, x: &Tensor, idx: &Tensor, d: &GatherDims) -> Tensor {
    let idx = if d.start_index_map.is_empty() {
        idx.clone()
    } else {
        clamped_indices(b, x, idx, d)
    };
    b.zeros(x.shape()).scatter_add(
        &idx,
        g,
        ScatterDims {
            update_window_dims: d.offset_dims.clone(),
            inserted_window_dims: d.collapsed_slice_dims.clone(),
            scatter_dims_to_operand_dims: d.start_index_map.clone(),
            index_vector_dim: d.index_vector_dim,
        },
    )
}

fn scatter_updates_vjp(
    g: &Tensor,
    x: &Tensor,
    idx: &Tensor,
    u: &Tensor,
    d: &ScatterDims,
) -> Tensor {
    let mut slice_sizes = vec![1i64; x.rank()];
    let window_dims = (0..x.rank() as i64).filter(|od| !d.inserted_window_dims.contains(od));
    for (w, od) in window_dims.enumerate() {
        slice_sizes[od as usize] = u.dims()[d.update_window_dims[w] as usize];
    }
    g.gather(
        idx,
        GatherDims {
            offset_dims: d.update_window_dims.clone(),
            collapsed_slice_dims: d.inserted_window_dims.clone(),
            start_index_map: d.scatter_dims_to_operand_dims.clone(),
            index_vector_dim: d.index_vector_dim,
            slice_sizes,
        },
    )
}

/// Recovers the sort permutation by sorting an iota along, then un-sorts each output's
/// cotangent by sorting it keyed by that permutation.
fn sort_vjp(r: &RuleInput, dim: i64, descending: bool) -> Vec<Option<Tensor>> {
    let b = r.builder;
    let n = r.operands.len();
    let wanted: Vec<usize> = (0..n).filter(|&i| r.need(i)).collect();
    if wanted.is_empty() {
        return r.none();
    }
    let iota = b.iota(&r.operands[0].shape().with_dtype(DType::S32), dim);
    let mut with_iota: Vec<Tensor> = r.operands.to_vec();
    with_iota.push(iota);
    let perm = b.sort(&with_iota, dim, descending).swap_remove(n);
    let mut keyed = vec![perm];
    keyed.extend(wanted.iter().map(|&i| r.ct(i)));
    let unsorted = b.sort(&keyed, dim, false);
    let mut out = r.none();
    for (j, &i) in wanted.iter().enumerate() {
        out[i] = unsorted.get(j + 1).cloned();
    }
    out
}

/// A composite's own VJP function, inlined with the operands, outputs and cotangents.
fn custom_vjp(r: &RuleInput, vjp: &crate::ir::Function) -> Cts {
    let mut args: Vec<Tensor> = r.operands.iter().chain(r.outputs).cloned().collect();
    args.extend((0..r.outputs.len()).map(|k| r.ct(k)));
    let cts = r.builder.inline(vjp, &args);
    Ok(cts
        .into_iter()
        .enumerate()
        .map(|(i, g)| r.need(i).then_some(g))
        .collect())
}

/// The decomposition inlined after the composite (recomputing what the backward pass
/// needs from it) and differentiated like any other ops.
fn composite_vjp(r: &RuleInput, decomposition: &crate::ir::Function) -> Cts {
    let outs = r.builder.inline(decomposition, r.operands);
    let cts: Vec<Tensor> = (0..outs.len()).map(|k| r.ct(k)).collect();
    let wrt: Vec<Tensor> = (0..r.operands.len())
        .filter(|&i| r.need(i))
        .map(|i| r.operands[i].clone())
        .collect();
    let mut grads = crate::autodiff::vjp(&outs, &cts, &wrt)?.into_iter();
    Ok((0..r.operands.len())
        .map(|i| if r.need(i) { grads.next() } else { None })
        .collect())
}
