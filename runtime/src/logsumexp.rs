//! `log sum_r exp(x[r, c])` for every column of a row-major f32 matrix, in one pass over
//! its rows, for the forward half of the CPU plugin's custom call
//! [`crate::custom_calls::HEAD_LOGSUMEXP`] ([`crate::head_logsumexp`] reduces each block
//! of logits right after writing it, while it is in L2).
//!
//! Why: the tied LM head's loss takes the log-sum-exp of `[V, N]` logits over the
//! vocabulary (36,000 rows of `small`). XLA CPU computes it as a maximum, then a sum of
//! exponentials, each a pass over the 147 MB of a 1,024-token chunk: 29 ms per chunk.
//!
//! Method: a [`Partial`] keeps, per column, a running maximum and a sum of exponentials
//! relative to it. Rows come in blocks of [`BLOCK`]: the block's maximum is found first,
//! so the running sum is rescaled once per block rather than once per row. Partials of
//! different rows (one per thread) are merged at the end.

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
pub(crate) struct Partial {
    max: Vec<f32>,
    sum: Vec<f32>,
}

impl Partial {
    /// No rows yet. The maximum starts at `f32::MIN`, not `-inf`, so that rescaling
    /// never computes `-inf - -inf`.
    pub(crate) fn new(cols: usize) -> Partial {
        Partial {
            max: vec![f32::MIN; cols],
            sum: vec![0.0; cols],
        }
    }
}

/// `out[c]`, the log-sum-exp of every column over the rows of all `partials`.
///
/// # Safety
/// `out` must hold as many floats as the partials have columns.
pub(crate) unsafe fn merge(partials: &[Partial], out: *mut f32) {
    let cols = partials.first().map_or(0, |p| p.max.len());
    for c in 0..cols {
        let max = partials.iter().map(|p| p.max[c]).fold(f32::MIN, f32::max);
        let sum: f32 = partials
            .iter()
            .map(|p| p.sum[c] * (p.max[c] - max).exp())
            .sum();
        *out.add(c) = max + sum.ln();
    }
}

/// Adds rows `start..end` of `x [.., cols]` to `p`.
///
/// # Safety
/// [`available`] must hold and `x` hold those rows.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn add_rows(
    p: &mut Partial,
    x: *const f32,
    start: usize,
    end: usize,
    cols: usize,
) {
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
    /// whose maximum comes late, and the rows split into 1 to 3 partials, against f64.
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
        for parts in 1..=3 {
            let mut got = vec![0.0f32; cols];
            let share = rows.div_ceil(parts);
            let partials: Vec<Partial> = (0..parts)
                .map(|t| {
                    let mut p = Partial::new(cols);
                    let (start, end) = ((t * share).min(rows), ((t + 1) * share).min(rows));
                    // SAFETY: rows `start..end` lie inside `x`; AVX-512 was checked.
                    unsafe { add_rows(&mut p, x.as_ptr(), start, end, cols) };
                    p
                })
                .collect();
            // SAFETY: `got` holds `cols` floats.
            unsafe { merge(&partials, got.as_mut_ptr()) };
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
