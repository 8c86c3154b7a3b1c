//! Matrix-vector products `y = W x` in f32 on AVX-512 for decode steps (one token), on
//! the calling thread and whichever persistent helper threads join
//! ([`crate::helpers::share`]): such a product reads its matrix once and takes tens of
//! microseconds, too short to start a thread for, while one core reads about 27 GB/s
//! and two about 45.

#![cfg(target_arch = "x86_64")]

use std::sync::atomic::{AtomicUsize, Ordering};

/// `y = scale * W x` (then `max(., 0)` if `relu`) for `W [rows, cols]` row-major.
#[derive(Clone, Copy)]
pub(crate) struct Matvec {
    pub w: *const f32,
    pub rows: usize,
    pub cols: usize,
    pub x: *const f32,
    pub y: *mut f32,
    pub scale: f32,
    pub relu: bool,
}

// SAFETY: the threads of one [`Matvec::shared`] call write disjoint rows of `y` and read
// the rest; the caller keeps every buffer alive until it returns.
unsafe impl Sync for Matvec {}

impl Matvec {
    /// The product in chunks of about 64 KB of `W`, taken by this thread and whichever
    /// helper threads join.
    pub(crate) unsafe fn shared(self) {
        let per_chunk = (16_384 / self.cols.max(1)).max(4);
        let chunks = self.rows.div_ceil(per_chunk);
        let next = AtomicUsize::new(0);
        crate::helpers::share(&|| loop {
            let c = next.fetch_add(1, Ordering::Relaxed);
            if c >= chunks {
                break;
            }
            let r0 = c * per_chunk;
            // SAFETY: rows `r0..` lie inside `W` and `y`; each chunk is taken once.
            unsafe { self.rows(r0, per_chunk.min(self.rows - r0)) };
        });
    }

    /// Rows `r0..r0 + rows` of the product.
    unsafe fn rows(&self, r0: usize, rows: usize) {
        avx512::matvec(
            self.w.add(r0 * self.cols),
            rows,
            self.cols,
            self.x,
            self.y.add(r0),
            self.scale,
            self.relu,
        )
    }
}

mod avx512 {
    use std::arch::x86_64::*;

    /// `y = scale * W x` for `W [rows, cols]` row-major, four rows at a time.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn matvec(
        w: *const f32,
        rows: usize,
        cols: usize,
        x: *const f32,
        y: *mut f32,
        scale: f32,
        relu: bool,
    ) {
        const R: usize = 4;
        let tail = (cols % 16) as u32;
        let tail_lanes: __mmask16 = ((1u32 << tail) - 1) as __mmask16;
        let mut r0 = 0;
        while r0 < rows {
            let n = (rows - r0).min(R);
            let mut acc = [_mm512_setzero_ps(); R];
            let mut c = 0;
            while c + 16 <= cols {
                let xv = _mm512_loadu_ps(x.add(c));
                for (i, a) in acc.iter_mut().enumerate().take(n) {
                    let wv = _mm512_loadu_ps(w.add((r0 + i) * cols + c));
                    *a = _mm512_fmadd_ps(wv, xv, *a);
                }
                c += 16;
            }
            if tail > 0 {
                let xv = _mm512_maskz_loadu_ps(tail_lanes, x.add(c));
                for (i, a) in acc.iter_mut().enumerate().take(n) {
                    let wv = _mm512_maskz_loadu_ps(tail_lanes, w.add((r0 + i) * cols + c));
                    *a = _mm512_fmadd_ps(wv, xv, *a);
                }
            }
            for (i, a) in acc.iter().enumerate().take(n) {
                let v = scale * _mm512_reduce_add_ps(*a);
                *y.add(r0 + i) = if relu { v.max(0.0) } else { v };
            }
            r0 += R;
        }
    }
}
