//! The experts' MLP kernels as custom calls inside a compiled program give what their
//! composites' decompositions give as XLA ops: the forward pass over every slot, and
//! autodiff of it, for an expert with no filled slot, a full one, partly filled ones and
//! a count out of range.

mod common;

use hlo::ir::DotDims;
use hlo::{Builder, DType, Literal, Shape, Tensor};

const FORWARD: &str = "experts";
const GRAD: &str = "experts_grad";
const G: i64 = 2;
const E: i64 = 3;
const C: i64 = 5;
const D: i64 = 40;
const F: i64 = 72;
/// Filled slots per (group, expert); 9 is read as all 5.
const FILLED: [i32; 6] = [0, 5, 2, 3, 1, 9];

/// `relu(x wi^T)` and `relu(x wi^T) wo^T` per expert over every slot, `[G, E, C, *]`.
fn forward_ops(_: &Builder, a: &[Tensor]) -> Vec<Tensor> {
    let per_expert = |lhs: &Tensor, rhs: &Tensor| {
        lhs.dot_general(
            rhs,
            DotDims {
                lhs_batch: vec![1],
                rhs_batch: vec![0],
                lhs_contracting: vec![3],
                rhs_contracting: vec![2],
            },
        ) // [E, G, C, *]
    };
    let hidden = per_expert(&a[0], &a[2]).relu().transpose(&[1, 0, 2, 3]);
    let out = per_expert(&hidden, &a[3]).transpose(&[1, 0, 2, 3]);
    vec![out, hidden]
}

fn grad_ops(b: &Builder, a: &[Tensor]) -> Vec<Tensor> {
    let out = forward_ops(b, &a[..4]).remove(0);
    hlo::vjp(
        &[out],
        &[a[5].clone()],
        &[a[0].clone(), a[2].clone(), a[3].clone()],
    )
    .unwrap()
}

/// Slot values with the empty slots' rows zero, as the model's slots are.
fn slots(width: i64, seed: u64) -> Literal {
    let mut v = common::uniform_f32((G * E * C * width) as usize, seed);
    for (ge, &n) in FILLED.iter().enumerate() {
        let first_empty = ge as i64 * C + (n as i64).min(C);
        v[(first_empty * width) as usize..((ge as i64 + 1) * C * width) as usize].fill(0.0);
    }
    Literal::from_slice(&[G, E, C, width], &v).unwrap()
}

fn weights(dims: &[i64], seed: u64) -> Literal {
    let n = dims.iter().product::<i64>() as usize;
    let v = common::uniform_f32(n, seed);
    Literal::from_slice(dims, &v).unwrap()
}

/// Compiles `func` with the composites as ops and as our calls; both outputs.
fn both_ways(
    func: &hlo::Function,
    inputs: &[Literal],
    calls: usize,
) -> (Vec<Vec<f64>>, Vec<Vec<f64>>) {
    let client = common::client();
    let [forward, grad] = client.expert_mlp_calls().unwrap();
    let (with_calls, xla) =
        common::with_and_without_calls(func, &[(FORWARD, forward), (GRAD, grad)], calls);
    (
        common::run_on_device(&with_calls, inputs),
        common::run_on_device(&xla, inputs),
    )
}

#[test]
fn the_kernels_equal_the_ops() {
    if common::client().expert_mlp_calls().is_none() {
        assert!(
            !runtime::expert_mlp::available(),
            "AVX-512 is there but the kernels were not registered"
        );
        eprintln!("no AVX-512 here: the experts stay with XLA's products");
        return;
    }
    let f32s = |dims: &[i64]| Shape::new(DType::F32, dims.to_vec());
    let b = Builder::new("experts");
    let x = b.parameter("x", f32s(&[G, E, C, D]));
    let filled = b.parameter("filled", Shape::new(DType::S32, vec![G, E]));
    let wi = b.parameter("wi", f32s(&[E, F, D]));
    let wo = b.parameter("wo", f32s(&[E, D, F]));
    let d_out = b.parameter("d_out", f32s(&[G, E, C, D]));
    let ops = [x, filled, wi, wo];
    let outs = b.composite(FORWARD, &ops, forward_ops);
    let mut grad_args = ops.to_vec();
    grad_args.extend([outs[1].clone(), d_out]);
    let grads = b.composite(GRAD, &grad_args, grad_ops);
    let func = b
        .build(&[&outs[0], &outs[1], &grads[0], &grads[1], &grads[2]])
        .unwrap();
    let inputs = [
        slots(D, 1),
        Literal::from_slice(&[G, E], &FILLED).unwrap(),
        weights(&[E, F, D], 2),
        weights(&[E, D, F], 3),
        slots(D, 4), // no cotangent on empty slots, as in the model
    ];
    let (ours, xla) = both_ways(&func, &inputs, 2);
    // The hidden activations are compared on filled slots only (the kernel leaves the
    // others unwritten).
    let mut hidden = ours[1].clone();
    for (slot, row) in hidden.chunks_mut(F as usize).enumerate() {
        let (ge, s) = (slot / C as usize, slot % C as usize);
        if s >= (FILLED[ge] as usize).min(C as usize) {
            row.copy_from_slice(&xla[1][slot * F as usize..(slot + 1) * F as usize]);
        }
    }
    let names = ["out", "hidden", "dx", "dwi", "dwo"];
    for (i, name) in names.iter().enumerate() {
        let got = if i == 1 { &hidden } else { &ours[i] };
        assert!(xla[i].iter().any(|v| *v != 0.0), "{name} is all zero");
        common::assert_near(got, &xla[i], 1e-5);
    }
}
