//! GFLOP/s of single dots on the CPU plugin, to see what a shape and an operand
//! orientation cost before writing them into a model (the README's dot figures).
//!
//! ```text
//! cargo run --release -p runtime --example dot_rates -- f32 2048,256,36000,t 36000,256,2048,t
//! ```
//!
//! Each case is `m,k,n,mode`: an `[m, k] x [k, n]` product where `mode` holds `l` when the
//! left operand is stored `[k, m]`, `t` when the right one is stored `[n, k]` (`n` for
//! neither). The result stays on the device; best of 5 runs after a warm-up.

use anyhow::{bail, Context, Result};
use hlo::ir::DotDims;
use hlo::{to_stablehlo, Builder, DType, EmitOptions, Literal, Shape};
use runtime::{plugin, Client, ClientOptions, CompileOptions, PluginKind, PluginRequest};
use std::time::Instant;

/// The allocator and options of the `gptsan` binary (see its `main.rs`): a large output is
/// reused from run to run instead of faulted in afresh, so its page faults are not timed.
#[cfg(target_os = "linux")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[cfg(target_os = "linux")]
#[used]
#[export_name = "malloc_conf"]
static MALLOC_CONF: &u8 = &runtime::JEMALLOC_CONF[0];

struct Case {
    m: i64,
    k: i64,
    n: i64,
    lhs_transposed: bool,
    rhs_transposed: bool,
}

fn parse_case(text: &str) -> Result<Case> {
    let parts: Vec<&str> = text.split(',').collect();
    if parts.len() != 4 {
        bail!("case {text:?}: expected m,k,n,mode (mode: n, l, t or lt)");
    }
    let dim = |s: &str| -> Result<i64> {
        let v: i64 = s
            .parse()
            .with_context(|| format!("case {text:?}: {s:?} is not a size"))?;
        if v <= 0 {
            bail!("case {text:?}: sizes must be positive");
        }
        Ok(v)
    };
    let mode = parts[3];
    if !mode.chars().all(|c| matches!(c, 'n' | 'l' | 't')) {
        bail!("case {text:?}: mode {mode:?} may hold only n, l and t");
    }
    Ok(Case {
        m: dim(parts[0])?,
        k: dim(parts[1])?,
        n: dim(parts[2])?,
        lhs_transposed: mode.contains('l'),
        rhs_transposed: mode.contains('t'),
    })
}

fn time_case(client: &Client, dtype: DType, c: &Case) -> Result<f64> {
    let b = Builder::new("dot");
    let lhs_dims = if c.lhs_transposed {
        vec![c.k, c.m]
    } else {
        vec![c.m, c.k]
    };
    let rhs_dims = if c.rhs_transposed {
        vec![c.n, c.k]
    } else {
        vec![c.k, c.n]
    };
    let x = b.parameter("x", Shape::new(dtype, lhs_dims.clone()));
    let w = b.parameter("w", Shape::new(dtype, rhs_dims.clone()));
    let y = x.dot_general(
        &w,
        DotDims {
            lhs_contracting: vec![if c.lhs_transposed { 0 } else { 1 }],
            rhs_contracting: vec![if c.rhs_transposed { 1 } else { 0 }],
            ..Default::default()
        },
    );
    let f = b.build(&[&y])?;
    let exe = client.compile(
        &to_stablehlo(&f, &EmitOptions::default())?,
        &CompileOptions::default(),
    )?;
    let fill = |dims: &[i64], v: f32| -> Result<Literal> {
        let values = vec![v; dims.iter().product::<i64>() as usize];
        Ok(Literal::from_slice(dims, &values)?.convert_float(dtype)?)
    };
    let bx = client.upload(&fill(&lhs_dims, 0.5)?, 0)?;
    let bw = client.upload(&fill(&rhs_dims, 0.25)?, 0)?;
    let mut best = f64::MAX;
    for run in 0..6 {
        let t = Instant::now();
        let out = exe.execute(&[vec![&bx, &bw]])?;
        out[0][0].block_until_ready()?;
        if run > 0 {
            best = best.min(t.elapsed().as_secs_f64());
        }
    }
    Ok(best)
}

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((dtype, cases)) = args.split_first() else {
        bail!("usage: dot_rates f32|bf16 m,k,n,mode [m,k,n,mode ...]");
    };
    let dtype = match dtype.as_str() {
        "f32" => DType::F32,
        "bf16" => DType::Bf16,
        other => bail!("element type {other:?}: expected f32 or bf16"),
    };
    let cases: Vec<Case> = cases.iter().map(|c| parse_case(c)).collect::<Result<_>>()?;
    let request = PluginRequest::Kind(PluginKind::Cpu);
    let path = plugin::discover(&request, &plugin::SearchEnv::detect())?.path;
    let client = Client::from_plugin_path(&path, &ClientOptions::cpu_devices(1))?;
    for c in &cases {
        let seconds = time_case(&client, dtype, c)?;
        let flops = 2.0 * (c.m * c.k * c.n) as f64;
        println!(
            "{dtype} [{}, {}] x [{}, {}] (lhs {}, rhs {}): {:.1} ms, {:.0} GFLOP/s",
            c.m,
            c.k,
            c.k,
            c.n,
            if c.lhs_transposed { "[k, m]" } else { "[m, k]" },
            if c.rhs_transposed { "[n, k]" } else { "[k, n]" },
            seconds * 1e3,
            flops / seconds / 1e9
        );
    }
    Ok(())
}
