//! A single-threaded f32 matrix product on AVX-512, for kernels that multiply many
//! medium-sized matrices at once and split the products, not their insides, over the
//! cores (the experts' MLPs of [`crate::expert_mlp`]).
//!
//! Method (as BLIS): the right operand is packed in blocks of `KC` rows into panels of
//! [`NR`] columns, the left one into panels of [`MR`] rows, both with the contracted
//! index outermost; a micro-kernel keeps an `MR x NR` block of the result in 28 vector
//! registers and adds one rank-1 update per contracted index. Any strides are accepted
//! (the packing reads them), so transposed operands cost no copy of their own.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Rows of the result per micro-kernel call.
pub const MR: usize = 14;
/// Columns of the result per micro-kernel call (two vectors of 16).
pub const NR: usize = 32;
/// At most this many contracted indices per packed block (a `KC x MR` panel of the left
/// operand, 18 KB, stays in L1); `k` is split into equal blocks, so that 257 is one
/// block, not 256 + 1 (a second pass over the result for one rank-1 update).
const KC: usize = 320;
/// Result rows per packed block of the left operand (`MC x KC`, 210 KB, in L2).
const MC: usize = 12 * MR;
/// Result columns per packed block of the right operand (`KC x NC`, 640 KB, in L2).
const NC: usize = 512;

/// A read-only matrix view: element `(i, j)` at `ptr[i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub struct MatRef {
    pub ptr: *const f32,
    pub rs: isize,
    pub cs: isize,
}

// SAFETY: a read-only view; whoever reads through it (the unsafe [`gemm`]) answers for
// the memory being valid and unchanged while it does.
unsafe impl Send for MatRef {}
// SAFETY: as for `Send`.
unsafe impl Sync for MatRef {}

impl MatRef {
    /// A row-major `[rows, cols]` matrix.
    pub fn rows(ptr: *const f32, cols: usize) -> MatRef {
        MatRef {
            ptr,
            rs: cols as isize,
            cs: 1,
        }
    }

    /// The view from row `i` and column `j` on.
    ///
    /// # Safety
    /// That element must lie inside the viewed memory.
    pub unsafe fn from(self, i: usize, j: usize) -> MatRef {
        MatRef {
            ptr: self.ptr.offset(i as isize * self.rs + j as isize * self.cs),
            ..self
        }
    }

    /// The transpose of this view.
    pub fn t(self) -> MatRef {
        MatRef {
            ptr: self.ptr,
            rs: self.cs,
            cs: self.rs,
        }
    }
}

/// What the product does with the result buffer.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Store {
    /// `c = a b`.
    Overwrite,
    /// `c += a b`.
    Accumulate,
    /// `c = max(a b, 0)`.
    Relu,
}

/// One thread's packing buffers, reused across products.
#[derive(Default)]
pub struct Packs {
    a: Vec<f32>,
    b: Vec<f32>,
}

/// Whether [`gemm`] can run here (x86-64 with AVX-512F).
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

/// `c [m, n]` (row-major, `ldc` floats per row) from `a [m, k] . b [k, n]` as `store`
/// says. With `k = 0` the product is zero.
///
/// # Safety
/// [`available`] must hold; `a` and `b` must be valid for their `m x k` and `k x n`
/// elements, `c` for `m` rows of `ldc >= n` floats, and `c` must not overlap them.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm(
    m: usize,
    n: usize,
    k: usize,
    a: MatRef,
    b: MatRef,
    c: *mut f32,
    ldc: usize,
    store: Store,
    packs: &mut Packs,
) {
    gemm_with(m, n, k, Left::View(a), Right::View(b), c, ldc, store, packs)
}

/// The left operand of [`gemm_with`]: a view, packed by the product, or packed once
/// ([`PackedA`]) for many products with different right operands.
#[derive(Clone, Copy)]
pub enum Left<'a> {
    View(MatRef),
    Packed(&'a PackedA),
}

/// The right operand of [`gemm_with`]: a view, or packed once ([`PackedB`]).
#[derive(Clone, Copy)]
pub enum Right<'a> {
    View(MatRef),
    Packed(&'a PackedB),
}

/// A left operand `[m, k]` packed as [`gemm_with`] reads it: block `(p, i)` holds columns
/// `p * kc..` and rows `i * MC..`.
pub struct PackedA {
    m: usize,
    k: usize,
    blocks: Vec<Vec<f32>>,
}

/// A right operand `[k, n]` packed as [`gemm_with`] reads it: block `(j, p)` holds
/// columns `j * NC..` and rows `p * kc..`.
pub struct PackedB {
    n: usize,
    k: usize,
    blocks: Vec<Vec<f32>>,
}

/// Contracted indices per block for a product over `k` (at most [`KC`], all equal but the
/// last).
fn block_depth(k: usize) -> usize {
    k.div_ceil(k.div_ceil(KC)).max(1)
}

#[cfg(target_arch = "x86_64")]
impl PackedA {
    /// Packs `a [m, k]`.
    ///
    /// # Safety
    /// [`available`] must hold and `a` be valid for its `m x k` elements.
    pub unsafe fn new(a: MatRef, m: usize, k: usize) -> PackedA {
        let kc_max = block_depth(k);
        let mut blocks = Vec::new();
        for p0 in (0..k).step_by(kc_max) {
            let kc = kc_max.min(k - p0);
            for i0 in (0..m).step_by(MC) {
                let mc = MC.min(m - i0);
                let mut block = vec![0.0; mc.div_ceil(MR) * MR * kc];
                pack_a(a.from(i0, 0), p0, kc, mc, &mut block);
                blocks.push(block);
            }
        }
        PackedA { m, k, blocks }
    }
}

#[cfg(target_arch = "x86_64")]
impl PackedB {
    /// Packs `b [k, n]`.
    ///
    /// # Safety
    /// [`available`] must hold and `b` be valid for its `k x n` elements.
    pub unsafe fn new(b: MatRef, k: usize, n: usize) -> PackedB {
        let kc_max = block_depth(k);
        let mut blocks = Vec::new();
        for j0 in (0..n).step_by(NC) {
            let nc = NC.min(n - j0);
            for p0 in (0..k).step_by(kc_max) {
                let kc = kc_max.min(k - p0);
                let mut block = vec![0.0; nc.div_ceil(NR) * NR * kc];
                pack_b(b, p0, kc, j0, nc, &mut block);
                blocks.push(block);
            }
        }
        PackedB { n, k, blocks }
    }
}

/// [`gemm`] with either operand possibly packed beforehand.
///
/// # Safety
/// As for [`gemm`]; a packed operand must have been packed with these `m`, `n`, `k`
/// (checked: a mismatch panics).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_with(
    m: usize,
    n: usize,
    k: usize,
    a: Left,
    b: Right,
    c: *mut f32,
    ldc: usize,
    store: Store,
    packs: &mut Packs,
) {
    if let Left::Packed(p) = a {
        assert!((p.m, p.k) == (m, k), "packed left operand of another shape");
    }
    if let Right::Packed(p) = b {
        assert!(
            (p.n, p.k) == (n, k),
            "packed right operand of another shape"
        );
    }
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if store != Store::Accumulate {
            for i in 0..m {
                std::ptr::write_bytes(c.add(i * ldc), 0, n);
            }
        }
        return;
    }
    let kc_max = block_depth(k);
    let (k_blocks, m_blocks) = (k.div_ceil(kc_max), m.div_ceil(MC));
    packs.a.resize(MC.min(m).div_ceil(MR) * MR * kc_max, 0.0);
    packs.b.resize(NC.min(n).div_ceil(NR) * NR * kc_max, 0.0);
    for (jb, j0) in (0..n).step_by(NC).enumerate() {
        let nc = NC.min(n - j0);
        for (pb, p0) in (0..k).step_by(kc_max).enumerate() {
            let kc = kc_max.min(k - p0);
            let first = p0 == 0;
            let last = p0 + kc == k;
            // Later blocks of `k` add to what the first one stored; the last applies
            // the ReLU.
            let add = !first || store == Store::Accumulate;
            let relu = last && store == Store::Relu;
            let b_block = match b {
                Right::View(b) => {
                    pack_b(b, p0, kc, j0, nc, &mut packs.b);
                    packs.b.as_ptr()
                }
                Right::Packed(p) => p.blocks[jb * k_blocks + pb].as_ptr(),
            };
            for (ib, i0) in (0..m).step_by(MC).enumerate() {
                let mc = MC.min(m - i0);
                let a_block = match a {
                    Left::View(a) => {
                        pack_a(a.from(i0, 0), p0, kc, mc, &mut packs.a);
                        packs.a.as_ptr()
                    }
                    Left::Packed(p) => p.blocks[pb * m_blocks + ib].as_ptr(),
                };
                // Each `MR`-row panel of the left block (`kc x MR`, 18 KB) stays in L1
                // while the right block's panels stream past it from L2.
                for ir in (0..mc).step_by(MR) {
                    let rows = MR.min(mc - ir);
                    let ap = a_block.add(ir * kc);
                    for jr in (0..nc).step_by(NR) {
                        let cols = NR.min(nc - jr);
                        let bp = b_block.add(jr * kc);
                        let cp = c.add((i0 + ir) * ldc + j0 + jr);
                        micro_kernel(kc, ap, bp, cp, ldc, rows, cols, add, relu);
                    }
                }
            }
        }
    }
}

/// [`gemm`] on `threads` threads (the caller's and `threads - 1` more), each computing a
/// share of the result's columns (whole [`NR`]-column panels) with its own packing
/// buffers: each packs only its share of `b`, the larger operand of the products this
/// serves (the tied head's `[tokens, d] . [V, d]^T`).
///
/// # Safety
/// As for [`gemm`].
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_threads(
    m: usize,
    n: usize,
    k: usize,
    a: MatRef,
    b: MatRef,
    c: *mut f32,
    ldc: usize,
    store: Store,
    threads: usize,
) {
    let panels = n.div_ceil(NR);
    let threads = threads.clamp(1, panels.max(1));
    let share = panels.div_ceil(threads) * NR;
    let c_addr = c as usize;
    let work = move |t: usize| {
        let b: MatRef = b; // the whole view (Send), not its pointer field
        let j0 = (t * share).min(n);
        let cols = share.min(n - j0);
        let b_part = b.from(0, j0);
        let c_part = (c_addr as *mut f32).add(j0);
        // SAFETY: the threads write disjoint column ranges of `c`; the rest is the
        // caller's promise.
        unsafe {
            gemm(
                m,
                cols,
                k,
                a,
                b_part,
                c_part,
                ldc,
                store,
                &mut Packs::default(),
            )
        };
    };
    std::thread::scope(|s| {
        for t in 1..threads {
            s.spawn(move || work(t));
        }
        work(0);
    });
}

/// Off x86-64 [`available`] is false and nothing calls the products.
#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm(
    _: usize,
    _: usize,
    _: usize,
    _: MatRef,
    _: MatRef,
    _: *mut f32,
    _: usize,
    _: Store,
    _: &mut Packs,
) {
    unreachable!("`available` is false off x86-64")
}

/// Packs rows `p0..p0 + kc` of `b`'s columns `j0..j0 + nc` into panels of `NR`
/// columns, each `[kc][NR]`, zero beyond `nc`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn pack_b(b: MatRef, p0: usize, kc: usize, j0: usize, nc: usize, out: &mut [f32]) {
    let lanes = lane_offsets(b.cs);
    for (panel, jr) in (0..nc).step_by(NR).enumerate() {
        let cols = NR.min(nc - jr);
        let dst = out.as_mut_ptr().add(panel * NR * kc);
        for p in 0..kc {
            let src = b
                .ptr
                .offset((p0 + p) as isize * b.rs + (j0 + jr) as isize * b.cs);
            for half in 0..NR / 16 {
                let m = lane_mask(cols.saturating_sub(half * 16));
                let from = src.offset((half * 16) as isize * b.cs);
                let v = load_lanes(from, b.cs, lanes, m);
                _mm512_storeu_ps(dst.add(p * NR + half * 16), v);
            }
        }
    }
}

/// Packs columns `p0..p0 + kc` of `a`'s `m` rows into panels of `MR` rows, each
/// `[kc][MR]`, zero beyond `m`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn pack_a(a: MatRef, p0: usize, kc: usize, m: usize, out: &mut [f32]) {
    let lanes = lane_offsets(a.rs);
    let panel_lanes = lane_mask(MR);
    for (panel, ir) in (0..m).step_by(MR).enumerate() {
        let m_in = lane_mask(MR.min(m - ir));
        let dst = out.as_mut_ptr().add(panel * MR * kc);
        for p in 0..kc {
            let src = a.ptr.offset(ir as isize * a.rs + (p0 + p) as isize * a.cs);
            let v = load_lanes(src, a.rs, lanes, m_in);
            _mm512_mask_storeu_ps(dst.add(p * MR), panel_lanes, v);
        }
    }
}

/// The first `n` of 16 lanes.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn lane_mask(n: usize) -> __mmask16 {
    ((1u32 << n.min(16)) - 1) as __mmask16
}

/// Lane `l` at `l * stride` floats, for [`load_lanes`]; None when 15 strides do not fit
/// a gather's 32-bit offsets.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn lane_offsets(stride: isize) -> Option<__m512i> {
    let far = stride.checked_mul(15)?;
    (i32::try_from(far).is_ok() && stride >= 0).then(|| {
        let s = stride as i32;
        _mm512_mullo_epi32(
            _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
            _mm512_set1_epi32(s),
        )
    })
}

/// The floats at `src + l * stride` for the lanes `l` in `mask`, zero in the others: a
/// plain load when they are adjacent, a gather when `lanes` holds their offsets, else
/// one by one.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn load_lanes(
    src: *const f32,
    stride: isize,
    lanes: Option<__m512i>,
    mask: __mmask16,
) -> __m512 {
    let zero = _mm512_setzero_ps();
    if stride == 1 {
        return _mm512_maskz_loadu_ps(mask, src);
    }
    match lanes {
        Some(idx) => _mm512_mask_i32gather_ps::<4>(zero, mask, idx, src),
        None => {
            let mut v = [0.0f32; 16];
            for (l, x) in v.iter_mut().enumerate() {
                if mask & (1 << l) != 0 {
                    *x = *src.offset(l as isize * stride);
                }
            }
            _mm512_loadu_ps(v.as_ptr())
        }
    }
}

/// `c[..rows, ..cols]` from `kc` rank-1 updates of packed panels `a [kc][MR]` and
/// `b [kc][NR]`: added to `c` if `add`, then clamped at zero if `relu`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn micro_kernel(
    kc: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    rows: usize,
    cols: usize,
    add: bool,
    relu: bool,
) {
    // The result's tile is read (or written) after the loop: ask for its lines now.
    for i in 0..rows {
        _mm_prefetch::<_MM_HINT_T0>(c.add(i * ldc) as *const i8);
        _mm_prefetch::<_MM_HINT_T0>(c.add(i * ldc + 16) as *const i8);
    }
    let mut acc = [[_mm512_setzero_ps(); 2]; MR];
    for p in 0..kc {
        let b0 = _mm512_loadu_ps(b.add(p * NR));
        let b1 = _mm512_loadu_ps(b.add(p * NR + 16));
        // The right panel streams from L2; asking for it 8 steps ahead keeps the FMAs
        // fed (measured: 207 -> 222 GFLOP/s for the micro-kernel alone, one core).
        _mm_prefetch::<_MM_HINT_T0>(b.add((p + 8) * NR) as *const i8);
        let ap = a.add(p * MR);
        for (i, row) in acc.iter_mut().enumerate() {
            let ai = _mm512_set1_ps(*ap.add(i));
            row[0] = _mm512_fmadd_ps(ai, b0, row[0]);
            row[1] = _mm512_fmadd_ps(ai, b1, row[1]);
        }
    }
    let (m0, m1) = (lane_mask(cols), lane_mask(cols.saturating_sub(16)));
    let zero = _mm512_setzero_ps();
    for (i, row) in acc.iter().enumerate().take(rows) {
        let cp = c.add(i * ldc);
        for (half, (v, m)) in [(row[0], m0), (row[1], m1)].into_iter().enumerate() {
            let dst = cp.add(half * 16);
            let v = if add {
                _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, dst))
            } else {
                v
            };
            let v = if relu { _mm512_max_ps(v, zero) } else { v };
            _mm512_mask_storeu_ps(dst, m, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (((i * 7919 + seed * 104_729) % 1000) as f32 / 500.0) - 1.0)
            .collect()
    }

    /// Two and three threads splitting the columns give the one-thread result, for
    /// widths that are not a multiple of the panel and fewer panels than threads.
    #[test]
    fn threads_split_the_columns() {
        if !available() {
            eprintln!("skipped: no AVX-512");
            return;
        }
        for &(m, n, k) in &[(17, 101, 9), (5, 20, 3), (30, 700, 40)] {
            let a = values(m * k, 4);
            let b = values(n * k, 5);
            let (va, vb) = (MatRef::rows(a.as_ptr(), k), MatRef::rows(b.as_ptr(), k).t());
            let mut want = vec![0.0f32; m * n];
            // SAFETY: the sizes match the buffers; AVX-512 was checked.
            unsafe {
                gemm(
                    m,
                    n,
                    k,
                    va,
                    vb,
                    want.as_mut_ptr(),
                    n,
                    Store::Overwrite,
                    &mut Packs::default(),
                )
            };
            for threads in [2, 3] {
                let mut got = vec![f32::NAN; m * n];
                // SAFETY: as above.
                unsafe {
                    gemm_threads(
                        m,
                        n,
                        k,
                        va,
                        vb,
                        got.as_mut_ptr(),
                        n,
                        Store::Overwrite,
                        threads,
                    )
                };
                assert_eq!(got, want, "{m}x{n}x{k} on {threads} threads");
            }
        }
    }

    /// Every store mode, both storage orders of both operands, sizes off the panel
    /// multiples and `k` over one packed block, against a plain f64 loop.
    #[test]
    fn matches_a_plain_product() {
        if !available() {
            eprintln!("skipped: no AVX-512");
            return;
        }
        let mut packs = Packs::default();
        for &(m, n, k) in &[
            (1, 1, 1),
            (13, 33, 7),
            (30, 70, 300),
            (14, 512 + 40, 2),
            (5, 3, 0),
        ] {
            for mode in 0..4 {
                let (a_t, b_t) = (mode & 1 == 1, mode & 2 == 2);
                let a = values(m * k, 1);
                let b = values(k * n, 2);
                let va = if a_t {
                    MatRef::rows(a.as_ptr(), m).t()
                } else {
                    MatRef::rows(a.as_ptr(), k)
                };
                let vb = if b_t {
                    MatRef::rows(b.as_ptr(), k).t()
                } else {
                    MatRef::rows(b.as_ptr(), n)
                };
                let want = |i: usize, j: usize| -> f64 {
                    (0..k)
                        .map(|p| {
                            let x = if a_t { a[p * m + i] } else { a[i * k + p] };
                            let y = if b_t { b[j * k + p] } else { b[p * n + j] };
                            x as f64 * y as f64
                        })
                        .sum()
                };
                for store in [Store::Overwrite, Store::Accumulate, Store::Relu] {
                    let ldc = n + 3;
                    let start = values(m * ldc, 3);
                    let mut c = start.clone();
                    // SAFETY: the sizes match the buffers; AVX-512 was checked.
                    unsafe { gemm(m, n, k, va, vb, c.as_mut_ptr(), ldc, store, &mut packs) };
                    for i in 0..m {
                        for j in 0..ldc {
                            let got = c[i * ldc + j] as f64;
                            let old = start[i * ldc + j] as f64;
                            let expected = if j >= n {
                                old
                            } else {
                                match store {
                                    Store::Overwrite => want(i, j),
                                    Store::Accumulate => old + want(i, j),
                                    Store::Relu => want(i, j).max(0.0),
                                }
                            };
                            assert!(
                                (got - expected).abs() < 1e-4 * (1.0 + k as f64),
                                "{m}x{n}x{k} mode {mode} {store:?} ({i}, {j}): {got} vs {expected}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// Operands packed beforehand give the bits of the same product packed by it, for
    /// sizes with several blocks of every loop (rows past `MC`, columns past `NC`,
    /// contractions past `KC`) and for the edges.
    #[test]
    fn packed_operands_give_the_same_product() {
        if !available() {
            eprintln!("skipped: no AVX-512");
            return;
        }
        let mut packs = Packs::default();
        for &(m, n, k) in &[(200, 600, 700), (13, 33, 7), (1, 1, 1)] {
            let a = values(m * k, 4);
            let b = values(k * n, 5);
            let va = MatRef::rows(a.as_ptr(), m).t();
            let vb = MatRef::rows(b.as_ptr(), n);
            let mut want = vec![0.0f32; m * n];
            // SAFETY: the sizes match the buffers; AVX-512 was checked.
            unsafe {
                gemm(
                    m,
                    n,
                    k,
                    va,
                    vb,
                    want.as_mut_ptr(),
                    n,
                    Store::Overwrite,
                    &mut packs,
                );
                let (pa, pb) = (PackedA::new(va, m, k), PackedB::new(vb, k, n));
                for (left, right) in [
                    (Left::Packed(&pa), Right::View(vb)),
                    (Left::View(va), Right::Packed(&pb)),
                    (Left::Packed(&pa), Right::Packed(&pb)),
                ] {
                    let mut got = vec![f32::NAN; m * n];
                    let c = got.as_mut_ptr();
                    gemm_with(m, n, k, left, right, c, n, Store::Overwrite, &mut packs);
                    assert_eq!(got, want, "{m}x{n}x{k}");
                }
            }
        }
    }
}
