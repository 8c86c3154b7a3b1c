//! Vector math shared by our AVX-512 kernels.

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;

/// `e^x` to about 1 ulp (Cephes' polynomial after reduction by ln 2); exactly 0
/// below -103.9, where f32 has nothing but zero and subnormals.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn exp(x: __m512) -> __m512 {
    let keep = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(x, _mm512_set1_ps(-103.9));
    let x = _mm512_min_ps(
        _mm512_max_ps(x, _mm512_set1_ps(-103.9)),
        _mm512_set1_ps(88.37),
    );
    let n =
        _mm512_roundscale_ps::<0x08>(_mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)));
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_359_4), x);
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.121_944_4e-4), r);
    let mut y = _mm512_set1_ps(1.987_569_1e-4);
    for c in [
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        1.666_666_5e-1,
        0.5,
    ] {
        y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(c));
    }
    let y = _mm512_fmadd_ps(
        y,
        _mm512_mul_ps(r, r),
        _mm512_add_ps(r, _mm512_set1_ps(1.0)),
    );
    _mm512_maskz_mov_ps(keep, _mm512_scalef_ps(y, n))
}
