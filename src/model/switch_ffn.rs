//! The Switch FFN: a top-1 router sends each token to one expert, with a fixed number of
//! slots per expert; experts are one batched weight so they can be sharded.
//!
//! Dispatch and combine are one-hot einsums (dot_generals): a `[G, N, E, C]` dispatch
//! tensor places token n of group g in slot c of expert e. On a mesh with a `model` axis
//! the experts are split over it and tokens travel to them by all-to-all. With `hf` semantics a group is
//! one sequence and a dropped token passes through as `top1_prob * x`; with `original`
//! semantics a group is a run of flattened tokens and a dropped token outputs 0.

use super::config::{RouterConfig, RoutingSemantics};
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

/// `expert_in [G, E, C, d]` through each expert's FFN: `[E, G, C, d]`.
fn run_experts(expert_in: &Tensor, w: &SwitchWeights) -> Tensor {
    let hidden = expert_in
        .dot_general(
            w.wi,
            DotDims {
                lhs_batch: vec![1],
                rhs_batch: vec![0],
                lhs_contracting: vec![3],
                rhs_contracting: vec![2],
            },
        )
        .relu(); // [E, G, C, f]
    hidden.dot_general(
        w.wo,
        DotDims {
            lhs_batch: vec![0],
            rhs_batch: vec![0],
            lhs_contracting: vec![3],
            rhs_contracting: vec![2],
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

/// Each token through its own expert, with that expert's weights gathered: `x [N, d]`,
/// `expert [B, T]` s32 (N = B*T), `kept [N]` (1: the token got a slot) -> `[N, d]`, zero
/// for dropped tokens. The same values as the one-hot dispatch, but a decode step reads
/// one expert's weights per token instead of every expert's (it is bandwidth bound).
fn chosen_experts(x: &Tensor, expert: &Tensor, kept: &Tensor, w: &SwitchWeights) -> Tensor {
    let n = x.dims()[0];
    let expert = expert.reshape(&[n]);
    let wi = w.wi.take_rows(&expert).convert(x.dtype()); // [N, f, d]
    let wo = w.wo.take_rows(&expert).convert(x.dtype()); // [N, d, f]
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
    per_token(&hidden, &wo).mul(&kept.convert(x.dtype()).expand_dim(-1))
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
    let combined = match expert_parallel_mesh(x, n, e) {
        Some(m) => dispatch_all_to_all(&dispatch, &xg, w, &m),
        // Fewer tokens than experts (decoding): read only the chosen experts' weights.
        None if x.builder().mesh().is_none() && batch * seq < e => {
            let kept_tokens = kept_mask.reduce_sum(&[-1]).reshape(&[batch * seq]);
            chosen_experts(&x.reshape(&[batch * seq, d]), &expert, &kept_tokens, w)
                .reshape(&[groups, n, d])
        }
        None => dispatch_local(&dispatch, &xg, w),
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

    /// Switch outputs `[B, T, d]` and `kept` for `x` (plus `pad` routed-out tokens).
    fn run(cfg: &RouterConfig, x: &[f32], tokens: i64, pad: i64) -> (Vec<f32>, Vec<i32>) {
        let b = Builder::new("switch");
        let t = tokens + pad;
        let xs = b.parameter("x", Shape::new(DType::F32, vec![1, t, D]));
        let router = b.parameter("router", Shape::new(DType::F32, vec![E, D]));
        let wi = b.parameter("wi", Shape::new(DType::F32, vec![E, F, D]));
        let wo = b.parameter("wo", Shape::new(DType::F32, vec![E, D, F]));
        let routed = b
            .iota(&Shape::new(DType::S32, vec![1, t]), 1)
            .lt(&b.scalar(tokens as f64, DType::S32));
        let w = SwitchWeights {
            router: &router,
            wi: &wi,
            wo: &wo,
        };
        let out = switch_ffn(&xs, &w, cfg, false, None, Some(&routed));
        let f = b.build(&[&out.out, &out.kept]).unwrap();
        let vals = |n: i64, k: f32| {
            (0..n)
                .map(|i| (i as f32 * 0.37 + k).sin())
                .collect::<Vec<f32>>()
        };
        let mut xv = x.to_vec();
        xv.resize((t * D) as usize, 0.5);
        let args = [
            Literal::from_slice(&[1, t, D], &xv).unwrap(),
            Literal::from_slice(&[E, D], &vals(E * D, 0.1)).unwrap(),
            Literal::from_slice(&[E, F, D], &vals(E * F * D, 0.2)).unwrap(),
            Literal::from_slice(&[E, D, F], &vals(E * D * F, 0.3)).unwrap(),
        ];
        let r = hlo::interpret::evaluate(&f, &args).unwrap();
        let out = r[0].to_vec::<f32>().unwrap()[..(tokens * D) as usize].to_vec();
        let kept = r[1].to_vec::<i32>().unwrap()[..tokens as usize].to_vec();
        (out, kept)
    }

    /// Fewer tokens than experts take the gather path; the same tokens padded to more
    /// (padding routed out, so it takes no slot) take the one-hot path: both agree,
    /// dropped tokens included.
    #[test]
    fn chosen_experts_equal_the_one_hot_dispatch() {
        // Three similar tokens: they pick the same expert, so a capacity of 1 drops two.
        let x: Vec<f32> = (0..3 * D)
            .map(|i| ((i % D) as f32 * 0.91).cos() + 0.01 * (i / D) as f32)
            .collect();
        for (semantics, capacity) in [
            (RoutingSemantics::Hf, 1),
            (RoutingSemantics::Hf, 8),
            (RoutingSemantics::Original, 0),
        ] {
            let cfg = RouterConfig {
                semantics,
                expert_capacity: capacity,
                min_capacity: 1,
                capacity_factor_eval: 0.5,
                ..RouterConfig::default()
            };
            let (gathered, kept_g) = run(&cfg, &x, 3, 0);
            let (one_hot, kept_o) = run(&cfg, &x, 3, 5);
            assert_eq!(kept_g, kept_o, "{semantics:?} {capacity}");
            if capacity == 1 {
                assert!(
                    kept_g.contains(&0),
                    "the capacity edge drops a token: {kept_g:?}"
                );
            }
            for (a, b) in gathered.iter().zip(&one_hot) {
                assert!(
                    (a - b).abs() <= 1e-6,
                    "{semantics:?} {capacity}: {a} vs {b}"
                );
            }
        }
    }
}
