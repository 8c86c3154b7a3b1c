//! Every differentiable primitive's VJP against central finite differences (f64, on the
//! reference interpreter, random inputs from a fixed seed, several shapes), plus the
//! pass-through rules that finite differences cannot see.

mod common;

use common::{assert_close, f64s};
use hlo::gradcheck::{interpreter, op_cases};
use hlo::ir::Op;
use hlo::{grad, Builder, DType, PartitionSpec, Shape};
use std::collections::BTreeSet;

#[test]
fn every_op_case_matches_finite_differences() {
    let cases = op_cases().unwrap();
    assert!(cases.len() > 100, "{} cases", cases.len());
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|c| c.check(&interpreter).err().map(|e| e.to_string()))
        .collect();
    assert!(
        failures.is_empty(),
        "{} failing case(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn the_cases_cover_every_differentiable_primitive() {
    let seen: BTreeSet<&str> = op_cases()
        .unwrap()
        .iter()
        .flat_map(|c| {
            c.function
                .nodes
                .iter()
                .map(|n| n.op.name())
                .collect::<Vec<_>>()
        })
        .collect();
    let required = [
        "negate",
        "abs",
        "exponential",
        "log",
        "log_plus_one",
        "tanh",
        "logistic",
        "sqrt",
        "rsqrt",
        "sign",
        "floor",
        "cosine",
        "sine",
        "add",
        "subtract",
        "multiply",
        "divide",
        "maximum",
        "minimum",
        "power",
        "broadcast_in_dim",
        "reshape",
        "transpose",
        "slice",
        "dynamic_slice",
        "dynamic_update_slice",
        "concatenate",
        "pad",
        "select",
        "clamp",
        "dot_general",
        "reduce",
        "gather",
        "scatter_add",
        "sort",
        "sharding_constraint",
    ];
    let missing: Vec<&str> = required
        .iter()
        .copied()
        .filter(|r| !seen.contains(r))
        .collect();
    assert!(
        missing.is_empty(),
        "no finite-difference case uses {missing:?}"
    );
}

#[test]
fn a_wrong_rule_would_be_caught() {
    // The checker itself must be able to fail: sin's derivative is not sin.
    let b = Builder::new("fake");
    let x = b.parameter("x", Shape::new(DType::F64, [3]));
    let f = b.build(&[&x.sin()]).unwrap();
    let ok = hlo::gradcheck::check_vjp(
        &interpreter,
        "sin",
        &f,
        &[f64s(&[3], &[0.1, 0.2, 0.3])],
        &[0],
        1,
    );
    assert!(ok.is_ok());
    // Same function, but compare against cos instead (a graph whose VJP differs).
    let b = Builder::new("fake");
    let x = b.parameter("x", Shape::new(DType::F64, [3]));
    let wrong = x
        .sin()
        .stop_gradient()
        .add(&x.cos())
        .sub(&x.cos().stop_gradient());
    let f = b.build(&[&wrong]).unwrap();
    let err = hlo::gradcheck::check_vjp(
        &interpreter,
        "wrong",
        &f,
        &[f64s(&[3], &[0.1, 0.2, 0.3])],
        &[0],
        1,
    )
    .unwrap_err();
    assert!(err.to_string().contains("finite differences"), "{err}");
}

#[test]
fn convert_passes_the_cotangent_back_in_the_operand_type() {
    // f64 -> f32 -> f64: checked exactly, since f32 rounding would swamp finite differences.
    let b = Builder::new("convert");
    let x = b.parameter("x", Shape::new(DType::F64, [3]));
    let y = x.convert(DType::F32).mul_scalar(3.0).convert(DType::F64);
    let g = grad(&y.sum_all(), std::slice::from_ref(&x)).unwrap();
    assert_eq!(g[0].dtype(), DType::F64);
    let f = b.build(&[&g[0]]).unwrap();
    let out = hlo::evaluate(&f, &[f64s(&[3], &[1.0, 2.0, 3.0])]).unwrap();
    assert_eq!(out[0].to_f64_vec(), vec![3.0; 3]);
}

#[test]
fn sharding_constraint_constrains_the_cotangent_the_same_way() {
    let b = Builder::new("shard");
    let x = b.parameter("x", Shape::new(DType::F64, [2, 4]));
    let spec = PartitionSpec::new(&[None, Some("model")]);
    let y = x.with_sharding(spec.clone()).square().sum_all();
    let before = b.num_nodes();
    let g = grad(&y, std::slice::from_ref(&x)).unwrap();
    let constrained = (before..b.num_nodes())
        .filter(|&i| b.node(i).op == Op::ShardingConstraint { spec: spec.clone() })
        .count();
    assert_eq!(constrained, 1);
    let f = b.build(&[&g[0]]).unwrap();
    let xs: Vec<f64> = (1..=8).map(f64::from).collect();
    let out = hlo::evaluate(&f, &[f64s(&[2, 4], &xs)]).unwrap();
    assert_eq!(
        out[0].to_f64_vec(),
        xs.iter().map(|v| 2.0 * v).collect::<Vec<_>>()
    );
}

#[test]
fn stop_gradient_blocks_the_cotangent() {
    // x * stop_gradient(x) has gradient x, not 2x (finite differences would see 2x).
    let b = Builder::new("stop_gradient");
    let x = b.parameter("x", Shape::new(DType::F64, [3]));
    let y = x.mul(&x.stop_gradient()).sum_all();
    let g = grad(&y, std::slice::from_ref(&x)).unwrap();
    let f = b.build(&[&g[0]]).unwrap();
    let out = hlo::evaluate(&f, &[f64s(&[3], &[1.5, -2.0, 0.25])]).unwrap();
    assert_eq!(out[0].to_f64_vec(), vec![1.5, -2.0, 0.25]);
}

#[test]
fn gradients_with_respect_to_intermediates_accumulate_all_uses() {
    let b = Builder::new("mid");
    let x = b.parameter("x", Shape::new(DType::F64, [2]));
    let h = x.mul_scalar(3.0);
    let loss = h.square().sum_all().add(&x.sum_all());
    let g = grad(&loss, &[h.clone(), x.clone()]).unwrap();
    let f = b.build(&[&g[0], &g[1]]).unwrap();
    let out = hlo::evaluate(&f, &[f64s(&[2], &[1.0, -2.0])]).unwrap();
    assert_close(&out[0].to_f64_vec(), &[6.0, -12.0], 1e-12, "d/dh = 2h");
    assert_close(
        &out[1].to_f64_vec(),
        &[19.0, -35.0],
        1e-12,
        "d/dx = 18x + 1",
    );
}

#[test]
fn embedding_rows_never_looked_up_get_zero_gradient() {
    let b = Builder::new("take_rows");
    let table = b.parameter("table", Shape::new(DType::F64, [5, 3]));
    let ids = b.parameter("ids", Shape::new(DType::S32, [2, 3]));
    let f = b.build(&[&table.take_rows(&ids)]).unwrap();
    let args = [
        common::Rng::new(1).literal(&[5, 3], -1.0, 1.0),
        common::s32s(&[2, 3], &[4, 1, 4, 0, 2, 4]),
    ];
    let g = common::check_vjp(&f, &args, &[0], 90);
    assert!(
        g[0][9..12].iter().all(|&v| v == 0.0),
        "row 3 is never gathered"
    );
    assert!(
        g[0][12..15].iter().all(|&v| v != 0.0),
        "row 4 is gathered three times"
    );
}

#[test]
fn cases_compare_two_evaluators() {
    // What a backend test does: compare every case with the interpreter.
    let mut cases = op_cases().unwrap();
    cases.extend(hlo::gradcheck::composite_cases().unwrap());
    for c in &cases {
        c.compare(&interpreter, &interpreter, 0.0).unwrap();
    }
    // An evaluator that is slightly off is caught.
    let off = |f: &hlo::Function, a: &[hlo::Literal]| {
        interpreter(f, a).map(|outs| {
            outs.iter()
                .map(|o| match o.dtype() {
                    DType::F64 => {
                        let v: Vec<f64> = o.to_f64_vec().iter().map(|x| x * 1.001).collect();
                        hlo::Literal::from_slice(o.dims(), &v).unwrap()
                    }
                    _ => o.clone(),
                })
                .collect()
        })
    };
    let err = cases[0].compare(&interpreter, &off, 1e-6).unwrap_err();
    assert!(
        err.to_string().contains("differs between evaluators"),
        "{err}"
    );
}
