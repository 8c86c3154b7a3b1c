//! The vector routines of the attention kernels (AVX-512F), on one group of rows.
//! Score buffers are `[ROWS, blocks * KEYS]`; only the key blocks marked in `blocks` are
//! computed or read.

use super::{Group, HIDDEN, KEYS, ROWS};
use crate::simd::exp;
use std::arch::x86_64::*;

/// Lanes `0..n` of a 16-lane vector (all for n >= 16).
fn lanes(n: usize) -> __mmask16 {
    if n >= 16 {
        0xffff
    } else {
        ((1u32 << n) - 1) as __mmask16
    }
}

/// The indices of the blocks to compute.
fn computed(blocks: &[bool]) -> impl Iterator<Item = usize> + '_ {
    blocks
        .iter()
        .enumerate()
        .filter(|(_, &c)| c)
        .map(|(kb, _)| kb)
}

/// Which key blocks of one mask row show a key (a value above [`HIDDEN`]), into
/// `seen`; whether any does.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn blocks_seen(row: *const f32, keys: usize, seen: &mut [bool]) -> bool {
    let hidden = _mm512_set1_ps(HIDDEN);
    let mut any = false;
    for (kb, s) in seen.iter_mut().enumerate() {
        let first = kb * KEYS;
        let (m0, m1) = (lanes(keys - first), lanes(keys.saturating_sub(first + 16)));
        let a = _mm512_mask_cmp_ps_mask::<_CMP_GT_OQ>(
            m0,
            _mm512_maskz_loadu_ps(m0, row.add(first)),
            hidden,
        );
        let b = _mm512_mask_cmp_ps_mask::<_CMP_GT_OQ>(
            m1,
            _mm512_maskz_loadu_ps(m1, row.add(first + 16)),
            hidden,
        );
        *s = (a | b) != 0;
        any |= *s;
    }
    any
}

/// `out[r, j] = rows[r] . k[j] (+ mask[r, j])` for the computed key blocks, from the
/// keys transposed in blocks; lanes past the last key are left as they are.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn scores(g: &Group, keys_t: &[f32], blocks: &[bool], out: &mut [f32]) {
    let width = blocks.len() * KEYS;
    for kb in computed(blocks) {
        let kt = keys_t.as_ptr().add(kb * g.dh * KEYS);
        let mut acc = [[_mm512_setzero_ps(); 2]; ROWS];
        for c in 0..g.dh {
            let k0 = _mm512_loadu_ps(kt.add(c * KEYS));
            let k1 = _mm512_loadu_ps(kt.add(c * KEYS + 16));
            for (r, a) in acc.iter_mut().enumerate() {
                let x = _mm512_set1_ps(*g.rows_at.add(g.row(r) * g.stride + c));
                a[0] = _mm512_fmadd_ps(x, k0, a[0]);
                a[1] = _mm512_fmadd_ps(x, k1, a[1]);
            }
        }
        let first = kb * KEYS;
        for (r, a) in acc.iter().enumerate().take(g.rows) {
            let dst = out.as_mut_ptr().add(r * width + first);
            for (half, part) in a.iter().enumerate() {
                let value = match g.mask {
                    Some(mask) => {
                        let m = lanes(g.keys.saturating_sub(first + 16 * half));
                        let at = mask.add(r * g.keys + first + 16 * half);
                        _mm512_add_ps(*part, _mm512_maskz_loadu_ps(m, at))
                    }
                    None => *part,
                };
                _mm512_storeu_ps(dst.add(16 * half), value);
            }
        }
    }
}

/// Replaces each computed score by `exp(score - row max)` (0 past the last key) and
/// returns each row's maximum and sum of them.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn softmax_numerators(
    g: &Group,
    blocks: &[bool],
    scores: &mut [f32],
) -> ([f32; ROWS], [f32; ROWS]) {
    let width = blocks.len() * KEYS;
    let (mut tops, mut sums) = ([0.0f32; ROWS], [1.0f32; ROWS]);
    for r in 0..g.rows {
        let row = scores.as_mut_ptr().add(r * width);
        let mut top = _mm512_set1_ps(f32::NEG_INFINITY);
        for kb in computed(blocks) {
            for half in 0..2 {
                let first = kb * KEYS + 16 * half;
                let m = lanes(g.keys.saturating_sub(first));
                top = _mm512_mask_max_ps(top, m, top, _mm512_loadu_ps(row.add(first)));
            }
        }
        tops[r] = _mm512_reduce_max_ps(top);
        let top = _mm512_set1_ps(tops[r]);
        let mut total = _mm512_setzero_ps();
        for kb in computed(blocks) {
            for half in 0..2 {
                let first = kb * KEYS + 16 * half;
                let m = lanes(g.keys.saturating_sub(first));
                let e = exp(_mm512_sub_ps(_mm512_loadu_ps(row.add(first)), top));
                let e = _mm512_maskz_mov_ps(m, e);
                _mm512_storeu_ps(row.add(first), e);
                total = _mm512_add_ps(total, e);
            }
        }
        sums[r] = _mm512_reduce_add_ps(total);
    }
    (tops, sums)
}

/// Replaces each computed score by its probability `exp(score - tops[r]) / sums[r]` (0
/// past the last key), the statistics of the forward pass.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn probabilities(
    g: &Group,
    blocks: &[bool],
    scores: &mut [f32],
    tops: &[f32; ROWS],
    sums: &[f32; ROWS],
) {
    let width = blocks.len() * KEYS;
    for r in 0..g.rows {
        let row = scores.as_mut_ptr().add(r * width);
        let (top, scale) = (_mm512_set1_ps(tops[r]), _mm512_set1_ps(1.0 / sums[r]));
        for kb in computed(blocks) {
            for half in 0..2 {
                let first = kb * KEYS + 16 * half;
                let m = lanes(g.keys.saturating_sub(first));
                let e = exp(_mm512_sub_ps(_mm512_loadu_ps(row.add(first)), top));
                _mm512_storeu_ps(row.add(first), _mm512_maskz_mul_ps(m, e, scale));
            }
        }
    }
}

/// The scores' gradient from the probabilities' one, in place:
/// `ds[r, j] = p[r, j] (dp[r, j] - dots[r])` with `dots[r] = d_out[r] . out[r]`.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn softmax_grad(
    g: &Group,
    blocks: &[bool],
    p: &[f32],
    dp: &mut [f32],
    dots: &[f32; ROWS],
) {
    let width = blocks.len() * KEYS;
    for (r, &row_dot) in dots.iter().enumerate().take(g.rows) {
        let dot = _mm512_set1_ps(row_dot);
        for kb in computed(blocks) {
            for half in 0..2 {
                let at = r * width + kb * KEYS + 16 * half;
                let pv = _mm512_loadu_ps(p.as_ptr().add(at));
                let d = _mm512_sub_ps(_mm512_loadu_ps(dp.as_ptr().add(at)), dot);
                _mm512_storeu_ps(dp.as_mut_ptr().add(at), _mm512_mul_ps(pv, d));
            }
        }
    }
}

/// `out[r] = scale[r] sum_j w[r, j] v[j]` over the computed key blocks (rows of `v` and
/// `out` are `g.stride` apart), `dh` in pieces of 32.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn weighted_values(
    g: &Group,
    v: *const f32,
    blocks: &[bool],
    w: &[f32],
    scale: &[f32; ROWS],
    out: *mut f32,
) {
    let width = blocks.len() * KEYS;
    let dh = g.dh;
    for c0 in (0..dh).step_by(32) {
        let m = [lanes(dh - c0), lanes(dh.saturating_sub(c0 + 16))];
        let mut acc = [[_mm512_setzero_ps(); 2]; ROWS];
        for kb in computed(blocks) {
            for j in kb * KEYS..((kb + 1) * KEYS).min(g.keys) {
                let vj = v.add(j * g.stride + c0);
                let v0 = _mm512_maskz_loadu_ps(m[0], vj);
                let v1 = _mm512_maskz_loadu_ps(m[1], vj.add(16));
                for (r, a) in acc.iter_mut().enumerate() {
                    let x = _mm512_set1_ps(*w.as_ptr().add(r * width + j));
                    a[0] = _mm512_fmadd_ps(x, v0, a[0]);
                    a[1] = _mm512_fmadd_ps(x, v1, a[1]);
                }
            }
        }
        for (r, a) in acc.iter().enumerate().take(g.rows) {
            let s = _mm512_set1_ps(scale[r]);
            let dst = out.add(r * g.stride + c0);
            _mm512_mask_storeu_ps(dst, m[0], _mm512_mul_ps(a[0], s));
            _mm512_mask_storeu_ps(dst.add(16), m[1], _mm512_mul_ps(a[1], s));
        }
    }
}

/// `acc[j] += sum_r w[r, j] rows[r]` over the group's real rows and the computed key
/// blocks (`acc` is `[keys, dh]`), `dh` in pieces of 32.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn accumulate_keys(g: &Group, blocks: &[bool], w: &[f32], acc: &mut [f32]) {
    let width = blocks.len() * KEYS;
    let dh = g.dh;
    for c0 in (0..dh).step_by(32) {
        let m = [lanes(dh - c0), lanes(dh.saturating_sub(c0 + 16))];
        let mut x = [[_mm512_setzero_ps(); 2]; ROWS];
        for (r, xr) in x.iter_mut().enumerate().take(g.rows) {
            let at = g.rows_at.add(r * g.stride + c0);
            *xr = [
                _mm512_maskz_loadu_ps(m[0], at),
                _mm512_maskz_loadu_ps(m[1], at.add(16)),
            ];
        }
        for kb in computed(blocks) {
            for j in kb * KEYS..((kb + 1) * KEYS).min(g.keys) {
                let dst = acc.as_mut_ptr().add(j * dh + c0);
                let mut a0 = _mm512_maskz_loadu_ps(m[0], dst);
                let mut a1 = _mm512_maskz_loadu_ps(m[1], dst.add(16));
                for (r, xr) in x.iter().enumerate().take(g.rows) {
                    let s = _mm512_set1_ps(*w.as_ptr().add(r * width + j));
                    a0 = _mm512_fmadd_ps(s, xr[0], a0);
                    a1 = _mm512_fmadd_ps(s, xr[1], a1);
                }
                _mm512_mask_storeu_ps(dst, m[0], a0);
                _mm512_mask_storeu_ps(dst.add(16), m[1], a1);
            }
        }
    }
}
