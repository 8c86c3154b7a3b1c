//! The experts' MLPs over their capacity slots as a composite (`hlo`'s `Op::Composite`),
//! with its gradient as a composite of its own. Where the backend has kernels for them
//! (the CPU plugin on AVX-512: `runtime::expert_mlp`) only the filled slots are
//! multiplied: half of them in evaluation with the `original` routing's capacity factor
//! of 2.0, four fifths in training. Everywhere else (other plugins, meshes, exported
//! artifacts) both are the ops of [`super::switch_ffn`], every slot included.
//!
//! The forward composite also returns the hidden activations, so the gradient kernel
//! does not recompute them.

use super::switch_ffn::{experts_hidden_t, experts_out_t};
use hlo::{Builder, Tensor};

/// The forward composite. Operands `x [G, E, C, d]` (the slots; empty ones are zero
/// rows), `filled [G, E]` s32 (each expert's filled slots in a group: a prefix of its
/// `C`), `wi [E, f, d]` and `wo [E, d, f]`, f32 but for `filled`; results
/// `relu(x wi^T) wo^T` `[G, E, C, d]`, zero on empty slots, and `relu(x wi^T)`
/// `[G, E, C, f]` for the gradient (without gradient of its own; on empty slots zero in
/// the ops and left unwritten by the kernel: only filled slots are read).
pub const EXPERT_MLP: &str = "expert_mlp";

/// The gradient composite. Operands the forward's four operands, its hidden activations
/// and the cotangent of its first result; results the cotangents of `x`, `wi` and `wo`.
pub const EXPERT_MLP_GRAD: &str = "expert_mlp_grad";

/// `relu(x wi^T) wo^T` per expert over the slots `x [G, E, C, d]`, `[G, E, C, d]`
/// (see [`EXPERT_MLP`]).
pub fn experts_on_filled_slots(x: &Tensor, filled: &Tensor, wi: &Tensor, wo: &Tensor) -> Tensor {
    let operands = [x.clone(), filled.clone(), wi.clone(), wo.clone()];
    x.builder()
        .composite_with_vjp(EXPERT_MLP, &operands, forward_ops, |b, ops, outs, cts| {
            let mut args = ops.to_vec();
            args.push(outs[1].clone());
            args.push(cts[0].clone());
            let grads = b.composite(EXPERT_MLP_GRAD, &args, grad_ops);
            let no_grad = b.zeros(ops[1].shape());
            vec![
                grads[0].clone(),
                no_grad,
                grads[1].clone(),
                grads[2].clone(),
            ]
        })
        .remove(0)
}

/// The forward composite as ops: every slot through its expert, weights first.
fn forward_ops(_: &Builder, a: &[Tensor]) -> Vec<Tensor> {
    let hidden_t = experts_hidden_t(&a[0], &a[2]); // [E, f, G, C]
    let out_t = experts_out_t(&hidden_t, &a[3]); // [E, d, G, C]
    let slot_major = [2, 0, 3, 1];
    vec![
        out_t.transpose(&slot_major),
        hidden_t.transpose(&slot_major).stop_gradient(),
    ]
}

/// The gradient composite as ops: autodiff of [`forward_ops`] (which recomputes the
/// hidden activations instead of reading its fifth operand).
fn grad_ops(b: &Builder, a: &[Tensor]) -> Vec<Tensor> {
    let (x, wi, wo) = (&a[0], &a[2], &a[3]);
    let out = forward_ops(b, &a[..4]).remove(0);
    hlo::vjp(
        &[out],
        &[a[5].clone()],
        &[x.clone(), wi.clone(), wo.clone()],
    )
    .expect("the experts' ops are differentiable")
}
