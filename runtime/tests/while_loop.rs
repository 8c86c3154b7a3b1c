//! `while` loops emitted as StableHLO run on the CPU plugin and agree with the reference
//! interpreter and with hand-computed values: a counter with an accumulator (a captured
//! operand), a buffer filled by dynamic_update_slice, nested loops, and an early exit.

mod common;

use common::client;
use hlo::{evaluate, to_stablehlo, Builder, DType, EmitOptions, Function, Literal, Shape, Tensor};
use runtime::{Buffer, CompileOptions};

fn run_on_plugin(f: &Function, args: &[Literal]) -> Vec<Literal> {
    let text = to_stablehlo(f, &EmitOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    let c = client();
    let exe = c
        .compile(&text, &CompileOptions::default())
        .unwrap_or_else(|e| panic!("{}: {e}\n{text}", f.name));
    let bufs: Vec<Buffer> = args.iter().map(|a| c.upload(a, 0).unwrap()).collect();
    let out = exe.execute(&[bufs.iter().collect()]).unwrap();
    out[0].iter().map(|b| b.to_literal().unwrap()).collect()
}

/// Runs `f` on both evaluators, checks they agree exactly and returns the outputs.
fn both(f: &Function, args: &[Literal]) -> Vec<Vec<f64>> {
    let host = evaluate(f, args).unwrap_or_else(|e| panic!("{}: {e}", f.name));
    let device = run_on_plugin(f, args);
    assert_eq!(host.len(), device.len());
    for (h, d) in host.iter().zip(&device) {
        assert_eq!(h.shape(), d.shape());
        assert_eq!(h.to_f64_vec(), d.to_f64_vec(), "{}", f.name);
    }
    host.iter().map(Literal::to_f64_vec).collect()
}

fn s32(b: &Builder, v: i64) -> Tensor {
    b.scalar(v as f64, DType::S32)
}

/// `i` counts to `n`; `acc += x * i`: acc = x * n(n-1)/2.
fn counter(b: &Builder, x: &Tensor, n: &Tensor) -> Vec<Tensor> {
    b.while_loop(
        &[s32(b, 0), b.zeros(x.shape())],
        &[x.clone(), n.clone()],
        |_, v| v[0].lt(&v[3]),
        |b, v| {
            let (i, acc, x) = (&v[0], &v[1], &v[2]);
            vec![i.add(&s32(b, 1)), acc.add(&x.mul(&i.convert(DType::F32)))]
        },
    )
}

#[test]
fn a_counter_with_a_captured_operand() {
    let b = Builder::new("counter");
    let x = b.parameter("x", Shape::new(DType::F32, [3]));
    let n = b.parameter("n", Shape::scalar(DType::S32));
    let out = counter(&b, &x, &n);
    let f = b.build(&[&out[0], &out[1]]).unwrap();
    let xs = Literal::from_slice(&[3], &[1.0f32, -2.0, 0.25]).unwrap();
    for steps in [0, 1, 7] {
        let got = both(&f, &[xs.clone(), Literal::scalar(steps)]);
        let tri = (steps * (steps - 1) / 2) as f64;
        assert_eq!(got[0], vec![steps as f64]);
        assert_eq!(got[1], vec![tri, -2.0 * tri, 0.25 * tri]);
    }
}

#[test]
fn a_buffer_filled_by_dynamic_update_slice_with_an_early_exit() {
    // Writes i*i + row into column i until column `stop` or a value above 20 was written.
    let b = Builder::new("fill");
    let stop = b.parameter("stop", Shape::scalar(DType::S32));
    let buf = b.zeros(&Shape::new(DType::S32, vec![2, 6]));
    let done = b.scalar(0.0, DType::Pred);
    let out = b.while_loop(
        &[s32(&b, 0), buf, done],
        std::slice::from_ref(&stop),
        |_, v| v[0].lt(&v[3]).and(&v[2].not()),
        |b, v| {
            let (i, buf) = (&v[0], &v[1]);
            let rows = b.iota(&Shape::new(DType::S32, vec![2, 1]), 0);
            let col = rows.add(&i.mul(i).broadcast_to(&[2, 1]));
            let next = buf.dynamic_update_slice(&col, &[s32(b, 0), i.clone()]);
            let done = col.reduce_max(&[0, 1]).gt(&s32(b, 20));
            vec![i.add(&s32(b, 1)), next, done]
        },
    );
    let f = b.build(&[&out[0], &out[1]]).unwrap();
    let got = both(&f, &[Literal::scalar(3i32)]);
    assert_eq!(got[0], vec![3.0]);
    assert_eq!(got[1], vec![0., 1., 4., 0., 0., 0., 1., 2., 5., 0., 0., 0.]);
    // Column 5 holds 25/26 > 20: the loop stops after writing it, long before 100.
    let got = both(&f, &[Literal::scalar(100i32)]);
    assert_eq!(got[0], vec![6.0]);
    assert_eq!(
        got[1],
        vec![0., 1., 4., 9., 16., 25., 1., 2., 5., 10., 17., 26.]
    );
}

#[test]
fn nested_loops() {
    let b = Builder::new("nested");
    let x = b.parameter("x", Shape::new(DType::F32, [2]));
    let out = b.while_loop(
        &[s32(&b, 0), x.clone()],
        &[],
        |b, v| v[0].lt(&s32(b, 3)),
        |b, v| {
            // Each step: x <- x * (0 + 1 + ... + i) + x.
            let n = v[0].add(&s32(b, 2));
            let inner = counter(b, &v[1], &n);
            vec![v[0].add(&s32(b, 1)), inner[1].add(&v[1])]
        },
    );
    let f = b.build(&[&out[1]]).unwrap();
    let got = both(&f, &[Literal::from_slice(&[2], &[1.0f32, -0.5]).unwrap()]);
    // Factors 1+1, 3+1, 6+1: 56.
    assert_eq!(got[0], vec![56.0, -28.0]);
}

#[test]
fn random_bits_drawn_inside_a_loop_are_deterministic_and_advance() {
    let b = Builder::new("rng");
    let key = b.parameter("key", Shape::new(DType::U64, [2]));
    let draws = b.zeros(&Shape::new(DType::U32, vec![4]));
    let out = b.while_loop(
        &[s32(&b, 0), key, draws],
        &[],
        |b, v| v[0].lt(&s32(b, 4)),
        |b, v| {
            let (state, bits) = b.rng_bit_generator(&v[1], &Shape::new(DType::U32, vec![1]));
            let next = v[2].dynamic_update_slice(&bits, std::slice::from_ref(&v[0]));
            vec![v[0].add(&s32(b, 1)), state, next]
        },
    );
    let f = b.build(&[&out[2]]).unwrap();
    let key = Literal::from_slice(&[2], &[7u64, 0]).unwrap();
    let a = run_on_plugin(&f, std::slice::from_ref(&key))[0]
        .to_vec::<u32>()
        .unwrap();
    let again = run_on_plugin(&f, &[key])[0].to_vec::<u32>().unwrap();
    assert_eq!(a, again);
    let mut distinct = a.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), 4, "each iteration draws new bits: {a:?}");
}
