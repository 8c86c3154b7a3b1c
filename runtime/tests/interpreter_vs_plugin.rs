//! Differential test: composite programs and their gradients (built by `hlo::autodiff`)
//! give the same values on the host reference interpreter (`hlo::evaluate`) and, emitted
//! by `hlo::emit`, on the real CPU plugin. Gradient graphs use op patterns (transposed
//! dot_generals, scatter-adds, broadcasts of cotangents) that hand-written tests miss.

mod common;

use common::client;
use hlo::autodiff::grad_function;
use hlo::{evaluate, to_stablehlo, Builder, DType, EmitOptions, Function, Literal, Shape, Tensor};
use runtime::{Buffer, CompileOptions};

fn run_on_plugin(f: &Function, args: &[Literal]) -> Vec<Literal> {
    let text = to_stablehlo(f, &EmitOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    let c = client();
    let exe = c
        .compile(&text, &CompileOptions::default())
        .unwrap_or_else(|e| panic!("{}: {e}", f.name));
    let bufs: Vec<Buffer> = args.iter().map(|a| c.upload(a, 0).unwrap()).collect();
    let out = exe.execute(&[bufs.iter().collect()]).unwrap();
    out[0].iter().map(|b| b.to_literal().unwrap()).collect()
}

/// Deterministic values in [lo, hi).
fn values(n: usize, seed: u64, lo: f64, hi: f64) -> Vec<f64> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            lo + (hi - lo) * ((s >> 11) as f64 / (1u64 << 53) as f64)
        })
        .collect()
}

fn random(shape: &Shape, seed: u64) -> Literal {
    let n = shape.element_count() as usize;
    let v = values(n, seed, -1.0, 1.0);
    match shape.dtype {
        DType::F64 => Literal::from_slice(&shape.dims, &v).unwrap(),
        DType::F32 => {
            let v: Vec<f32> = v.iter().map(|&x| x as f32).collect();
            Literal::from_slice(&shape.dims, &v).unwrap()
        }
        DType::S32 => {
            let v: Vec<i32> = v.iter().map(|&x| ((x + 1.0) * 5.0) as i32).collect();
            Literal::from_slice(&shape.dims, &v).unwrap()
        }
        d => panic!("no random values for {d}"),
    }
}

/// Runs `f` and its gradient with respect to every floating-point parameter on both
/// evaluators and compares every output.
fn check(f: &Function, tol: f64) {
    let args: Vec<Literal> = f
        .params
        .iter()
        .enumerate()
        .map(|(i, p)| random(&p.shape, i as u64 + 1))
        .collect();
    let wrt: Vec<usize> = (0..f.params.len())
        .filter(|&i| f.params[i].shape.dtype.is_float())
        .collect();
    let g = grad_function(f, &wrt).unwrap_or_else(|e| panic!("{}: {e}", f.name));
    for prog in [f, &g] {
        let host = evaluate(prog, &args).unwrap_or_else(|e| panic!("{}: {e}", prog.name));
        let device = run_on_plugin(prog, &args);
        assert_eq!(host.len(), device.len());
        for (k, (h, d)) in host.iter().zip(&device).enumerate() {
            assert_eq!(h.shape(), d.shape(), "{} output {k}", prog.name);
            for (i, (a, b)) in h.to_f64_vec().iter().zip(d.to_f64_vec()).enumerate() {
                assert!(
                    (a - b).abs() <= tol * a.abs().max(1.0),
                    "{} output {k} element {i}: interpreter {a}, plugin {b}",
                    prog.name
                );
            }
        }
    }
}

fn shape(d: DType, dims: &[i64]) -> Shape {
    Shape::new(d, dims.to_vec())
}

/// Masked scaled dot-product attention, then a sum of squares.
fn attention(d: DType) -> Function {
    let b = Builder::new("attention");
    let q = b.parameter("q", shape(d, &[2, 4, 8]));
    let k = b.parameter("k", shape(d, &[2, 4, 8]));
    let v = b.parameter("v", shape(d, &[2, 4, 8]));
    let scores = q
        .matmul(&k.transpose(&[0, 2, 1]))
        .mul_scalar(1.0 / 8f64.sqrt());
    let i = b.iota(&shape(DType::S32, &[4, 4]), 0);
    let j = b.iota(&shape(DType::S32, &[4, 4]), 1);
    let causal = j.le(&i);
    let masked = causal.select(&scores, &b.scalar(-1e9, d));
    let out = masked.softmax(-1).matmul(&v);
    let loss = out.square().sum_all();
    b.build(&[&loss, &out]).unwrap()
}

/// Embedding lookup, a projection and softmax cross-entropy against integer labels.
fn embedding_cross_entropy(d: DType) -> Function {
    let b = Builder::new("embedding_cross_entropy");
    let table = b.parameter("table", shape(d, &[10, 6]));
    let ids = b.parameter("ids", shape(DType::S32, &[3, 4]));
    let w = b.parameter("w", shape(d, &[6, 10]));
    let labels = b.parameter("labels", shape(DType::S32, &[3, 4]));
    let h = table.take_rows(&ids).tanh();
    let logits = h.matmul(&w);
    let logp = logits.log_softmax(-1);
    let picked = logp.mul(&labels.one_hot(10, d)).reduce_sum(&[2]);
    let loss = picked.neg().mean(&[0, 1]);
    b.build(&[&loss, &logits.argmax(-1)]).unwrap()
}

/// Layer norm, swish, a layout shuffle and top-k values.
fn norm_and_layout(d: DType) -> Function {
    let b = Builder::new("norm_and_layout");
    let x = b.parameter("x", shape(d, &[4, 6]));
    let gamma = b.parameter("gamma", shape(d, &[6]));
    let mean = x.mean(&[1]).expand_dim(1);
    let centered = x.sub(&mean);
    let var = centered.square().mean(&[1]).expand_dim(1);
    let y = centered
        .mul(&var.add_scalar(1e-5).rsqrt())
        .mul(&gamma)
        .swish();
    let shuffled = b
        .concatenate(&[y.slice_dim(1, 3, 6), y.slice_dim(1, 0, 3)], 1)
        .transpose(&[1, 0])
        .pad(&b.scalar(0.0, d), &[1, 0], &[0, 1], &[0, 0])
        .reshape(&[7, 5]);
    let (top, _) = shuffled.top_k(2);
    let loss = top.sum_all().add(&shuffled.reduce_max(&[0]).sum_all());
    b.build(&[&loss, &shuffled]).unwrap()
}

/// Top-1 routing to two tiny experts, weighted by the router probability.
fn routing(d: DType) -> Function {
    let b = Builder::new("routing");
    let x = b.parameter("x", shape(d, &[5, 4]));
    let router = b.parameter("router", shape(d, &[4, 2]));
    let e0 = b.parameter("e0", shape(d, &[4, 4]));
    let e1 = b.parameter("e1", shape(d, &[4, 4]));
    let probs = x.matmul(&router).softmax(-1);
    let choice = probs.argmax(-1);
    let mask = choice.one_hot(2, d);
    let top_p = probs.mul(&mask).reduce_sum(&[1]).expand_dim(1);
    let out0 = x.matmul(&e0).relu();
    let out1 = x.matmul(&e1).relu();
    let pick = |k: i64| mask.slice_dim(1, k, k + 1);
    let mixed: Tensor = out0.mul(&pick(0)).add(&out1.mul(&pick(1))).mul(&top_p);
    let loss = mixed.square().mean(&[0, 1]);
    b.build(&[&loss, &choice]).unwrap()
}

#[test]
fn interpreter_and_plugin_agree_in_f64() {
    for f in [
        attention(DType::F64),
        embedding_cross_entropy(DType::F64),
        norm_and_layout(DType::F64),
        routing(DType::F64),
    ] {
        check(&f, 1e-10);
    }
}

#[test]
fn interpreter_and_plugin_agree_in_f32() {
    for f in [
        attention(DType::F32),
        embedding_cross_entropy(DType::F32),
        norm_and_layout(DType::F32),
        routing(DType::F32),
    ] {
        check(&f, 1e-4);
    }
}
