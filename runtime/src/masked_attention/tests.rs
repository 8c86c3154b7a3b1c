use super::*;

/// Token-major index of (b, h, row, c) in a tensor of `len` rows.
fn at(d: Dims, len: usize, b: usize, h: usize, row: usize, c: usize) -> usize {
    ((b * len + row) * d.heads + h) * d.head_dim + c
}

/// The unfused attention and its gradient in f64: `(out, dq, dk, dv)` for the
/// cotangent `d_out`, with the scores rounded as the model's f32 add rounds them.
struct Reference {
    out: Vec<f64>,
    dq: Vec<f64>,
    dk: Vec<f64>,
    dv: Vec<f64>,
}

fn reference(q: &[f32], k: &[f32], v: &[f32], mask: &[f32], d_out: &[f32], d: Dims) -> Reference {
    let (t, n, dh) = (d.queries, d.keys, d.head_dim);
    let mut r = Reference {
        out: vec![0.0; q.len()],
        dq: vec![0.0; q.len()],
        dk: vec![0.0; k.len()],
        dv: vec![0.0; k.len()],
    };
    for b in 0..d.batch {
        for h in 0..d.heads {
            let qa = |i: usize, c: usize| q[at(d, t, b, h, i, c)] as f64;
            let ka = |x: &[f32], j: usize, c: usize| x[at(d, n, b, h, j, c)] as f64;
            for i in 0..t {
                let s: Vec<f64> = (0..n)
                    .map(|j| {
                        let dot: f64 = (0..dh).map(|c| qa(i, c) * ka(k, j, c)).sum();
                        (dot as f32 + mask[(b * t + i) * n + j]) as f64
                    })
                    .collect();
                let top = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = s.iter().map(|x| (x - top).exp()).collect();
                let total: f64 = e.iter().sum();
                let p: Vec<f64> = e.iter().map(|x| x / total).collect();
                let o: Vec<f64> = (0..dh)
                    .map(|c| (0..n).map(|j| p[j] * ka(v, j, c)).sum())
                    .collect();
                let g = |c: usize| d_out[at(d, t, b, h, i, c)] as f64;
                let dot_go: f64 = (0..dh).map(|c| g(c) * o[c]).sum();
                for (j, pj) in p.iter().enumerate() {
                    let dp: f64 = (0..dh).map(|c| g(c) * ka(v, j, c)).sum();
                    let ds = pj * (dp - dot_go);
                    for c in 0..dh {
                        r.dq[at(d, t, b, h, i, c)] += ds * ka(k, j, c);
                        r.dk[at(d, n, b, h, j, c)] += ds * qa(i, c);
                        r.dv[at(d, n, b, h, j, c)] += pj * g(c);
                    }
                }
                for (c, oc) in o.iter().enumerate() {
                    r.out[at(d, t, b, h, i, c)] = *oc;
                }
            }
        }
    }
    r
}

fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut x = seed;
    (0..len)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((x >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 4.0
        })
        .collect()
}

/// Causal with a prefix of `prefix` keys, some padded keys, and one row that sees
/// nothing (uniform attention).
fn mask(d: Dims, prefix: usize) -> Vec<f32> {
    let (t, n) = (d.queries, d.keys);
    let offset = n - t;
    let mut m = vec![0.0f32; d.batch * t * n];
    for b in 0..d.batch {
        for i in 0..t {
            for j in 0..n {
                let seen = j <= i + offset || j < prefix;
                let padded = b == 1 && j + 3 >= n;
                let blind = b == 0 && i == t / 2;
                if !seen || padded || blind {
                    m[(b * t + i) * n + j] = f32::MIN;
                }
            }
        }
    }
    m
}

fn assert_near(got: &[f32], want: &[f64], tol: f64, what: &str) {
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        assert!(
            (*a as f64 - b).abs() <= tol * (1.0 + b.abs()),
            "{what}: element {i} is {a}, expected {b}"
        );
    }
}

#[test]
fn forward_and_gradient_match_the_unfused_softmax() {
    if !available() {
        eprintln!("skipped: no AVX-512");
        return;
    }
    for (t, n, dh, prefix) in [
        (70, 70, 32, 5),
        (37, 38, 20, 0),
        (64, 64, 64, 64),
        (100, 100, 48, 40),
        (1, 9, 32, 0),
    ] {
        let d = Dims {
            batch: 2,
            heads: 3,
            queries: t,
            keys: n,
            head_dim: dh,
        };
        let q = values(d.batch * d.heads * t * dh, 1);
        let k = values(d.batch * d.heads * n * dh, 2);
        let v = values(d.batch * d.heads * n * dh, 3);
        let d_out = values(q.len(), 4);
        let m = mask(d, prefix);
        let want = reference(&q, &k, &v, &m, &d_out, d);
        for threads in [1, 2] {
            let what = format!("{d:?} threads {threads}");
            let mut out = vec![f32::NAN; q.len()];
            let rows = d.batch * t * d.heads;
            let (mut row_max, mut row_sum) = (vec![f32::NAN; rows], vec![f32::NAN; rows]);
            let ops = Operands {
                q: q.as_ptr(),
                k: k.as_ptr(),
                v: v.as_ptr(),
                mask: m.as_ptr(),
                out: out.as_mut_ptr(),
                stats: Some(Stats {
                    row_max: row_max.as_mut_ptr(),
                    row_sum: row_sum.as_mut_ptr(),
                }),
            };
            unsafe { run(ops, d, threads) };
            assert_near(&out, &want.out, 2e-5, &format!("{what}: out"));
            let (mut dq, mut dk, mut dv) = (
                vec![f32::NAN; q.len()],
                vec![f32::NAN; k.len()],
                vec![f32::NAN; k.len()],
            );
            let grads = GradOperands {
                q: q.as_ptr(),
                k: k.as_ptr(),
                v: v.as_ptr(),
                mask: m.as_ptr(),
                out: out.as_ptr(),
                stats: Stats {
                    row_max: row_max.as_ptr(),
                    row_sum: row_sum.as_ptr(),
                },
                d_out: d_out.as_ptr(),
                dq: dq.as_mut_ptr(),
                dk: dk.as_mut_ptr(),
                dv: dv.as_mut_ptr(),
            };
            unsafe { run_grad(grads, d, threads) };
            assert_near(&dq, &want.dq, 1e-4, &format!("{what}: dq"));
            assert_near(&dk, &want.dk, 1e-4, &format!("{what}: dk"));
            assert_near(&dv, &want.dv, 1e-4, &format!("{what}: dv"));
        }
    }
}
