//! Composite programs shaped like GPTSAN's training step: attention with a causal mask,
//! softmax cross-entropy with ignored labels, and a small Switch-Transformer block. Each
//! is checked against hand-computed values and against finite differences.

mod common;

use common::{assert_close, check_vjp, f64s, s32s, Rng};
use hlo::ir::{DotDims, GatherDims};
use hlo::{grad, Builder, DType, Literal, Shape, Tensor};

/// Softmax along the last axis, written with raw primitives (the max is differentiated
/// through, which must cancel out).
fn softmax_last(x: &Tensor) -> Tensor {
    let last = x.rank() as i64 - 1;
    let m = x.reduce_max(&[last]).expand_dim(last);
    let e = x.sub(&m).exp();
    e.div(&e.reduce_sum(&[last]).expand_dim(last))
}

/// `[B, T, dh]` q, k, v -> causal attention output `[B, T, dh]`.
fn attention(b: &Builder, q: &Tensor, k: &Tensor, v: &Tensor) -> Tensor {
    let (t, dh) = (q.dims()[1], q.dims()[2]);
    let scores = q
        .dot_general(
            k,
            DotDims {
                lhs_batch: vec![0],
                rhs_batch: vec![0],
                lhs_contracting: vec![2],
                rhs_contracting: vec![2],
            },
        )
        .mul_scalar(1.0 / (dh as f64).sqrt());
    let rows = b.iota(&Shape::new(DType::S32, [t, t]), 0);
    let cols = b.iota(&Shape::new(DType::S32, [t, t]), 1);
    let visible = rows.ge(&cols);
    let masked = visible.select(&scores, &b.scalar(-1e9, DType::F64));
    let p = softmax_last(&masked);
    p.dot_general(
        v,
        DotDims {
            lhs_batch: vec![0],
            rhs_batch: vec![0],
            lhs_contracting: vec![2],
            rhs_contracting: vec![1],
        },
    )
}

/// Plain-Rust causal attention for one batch element, row-major `[T, dh]`.
fn attention_reference(q: &[f64], k: &[f64], v: &[f64], t: usize, dh: usize) -> Vec<f64> {
    let mut out = vec![0.0; t * dh];
    for i in 0..t {
        let s: Vec<f64> = (0..=i)
            .map(|j| {
                (0..dh).map(|c| q[i * dh + c] * k[j * dh + c]).sum::<f64>() / (dh as f64).sqrt()
            })
            .collect();
        let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let z: f64 = s.iter().map(|x| (x - m).exp()).sum();
        for (j, sj) in s.iter().enumerate() {
            let p = (sj - m).exp() / z;
            for c in 0..dh {
                out[i * dh + c] += p * v[j * dh + c];
            }
        }
    }
    out
}

#[test]
fn causal_attention_matches_reference_and_finite_differences() {
    let (bsz, t, dh) = (2i64, 4i64, 3i64);
    let b = Builder::new("attention");
    let shape = Shape::new(DType::F64, [bsz, t, dh]);
    let q = b.parameter("q", shape.clone());
    let k = b.parameter("k", shape.clone());
    let v = b.parameter("v", shape.clone());
    let out = attention(&b, &q, &k, &v);
    let f = b.build(&[&out]).unwrap();

    let mut rng = Rng::new(11);
    let args: Vec<Literal> = (0..3)
        .map(|_| rng.literal(&[bsz, t, dh], -1.5, 1.5))
        .collect();
    let got = hlo::evaluate(&f, &args).unwrap()[0].to_f64_vec();
    let vals: Vec<Vec<f64>> = args.iter().map(Literal::to_f64_vec).collect();
    let n = (t * dh) as usize;
    for bi in 0..bsz as usize {
        let sl = |v: &Vec<f64>| v[bi * n..(bi + 1) * n].to_vec();
        let want = attention_reference(
            &sl(&vals[0]),
            &sl(&vals[1]),
            &sl(&vals[2]),
            t as usize,
            dh as usize,
        );
        assert_close(&got[bi * n..(bi + 1) * n], &want, 1e-12, "attention output");
    }
    // The first query sees only the first key: its output is v[0] exactly.
    assert_close(
        &got[0..3],
        &vals[2][0..3],
        1e-12,
        "first row attends to itself",
    );

    let g = check_vjp(&f, &args, &[0, 1, 2], 12);
    assert!(g.iter().all(|gi| gi.iter().any(|&x| x != 0.0)));
}

/// Mean cross entropy over labels != -100: logsumexp(logits) - logits[label].
fn cross_entropy(b: &Builder, logits: &Tensor, labels: &Tensor) -> Tensor {
    let n = logits.dims()[0];
    let valid = labels.ne(&b.scalar(-100.0, DType::S32));
    let safe = valid.select(labels, &b.scalar(0.0, DType::S32));
    let rows = b.iota(&Shape::new(DType::S32, [n, 1]), 0);
    let index = b.concatenate(&[rows, safe.reshape(&[n, 1])], 1);
    let target = logits.gather(
        &index,
        GatherDims {
            offset_dims: vec![],
            collapsed_slice_dims: vec![0, 1],
            start_index_map: vec![0, 1],
            index_vector_dim: 1,
            slice_sizes: vec![1, 1],
        },
    );
    let nll = logits.logsumexp(1).sub(&target);
    let w = valid.convert(logits.dtype());
    nll.mul(&w).sum_all().div(&w.sum_all())
}

#[test]
fn softmax_cross_entropy_matches_hand_gradient_and_finite_differences() {
    let (n, vocab) = (6usize, 5usize);
    let labels = [3, -100, 0, 4, -100, 1];
    let b = Builder::new("cross_entropy");
    let logits = b.parameter("logits", Shape::new(DType::F64, [n as i64, vocab as i64]));
    let lab = b.parameter("labels", Shape::new(DType::S32, [n as i64]));
    let loss = cross_entropy(&b, &logits, &lab);
    let g = grad(&loss, std::slice::from_ref(&logits)).unwrap();
    let f = b.build(&[&loss]).unwrap();
    let fg = b.build(&[&loss, &g[0]]).unwrap();

    let x = Rng::new(21).vec(n * vocab, -3.0, 3.0);
    let args = [
        f64s(&[n as i64, vocab as i64], &x),
        s32s(&[n as i64], &labels),
    ];
    let out = hlo::evaluate(&fg, &args).unwrap();

    // By hand: loss = mean over valid rows of lse - x[label]; d/dx = (softmax - onehot) / count.
    let count = labels.iter().filter(|&&l| l != -100).count() as f64;
    let mut want_loss = 0.0;
    let mut want_grad = vec![0.0; n * vocab];
    for (i, &l) in labels.iter().enumerate() {
        if l == -100 {
            continue;
        }
        let row = &x[i * vocab..(i + 1) * vocab];
        let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let z: f64 = row.iter().map(|v| (v - m).exp()).sum();
        want_loss += (m + z.ln() - row[l as usize]) / count;
        for c in 0..vocab {
            let p = (row[c] - m).exp() / z;
            want_grad[i * vocab + c] = (p - (c == l as usize) as u8 as f64) / count;
        }
    }
    assert_close(&out[0].to_f64_vec(), &[want_loss], 1e-12, "loss");
    assert_close(&out[1].to_f64_vec(), &want_grad, 1e-12, "d loss / d logits");
    check_vjp(&f, &args, &[0], 22);
}

fn layer_norm(x: &Tensor, gain: &Tensor, bias: &Tensor) -> Tensor {
    let mu = x.mean(&[-1]).expand_dim(-1);
    let c = x.sub(&mu);
    let var = c.square().mean(&[-1]).expand_dim(-1);
    c.mul(&var.add_scalar(1e-5).rsqrt()).mul(gain).add(bias)
}

#[test]
fn switch_transformer_block_gradients_match_finite_differences() {
    let (bsz, t, d, e, hid, vocab) = (2i64, 3i64, 4i64, 2i64, 5i64, 7i64);
    let b = Builder::new("switch_block");
    let p = |name: &str, dims: &[i64]| b.parameter(name, Shape::new(DType::F64, dims.to_vec()));
    let wte = p("wte", &[vocab, d]);
    let wpe = p("wpe", &[t, d]);
    let router = p("router", &[d, e]);
    let wi = p("wi", &[e, d, hid]);
    let wo = p("wo", &[e, hid, d]);
    let bypass = p("bypass", &[d, d]);
    let ln_g = p("ln_g", &[d]);
    let ln_b = p("ln_b", &[d]);
    let head_w = p("head_w", &[d, d]);
    let head_b = p("head_b", &[d]);
    let ids = b.parameter("ids", Shape::new(DType::S32, [bsz, t]));
    let labels = b.parameter("labels", Shape::new(DType::S32, [bsz * t]));

    // Embeddings (gather) plus learned positions.
    let x = wte.take_rows(&ids).add(&wpe);
    // Router: softmax, top-1 by argmax, one-hot dispatch/combine, scaled by the top prob.
    let probs = softmax_last(&x.matmul(&router));
    let onehot = probs.argmax(-1).one_hot(e, DType::F64);
    let top_prob = probs.mul(&onehot).reduce_sum(&[2]).expand_dim(-1);
    let hidden = x
        .dot_general(
            &wi,
            DotDims {
                lhs_contracting: vec![2],
                rhs_contracting: vec![1],
                ..Default::default()
            },
        )
        .relu(); // [B, T, E, hid]
    let expert_out = hidden.dot_general(
        &wo,
        DotDims {
            lhs_batch: vec![2],
            rhs_batch: vec![0],
            lhs_contracting: vec![3],
            rhs_contracting: vec![1],
        },
    ); // [E, B, T, d]
    let combined = onehot.dot_general(
        &expert_out,
        DotDims {
            lhs_batch: vec![0, 1],
            rhs_batch: vec![1, 2],
            lhs_contracting: vec![2],
            rhs_contracting: vec![0],
        },
    ); // [B, T, d]
    let h = combined.mul(&top_prob).add(&x.matmul(&bypass).tanh());
    let x = x.add(&layer_norm(&h, &ln_g, &ln_b));
    // Head: swish(x W + b) tied to the embedding.
    let hh = x.matmul(&head_w).add(&head_b).swish();
    let logits = hh.dot_general(
        &wte,
        DotDims {
            lhs_contracting: vec![2],
            rhs_contracting: vec![1],
            ..Default::default()
        },
    );
    let loss = cross_entropy(&b, &logits.reshape(&[bsz * t, vocab]), &labels);
    let f = b.build(&[&loss]).unwrap();

    let mut rng = Rng::new(31);
    let mut args: Vec<Literal> = f.params[..10]
        .iter()
        .map(|prm| rng.literal(&prm.shape.dims, -0.8, 0.8))
        .collect();
    args[6] = f64s(&[d], &[1.0, 0.9, 1.1, 1.2]); // LayerNorm gain near 1
    args.push(s32s(&[bsz, t], &[1, 5, 2, 6, 0, 5]));
    args.push(s32s(&[bsz * t], &[5, 2, -100, 0, 5, 3]));
    let grads = check_vjp(&f, &args, &(0..10).collect::<Vec<_>>(), 32);
    // Every parameter influences the loss.
    for (i, g) in grads.iter().enumerate() {
        assert!(
            g.iter().any(|v| v.abs() > 1e-9),
            "parameter {} got no gradient",
            f.params[i].name
        );
    }
    // wte rows never used as input ids nor as labels still get gradient through the tied head.
    assert!(grads[0][3 * d as usize..4 * d as usize]
        .iter()
        .any(|v| v.abs() > 1e-9));
}
