//! GFLOP/s of `runtime::gemm` (one thread per product) on the experts' shapes, on one
//! thread and on two threads running products side by side.
//!
//! ```text
//! cargo run --release -p runtime --example gemm_rates -- 512,256,1024,t 512,1024,256,t
//! ```
//!
//! Each case is `m,k,n,mode` as in `dot_rates`: `l` when the left operand is stored
//! `[k, m]`, `t` when the right one is stored `[n, k]`.

use anyhow::{bail, Result};
use runtime::gemm::{self, MatRef, Packs, Store};
use std::time::Instant;

/// The operands' views for `mode`: `l`, `a` stored `[k, m]`; `t`, `b` stored `[n, k]`.
fn views(a: &[f32], b: &[f32], m: usize, k: usize, n: usize, mode: &str) -> (MatRef, MatRef) {
    let view_a = if mode.contains('l') {
        MatRef::rows(a.as_ptr(), m).t()
    } else {
        MatRef::rows(a.as_ptr(), k)
    };
    let view_b = if mode.contains('t') {
        MatRef::rows(b.as_ptr(), k).t()
    } else {
        MatRef::rows(b.as_ptr(), n)
    };
    (view_a, view_b)
}

fn time(m: usize, k: usize, n: usize, mode: &str, threads: usize) -> f64 {
    let a = vec![0.5f32; m * k];
    let b = vec![0.25f32; k * n];
    let (view_a, view_b) = views(&a, &b, m, k, n, mode);
    let reps = 20;
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| {
                    let mut c = vec![0f32; m * n];
                    let mut packs = Packs::default();
                    for _ in 0..reps {
                        // SAFETY: the views and `c` have the sizes given; AVX-512 was checked.
                        unsafe {
                            gemm::gemm(
                                m,
                                n,
                                k,
                                view_a,
                                view_b,
                                c.as_mut_ptr(),
                                n,
                                Store::Overwrite,
                                &mut packs,
                            )
                        };
                    }
                    assert!((c[0] - 0.125 * k as f32).abs() < 1e-3 * k as f32);
                });
            }
        });
        best = best.min(t.elapsed().as_secs_f64());
    }
    2.0 * (m * k * n * reps * threads) as f64 / best / 1e9
}

/// One product on two threads, each computing half of the result's rows.
fn time_split(m: usize, k: usize, n: usize, mode: &str) -> f64 {
    let a = vec![0.5f32; m * k];
    let b = vec![0.25f32; k * n];
    let mut c = vec![0f32; m * n];
    let (view_a, view_b) = views(&a, &b, m, k, n, mode);
    let half = m.div_ceil(2);
    let mut best = f64::MAX;
    for _ in 0..6 {
        let t = Instant::now();
        let (top, bottom) = c.split_at_mut(half * n);
        std::thread::scope(|s| {
            for (i, part) in [top, bottom].into_iter().enumerate() {
                s.spawn(move || {
                    let rows = part.len() / n;
                    let mut va = view_a;
                    // SAFETY: an offset inside `a`.
                    va.ptr = unsafe { va.ptr.offset((i * half) as isize * va.rs) };
                    let mut packs = Packs::default();
                    // SAFETY: the views and `part` have the sizes given; AVX-512 was checked.
                    unsafe {
                        gemm::gemm(
                            rows,
                            n,
                            k,
                            va,
                            view_b,
                            part.as_mut_ptr(),
                            n,
                            Store::Overwrite,
                            &mut packs,
                        )
                    };
                });
            }
        });
        best = best.min(t.elapsed().as_secs_f64());
    }
    assert!((c[m * n - 1] - 0.125 * k as f32).abs() < 1e-3 * k as f32);
    2.0 * (m * k * n) as f64 / best / 1e9
}

fn main() -> Result<()> {
    if !gemm::available() {
        bail!("this CPU has no AVX-512");
    }
    for case in std::env::args().skip(1) {
        let p: Vec<&str> = case.split(',').collect();
        if p.len() != 4 {
            bail!("case {case:?}: expected m,k,n,mode");
        }
        let (m, k, n) = (p[0].parse()?, p[1].parse()?, p[2].parse()?);
        println!(
            "{case}: 1 thread {:.0} GFLOP/s, 2 threads side by side {:.0}, one product on 2 threads {:.0}",
            time(m, k, n, p[3], 1),
            time(m, k, n, p[3], 2),
            time_split(m, k, n, p[3])
        );
    }
    Ok(())
}
