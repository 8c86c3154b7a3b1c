//! Composite programs shaped like GPTSAN's training step (from
//! `hlo::gradcheck::composite_cases`): attention with a causal mask, softmax
//! cross-entropy with ignored labels, and a small Switch-Transformer block. Each is
//! checked against finite differences, the first two also against hand-computed values.

mod common;

use common::assert_close;
use hlo::gradcheck::{composite_cases, interpreter, Case};
use hlo::{grad_function, Literal};

fn case(name: &str) -> Case {
    composite_cases()
        .unwrap()
        .into_iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no composite case {name}"))
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
    let c = case("attention");
    let (bsz, t, dh) = (2usize, 4usize, 3usize);
    let got = hlo::evaluate(&c.function, &c.args).unwrap()[0].to_f64_vec();
    let vals: Vec<Vec<f64>> = c.args.iter().map(Literal::to_f64_vec).collect();
    let n = t * dh;
    for bi in 0..bsz {
        let sl = |v: &Vec<f64>| v[bi * n..(bi + 1) * n].to_vec();
        let want = attention_reference(&sl(&vals[0]), &sl(&vals[1]), &sl(&vals[2]), t, dh);
        assert_close(&got[bi * n..(bi + 1) * n], &want, 1e-12, "attention output");
    }
    // The first query sees only the first key: its output is v[0] exactly.
    assert_close(
        &got[0..3],
        &vals[2][0..3],
        1e-12,
        "first row attends to itself",
    );
    c.check(&interpreter).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn softmax_cross_entropy_matches_hand_gradient_and_finite_differences() {
    let c = case("cross_entropy");
    let (n, vocab) = (6usize, 5usize);
    let labels = c.args[1].to_vec::<i32>().unwrap();
    let x = c.args[0].to_f64_vec();
    let g = grad_function(&c.function, &[0]).unwrap();
    let out = hlo::evaluate(&g, &c.args).unwrap();

    // By hand: loss = mean over valid rows of lse - x[label]; d/dx = (softmax - onehot) / count.
    let count = labels.iter().filter(|&&l| l != -100).count() as f64;
    assert_eq!(count, 4.0);
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
    c.check(&interpreter).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn switch_transformer_block_gradients_match_finite_differences() {
    let c = case("switch_block");
    let grads = c.check(&interpreter).unwrap_or_else(|e| panic!("{e}"));
    // Every parameter influences the loss.
    for (i, g) in grads.iter().enumerate() {
        assert!(
            g.iter().any(|v| v.abs() > 1e-9),
            "parameter {} got no gradient",
            c.function.params[i].name
        );
    }
    // Both experts receive tokens (so both experts' weights are really checked).
    let d = 4;
    let wi = &grads[3];
    let half = wi.len() / 2;
    assert!(wi[..half].iter().any(|v| v.abs() > 1e-9) && wi[half..].iter().any(|v| v.abs() > 1e-9));
    // An embedding row used neither as input nor as label still gets gradient through
    // the tied head.
    assert!(grads[0][3 * d..4 * d].iter().any(|v| v.abs() > 1e-9));
}
