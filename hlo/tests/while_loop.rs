//! The `while` primitive: builder errors (not panics) for malformed loops, the reference
//! interpreter against hand-computed values, the emitted regions, and autodiff refusing
//! to differentiate through a loop. The CPU plugin runs the same loops in
//! `runtime/tests/while_loop.rs`.

use hlo::{
    evaluate, grad, to_stablehlo, AutodiffError, Builder, DType, EmitOptions, Literal, Shape,
    Tensor,
};

fn s32() -> Shape {
    Shape::scalar(DType::S32)
}

/// `i` counts to `n`; `acc += x * i` on the way (x captured): acc = x * n(n-1)/2.
fn counter(b: &Builder, x: &Tensor, n: i64) -> Vec<Tensor> {
    let zero = b.scalar(0.0, DType::S32);
    let acc0 = b.zeros(x.shape());
    b.while_loop(
        &[zero, acc0],
        std::slice::from_ref(x),
        |b, v| v[0].lt(&b.scalar(n as f64, DType::S32)),
        |b, v| {
            let (i, acc, x) = (&v[0], &v[1], &v[2]);
            let next = i.add(&b.scalar(1.0, DType::S32));
            vec![next, acc.add(&x.mul(&i.convert(DType::F32)))]
        },
    )
}

#[test]
fn a_counter_and_an_accumulator_match_hand_computed_values() {
    let b = Builder::new("f");
    let x = b.parameter("x", Shape::new(DType::F32, [3]));
    let out = counter(&b, &x, 5);
    assert_eq!(out.len(), 2, "only the carried values come back");
    assert_eq!(out[0].shape(), &s32());
    let f = b.build(&[&out[0], &out[1]]).unwrap();
    let arg = Literal::from_slice(&[3], &[1.0f32, -2.0, 0.5]).unwrap();
    let res = evaluate(&f, &[arg]).unwrap();
    assert_eq!(res[0].to_vec::<i32>().unwrap(), vec![5]);
    assert_eq!(res[1].to_f64_vec(), vec![10.0, -20.0, 5.0]);
}

#[test]
fn a_loop_whose_condition_is_false_at_once_returns_its_init() {
    let b = Builder::new("f");
    let x = b.parameter("x", Shape::new(DType::F32, [2]));
    let out = counter(&b, &x, 0);
    let f = b.build(&[&out[0], &out[1]]).unwrap();
    let arg = Literal::from_slice(&[2], &[3.0f32, 4.0]).unwrap();
    let res = evaluate(&f, &[arg]).unwrap();
    assert_eq!(res[0].to_vec::<i32>().unwrap(), vec![0]);
    assert_eq!(res[1].to_f64_vec(), vec![0.0, 0.0]);
}

#[test]
fn a_loop_fills_a_buffer_with_dynamic_update_slice() {
    let b = Builder::new("f");
    let buf = b.zeros(&Shape::new(DType::S32, vec![2, 4]));
    let out = b.while_loop(
        &[b.scalar(0.0, DType::S32), buf],
        &[],
        |b, v| v[0].lt(&b.scalar(4.0, DType::S32)),
        |b, v| {
            let (i, buf) = (&v[0], &v[1]);
            // Column i gets i*i + row.
            let rows = b.iota(&Shape::new(DType::S32, vec![2, 1]), 0);
            let col = rows.add(&i.mul(i).broadcast_to(&[2, 1]));
            let zero = b.scalar(0.0, DType::S32);
            let next = buf.dynamic_update_slice(&col, &[zero, i.clone()]);
            vec![i.add(&b.scalar(1.0, DType::S32)), next]
        },
    );
    let f = b.build(&[&out[1]]).unwrap();
    let res = evaluate(&f, &[]).unwrap();
    assert_eq!(
        res[0].to_vec::<i32>().unwrap(),
        vec![0, 1, 4, 9, 1, 2, 5, 10]
    );
}

#[test]
fn a_condition_that_is_not_a_scalar_pred_is_a_build_error() {
    let b = Builder::new("f");
    let x = b.parameter("x", Shape::new(DType::F32, [3]));
    let line = line!() + 1;
    let out = b.while_loop(
        std::slice::from_ref(&x),
        &[],
        |_, v| v[0].gt(&v[0]),
        |_, v| vec![v[0].neg()],
    );
    assert_eq!(out.len(), 1);
    let err = b.build(&[&out[0]]).unwrap_err();
    assert_eq!(err.op, "while");
    assert_eq!(err.location.line(), line);
    assert!(
        err.message.contains("condition must return one pred[]"),
        "{err}"
    );
    assert!(err.message.contains("pred[3]"), "{err}");

    let b = Builder::new("f");
    let x = b.parameter("x", Shape::new(DType::F32, []));
    let out = b.while_loop(
        std::slice::from_ref(&x),
        &[],
        |_, v| v[0].clone(),
        |_, v| vec![v[0].neg()],
    );
    let err = b.build(&[&out[0]]).unwrap_err();
    assert!(
        err.message.contains("condition must return one pred[]"),
        "{err}"
    );
}

#[test]
fn body_outputs_that_do_not_match_the_carried_values_are_a_build_error() {
    let b = Builder::new("f");
    let i = b.parameter("i", s32());
    let x = b.parameter("x", Shape::new(DType::F32, [3]));
    let cond = |b: &Builder, v: &[Tensor]| v[0].lt(&b.scalar(3.0, DType::S32));
    // Wrong type.
    let out = b.while_loop(&[i.clone(), x.clone()], &[], cond, |_, v| {
        vec![v[0].clone(), v[1].slice_dim(0, 0, 2)]
    });
    assert_eq!(out.len(), 2);
    assert_eq!(
        out[1].shape(),
        x.shape(),
        "placeholders keep the carried types"
    );
    let err = b.build(&[&out[1]]).unwrap_err();
    assert!(err.message.contains("body must return"), "{err}");
    assert!(err.message.contains("f32[2]"), "{err}");

    // Too few values.
    let b = Builder::new("f");
    let i = b.parameter("i", s32());
    let x = b.parameter("x", Shape::new(DType::F32, [3]));
    let out = b.while_loop(&[i, x], &[], cond, |_, v| vec![v[0].clone()]);
    let err = b.build(&[&out[0]]).unwrap_err();
    assert!(err.message.contains("body must return"), "{err}");
}

#[test]
fn an_outer_value_used_inside_the_body_is_a_build_error() {
    let b = Builder::new("f");
    let x = b.parameter("x", Shape::new(DType::F32, [3]));
    let i = b.scalar(0.0, DType::S32);
    let out = b.while_loop(
        &[i, x.clone()],
        &[],
        |b, v| v[0].lt(&b.scalar(3.0, DType::S32)),
        |_, v| vec![v[0].clone(), v[1].add(&x)],
    );
    let err = b.build(&[&out[1]]).unwrap_err();
    assert!(err.message.contains("another builder's graph"), "{err}");

    let b = Builder::new("f");
    let x = b.parameter("x", Shape::new(DType::F32, [3]));
    let out = b.while_loop(
        &[b.scalar(0.0, DType::S32)],
        &[],
        |b, v| v[0].lt(&b.scalar(3.0, DType::S32)),
        |_, _| vec![x.sum_all()],
    );
    let err = b.build(&[&out[0]]).unwrap_err();
    assert!(err.message.contains("another graph"), "{err}");
}

#[test]
fn an_error_inside_the_body_is_reported_where_it_was_made() {
    let b = Builder::new("f");
    let x = b.parameter("x", Shape::new(DType::F32, [2, 3]));
    let mut line = 0;
    let out = b.while_loop(
        std::slice::from_ref(&x),
        &[],
        |b, _| b.scalar(0.0, DType::Pred),
        |_, v| {
            line = line!() + 1;
            let bad = v[0].matmul(&v[0]);
            vec![bad]
        },
    );
    let err = b.build(&[&out[0]]).unwrap_err();
    assert_eq!(err.op, "dot_general");
    assert_eq!(err.location.line(), line);
}

#[test]
fn nested_loops_emit_regions_with_unique_names() {
    let b = Builder::new("nested");
    let x = b.parameter("x", Shape::new(DType::F32, [2]));
    let out = b.while_loop(
        &[b.scalar(0.0, DType::S32), x.clone()],
        &[],
        |b, v| v[0].lt(&b.scalar(3.0, DType::S32)),
        |b, v| {
            let inner = counter(b, &v[1], 2);
            vec![v[0].add(&b.scalar(1.0, DType::S32)), inner[1].add(&v[1])]
        },
    );
    let f = b.build(&[&out[1]]).unwrap();
    // Each outer step: x <- x * (0 + 1) + x = 2x, three times.
    let arg = Literal::from_slice(&[2], &[1.0f32, -0.5]).unwrap();
    assert_eq!(
        evaluate(&f, &[arg]).unwrap()[0].to_f64_vec(),
        vec![8.0, -4.0]
    );

    let text = to_stablehlo(&f, &EmitOptions::default()).unwrap();
    assert_eq!(text.matches("\"stablehlo.while\"").count(), 2, "{text}");
    assert_eq!(text.matches("stablehlo.return").count(), 4, "{text}");
    // Every value is defined once in the whole module (regions see outer names).
    let mut defined = std::collections::HashSet::new();
    for l in text.lines() {
        let l = l.trim_start();
        let name = if let Some(rest) = l.strip_prefix('%') {
            rest.split([' ', ':']).next().unwrap_or("")
        } else if let Some(args) = l.strip_prefix("^bb0(") {
            for a in args.split(", ") {
                let n = a.trim_start_matches('%').split(':').next().unwrap_or("");
                assert!(defined.insert(n.to_string()), "{n} defined twice:\n{text}");
            }
            continue;
        } else {
            continue;
        };
        assert!(
            defined.insert(name.to_string()),
            "{name} defined twice:\n{text}"
        );
    }
}

#[test]
fn differentiating_through_a_loop_is_a_clear_error() {
    let b = Builder::new("f");
    let x = b.parameter("x", Shape::new(DType::F32, [3]));
    let out = counter(&b, &x, 4);
    let loss = out[1].sum_all();
    let err = grad(&loss, std::slice::from_ref(&x)).unwrap_err();
    assert!(
        matches!(err, AutodiffError::MissingRule { op: "while", .. }),
        "{err}"
    );
    assert!(err.to_string().contains("no VJP rule for `while`"));

    // A loop that no gradient needs to cross is fine.
    let y = out[1].stop_gradient().mul(&x).sum_all();
    assert!(grad(&y, std::slice::from_ref(&x)).is_ok());
}
