//! Times the chosen-expert MLP kernel (`runtime::chosen_expert`) on `small`'s expert
//! tables (8 experts, d 256, f 1024), one token, cycling through 4 layers' tables so that
//! they come from the cache as in a decode step, with an optional pause of `gap_us`
//! microseconds of other work between calls (a decode step's other kernels):
//! `cargo run --release -p runtime --example chosen_expert_rate [-- gap_us]`.

use runtime::chosen_expert::{self, Dims, Operands};
use std::time::Instant;

fn main() {
    if !chosen_expert::available() {
        eprintln!("this CPU has no AVX-512");
        return;
    }
    let (experts, d_model, hidden, layers) = (8usize, 256usize, 1024usize, 4usize);
    let table = experts * d_model * hidden;
    let wi: Vec<f32> = (0..layers * table)
        .map(|i| (i % 97) as f32 * 1e-3)
        .collect();
    let wo = wi.clone();
    let x: Vec<f32> = (0..d_model).map(|i| i as f32 * 1e-2).collect();
    let kept = [1.0f32];
    let mut out = vec![0.0f32; d_model];
    let d = Dims {
        tokens: 1,
        experts,
        d_model,
        hidden,
    };
    let gap: f64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0.0);
    let calls = 2000;
    let mut in_calls = 0.0;
    for call in 0..calls {
        let pause = Instant::now();
        while pause.elapsed().as_secs_f64() * 1e6 < gap {
            std::hint::spin_loop();
        }
        let start = Instant::now();
        let layer = call % layers;
        let expert = [(call * 5 % experts) as i32];
        let ops = Operands {
            x: x.as_ptr(),
            expert: expert.as_ptr(),
            kept: kept.as_ptr(),
            wi: wi[layer * table..].as_ptr(),
            wo: wo[layer * table..].as_ptr(),
            out: out.as_mut_ptr(),
        };
        // SAFETY: the buffers hold the sizes `d` gives; AVX-512 was checked.
        unsafe { chosen_expert::run(ops, d) };
        in_calls += start.elapsed().as_secs_f64();
    }
    let per_call = in_calls / calls as f64;
    let bytes = 2.0 * (d_model * hidden * 4) as f64;
    println!(
        "one token through one expert: {:.1} us, {:.1} GB/s of weights",
        per_call * 1e6,
        bytes / per_call / 1e9
    );
}
