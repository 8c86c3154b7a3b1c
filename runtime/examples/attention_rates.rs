//! Times the fused masked attention kernels (`runtime::masked_attention`, forward and
//! gradient) on causal masks:
//! `cargo run --release -p runtime --example attention_rates -- 4,8,512,32 8,8,256,32`
//! (batch, heads, tokens, head dim).

use runtime::masked_attention::{self, Dims, GradOperands, Operands, Stats};
use std::time::Instant;

/// The best of 20 runs of `f`, in seconds.
fn best_of(mut f: impl FnMut()) -> f64 {
    (0..20)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    if !masked_attention::available() {
        eprintln!("this CPU has no AVX-512");
        return;
    }
    let mut cases: Vec<String> = std::env::args().skip(1).collect();
    if cases.is_empty() {
        cases = vec!["4,8,512,32".to_string(), "8,8,256,32".to_string()];
    }
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
    for case in cases {
        let n: Vec<usize> = case.split(',').filter_map(|x| x.parse().ok()).collect();
        let [batch, heads, t, dh] = n[..] else {
            eprintln!("{case}: cases are batch,heads,tokens,head_dim");
            continue;
        };
        let d = Dims {
            batch,
            heads,
            queries: t,
            keys: t,
            head_dim: dh,
        };
        let len = batch * heads * t * dh;
        let x: Vec<f32> = (0..len)
            .map(|i| ((i * 7919) % 1000) as f32 * 1e-3)
            .collect();
        let mut mask = vec![0.0f32; batch * t * t];
        for (i, m) in mask.iter_mut().enumerate() {
            if i % t > (i / t) % t {
                *m = f32::MIN;
            }
        }
        let mut out = vec![0.0f32; len];
        let (mut row_max, mut row_sum) = (
            vec![0.0f32; batch * t * heads],
            vec![0.0f32; batch * t * heads],
        );
        let (mut dq, mut dk, mut dv) = (vec![0.0f32; len], vec![0.0f32; len], vec![0.0f32; len]);
        let ops = Operands {
            q: x.as_ptr(),
            k: x.as_ptr(),
            v: x.as_ptr(),
            mask: mask.as_ptr(),
            out: out.as_mut_ptr(),
            stats: Some(Stats {
                row_max: row_max.as_mut_ptr(),
                row_sum: row_sum.as_mut_ptr(),
            }),
        };
        // SAFETY: every buffer has the sizes `d` gives; AVX-512 was checked.
        let forward = best_of(|| unsafe { masked_attention::run(ops, d, threads) });
        let grads = GradOperands {
            q: x.as_ptr(),
            k: x.as_ptr(),
            v: x.as_ptr(),
            mask: mask.as_ptr(),
            out: out.as_ptr(),
            stats: Stats {
                row_max: row_max.as_ptr(),
                row_sum: row_sum.as_ptr(),
            },
            d_out: x.as_ptr(),
            dq: dq.as_mut_ptr(),
            dk: dk.as_mut_ptr(),
            dv: dv.as_mut_ptr(),
        };
        // SAFETY: as above.
        let backward = best_of(|| unsafe { masked_attention::run_grad(grads, d, threads) });
        // Causal: about half of each product (two forward, five backward).
        let product = (batch * heads * t * t * dh) as f64;
        println!(
            "{case}: forward {:.2} ms ({:.0} GFLOP/s), gradient {:.2} ms ({:.0} GFLOP/s), causal half counted",
            forward * 1e3,
            2.0 * product / forward / 1e9,
            backward * 1e3,
            5.0 * product / backward / 1e9
        );
    }
}
