//! `Builder::composite`: a named computation that means its decomposition (interpreter,
//! autodiff, emission without a kernel) and that a backend may run as its own kernel.

mod common;

use common::{assert_close, f64s};
use hlo::ir::DotDims;
use hlo::{grad, to_stablehlo, Builder, DType, EmitOptions, Shape, Tensor};

/// `log(exp(x) + y . y)` with the product inside the composite.
fn decomposition(_: &Builder, a: &[Tensor]) -> Vec<Tensor> {
    let yy = a[1].dot_general(
        &a[1],
        DotDims {
            lhs_contracting: vec![0],
            rhs_contracting: vec![0],
            ..Default::default()
        },
    );
    vec![a[0].exp().add(&yy.broadcast_to(a[0].dims())).log()]
}

fn build(fused: bool) -> (Builder, Tensor, Tensor, Tensor) {
    let b = Builder::new("f");
    let x = b.parameter("x", Shape::new(DType::F64, [3]));
    let y = b.parameter("y", Shape::new(DType::F64, [2]));
    let out = if fused {
        b.composite("test.softplus", &[x.clone(), y.clone()], decomposition)
            .remove(0)
    } else {
        decomposition(&b, &[x.clone(), y.clone()]).remove(0)
    };
    (b, x, y, out)
}

#[test]
fn a_composite_computes_and_differentiates_as_its_decomposition() {
    let args = [f64s(&[3], &[0.5, -1.0, 2.0]), f64s(&[2], &[0.3, -0.7])];
    let run = |fused: bool| {
        let (b, x, y, out) = build(fused);
        let loss = out.mul(&out).sum_all();
        let g = grad(&loss, &[x, y]).unwrap();
        let f = b.build(&[&out, &g[0], &g[1]]).unwrap();
        hlo::evaluate(&f, &args)
            .unwrap()
            .iter()
            .map(|l| l.to_f64_vec())
            .collect::<Vec<_>>()
    };
    let (fused, plain) = (run(true), run(false));
    for (a, b) in fused.iter().zip(&plain) {
        assert_close(a, b, 1e-12, "fused against plain");
    }
    // And the values themselves: log(e^x + 0.58).
    let want: Vec<f64> = [0.5f64, -1.0, 2.0]
        .iter()
        .map(|x| (x.exp() + 0.58).ln())
        .collect();
    assert_close(&fused[0], &want, 1e-12, "values");
}

#[test]
fn a_composite_is_emitted_inline_or_as_the_backends_call() {
    let (b, _, _, out) = build(true);
    let f = b.build(&[&out]).unwrap();
    let inline = to_stablehlo(&f, &EmitOptions::default()).unwrap();
    assert!(inline.contains("stablehlo.dot_general %y, %y"), "{inline}");
    assert!(inline.contains("stablehlo.log"), "{inline}");
    assert!(!inline.contains("custom_call"), "{inline}");

    let mut opts = EmitOptions::default();
    opts.composite_calls
        .insert("test.softplus".into(), "my_kernel".into());
    let called = to_stablehlo(&f, &opts).unwrap();
    assert!(
        called.contains(
            "= stablehlo.custom_call @my_kernel(%x, %y) {api_version = 4 : i32} : \
             (tensor<3xf64>, tensor<2xf64>) -> tensor<3xf64>"
        ),
        "{called}"
    );
    assert!(!called.contains("stablehlo.log"), "{called}");
    // The call's work is counted as its decomposition's.
    assert_eq!(hlo::dot_work(&f).dots, 1);
}

#[test]
fn a_decomposition_must_take_the_operands() {
    let b = Builder::new("f");
    let x = b.parameter("x", Shape::new(DType::F32, [3]));
    let _ = b.composite("bad", &[x], |b, _| vec![b.scalar(1.0, DType::F32)]);
    assert!(
        b.error().is_none(),
        "a decomposition may ignore its operands"
    );
    let y = b.parameter("y", Shape::new(DType::F32, [3]));
    let other = Builder::new("other").parameter("z", Shape::new(DType::F32, [3]));
    let _ = b.composite("bad", &[y], move |_, _| vec![other]);
    let err = b.error().expect("a value of another graph is refused");
    assert!(err.to_string().contains("another graph"), "{err}");
}

/// `x^3` whose VJP is given: autodiff uses it (here off by a factor 2, to be seen).
fn cube(b: &Builder, x: &Tensor, factor: f64) -> Tensor {
    b.composite_with_vjp(
        "test.cube",
        std::slice::from_ref(x),
        |_, a| vec![a[0].mul(&a[0]).mul(&a[0])],
        move |_, a, _outs, cts| vec![a[0].mul(&a[0]).mul_scalar(3.0 * factor).mul(&cts[0])],
    )
    .remove(0)
}

#[test]
fn a_composite_with_a_vjp_is_differentiated_by_it() {
    let args = [f64s(&[3], &[0.5, -1.0, 2.0])];
    for factor in [1.0, 2.0] {
        let b = Builder::new("f");
        let x = b.parameter("x", Shape::new(DType::F64, [3]));
        let y = cube(&b, &x, factor);
        let g = grad(&y.sum_all(), std::slice::from_ref(&x)).unwrap();
        let f = b.build(&[&y, &g[0]]).unwrap();
        let out = hlo::evaluate(&f, &args).unwrap();
        assert_close(&out[0].to_f64_vec(), &[0.125, -1.0, 8.0], 1e-12, "values");
        let want: Vec<f64> = [0.75, 3.0, 12.0].iter().map(|g| g * factor).collect();
        assert_close(&out[1].to_f64_vec(), &want, 1e-12, "the VJP's gradient");
    }
}

#[test]
fn a_vjp_must_return_one_cotangent_per_operand() {
    let b = Builder::new("f");
    let x = b.parameter("x", Shape::new(DType::F32, [3]));
    let _ = b.composite_with_vjp(
        "bad",
        std::slice::from_ref(&x),
        |_, a| vec![a[0].exp()],
        |b, _, _, _| vec![b.scalar(0.0, DType::F32)],
    );
    let err = b
        .error()
        .expect("a scalar cotangent for a [3] operand is refused");
    assert!(err.to_string().contains("the VJP must take"), "{err}");
}
