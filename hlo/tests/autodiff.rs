//! Autodiff behaviour beyond single rules: pruning, integer paths, tie conventions,
//! errors, and the function-level helpers.

mod common;

use common::{assert_close, f64s, s32s};
use hlo::ir::Op;
use hlo::{grad, grad_function, vjp, AutodiffError, Builder, DType, Shape};

fn eval1(b: &Builder, outs: &[&hlo::Tensor], args: &[hlo::Literal]) -> Vec<Vec<f64>> {
    let f = b.build(outs).unwrap();
    hlo::evaluate(&f, args)
        .unwrap()
        .iter()
        .map(|l| l.to_f64_vec())
        .collect()
}

#[test]
fn independent_wrt_gets_zeros_without_differentiating_anything() {
    let b = Builder::new("f");
    let x = b.parameter("x", Shape::new(DType::F64, [3]));
    let y = b.parameter("y", Shape::new(DType::F64, [3]));
    let loss = y.tanh().exp().sum_all();
    let before = b.num_nodes();
    let g = grad(&loss, std::slice::from_ref(&x)).unwrap();
    // Only grad's seed (a scalar 1) and the zeros (a scalar 0 and its broadcast).
    assert!(
        b.num_nodes() - before <= 3,
        "added {} nodes",
        b.num_nodes() - before
    );
    let out = eval1(
        &b,
        &[&g[0]],
        &[f64s(&[3], &[1.0; 3]), f64s(&[3], &[2.0; 3])],
    );
    assert_eq!(out[0], vec![0.0; 3]);
}

#[test]
fn unrelated_branches_are_not_differentiated() {
    let b = Builder::new("f");
    let x = b.parameter("x", Shape::new(DType::F64, [3]));
    let y = b.parameter("y", Shape::new(DType::F64, [3]));
    let fx = x.sin().mul(&x).sum_all();
    let branch_start = b.num_nodes();
    let gy = y.exp().log1p().tanh().sum_all(); // depends only on y
    let branch_end = b.num_nodes();
    let loss = fx.add(&gy);
    let before = b.num_nodes();
    let g = grad(&loss, std::slice::from_ref(&x)).unwrap();
    for id in before..b.num_nodes() {
        for v in b.node(id).operands {
            assert!(
                !(branch_start..branch_end).contains(&v.node),
                "gradient node %{id} ({}) reads the unrelated branch's node %{}",
                b.node(id).op.name(),
                v.node
            );
        }
    }
    let xs = [0.5, -1.0, 2.0];
    let out = eval1(&b, &[&g[0]], &[f64s(&[3], &xs), f64s(&[3], &[0.1; 3])]);
    let want: Vec<f64> = xs.iter().map(|x: &f64| x.cos() * x + x.sin()).collect();
    assert_close(&out[0], &want, 1e-12, "d(x sin x)");
}

#[test]
fn integer_paths_carry_no_gradient() {
    let b = Builder::new("f");
    let x = b.parameter("x", Shape::new(DType::F64, [3]));
    let ids = b.parameter("ids", Shape::new(DType::S32, [3]));
    // x -> s32 -> f64 is a cut path: only the direct use of x contributes.
    let through_int = x.convert(DType::S32).add(&ids).convert(DType::F64);
    let loss = through_int.mul(&x).sum_all();
    let g = grad(&loss, &[x.clone(), ids.clone()]).unwrap();
    assert_eq!(
        g[1].dtype(),
        DType::S32,
        "an integer wrt gets integer zeros"
    );
    let out = eval1(
        &b,
        &[&g[0], &g[1]],
        &[f64s(&[3], &[1.7, -2.2, 3.0]), s32s(&[3], &[1, 2, 3])],
    );
    assert_eq!(out[0], vec![2.0, 0.0, 6.0]);
    assert_eq!(out[1], vec![0.0; 3]);

    // Argmax-based routing: the one-hot (integer/pred path) is a constant for autodiff.
    let b = Builder::new("route");
    let logits = b.parameter("logits", Shape::new(DType::F64, [2, 3]));
    let onehot = logits.argmax(1).one_hot(3, DType::F64);
    let loss = onehot.mul(&logits).sum_all();
    let g = grad(&loss, std::slice::from_ref(&logits)).unwrap();
    let out = eval1(
        &b,
        &[&g[0]],
        &[f64s(&[2, 3], &[0.1, 0.9, 0.3, 2.0, -1.0, 0.5])],
    );
    assert_eq!(out[0], vec![0.0, 1.0, 0.0, 1.0, 0.0, 0.0]);
}

#[test]
fn ties_are_split_evenly() {
    let b = Builder::new("ties");
    let x = b.parameter("x", Shape::new(DType::F64, [4]));
    let y = b.parameter("y", Shape::new(DType::F64, [4]));
    let mx = x.max(&y).sum_all();
    let mn = x.min(&y).sum_all();
    let rmax = x.reduce_max(&[0]);
    let lo = b.scalar(0.0, DType::F64);
    let hi = b.scalar(1.0, DType::F64);
    let cl = x.clamp(&lo, &hi).sum_all();
    let gmax = grad(&mx, &[x.clone(), y.clone()]).unwrap();
    let gmin = grad(&mn, &[x.clone(), y.clone()]).unwrap();
    let gr = grad(&rmax, std::slice::from_ref(&x)).unwrap();
    let gc = grad(&cl, &[lo.clone(), x.clone(), hi.clone()]).unwrap();
    let xs = f64s(&[4], &[1.0, 0.0, 3.0, 3.0]);
    let ys = f64s(&[4], &[1.0, 2.0, 0.0, 5.0]);
    let out = eval1(
        &b,
        &[
            &gmax[0], &gmax[1], &gmin[0], &gmin[1], &gr[0], &gc[0], &gc[1], &gc[2],
        ],
        &[xs, ys],
    );
    assert_eq!(out[0], vec![0.5, 0.0, 1.0, 0.0], "max: x");
    assert_eq!(out[1], vec![0.5, 1.0, 0.0, 1.0], "max: y");
    assert_eq!(out[2], vec![0.5, 1.0, 0.0, 1.0], "min: x");
    assert_eq!(out[3], vec![0.5, 0.0, 1.0, 0.0], "min: y");
    assert_eq!(
        out[4],
        vec![0.0, 0.0, 0.5, 0.5],
        "reduce_max splits among ties"
    );
    // clamp to [0, 1] of [1, 0, 3, 3]: ties at the bounds go to x; 3 > hi goes to hi.
    assert_eq!(out[5], vec![0.0], "clamp: lo");
    assert_eq!(out[6], vec![1.0, 1.0, 0.0, 0.0], "clamp: x");
    assert_eq!(out[7], vec![2.0], "clamp: hi");
}

#[test]
fn missing_rule_names_the_op() {
    let b = Builder::new("f");
    let x = b.parameter("x", Shape::new(DType::F64, [2]));
    let loss = x.rem(&b.scalar(0.7, DType::F64)).sum_all();
    let err = grad(&loss, std::slice::from_ref(&x)).unwrap_err();
    assert!(matches!(
        err,
        AutodiffError::MissingRule {
            op: "remainder",
            ..
        }
    ));
    assert!(
        err.to_string().contains("no VJP rule for `remainder`"),
        "{err}"
    );
    // In a branch that does not depend on x, the same op is never visited.
    let y = b.parameter("y", Shape::new(DType::F64, [2]));
    let loss2 = y
        .rem(&b.scalar(0.7, DType::F64))
        .sum_all()
        .add(&x.square().sum_all());
    assert!(grad(&loss2, std::slice::from_ref(&x)).is_ok());
    assert!(grad(&loss2, std::slice::from_ref(&y)).is_err());
    // Behind stop_gradient it is fine too.
    let loss = x
        .stop_gradient()
        .rem(&b.scalar(0.7, DType::F64))
        .sum_all()
        .add(&x.sum_all());
    assert!(grad(&loss, &[x]).is_ok());
}

#[test]
fn bad_calls_are_errors_not_panics() {
    let b = Builder::new("f");
    let x = b.parameter("x", Shape::new(DType::F64, [2]));
    assert!(matches!(
        grad(&x, std::slice::from_ref(&x)),
        Err(AutodiffError::NotScalarLoss(_))
    ));
    let n = b.parameter("n", Shape::new(DType::S32, []));
    assert!(matches!(
        grad(&n, std::slice::from_ref(&x)),
        Err(AutodiffError::NotScalarLoss(_))
    ));
    let ct = b.zeros(&Shape::new(DType::F64, [3]));
    assert!(matches!(
        vjp(std::slice::from_ref(&x), &[ct], std::slice::from_ref(&x)),
        Err(AutodiffError::CotangentType { index: 0, .. })
    ));
    assert!(matches!(
        vjp(std::slice::from_ref(&x), &[], std::slice::from_ref(&x)),
        Err(AutodiffError::CotangentCount {
            outputs: 1,
            cotangents: 0
        })
    ));
    let other = Builder::new("g");
    let z = other.parameter("z", Shape::new(DType::F64, [2]));
    assert_eq!(
        grad(&x.sum_all(), &[z]).unwrap_err(),
        AutodiffError::ForeignTensor
    );

    let f = b.build(&[&x.sum_all()]).unwrap();
    assert!(matches!(
        grad_function(&f, &[5]),
        Err(AutodiffError::NoSuchParam { index: 5, .. })
    ));
}

#[test]
fn grad_function_appends_named_gradients() {
    let b = Builder::new("loss");
    let w = b.parameter("w", Shape::new(DType::F64, [2, 2]));
    let x = b.parameter("x", Shape::new(DType::F64, [3, 2]));
    let loss = x.matmul(&w).tanh().square().mean(&[0, 1]);
    let f = b.build_named(&[("loss", &loss)]).unwrap();
    let g = grad_function(&f, &[0]).unwrap();
    assert_eq!(g.params, f.params);
    assert_eq!(g.outputs.len(), 2);
    assert_eq!(g.outputs[0].name.as_deref(), Some("loss"));
    assert_eq!(g.outputs[1].name.as_deref(), Some("grad_w"));
    assert_eq!(g.output_shapes()[1], Shape::new(DType::F64, [2, 2]));
    // No node of the original is lost or changed in meaning: same loss value.
    let mut rng = common::Rng::new(4);
    let args = [
        rng.literal(&[2, 2], -1.0, 1.0),
        rng.literal(&[3, 2], -1.0, 1.0),
    ];
    let a = hlo::evaluate(&f, &args).unwrap();
    let c = hlo::evaluate(&g, &args).unwrap();
    assert_eq!(a[0], c[0]);
    // and the gradient is right.
    common::check_vjp(&f, &args, &[0, 1], 5);
    assert!(g
        .nodes
        .iter()
        .all(|n| !matches!(n.op, Op::Parameter { index } if index > 1)));
}

#[test]
fn mixed_precision_gradients_keep_each_values_type() {
    // f32 master weights, bf16 compute: the gradient comes back as f32.
    let b = Builder::new("mixed");
    let w = b.parameter("w", Shape::new(DType::F32, [3]));
    let loss = w.convert(DType::Bf16).tanh().convert(DType::F32).sum_all();
    let g = grad(&loss, std::slice::from_ref(&w)).unwrap();
    assert_eq!(g[0].dtype(), DType::F32);
    let f = b.build(&[&g[0]]).unwrap();
    let xs = [0.25f32, -0.5, 1.0];
    let out = hlo::evaluate(&f, &[hlo::Literal::from_slice(&[3], &xs).unwrap()]).unwrap();
    let want: Vec<f64> = xs
        .iter()
        .map(|&x| 1.0 - (x as f64).tanh().powi(2))
        .collect();
    // bf16 has 8 mantissa bits: agree to about 1%.
    assert_close(&out[0].to_f64_vec(), &want, 1e-2, "bf16 tanh gradient");
}

#[test]
fn random_jitter_is_a_constant_for_autodiff() {
    // Router input jitter: x * U(0.99, 1.01). The noise carries no gradient; x's gradient
    // is the noise itself.
    let b = Builder::new("jitter");
    let x = b.parameter("x", Shape::new(DType::F32, [4]));
    let state = b.parameter("rng", Shape::new(DType::U64, [2]));
    let (_, noise) = b.uniform(&state, &[4], 0.99, 1.01);
    let loss = x.mul(&noise).sum_all();
    let before = b.num_nodes();
    let g = grad(&loss, std::slice::from_ref(&x)).unwrap();
    let f = b.build(&[&g[0]]).unwrap();
    // d(x * noise)/dx = noise: the multiply's rule reads the noise node, and no gradient
    // node reads anything inside the generator (between the state and the noise).
    let (state_node, noise_node) = (state.value().node, noise.value().node);
    let new_nodes = &f.nodes[before..];
    assert!(new_nodes
        .iter()
        .any(|n| n.operands.iter().any(|v| v.node == noise_node)));
    for n in new_nodes {
        assert!(!matches!(n.op, Op::RngBitGenerator { .. }));
        for v in &n.operands {
            assert!(
                !(state_node..noise_node).contains(&v.node),
                "reads generator internals: {:?}",
                n.op
            );
        }
    }
}

#[test]
fn malformed_functions_are_errors_in_grad_function() {
    let b = Builder::new("f");
    let x = b.parameter("x", Shape::new(DType::F64, [2]));
    let mut f = b.build(&[&x.square().sum_all()]).unwrap();
    f.nodes[1].operands[0].node = 7;
    assert!(matches!(
        grad_function(&f, &[0]),
        Err(AutodiffError::DanglingValue { node: 7, .. })
    ));
}
