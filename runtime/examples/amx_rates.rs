//! GFLOP/s of our AMX bf16 products ([`runtime::amx`]) on given shapes, packing included,
//! next to `dot_rates` (XLA's own dots):
//!
//! ```text
//! cargo run --release -p runtime --example amx_rates -- 2048,256,256,t 257,36000,1024,l
//! ```
//!
//! Each case is `m,k,n,mode` as in `dot_rates`: `l` in `mode` stores the left operand
//! `[k, m]`, `t` the right one `[n, k]`. Best of 5 runs after a warm-up, 2 threads.

use anyhow::{bail, Context, Result};
use runtime::amx::{available, matmul_bf16, Operand};
use std::time::Instant;

fn main() -> Result<()> {
    if !available() {
        bail!("this CPU (or kernel) offers no AMX bf16 tiles");
    }
    for case in std::env::args().skip(1) {
        let parts: Vec<&str> = case.split(',').collect();
        if parts.len() != 4 {
            bail!("case {case:?}: expected m,k,n,mode");
        }
        let size = |s: &str| -> Result<usize> {
            s.parse()
                .with_context(|| format!("case {case:?}: {s:?} is not a size"))
        };
        let (m, k, n) = (size(parts[0])?, size(parts[1])?, size(parts[2])?);
        let (lt, rt) = (parts[3].contains('l'), parts[3].contains('t'));
        let a = vec![0x3f80u16; m * k]; // 1.0
        let b = vec![0x3f00u16; k * n]; // 0.5
        let mut out = vec![0u16; m * n];
        let mut best = f64::MAX;
        for run in 0..6 {
            let t = Instant::now();
            // SAFETY: the three buffers hold m*k, k*n and m*n elements.
            unsafe {
                matmul_bf16(
                    m,
                    k,
                    n,
                    Operand {
                        data: a.as_ptr(),
                        transposed: lt,
                    },
                    Operand {
                        data: b.as_ptr(),
                        transposed: rt,
                    },
                    out.as_mut_ptr(),
                    2,
                )
            };
            if run > 0 {
                best = best.min(t.elapsed().as_secs_f64());
            }
        }
        let flops = 2.0 * (m * k * n) as f64;
        println!(
            "bf16 AMX {case}: {:.2} ms, {:.0} GFLOP/s",
            best * 1e3,
            flops / best / 1e9
        );
    }
    Ok(())
}
