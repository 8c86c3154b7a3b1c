//! Time of the train step's tied-head loss with its gradient alone (`small`'s shapes:
//! 8 x 256 tokens, d = 256, V = 36,000), the largest part of the step, so that changes
//! to it can be compared without the rest of the step's noise.
//!
//! ```text
//! cargo run --release --example head_loss_rates [-- runs]
//! ```

use anyhow::Result;
use gptsan::device::Device;
use gptsan::model::loss::chunked_head_loss;
use hlo::{Builder, DType, Literal, Shape};
use std::time::Instant;

/// The allocator and options of the `gptsan` binary (see its `main.rs`), so that XLA's
/// temporaries stay mapped from run to run as they do there.
#[cfg(target_os = "linux")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[cfg(target_os = "linux")]
#[used]
#[export_name = "malloc_conf"]
static MALLOC_CONF: &u8 = &runtime::JEMALLOC_CONF[0];

fn main() -> Result<()> {
    let runs: usize = std::env::args().nth(1).map_or(Ok(10), |s| s.parse())?;
    let (rows, len, d, v) = (8i64, 256i64, 256i64, 36_000i64);
    let f32s = |dims: &[i64]| Shape::new(DType::F32, dims.to_vec());
    let b = Builder::new("head_loss");
    let h = b.parameter("h", f32s(&[rows, len, d]));
    let wte = b.parameter("wte", f32s(&[v, d]));
    let bias = b.parameter("bias", f32s(&[1, v]));
    let labels = b.parameter("labels", Shape::new(DType::S32, vec![rows, len]));
    let loss = chunked_head_loss(&h, &wte, &bias, &labels);
    let total = loss.ce.add(&loss.z.mul_scalar(1e-4));
    let grads = hlo::grad(&total, &[h.clone(), wte.clone(), bias.clone()])?;
    let f = b.build(&[&total, &grads[0], &grads[1], &grads[2]])?;
    let dev = Device::shared()?;
    let program = dev.compile(&f)?;
    let values = |n: i64, scale: f32| -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * scale)
            .collect()
    };
    let n = rows * len;
    let args = [
        Literal::from_slice(&[rows, len, d], &values(n * d, 1.0))?,
        Literal::from_slice(&[v, d], &values(v * d, 0.05))?,
        Literal::from_slice(&[1, v], &values(v, 0.01))?,
        Literal::from_slice(
            &[rows, len],
            &(0..n).map(|i| (i * 31 % v) as i32).collect::<Vec<_>>(),
        )?,
    ];
    let bufs = args
        .iter()
        .map(|a| dev.upload(a, 0))
        .collect::<Result<Vec<_>>>()?;
    let refs: Vec<_> = bufs.iter().collect();
    let mut times = Vec::new();
    for _ in 0..=runs {
        let t = Instant::now();
        let out = program.run(&refs)?;
        out[0].block_until_ready()?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.remove(0);
    times.sort_by(f64::total_cmp);
    println!(
        "head loss and gradient, 8x256 tokens: best {:.1} ms, median {:.1} ms over {runs} runs",
        times[0] * 1e3,
        times[times.len() / 2] * 1e3
    );
    Ok(())
}
