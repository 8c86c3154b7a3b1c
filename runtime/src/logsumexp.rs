//! `log sum_r exp(x[r, c])` for every column of a row-major f32 matrix, in one pass, for
//! the forward half of the CPU plugin's custom call
//! [`crate::custom_calls::HEAD_LOGSUMEXP`].
//!
//! Why: the tied LM head's loss takes the log-sum-exp of `[V, N]` logits over the
//! vocabulary (36,000 rows of `small`). XLA CPU computes it as a maximum, then a sum of
//! exponentials, each a pass over the 147 MB of a 1,024-token chunk: 29 ms per chunk,
//! where reading it once takes about 6.
//!
//! Method: each thread takes a share of the rows and keeps, per column, a running
//! maximum and a sum of exponentials relative to it. Rows come in blocks of [`BLOCK`]:
//! the block's maximum is found first, so the running sum is rescaled once per block
//! rather than once per row. The threads' partial results are merged at the end.

#[cfg(target_arch = "x86_64")]
use crate::simd;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Rows per block: read twice (maximum, then exponentials), from L1 the second time.
const BLOCK: usize = 8;

/// Whether the kernel can run here (x86-64 with AVX-512F).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// One thread's running maximum and sum per column.
struct Partial {
    max: Vec<f32>,
    sum: Vec<f32>,
}

/// `out[c] = log sum_r exp(x[r, c])` for `x [rows, cols]` (row-major). A column of
/// `-inf` gives `-inf`; no rows give `-inf` everywhere.
///
/// # Safety
/// [`available`] must hold; `x` must hold `rows * cols` floats and `out` `cols`.
pub unsafe fn columns(x: *const f32, rows: usize, cols: usize, out: *mut f32, threads: usize) {
    let threads = threads.clamp(1, rows.div_ceil(BLOCK).max(1));
    let share = rows.div_ceil(threads).div_ceil(BLOCK) * BLOCK;
    let x_addr = x as usize;
    let partials: Vec<Partial> = std::thread::scope(|s| {
        let work = move |t: usize| {
            let start = (t * share).min(rows);
            let end = ((t + 1) * share).min(rows);
            // SAFETY: rows `start..end` lie inside `x`.
            unsafe { partial(x_addr as *const f32, start, end, cols) }
        };
        let others: Vec<_> = (1..threads).map(|t| s.spawn(move || work(t))).collect();
        let mut all = vec![work(0)];
        all.extend(
            others
                .into_iter()
                .map(|h| h.join().expect("a log-sum-exp thread")),
        );
        all
    });
    for c in 0..cols {
        let max = partials.iter().map(|p| p.max[c]).fold(f32::MIN, f32::max);
        let sum: f32 = partials
            .iter()
            .map(|p| p.sum[c] * (p.max[c] - max).exp())
            .sum();
        *out.add(c) = max + sum.ln();
    }
}

/// The running maximum and sum of rows `start..end`. The maximum starts at `f32::MIN`,
/// not `-inf`, so that rescaling never computes `-inf - -inf`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn partial(x: *const f32, start: usize, end: usize, cols: usize) -> Partial {
    let mut p = Partial {
        max: vec![f32::MIN; cols],
        sum: vec![0.0; cols],
    };
    for r0 in (start..end).step_by(BLOCK) {
        let rows = BLOCK.min(end - r0);
        for c0 in (0..cols).step_by(16) {
            let lanes = ((1u32 << (cols - c0).min(16)) - 1) as __mmask16;
            let at = |r: usize| x.add((r0 + r) * cols + c0);
            let old_max = _mm512_maskz_loadu_ps(lanes, p.max.as_ptr().add(c0));
            let mut max = old_max;
            for r in 0..rows {
                max = _mm512_max_ps(max, _mm512_maskz_loadu_ps(lanes, at(r)));
            }
            let old_sum = _mm512_maskz_loadu_ps(lanes, p.sum.as_ptr().add(c0));
            let mut sum = _mm512_mul_ps(old_sum, simd::exp(_mm512_sub_ps(old_max, max)));
            for r in 0..rows {
                let v = _mm512_maskz_loadu_ps(lanes, at(r));
                sum = _mm512_add_ps(sum, simd::exp(_mm512_sub_ps(v, max)));
            }
            _mm512_mask_storeu_ps(p.max.as_mut_ptr().add(c0), lanes, max);
            _mm512_mask_storeu_ps(p.sum.as_mut_ptr().add(c0), lanes, sum);
        }
    }
    p
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn partial(_: *const f32, _: usize, _: usize, _: usize) -> Partial {
    unreachable!("`available` is false off x86-64")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(x: &[f32], rows: usize, cols: usize) -> Vec<f64> {
        (0..cols)
            .map(|c| {
                let col = (0..rows).map(|r| x[r * cols + c] as f64);
                let max = col.clone().fold(f64::NEG_INFINITY, f64::max);
                if max == f64::NEG_INFINITY {
                    return max;
                }
                max + col.map(|v| (v - max).exp()).sum::<f64>().ln()
            })
            .collect()
    }

    /// Uneven rows and columns, large and spread values, a column of `-inf`, a column
    /// whose maximum comes late, and 1 to 3 threads, against f64.
    #[test]
    fn matches_f64() {
        if !available() {
            eprintln!("skipped: no AVX-512");
            return;
        }
        let (rows, cols) = (37, 21);
        let mut x: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 7919) % 1000) as f32 * 0.05 - 20.0)
            .collect();
        for r in 0..rows {
            x[r * cols + 3] = f32::NEG_INFINITY;
            x[r * cols + 5] = if r == rows - 1 {
                80.0
            } else {
                -60.0 + r as f32
            };
        }
        let want = reference(&x, rows, cols);
        for threads in 1..=3 {
            let mut got = vec![0.0f32; cols];
            // SAFETY: the sizes match the buffers.
            unsafe { columns(x.as_ptr(), rows, cols, got.as_mut_ptr(), threads) };
            for (c, (g, w)) in got.iter().zip(&want).enumerate() {
                if w.is_infinite() {
                    assert_eq!(*g as f64, *w, "column {c}");
                } else {
                    assert!(
                        (*g as f64 - w).abs() < 1e-5 * w.abs().max(1.0),
                        "column {c}: {g} vs {w}"
                    );
                }
            }
        }
    }
}
