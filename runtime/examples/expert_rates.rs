//! Time of `runtime::expert_mlp` (forward and gradient) on `small`'s expert shapes,
//! with every slot filled and with the filled counts of a random-weight forward pass.
//!
//! ```text
//! cargo run --release -p runtime --example expert_rates
//! ```

use anyhow::{bail, Result};
use runtime::expert_mlp::{self, Dims, GradOperands, Operands};
use std::time::Instant;

fn best_of<F: FnMut()>(mut f: F) -> f64 {
    f();
    (0..5)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::MAX, f64::min)
}

fn main() -> Result<()> {
    if !expert_mlp::available() {
        bail!("this CPU has no AVX-512");
    }
    let d = Dims {
        groups: 2,
        experts: 8,
        capacity: 256,
        d_model: 256,
        hidden: 1024,
    };
    let slots = d.groups * d.experts * d.capacity;
    let cases: [(&str, Vec<i32>); 3] = [
        ("all filled", vec![256; 16]),
        ("half filled", vec![128; 16]),
        (
            "a random-weight layer",
            vec![
                256, 119, 108, 13, 88, 256, 10, 57, 256, 57, 18, 37, 66, 58, 167, 256,
            ],
        ),
    ];
    let x = vec![0.01f32; slots * d.d_model];
    let wi = vec![0.02f32; d.experts * d.hidden * d.d_model];
    let wo = vec![0.03f32; d.experts * d.hidden * d.d_model];
    let mut out = vec![0f32; slots * d.d_model];
    let mut hidden = vec![0f32; slots * d.hidden];
    let (mut dx, mut dwi, mut dwo) = (out.clone(), wi.clone(), wo.clone());
    for (name, filled) in &cases {
        let rows: i32 = filled.iter().sum();
        let flops = rows as f64 * 2.0 * 2.0 * (d.d_model * d.hidden) as f64;
        let fwd = best_of(|| {
            let ops = Operands {
                x: x.as_ptr(),
                filled: filled.as_ptr(),
                wi: wi.as_ptr(),
                wo: wo.as_ptr(),
                out: out.as_mut_ptr(),
                hidden: hidden.as_mut_ptr(),
            };
            // SAFETY: the buffers have the sizes of `d`.
            unsafe { expert_mlp::run(ops, d, 2) };
        });
        let grad = best_of(|| {
            let ops = GradOperands {
                x: x.as_ptr(),
                filled: filled.as_ptr(),
                wi: wi.as_ptr(),
                wo: wo.as_ptr(),
                hidden: hidden.as_ptr(),
                d_out: out.as_ptr(),
                dx: dx.as_mut_ptr(),
                dwi: dwi.as_mut_ptr(),
                dwo: dwo.as_mut_ptr(),
            };
            // SAFETY: as above.
            unsafe { expert_mlp::run_grad(ops, d, 2) };
        });
        println!(
            "{name} ({rows} rows): forward {:.2} ms ({:.0} GFLOP/s), gradient {:.2} ms ({:.0} GFLOP/s)",
            fwd * 1e3, flops / fwd / 1e9, grad * 1e3, 2.0 * flops / grad / 1e9
        );
    }
    Ok(())
}
