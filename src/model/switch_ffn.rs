//! The Switch FFN: a top-1 router sends each token to one expert, with a fixed number of
//! slots per expert; experts are one batched weight so they can be sharded.
//!
//! Dispatch and combine are one-hot einsums (dot_generals): a `[G, N, E, C]` dispatch
//! tensor places token n of group g in slot c of expert e. On a mesh with a `model` axis
//! the experts are split over it and tokens travel to them by all-to-all. With `hf` semantics a group is
//! one sequence and a dropped token passes through as `top1_prob * x`; with `original`
//! semantics a group is a run of flattened tokens and a dropped token outputs 0.

use super::config::{RouterConfig, RoutingSemantics};
use super::expert_mlp::experts_on_filled_slots;
use super::nn::linear;
use hlo::ir::DotDims;
use hlo::{DType, Mesh, PartitionSpec, Shape, Tensor};

/// Mesh axis names (see `train::step::param_sharding`).
const MODEL_AXIS: &str = "model";
const DATA_AXIS: &str = "data";

pub struct SwitchWeights<'a> {
    /// `[E, d]`
    pub router: &'a Tensor,
    /// `[E, f, d]`
    pub wi: &'a Tensor,
    /// `[E, d, f]`
    pub wo: &'a Tensor,
}

/// Outputs of a switch layer, for the forward pass and the auxiliary losses.
pub struct SwitchOutput {
    /// `[B, T, d]`: the MoE branch (before the soft bypass is added).
    pub out: Tensor,
    /// `[B, T, E]` router logits and softmax probabilities (f32).
    pub logits: Tensor,
    pub probs: Tensor,
    /// `[B, T]` s32: the top-1 expert before capacity.
    pub expert: Tensor,
    /// `[B, T]` s32: 1 if the token got a slot, 0 if dropped.
    pub kept: Tensor,
    /// Scalar f32: `E^2 * mean_e(fraction_e * mean_prob_e)`, averaged over groups.
    pub balance_loss: Tensor,
}

/// How tokens are grouped and how many slots each expert has per group.
fn grouping(
    cfg: &RouterConfig,
    batch: i64,
    seq: i64,
    experts: i64,
    training: bool,
) -> (i64, i64, i64) {
    match cfg.semantics {
        RoutingSemantics::Hf => (batch, seq, cfg.expert_capacity.min(seq)),
        RoutingSemantics::Original => {
            let total = batch * seq;
            let mut size = cfg.group_size.min(total).max(1);
            while total % size != 0 {
                size -= 1;
            }
            let cf = if training {
                cfg.capacity_factor_train
            } else {
                cfg.capacity_factor_eval
            };
            let cap = ((size as f64 * cf / experts as f64) as i64)
                .min(size)
                .max(cfg.min_capacity);
            (total / size, size, cap.min(size))
        }
    }
}

/// The expert tables in the compute type `dtype`. Tables kept narrower on the device
/// (bf16 or f16 inference weights) are converted here, once this layer's routing is
/// known: the converted values are multiplied by a one computed from the routing.
/// Converted at the start instead, XLA CPU holds every layer's f32 tables at once
/// (10 GiB for the 2.8B model); an optimization barrier does not help, as XLA CPU
/// removes barriers before it schedules. On a mesh the tables are split over devices
/// and converted in place.
fn tables_in(w: &SwitchWeights, expert: &Tensor, dtype: DType) -> (Tensor, Tensor) {
    if w.wi.dtype() == dtype && w.wo.dtype() == dtype {
        return (w.wi.clone(), w.wo.clone());
    }
    if expert.builder().mesh().is_some() {
        return (w.wi.convert(dtype), w.wo.convert(dtype));
    }
    let b = expert.builder();
    let all: Vec<i64> = (0..expert.rank() as i64).collect();
    // Experts are >= 0, so this is exactly 1, but XLA cannot know it before the routing
    // runs; x * 1 is x for every value (NaN and infinities included).
    let one = expert
        .reduce_min(&all)
        .min(&b.scalar(0.0, DType::S32))
        .add(&b.scalar(1.0, DType::S32))
        .convert(dtype);
    let after_routing = |t: &Tensor| t.convert(dtype).mul(&one.broadcast_to(t.dims()));
    (after_routing(w.wi), after_routing(w.wo))
}

/// `expert_in [G, E, C, d]` through each expert's FFN: `[E, G, C, d]`.
///
/// The products are written weights-first (`wi . x^T`, then `wo . h`), so the expert's
/// matrix is the dot's left operand and the slots are its columns, and the result is
/// transposed back (a copy of `[E, d, G*C]`, small next to the weights). With few slots
/// per expert the other orientation made XLA CPU's dot library repack every weight matrix
/// for a handful of rows: a `[8, 256] x [256, 1024]` product ran at 9-13 GFLOP/s against
/// 21-86 written this way (`dot_rates`), and prefilling a 32-token prompt of `small`
/// took 20-23 ms against 11-13 ms. At the train step's and the forward benchmark's
/// 320-512 slots both orientations run alike.
fn run_experts(expert_in: &Tensor, w: &SwitchWeights) -> Tensor {
    experts_out_t(&experts_hidden_t(expert_in, w.wi), w.wo).transpose(&[0, 2, 3, 1])
}

/// `relu(wi . x^T)` per expert, `[E, f, G, C]`, from `expert_in [G, E, C, d]` and
/// `wi [E, f, d]` (weights-first, see [`run_experts`]).
pub(super) fn experts_hidden_t(expert_in: &Tensor, wi: &Tensor) -> Tensor {
    wi.dot_general(
        expert_in,
        DotDims {
            lhs_batch: vec![0],
            rhs_batch: vec![1],
            lhs_contracting: vec![2],
            rhs_contracting: vec![3],
        },
    )
    .relu()
}

/// `wo . hidden` per expert, `[E, d, G, C]`, from `hidden_t [E, f, G, C]` and
/// `wo [E, d, f]`.
pub(super) fn experts_out_t(hidden_t: &Tensor, wo: &Tensor) -> Tensor {
    wo.dot_general(
        hidden_t,
        DotDims {
            lhs_batch: vec![0],
            rhs_batch: vec![0],
            lhs_contracting: vec![2],
            rhs_contracting: vec![1],
        },
    )
}

/// One device (or tokens replicated over the mesh): tokens to slots, experts, slots back
/// to tokens, as one-hot einsums. `dispatch [G, N, E, C]`, `xg [G, N, d]` -> `[G, N, d]`.
fn dispatch_local(dispatch: &Tensor, xg: &Tensor, w: &SwitchWeights) -> Tensor {
    let expert_in = dispatch.dot_general(
        xg,
        DotDims {
            lhs_batch: vec![0],
            rhs_batch: vec![0],
            lhs_contracting: vec![1],
            rhs_contracting: vec![1],
        },
    ); // [G, E, C, d]
    let expert_out = run_experts(&expert_in, w);
    dispatch.dot_general(
        &expert_out,
        DotDims {
            lhs_batch: vec![0],
            rhs_batch: vec![1],
            lhs_contracting: vec![2, 3],
            rhs_contracting: vec![0, 2],
        },
    )
}

/// The composite [`chosen_experts`] runs in: operands `x [N, d]`, `expert [N]` s32,
/// `kept [N]`, `wi [E, f, d]`, `wo [E, d, f]` (all f32 but `expert`); result
/// `relu(x wi[e]^T) wo[e]^T * kept`, `[N, d]`. On the CPU plugin with AVX-512 it is our
/// kernel (`runtime::chosen_expert`): XLA CPU computes the gather fused into the product
/// as a loop kernel that reads the expert's weights at about two thirds of a plain
/// product's rate.
pub const CHOSEN_EXPERT_MLP: &str = "chosen_expert_mlp";

/// Each token through its own expert, with that expert's weights gathered: `x [N, d]`,
/// `expert [B, T]` s32 (N = B*T), `kept [N]` (1: the token got a slot) -> `[N, d]`, zero
/// for dropped tokens. The same values as the one-hot dispatch, but a decode step reads
/// one expert's weights per token instead of every expert's (it is bandwidth bound).
/// In f32, the [`CHOSEN_EXPERT_MLP`] composite.
fn chosen_experts(x: &Tensor, expert: &Tensor, kept: &Tensor, w: &SwitchWeights) -> Tensor {
    let n = x.dims()[0];
    let operands = [
        x.clone(),
        expert.reshape(&[n]),
        kept.convert(x.dtype()),
        w.wi.clone(),
        w.wo.clone(),
    ];
    let f32s = [x, w.wi, w.wo].iter().all(|t| t.dtype() == DType::F32);
    if !f32s {
        return chosen_experts_ops(&operands);
    }
    x.builder()
        .composite(CHOSEN_EXPERT_MLP, &operands, |_, a| {
            vec![chosen_experts_ops(a)]
        })
        .remove(0)
}

/// [`CHOSEN_EXPERT_MLP`] as ops (weights gathered per token, converted to `x`'s type).
fn chosen_experts_ops(a: &[Tensor]) -> Tensor {
    let (x, expert, kept) = (&a[0], &a[1], &a[2]);
    let wi = a[3].take_rows(expert).convert(x.dtype()); // [N, f, d]
    let wo = a[4].take_rows(expert).convert(x.dtype()); // [N, d, f]
    let per_token = |lhs: &Tensor, rhs: &Tensor| {
        lhs.dot_general(
            rhs,
            DotDims {
                lhs_batch: vec![0],
                rhs_batch: vec![0],
                lhs_contracting: vec![1],
                rhs_contracting: vec![2],
            },
        )
    };
    let hidden = per_token(x, &wi).relu(); // [N, f]
    per_token(&hidden, &wo).mul(&kept.expand_dim(-1))
}

/// Tokens to their experts' capacity slots by index instead of one-hot einsums: every
/// kept token has a unique slot `expert * C + position` in its group, so the expert inputs
/// are a gather of token rows (empty slots read a zero row) and each token's output a
/// gather of its slot (dropped tokens read a zero slot). The same values as
/// [`dispatch_local`] without its `N x E x C x d` multiply-adds.
/// `xg [G, N, d]`, `expert [G, N]` s32, `position`/`kept` `[G, N]` f32 -> `[G, N, d]`.
fn dispatch_by_index(
    xg: &Tensor,
    expert: &Tensor,
    position: &Tensor,
    kept: &Tensor,
    cap: i64,
    w: &SwitchWeights,
) -> Tensor {
    let b = xg.builder();
    let (g, n, d) = (xg.dims()[0], xg.dims()[1], xg.dims()[2]);
    let e = w.router.dims()[0];
    let per_group = e * cap + 1; // the last slot of a group collects dropped tokens
    let s32 = |v: i64| b.scalar(v as f64, DType::S32);
    let iota = |dims: &[i64], dim: i64| b.iota(&Shape::new(DType::S32, dims.to_vec()), dim);
    // Global slot of every token: group * per_group + (expert * C + position | dump slot).
    let local = expert.mul(&s32(cap)).add(&position.convert(DType::S32));
    let local = kept
        .gt(&b.scalar(0.0, DType::F32))
        .select(&local, &s32(e * cap));
    let slot_of_token = iota(&[g, n], 0)
        .mul(&s32(per_group))
        .add(&local)
        .reshape(&[g * n]);
    // Token of every slot (+1; 0 = empty), by scattering token ids to their slots.
    let token_ids = iota(&[g * n], 0).add(&s32(1));
    let filled = b
        .splat(0.0, &Shape::new(DType::S32, vec![g * per_group]))
        .scatter_add(
            &slot_of_token.reshape(&[g * n, 1]),
            &token_ids,
            hlo::ir::ScatterDims {
                update_window_dims: vec![],
                inserted_window_dims: vec![0],
                scatter_dims_to_operand_dims: vec![0],
                index_vector_dim: 1,
            },
        );
    let token_of_slot = filled
        .reshape(&[g, per_group])
        .slice_dim(1, 0, e * cap)
        .reshape(&[g, e, cap]);
    // Empty slots (0) read row G*N, a zero row appended to the tokens.
    let token_of_slot = token_of_slot
        .eq(&s32(0))
        .select(&s32(g * n + 1), &token_of_slot)
        .sub(&s32(1));
    let zero_row = |rows: &Tensor| {
        let z = b.splat(0.0, &Shape::new(rows.dtype(), vec![1, d]));
        b.concatenate(&[rows.clone(), z], 0)
    };
    let expert_in = zero_row(&xg.reshape(&[g * n, d])).take_rows(&token_of_slot); // [G,E,C,d]
    let f32s = [&expert_in, w.wi, w.wo]
        .iter()
        .all(|t| t.dtype() == DType::F32);
    let expert_out = if f32s {
        let filled = filled_slots(expert, kept, e);
        experts_on_filled_slots(&expert_in, &filled, w.wi, w.wo)
    } else {
        run_experts(&expert_in, w).transpose(&[1, 0, 2, 3]) // [G, E, C, d]
    }
    .reshape(&[g, e * cap, d]);
    let with_dump = b.concatenate(
        &[
            expert_out,
            b.splat(0.0, &Shape::new(xg.dtype(), vec![g, 1, d])),
        ],
        1,
    );
    with_dump
        .reshape(&[g * per_group, d])
        .take_rows(&slot_of_token)
        .reshape(&[g, n, d])
}

/// How many slots of every expert are filled in each group, `[G, E]` s32, from
/// `expert [G, N]` s32 and `kept [G, N]` f32: the kept tokens of an expert take its first
/// slots, so this is their count.
fn filled_slots(expert: &Tensor, kept: &Tensor, experts: i64) -> Tensor {
    let b = expert.builder();
    let (g, n) = (expert.dims()[0], expert.dims()[1]);
    let each = b.iota(&Shape::new(DType::S32, vec![g, n, experts]), 2);
    let mine = expert
        .expand_dim(2)
        .broadcast_to(&[g, n, experts])
        .eq(&each);
    let kept = kept.expand_dim(2).broadcast_to(&[g, n, experts]);
    mine.select(&kept, &b.scalar(0.0, DType::F32))
        .reduce_sum(&[1])
        .convert(DType::S32)
}

/// The mesh to run expert parallelism on: one with a `model` axis of size M > 1 that
/// divides the tokens of a group and the experts.
fn expert_parallel_mesh(x: &Tensor, group_len: i64, experts: i64) -> Option<Mesh> {
    let mesh = x.builder().mesh()?;
    let m = mesh.axis_size(MODEL_AXIS).unwrap_or(1);
    (m > 1 && group_len % m == 0 && experts % m == 0).then_some(mesh)
}

/// Expert parallelism as in GShard, with the same results as [`dispatch_local`]: the
/// experts are split over the `model` axis (M devices) and so are the tokens of every
/// group (M pieces of N/M). Each device fills the capacity slots with its own tokens, an
/// all-to-all sends every slot to the device of its expert, the experts run where their
/// weights are, a second all-to-all returns each slot to the device of its token, and an
/// all-gather gives every device all tokens again for the attention that follows.
fn dispatch_all_to_all(dispatch: &Tensor, xg: &Tensor, w: &SwitchWeights, mesh: &Mesh) -> Tensor {
    let (g, n, d) = (xg.dims()[0], xg.dims()[1], xg.dims()[2]);
    let (e, c) = (dispatch.dims()[2], dispatch.dims()[3]);
    let m = mesh.axis_size(MODEL_AXIS).unwrap_or(1);
    // Groups stay split over `data` where they divide evenly.
    let data = mesh.axis_size(DATA_AXIS).unwrap_or(1);
    let gs = (data > 1 && g % data == 0).then_some(DATA_AXIS);
    let spec = |dims: &[Option<&str>]| PartitionSpec::new(dims);
    let model = Some(MODEL_AXIS);

    // Token pieces: [G, M, N/M, ...], piece m on model device m. Pinning the tokens as
    // replicated over `model` first keeps the split from spreading into the attention.
    let xs = xg
        .with_sharding(spec(&[gs, None, None]))
        .reshape(&[g, m, n / m, d])
        .with_sharding(spec(&[gs, model, None, None]));
    let ds = dispatch
        .with_sharding(spec(&[gs, None, None, None]))
        .reshape(&[g, m, n / m, e, c])
        .with_sharding(spec(&[gs, model, None, None, None]));
    // Each piece fills the slots its tokens own: [G, M, E, C, d], still split by piece.
    let send = ds.dot_general(
        &xs,
        DotDims {
            lhs_batch: vec![0, 1],
            rhs_batch: vec![0, 1],
            lhs_contracting: vec![2],
            rhs_contracting: vec![2],
        },
    );
    // All-to-all: from split by piece to split by expert; every slot has one owner piece,
    // so summing the pieces assembles the expert inputs exactly.
    let expert_in = send
        .with_sharding(spec(&[gs, None, model, None, None]))
        .reduce_sum(&[1]); // [G, E, C, d]
    let expert_out = run_experts(&expert_in, w); // [E, G, C, d], split by expert
                                                 // Which piece owns each slot: [E, G, M, C] (0 or 1).
    let owner = ds.reduce_sum(&[2]).transpose(&[2, 0, 1, 3]);
    let back = expert_out
        .broadcast_in_dim(&[e, g, m, c, d], &[0, 1, 3, 4])
        .mul(&owner.expand_dim(-1))
        .with_sharding(spec(&[model, gs, None, None, None]))
        // All-to-all: from split by expert to split by piece.
        .with_sharding(spec(&[None, gs, model, None, None]));
    let combined = ds.dot_general(
        &back,
        DotDims {
            lhs_batch: vec![0, 1],
            rhs_batch: vec![1, 2],
            lhs_contracting: vec![3, 4],
            rhs_contracting: vec![0, 3],
        },
    ); // [G, M, N/M, d]
    combined
        .reshape(&[g, n, d])
        .with_sharding(spec(&[gs, None, None]))
}

/// Routes `x [B, T, d]` through the experts. `jitter` is an optional `[B, T, d]` f32
/// multiplier for the router input (training only). `routed` (`[B, T]` pred), when given,
/// marks the tokens that take part in routing: the others (padding) neither take nor
/// count towards expert slots. The reference port routes padding like any token.
pub fn switch_ffn(
    x: &Tensor,
    w: &SwitchWeights,
    cfg: &RouterConfig,
    training: bool,
    jitter: Option<&Tensor>,
    routed: Option<&Tensor>,
) -> SwitchOutput {
    switch_ffn_with(x, w, cfg, training, jitter, routed, None)
}

/// How tokens reach their experts' slots (all give the same values).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Dispatch {
    /// One-hot einsums over `[G, N, E, C]`.
    OneHot,
    /// Gathers of token rows by slot index.
    ByIndex,
    /// Each token through its own expert's gathered weights (fewer tokens than experts).
    ChosenWeights,
    /// Expert parallelism over the mesh's `model` axis.
    AllToAll(Mesh),
}

/// The dispatch for `tokens` tokens in groups of `group_len` on `x`'s mesh.
fn choose_dispatch(x: &Tensor, tokens: i64, group_len: i64, experts: i64) -> Dispatch {
    if let Some(m) = expert_parallel_mesh(x, group_len, experts) {
        return Dispatch::AllToAll(m);
    }
    if x.builder().mesh().is_some() {
        // Tokens replicated over the mesh, experts split: XLA partitions the einsums.
        return Dispatch::OneHot;
    }
    if tokens < experts {
        Dispatch::ChosenWeights
    } else {
        Dispatch::ByIndex
    }
}

/// [`switch_ffn`] with the dispatch forced (tests compare them).
fn switch_ffn_with(
    x: &Tensor,
    w: &SwitchWeights,
    cfg: &RouterConfig,
    training: bool,
    jitter: Option<&Tensor>,
    routed: Option<&Tensor>,
    forced: Option<Dispatch>,
) -> SwitchOutput {
    let b = x.builder();
    let (batch, seq, d) = (x.dims()[0], x.dims()[1], x.dims()[2]);
    let e = w.router.dims()[0];
    let mut router_in = x.convert(DType::F32);
    if let Some(j) = jitter {
        router_in = router_in.mul(j);
    }
    let logits = linear(&router_in, &w.router.convert(DType::F32));
    let probs = logits.softmax(-1);
    let expert = probs.argmax(-1);
    let top1 = probs.reduce_max(&[-1]);

    let (groups, n, cap) = grouping(cfg, batch, seq, e, training);
    let mut onehot = expert.one_hot(e, DType::F32);
    if let Some(r) = routed {
        onehot = onehot.mul(&r.convert(DType::F32).expand_dim(-1));
    }
    let onehot = onehot.reshape(&[groups, n, e]);
    // Position of each token in its expert's queue: an inclusive cumulative count over
    // the group, as a lower-triangular matmul.
    let rows = b.iota(&Shape::new(DType::S32, vec![n, n]), 0);
    let cols = b.iota(&Shape::new(DType::S32, vec![n, n]), 1);
    let tril = cols.le(&rows).convert(DType::F32);
    let priority = tril
        .dot_general(
            &onehot,
            DotDims {
                lhs_contracting: vec![1],
                rhs_contracting: vec![1],
                ..Default::default()
            },
        )
        .transpose(&[1, 0, 2]); // [G, N, E]
    let in_capacity = priority.le(&b.scalar(cap as f64, DType::F32));
    let kept_mask = onehot.mul(&in_capacity.convert(DType::F32)); // [G, N, E]
    let slot = priority
        .sub_scalar(1.0)
        .convert(DType::S32)
        .one_hot(cap, DType::F32); // [G,N,E,C]
    let dispatch = slot.mul(&kept_mask.expand_dim(-1)).convert(x.dtype());

    let xg = x.reshape(&[groups, n, d]);
    let kept_tokens = || kept_mask.reduce_sum(&[-1]); // [G, N]
    let how = forced.unwrap_or_else(|| choose_dispatch(x, batch * seq, n, e));
    let (wi, wo) = match how {
        // Gathers the chosen rows first and converts only those.
        Dispatch::ChosenWeights => (w.wi.clone(), w.wo.clone()),
        _ => tables_in(w, &expert, x.dtype()),
    };
    let w = &SwitchWeights {
        router: w.router,
        wi: &wi,
        wo: &wo,
    };
    let combined = match how {
        Dispatch::AllToAll(m) => dispatch_all_to_all(&dispatch, &xg, w, &m),
        Dispatch::OneHot => dispatch_local(&dispatch, &xg, w),
        Dispatch::ChosenWeights => chosen_experts(
            &x.reshape(&[batch * seq, d]),
            &expert,
            &kept_tokens().reshape(&[batch * seq]),
            w,
        )
        .reshape(&[groups, n, d]),
        Dispatch::ByIndex => {
            // Queue position of each token in its expert.
            let position = priority.mul(&onehot).reduce_sum(&[-1]).sub_scalar(1.0);
            let expert_g = expert.reshape(&[groups, n]);
            dispatch_by_index(&xg, &expert_g, &position, &kept_tokens(), cap, w)
        }
    }; // [G, N, d]
    let combined = combined.reshape(&[batch, seq, d]);
    let kept = kept_mask.reduce_sum(&[-1]).reshape(&[batch, seq]);
    let scale = top1.convert(x.dtype()).expand_dim(-1);
    let out = match cfg.semantics {
        RoutingSemantics::Hf => {
            let dropped = kept.neg().add_scalar(1.0).convert(x.dtype()).expand_dim(-1);
            combined.add(&dropped.mul(x)).mul(&scale)
        }
        RoutingSemantics::Original => combined.mul(&scale),
    };

    // Load balancing: fraction of tokens whose top-1 is e, times the mean router
    // probability of e, per group.
    let fraction = onehot.mean(&[1]); // [G, E]
    let mean_prob = probs.reshape(&[groups, n, e]).mean(&[1]);
    let balance_loss = fraction
        .mul(&mean_prob)
        .mean(&[0, 1])
        .mul_scalar((e * e) as f64);

    SwitchOutput {
        out,
        logits,
        probs,
        expert,
        kept: kept.convert(DType::S32),
        balance_loss,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::RouterConfig;
    use hlo::{Builder, Literal};

    const D: i64 = 4;
    const E: i64 = 4;
    const F: i64 = 6;

    /// Switch outputs `[N*d]`, `kept [N]` and the gradient of `sum(out^2)` for `wi`, for
    /// `x` of `tokens` tokens of which the first `routed` take part in routing.
    fn run(
        cfg: &RouterConfig,
        x: &[f32],
        tokens: i64,
        routed: i64,
        how: Dispatch,
    ) -> (Vec<f32>, Vec<i32>, Vec<f32>) {
        let b = Builder::new("switch");
        let xs = b.parameter("x", Shape::new(DType::F32, vec![1, tokens, D]));
        let router = b.parameter("router", Shape::new(DType::F32, vec![E, D]));
        let wi = b.parameter("wi", Shape::new(DType::F32, vec![E, F, D]));
        let wo = b.parameter("wo", Shape::new(DType::F32, vec![E, D, F]));
        let mask = b
            .iota(&Shape::new(DType::S32, vec![1, tokens]), 1)
            .lt(&b.scalar(routed as f64, DType::S32));
        let w = SwitchWeights {
            router: &router,
            wi: &wi,
            wo: &wo,
        };
        let out = switch_ffn_with(&xs, &w, cfg, true, None, Some(&mask), Some(how));
        let loss = out.out.square().sum_all();
        let grads = hlo::autodiff::grad(&loss, std::slice::from_ref(&wi)).unwrap();
        let f = b.build(&[&out.out, &out.kept, &grads[0]]).unwrap();
        let vals = |n: i64, k: f32| {
            (0..n)
                .map(|i| (i as f32 * 0.37 + k).sin())
                .collect::<Vec<f32>>()
        };
        let args = [
            Literal::from_slice(&[1, tokens, D], x).unwrap(),
            Literal::from_slice(&[E, D], &vals(E * D, 0.1)).unwrap(),
            Literal::from_slice(&[E, F, D], &vals(E * F * D, 0.2)).unwrap(),
            Literal::from_slice(&[E, D, F], &vals(E * D * F, 0.3)).unwrap(),
        ];
        let r = hlo::interpret::evaluate(&f, &args).unwrap();
        (
            r[0].to_vec::<f32>().unwrap(),
            r[1].to_vec::<i32>().unwrap(),
            r[2].to_vec::<f32>().unwrap(),
        )
    }

    fn close(a: &[f32], b: &[f32], what: &str) {
        assert_eq!(a.len(), b.len(), "{what}");
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() <= 1e-5, "{what}: {x} vs {y}");
        }
    }

    /// Every dispatch gives the one-hot einsums' outputs and gradients: dropped tokens
    /// (capacity edges), padding that takes no slot, both routing semantics.
    #[test]
    fn every_dispatch_equals_the_one_hot_einsums() {
        // Similar tokens pick the same expert, so small capacities drop some.
        let x = |n: i64| -> Vec<f32> {
            (0..n * D)
                .map(|i| {
                    ((i % D) as f32 * 0.91).cos()
                        + 0.01 * (i / D) as f32
                        + 0.3 * ((i / D) % 2) as f32
                })
                .collect()
        };
        let cases = [
            (RoutingSemantics::Hf, 1, 3, 3, Dispatch::ChosenWeights),
            (RoutingSemantics::Hf, 8, 3, 3, Dispatch::ChosenWeights),
            (RoutingSemantics::Original, 0, 3, 3, Dispatch::ChosenWeights),
            (RoutingSemantics::Hf, 2, 9, 7, Dispatch::ByIndex),
            (RoutingSemantics::Hf, 16, 9, 9, Dispatch::ByIndex),
            (RoutingSemantics::Original, 0, 12, 10, Dispatch::ByIndex),
        ];
        let mut dropped = 0;
        for (semantics, capacity, tokens, routed, how) in cases {
            let cfg = RouterConfig {
                semantics,
                expert_capacity: capacity,
                min_capacity: 1,
                capacity_factor_train: 0.5,
                group_size: 4,
                jitter: 0.0,
                ..RouterConfig::default()
            };
            let what = format!("{semantics:?} capacity {capacity}, {tokens} tokens, {how:?}");
            let want = run(&cfg, &x(tokens), tokens, routed, Dispatch::OneHot);
            let got = run(&cfg, &x(tokens), tokens, routed, how);
            assert_eq!(got.1, want.1, "{what}: kept");
            close(&got.0, &want.0, &what);
            close(&got.2, &want.2, &format!("{what}: gradient"));
            let routed = routed as usize;
            dropped += got.1[..routed].iter().filter(|&&k| k == 0).count();
            assert!(
                got.1[routed..].iter().all(|&k| k == 0),
                "{what}: padding took a slot"
            );
        }
        assert!(dropped > 0, "no case dropped a token");
    }
}
