//! Times the fused masked attention kernel (`runtime::masked_attention`) on causal masks:
//! `cargo run --release -p runtime --example attention_rates -- 4,8,512,32 8,8,256,32`
//! (batch, heads, tokens, head dim).

use runtime::masked_attention::{self, Dims, Operands};
use std::time::Instant;

fn main() {
    if !masked_attention::available() {
        eprintln!("this CPU has no AVX-512");
        return;
    }
    let cases: Vec<String> = std::env::args().skip(1).collect();
    let cases = if cases.is_empty() {
        vec!["4,8,512,32".to_string()]
    } else {
        cases
    };
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
    for case in cases {
        let n: Vec<usize> = case
            .split(',')
            .map(|x| x.parse().expect("a number"))
            .collect();
        let [batch, heads, t, dh] = n[..] else {
            panic!("cases are batch,heads,tokens,head_dim");
        };
        let d = Dims {
            batch,
            heads,
            queries: t,
            keys: t,
            head_dim: dh,
        };
        let len = batch * heads * t * dh;
        let q: Vec<f32> = (0..len)
            .map(|i| ((i * 7919) % 1000) as f32 * 1e-3)
            .collect();
        let mut mask = vec![0.0f32; batch * t * t];
        for (i, m) in mask.iter_mut().enumerate() {
            if i % t > (i / t) % t {
                *m = f32::MIN;
            }
        }
        let mut out = vec![0.0f32; len];
        let ops = Operands {
            q: q.as_ptr(),
            k: q.as_ptr(),
            v: q.as_ptr(),
            mask: mask.as_ptr(),
            out: out.as_mut_ptr(),
        };
        let mut best = f64::INFINITY;
        for _ in 0..20 {
            let start = Instant::now();
            unsafe { masked_attention::run(ops, d, threads) };
            best = best.min(start.elapsed().as_secs_f64());
        }
        // Causal: about half the score and value products.
        let flops = 4.0 * (batch * heads * t * t * dh) as f64 / 2.0;
        println!(
            "{case}: best {:.2} ms, {:.0} GFLOP/s (causal half counted)",
            best * 1e3,
            flops / best / 1e9
        );
    }
}
