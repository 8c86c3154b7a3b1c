//! The tied LM head's per-token log-sum-exp and its gradient, each in one pass over the
//! logits, for the CPU plugin's custom calls [`crate::custom_calls::HEAD_LOGSUMEXP`] and
//! [`crate::custom_calls::HEAD_LOGSUMEXP_GRAD`].
//!
//! The head computes `logits [V, N] = w [V, K] . h [N, K]^T` (`K = d + 1`: the bias is a
//! column of `w`, a column of ones in `h`) and `lse [N]`, each column's log-sum-exp. Given
//! the cotangent `g [N]` of `lse`, the logits' cotangent is
//! `p [V, N] = exp(logits - lse) * g` (softmax times `g`), and
//! `dw = p . h` (`[V, K]`), `dh = p^T . w` (`[N, K]`).
//!
//! Why: XLA CPU writes `p` (147 MB per 1,024-token chunk of `small`) and reads it back
//! for each of the two products, whose dot library packs it again; and it reads the
//! logits back from memory for the log-sum-exp. Here both passes go a block of [`BLOCK`]
//! vocabulary rows at a time, in L2: the forward pass reduces each block of logits right
//! after writing it, and the gradient makes `p`'s block from the logits as the two
//! products need it.
//!
//! Method: each thread takes a share of the vocabulary rows; the operand every block
//! shares (`h` or `h^T`) is packed once. Forward, per block: the logits' rows, then their
//! running maximum and sum per token. Gradient, per block: `p`'s rows, then `dw`'s rows
//! (`p . h`, all of `dw` it will ever get), then `w^T . p` added to the thread's own
//! `dh^T [K, N]` (that orientation has `K = 257` as the products' row count, which
//! wastes 3% of the micro-kernel's 14-row panels; as the column count it would waste 11%
//! of the 32-wide ones). The threads' `dh^T` are summed and transposed at the end.

#[cfg(target_arch = "x86_64")]
use crate::gemm::{self, Left, MatRef, PackedA, PackedB, Packs, Right, Store};
#[cfg(target_arch = "x86_64")]
use crate::logsumexp::{self, Partial};
#[cfg(target_arch = "x86_64")]
use crate::simd;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Vocabulary rows per block: `p`'s block (`BLOCK x N`, 900 KB for 1,024 tokens) stays
/// in L2 between its two products; a multiple of the micro-kernel's 32 columns and 14
/// rows. 128 rows were 8% slower (more packing of `h` per product).
const BLOCK: usize = 224;

/// Whether the kernel can run here (x86-64 with AVX-512F).
pub fn available() -> bool {
    crate::gemm::available()
}

/// The forward pass's operands and results; `v`, `n`, `k` as in the module's doc, all
/// row-major f32.
#[derive(Clone, Copy)]
pub struct HeadForward {
    /// `[V, K]`.
    pub w: *const f32,
    /// `[N, K]`.
    pub h: *const f32,
    /// `[V, N]`, written.
    pub logits: *mut f32,
    /// `[N]`, written.
    pub lse: *mut f32,
    pub v: usize,
    pub n: usize,
    pub k: usize,
}

// SAFETY: plain pointers handed to the threads of one call, which write disjoint rows of
// `logits`; the caller keeps everything alive.
unsafe impl Send for HeadForward {}
// SAFETY: as for `Send`.
unsafe impl Sync for HeadForward {}

/// The logits and their per-token log-sum-exp on up to `threads` threads.
///
/// # Safety
/// [`available`] must hold and every pointer be valid for its shape; the results must
/// not overlap the operands.
#[cfg(target_arch = "x86_64")]
pub unsafe fn forward(op: HeadForward, threads: usize) {
    let (n, k) = (op.n, op.k);
    // `h^T`, the right operand of every block's logits, packed once for all of them.
    let h_t = PackedB::new(MatRef::rows(op.h, k).t(), k, n);
    let partials = by_vocabulary_shares(op.v, threads, |start, end| {
        // SAFETY: rows `start..end` lie inside the operands; threads get disjoint ones.
        unsafe { forward_rows(op, &h_t, start, end) }
    });
    logsumexp::merge(&partials, op.lse);
}

/// Off x86-64 [`available`] is false and nothing calls the kernel.
#[cfg(not(target_arch = "x86_64"))]
pub unsafe fn forward(_: HeadForward, _: usize) {
    unreachable!("`available` is false off x86-64")
}

/// `work(start, end)` for each thread's share of `v` vocabulary rows (whole blocks), on up
/// to `threads` threads (this one among them); the results in the shares' order.
#[cfg(target_arch = "x86_64")]
fn by_vocabulary_shares<T: Send>(
    v: usize,
    threads: usize,
    work: impl Fn(usize, usize) -> T + Sync,
) -> Vec<T> {
    let blocks = v.div_ceil(BLOCK);
    let threads = threads.clamp(1, blocks.max(1));
    let share = blocks.div_ceil(threads) * BLOCK;
    let bounds = |t: usize| ((t * share).min(v), ((t + 1) * share).min(v));
    let work = &work;
    std::thread::scope(|s| {
        let others: Vec<_> = (1..threads)
            .map(|t| s.spawn(move || work(bounds(t).0, bounds(t).1)))
            .collect();
        let mut all = vec![work(bounds(0).0, bounds(0).1)];
        all.extend(others.into_iter().map(|h| h.join().expect("a head thread")));
        all
    })
}

/// Rows `start..end` of the logits, and their running maximum and sum per token.
#[cfg(target_arch = "x86_64")]
unsafe fn forward_rows(op: HeadForward, h_t: &PackedB, start: usize, end: usize) -> Partial {
    let (n, k) = (op.n, op.k);
    let mut partial = Partial::new(n);
    let mut packs = Packs::default();
    for v0 in (start..end).step_by(BLOCK) {
        let vb = BLOCK.min(end - v0);
        let w_blk = MatRef::rows(op.w.add(v0 * k), k);
        let logits = op.logits.add(v0 * n);
        let (left, right) = (Left::View(w_blk), Right::Packed(h_t));
        gemm::gemm_with(
            vb,
            n,
            k,
            left,
            right,
            logits,
            n,
            Store::Overwrite,
            &mut packs,
        );
        logsumexp::add_rows(&mut partial, logits, 0, vb, n);
    }
    partial
}

/// The kernel's operands and results; `v`, `n`, `k` as in the module's doc, all
/// row-major f32.
#[derive(Clone, Copy)]
pub struct HeadGrad {
    /// `[V, N]`.
    pub logits: *const f32,
    /// `[N]`.
    pub lse: *const f32,
    /// The cotangent of `lse`, `[N]`.
    pub g: *const f32,
    /// `[N, K]`.
    pub h: *const f32,
    /// `[V, K]`.
    pub w: *const f32,
    /// `[V, K]`, written.
    pub dw: *mut f32,
    /// `[N, K]`, written.
    pub dh: *mut f32,
    pub v: usize,
    pub n: usize,
    pub k: usize,
}

// SAFETY: plain pointers handed to the threads of one call; the threads write disjoint
// rows of `dw` and their own `dh` partials, and the caller keeps everything alive.
unsafe impl Send for HeadGrad {}
// SAFETY: as for `Send`.
unsafe impl Sync for HeadGrad {}

/// `dw` and `dh` of the module's doc on up to `threads` threads.
///
/// # Safety
/// [`available`] must hold and every pointer be valid for its shape; the results must
/// not overlap the operands.
#[cfg(target_arch = "x86_64")]
pub unsafe fn gradient(op: HeadGrad, threads: usize) {
    let (n, k) = (op.n, op.k);
    // `h^T`, the left operand of every block's `dw^T`, packed once for all of them.
    let h_t = PackedA::new(MatRef::rows(op.h, k).t(), k, n);
    let partials = by_vocabulary_shares(op.v, threads, |start, end| {
        // SAFETY: rows `start..end` lie inside the operands; threads get disjoint ones.
        unsafe { gradient_rows(op, &h_t, start, end) }
    });
    // dh [N, K] = the sum of the partial dh^T [K, N].
    for i in 0..n {
        for j in 0..k {
            *op.dh.add(i * k + j) = partials.iter().map(|p| p[j * n + i]).sum();
        }
    }
}

/// Off x86-64 [`available`] is false and nothing calls the kernel.
#[cfg(not(target_arch = "x86_64"))]
pub unsafe fn gradient(_: HeadGrad, _: usize) {
    unreachable!("`available` is false off x86-64")
}

/// Rows `start..end` of `dw`, and their share of `dh^T` (returned, `[K, N]`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn gradient_rows(op: HeadGrad, h_t: &PackedA, start: usize, end: usize) -> Vec<f32> {
    let (n, k) = (op.n, op.k);
    let mut dh_t = vec![0.0f32; k * n];
    let mut dw_t = vec![0.0f32; k * BLOCK];
    let mut p = vec![0.0f32; BLOCK * n];
    let mut packs = Packs::default();
    for v0 in (start..end).step_by(BLOCK) {
        let vb = BLOCK.min(end - v0);
        softmax_times_g(op, v0, vb, &mut p);
        let p_blk = MatRef::rows(p.as_ptr(), n);
        // dw^T [K, vb] = h^T p^T: K as the row count wastes 3% of the 14-row panels,
        // where as the column count it would waste 11% of the 32-wide ones.
        gemm::gemm_with(
            k,
            vb,
            n,
            Left::Packed(h_t),
            Right::View(p_blk.t()),
            dw_t.as_mut_ptr(),
            vb,
            Store::Overwrite,
            &mut packs,
        );
        for r in 0..vb {
            for j in 0..k {
                *op.dw.add((v0 + r) * k + j) = dw_t[j * vb + r];
            }
        }
        let w_t = MatRef::rows(op.w.add(v0 * k), k).t();
        gemm::gemm(
            k,
            n,
            vb,
            w_t,
            p_blk,
            dh_t.as_mut_ptr(),
            n,
            Store::Accumulate,
            &mut packs,
        );
    }
    dh_t
}

/// `p[r, c] = exp(logits[v0 + r, c] - lse[c]) * g[c]` for `r < vb`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn softmax_times_g(op: HeadGrad, v0: usize, vb: usize, p: &mut [f32]) {
    let n = op.n;
    for r in 0..vb {
        let row = op.logits.add((v0 + r) * n);
        for c0 in (0..n).step_by(16) {
            let lanes = ((1u32 << (n - c0).min(16)) - 1) as __mmask16;
            let lse = _mm512_maskz_loadu_ps(lanes, op.lse.add(c0));
            let g = _mm512_maskz_loadu_ps(lanes, op.g.add(c0));
            // Each row of 1,024 tokens is a 4 KB page, where the hardware prefetcher
            // stops: ask for the row after next (25 -> 18 ms per chunk on one core).
            _mm_prefetch::<_MM_HINT_T0>(row.add(2 * n + c0) as *const i8);
            let x = _mm512_maskz_loadu_ps(lanes, row.add(c0));
            let e = simd::exp(_mm512_sub_ps(x, lse));
            _mm512_mask_storeu_ps(p.as_mut_ptr().add(r * n + c0), lanes, _mm512_mul_ps(e, g));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(len: usize, seed: usize, scale: f32) -> Vec<f32> {
        (0..len)
            .map(|i| ((((i * 7919 + seed * 104_729) % 1000) as f32 / 500.0) - 1.0) * scale)
            .collect()
    }

    /// Uneven sizes (a partial last block, token counts off the vector width) on 1 to 3
    /// threads, against the products written out in f64.
    #[test]
    fn matches_f64() {
        if !available() {
            eprintln!("skipped: no AVX-512");
            return;
        }
        let (v, n, k) = (2 * BLOCK + 37, 21, 9);
        let logits = values(v * n, 1, 4.0);
        let h = values(n * k, 2, 1.0);
        let w = values(v * k, 3, 1.0);
        let g = values(n, 4, 1.0);
        let lse: Vec<f32> = (0..n)
            .map(|c| {
                let s: f64 = (0..v).map(|r| (logits[r * n + c] as f64).exp()).sum();
                s.ln() as f32
            })
            .collect();
        let p = |r: usize, c: usize| ((logits[r * n + c] - lse[c]) as f64).exp() * g[c] as f64;
        let want_dw: Vec<f64> = (0..v * k)
            .map(|i| (0..n).map(|c| p(i / k, c) * h[c * k + i % k] as f64).sum())
            .collect();
        let want_dh: Vec<f64> = (0..n * k)
            .map(|i| (0..v).map(|r| p(r, i / k) * w[r * k + i % k] as f64).sum())
            .collect();
        for threads in 1..=3 {
            let (mut dw, mut dh) = (vec![f32::NAN; v * k], vec![f32::NAN; n * k]);
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
            // SAFETY: the buffers have the sizes given; AVX-512 was checked.
            unsafe { gradient(op, threads) };
            for (got, want) in [(&dw, &want_dw), (&dh, &want_dh)] {
                let scale = want.iter().fold(0.0f64, |m, x| m.max(x.abs()));
                for (a, b) in got.iter().zip(want.iter()) {
                    assert!(
                        (*a as f64 - b).abs() <= 1e-5 * scale,
                        "{threads} threads: {a} against {b}"
                    );
                }
            }
        }
    }
}
