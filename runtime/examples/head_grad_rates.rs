//! Time of the tied head's log-sum-exp gradient kernel (`runtime::head_logsumexp`) on one
//! 1,024-token chunk of `small` (V = 36,000, K = 257), the step's largest part.
//!
//! ```text
//! cargo run --release -p runtime --example head_grad_rates [-- threads]
//! ```

use runtime::head_logsumexp::{self, HeadGrad};
use std::time::Instant;

fn main() {
    let threads: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    if !head_logsumexp::available() {
        eprintln!("no AVX-512 here");
        return;
    }
    let (v, n, k) = (36_000usize, 1024usize, 257usize);
    let logits: Vec<f32> = (0..v * n).map(|i| (i % 977) as f32 * 0.01).collect();
    let lse = vec![12.0f32; n];
    let g = vec![1.0f32 / n as f32; n];
    let h = vec![0.01f32; n * k];
    let w = vec![0.02f32; v * k];
    let (mut dw, mut dh) = (vec![0f32; v * k], vec![0f32; n * k]);
    let mut best = f64::MAX;
    for _ in 0..6 {
        let op = HeadGrad {
            logits: logits.as_ptr(),
            lse: lse.as_ptr(),
            g: g.as_ptr(),
            h: h.as_ptr(),
            w: w.as_ptr(),
            dw: dw.as_mut_ptr(),
            dh: dh.as_mut_ptr(),
            v,
            n,
            k,
        };
        let t = Instant::now();
        // SAFETY: the buffers have the sizes given; AVX-512 was checked.
        unsafe { head_logsumexp::gradient(op, threads) };
        best = best.min(t.elapsed().as_secs_f64());
    }
    let flops = 4.0 * (v * n * k) as f64;
    println!(
        "head gradient, {v} x {n} x {k}, {threads} threads: best {:.1} ms, {:.0} GFLOP/s",
        best * 1e3,
        flops / best / 1e9
    );
}
