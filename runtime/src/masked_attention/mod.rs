//! `softmax(q k^T + mask) v` in f32 on AVX-512, for the CPU plugin's custom calls (see
//! [`crate::custom_calls`]).
//!
//! Why: XLA CPU cannot fuse a reduction with its producer, so attention as separate ops
//! writes and reads the `[B, H, T, S]` scores several times (the product, the masked
//! scores for the row maximum, the exponentials for the value product), and it computes
//! every key block of a causal mask only to multiply it by zero. Here each group of
//! query rows keeps its scores in the core's cache from the product to the value
//! product, and key blocks that the mask hides from every row of the group are skipped.
//!
//! Skipping is exact: a hidden key (mask at most [`HIDDEN`]) of a row that sees some
//! key has `exp(score - max) = 0` in f32. Rows that see no key at all are computed over
//! every key, so they attend uniformly, as the unfused ops do with the f32 minimum as
//! mask.

/// Mask values at or below this hide a key (the model adds the f32 minimum).
pub const HIDDEN: f32 = -1e30;

/// Query rows computed together (their scores stay in registers, then in L1).
const ROWS: usize = 8;
/// Keys per block of the score product (two vectors of 16).
const KEYS: usize = 32;

/// Sizes of one call: `q [B, T, H, dh]`, `k` and `v [B, S, H, dh]`, `mask [B, T, S]`,
/// result `[B, T, H, dh]`, all row-major f32. Token-major, as the projections come out
/// of their products and as the output projection takes the result: no head-major
/// copies on either side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dims {
    pub batch: usize,
    pub heads: usize,
    pub queries: usize,
    pub keys: usize,
    pub head_dim: usize,
}

/// Whether this CPU can run the kernel.
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

/// Pointers of one call's operands and result.
#[derive(Clone, Copy)]
pub struct Operands {
    pub q: *const f32,
    pub k: *const f32,
    pub v: *const f32,
    pub mask: *const f32,
    pub out: *mut f32,
}
// SAFETY: threads read the inputs and write disjoint (batch, head) slices of `out`.
unsafe impl Send for Operands {}
unsafe impl Sync for Operands {}

/// Computes the whole call on `threads` threads (the caller's and `threads - 1` more).
///
/// # Safety
/// The pointers must hold the sizes `d` gives, the CPU must pass [`available`], and `out`
/// must not overlap the inputs.
pub unsafe fn run(ops: Operands, d: Dims, threads: usize) {
    let visible = KeyBlocks::scan(ops.mask, d);
    let tasks = d.batch * d.heads;
    let next = std::sync::atomic::AtomicUsize::new(0);
    let work = || {
        let mut scratch = Scratch::new(d);
        loop {
            let task = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if task >= tasks {
                break;
            }
            // SAFETY: the caller's contract; each task writes its own (b, h) slice.
            unsafe { head(ops, d, task, &visible, &mut scratch) };
        }
    };
    let threads = threads.clamp(1, tasks.max(1));
    std::thread::scope(|s| {
        for _ in 1..threads {
            s.spawn(work);
        }
        work();
    });
}

/// Which key blocks each group of query rows must compute, per batch row.
struct KeyBlocks {
    groups: usize,
    blocks: usize,
    /// `[B, groups, blocks]`.
    compute: Vec<bool>,
}

impl KeyBlocks {
    /// Reads the mask once: a block is skipped for a group when every row of the group
    /// sees some key and none of them sees a key of the block.
    unsafe fn scan(mask: *const f32, d: Dims) -> KeyBlocks {
        let groups = d.queries.div_ceil(ROWS);
        let blocks = d.keys.div_ceil(KEYS);
        let mut compute = vec![false; d.batch * groups * blocks];
        let mut row_sees = vec![false; blocks];
        for b in 0..d.batch {
            for g in 0..groups {
                let flags = &mut compute[(b * groups + g) * blocks..][..blocks];
                let mut all_rows_see = true;
                for r in g * ROWS..((g + 1) * ROWS).min(d.queries) {
                    let row =
                        std::slice::from_raw_parts(mask.add((b * d.queries + r) * d.keys), d.keys);
                    let mut any = false;
                    for (kb, seen) in row_sees.iter_mut().enumerate() {
                        let cols = &row[kb * KEYS..((kb + 1) * KEYS).min(d.keys)];
                        *seen = cols.iter().any(|&m| m > HIDDEN);
                        any |= *seen;
                    }
                    all_rows_see &= any;
                    for (f, s) in flags.iter_mut().zip(&row_sees) {
                        *f |= *s;
                    }
                }
                if !all_rows_see {
                    flags.fill(true);
                }
            }
        }
        KeyBlocks {
            groups,
            blocks,
            compute,
        }
    }

    fn of(&self, b: usize, g: usize) -> &[bool] {
        &self.compute[(b * self.groups + g) * self.blocks..][..self.blocks]
    }
}

/// One thread's working memory: the keys transposed in blocks, `[blocks, dh, KEYS]`,
/// and one group's scores, `[ROWS, blocks * KEYS]`.
struct Scratch {
    keys_t: Vec<f32>,
    scores: Vec<f32>,
}

impl Scratch {
    fn new(d: Dims) -> Scratch {
        let padded = d.keys.div_ceil(KEYS) * KEYS;
        Scratch {
            keys_t: vec![0.0; padded * d.head_dim],
            scores: vec![0.0; ROWS * padded],
        }
    }
}

/// One (batch row, head): every group of query rows.
unsafe fn head(ops: Operands, d: Dims, task: usize, visible: &KeyBlocks, s: &mut Scratch) {
    let (b, h) = (task / d.heads, task % d.heads);
    let (t, n, dh) = (d.queries, d.keys, d.head_dim);
    // One token's heads are contiguous: a head's rows are `stride` apart.
    let stride = d.heads * dh;
    let q = ops.q.add((b * t * d.heads + h) * dh);
    let k = ops.k.add((b * n * d.heads + h) * dh);
    let v = ops.v.add((b * n * d.heads + h) * dh);
    let out = ops.out.add((b * t * d.heads + h) * dh);
    transpose_keys(k, n, dh, stride, &mut s.keys_t);
    for g in 0..visible.groups {
        let rows = (t - g * ROWS).min(ROWS);
        let group = Group {
            q: q.add(g * ROWS * stride),
            mask: ops.mask.add((b * t + g * ROWS) * n),
            rows,
            keys: n,
            dh,
            stride,
        };
        let blocks = visible.of(b, g);
        avx512::scores(&group, &s.keys_t, blocks, &mut s.scores);
        let sums = avx512::softmax_numerators(&group, blocks, &mut s.scores);
        let out = out.add(g * ROWS * stride);
        avx512::weighted_values(&group, v, blocks, &s.scores, &sums, out);
    }
}

/// One head's keys (rows `stride` apart) into `[blocks, dh, KEYS]`, zero past the last
/// key.
unsafe fn transpose_keys(k: *const f32, n: usize, dh: usize, stride: usize, kt: &mut [f32]) {
    for kb in 0..n.div_ceil(KEYS) {
        let block = &mut kt[kb * dh * KEYS..][..dh * KEYS];
        for j in 0..KEYS {
            let key = kb * KEYS + j;
            for c in 0..dh {
                block[c * KEYS + j] = if key < n {
                    *k.add(key * stride + c)
                } else {
                    0.0
                };
            }
        }
    }
}

/// A group of up to [`ROWS`] query rows of one (batch row, head).
struct Group {
    q: *const f32,
    mask: *const f32,
    rows: usize,
    keys: usize,
    dh: usize,
    /// Distance between one token's row and the next in `q`, `k`, `v` and the result.
    stride: usize,
}

impl Group {
    /// Row `r` of the group, the last real one for the padding rows (computed, unused).
    fn row(&self, r: usize) -> usize {
        r.min(self.rows - 1)
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{Group, KEYS, ROWS};
    use std::arch::x86_64::*;

    /// Lanes `0..n` of a 16-lane vector (all for n >= 16).
    fn lanes(n: usize) -> __mmask16 {
        if n >= 16 {
            0xffff
        } else {
            ((1u32 << n) - 1) as __mmask16
        }
    }

    /// `scores[r, j] = q[r] . k[j] + mask[r, j]` for the computed key blocks; lanes past
    /// the last key are left as they are (never read).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn scores(g: &Group, keys_t: &[f32], blocks: &[bool], scores: &mut [f32]) {
        let stride = blocks.len() * KEYS;
        for (kb, _) in blocks.iter().enumerate().filter(|(_, &c)| c) {
            let kt = keys_t.as_ptr().add(kb * g.dh * KEYS);
            let mut acc = [[_mm512_setzero_ps(); 2]; ROWS];
            for c in 0..g.dh {
                let k0 = _mm512_loadu_ps(kt.add(c * KEYS));
                let k1 = _mm512_loadu_ps(kt.add(c * KEYS + 16));
                for (r, a) in acc.iter_mut().enumerate() {
                    let q = _mm512_set1_ps(*g.q.add(g.row(r) * g.stride + c));
                    a[0] = _mm512_fmadd_ps(q, k0, a[0]);
                    a[1] = _mm512_fmadd_ps(q, k1, a[1]);
                }
            }
            let first = kb * KEYS;
            for (r, a) in acc.iter().enumerate().take(g.rows) {
                let mask = g.mask.add(r * g.keys + first);
                let dst = scores.as_mut_ptr().add(r * stride + first);
                for (h, part) in a.iter().enumerate() {
                    let m = lanes(g.keys.saturating_sub(first + 16 * h));
                    let add = _mm512_maskz_loadu_ps(m, mask.add(16 * h));
                    _mm512_storeu_ps(dst.add(16 * h), _mm512_add_ps(*part, add));
                }
            }
        }
    }

    /// Replaces each computed score by `exp(score - row max)` (0 past the last key) and
    /// returns each row's sum of them.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn softmax_numerators(
        g: &Group,
        blocks: &[bool],
        scores: &mut [f32],
    ) -> [f32; ROWS] {
        let stride = blocks.len() * KEYS;
        let mut sums = [1.0f32; ROWS];
        let computed = || {
            blocks
                .iter()
                .enumerate()
                .filter(|(_, &c)| c)
                .map(|(kb, _)| kb)
        };
        for (r, sum) in sums.iter_mut().enumerate().take(g.rows) {
            let row = scores.as_mut_ptr().add(r * stride);
            let mut top = _mm512_set1_ps(f32::NEG_INFINITY);
            for kb in computed() {
                for h in 0..2 {
                    let first = kb * KEYS + 16 * h;
                    let m = lanes(g.keys.saturating_sub(first));
                    top = _mm512_mask_max_ps(top, m, top, _mm512_loadu_ps(row.add(first)));
                }
            }
            let top = _mm512_set1_ps(_mm512_reduce_max_ps(top));
            let mut total = _mm512_setzero_ps();
            for kb in computed() {
                for h in 0..2 {
                    let first = kb * KEYS + 16 * h;
                    let m = lanes(g.keys.saturating_sub(first));
                    let e = exp(_mm512_sub_ps(_mm512_loadu_ps(row.add(first)), top));
                    let e = _mm512_maskz_mov_ps(m, e);
                    _mm512_storeu_ps(row.add(first), e);
                    total = _mm512_add_ps(total, e);
                }
            }
            *sum = _mm512_reduce_add_ps(total);
        }
        sums
    }

    /// `out[r] = sum_j p[r, j] v[j] / sums[r]` over the computed key blocks, `dh` in
    /// pieces of 32.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn weighted_values(
        g: &Group,
        v: *const f32,
        blocks: &[bool],
        p: &[f32],
        sums: &[f32; ROWS],
        out: *mut f32,
    ) {
        let stride = blocks.len() * KEYS;
        let dh = g.dh;
        for c0 in (0..dh).step_by(32) {
            let m = [lanes(dh - c0), lanes(dh.saturating_sub(c0 + 16))];
            let mut acc = [[_mm512_setzero_ps(); 2]; ROWS];
            for (kb, _) in blocks.iter().enumerate().filter(|(_, &c)| c) {
                for j in kb * KEYS..((kb + 1) * KEYS).min(g.keys) {
                    let vj = v.add(j * g.stride + c0);
                    let v0 = _mm512_maskz_loadu_ps(m[0], vj);
                    let v1 = _mm512_maskz_loadu_ps(m[1], vj.add(16));
                    for (r, a) in acc.iter_mut().enumerate() {
                        let w = _mm512_set1_ps(*p.as_ptr().add(r * stride + j));
                        a[0] = _mm512_fmadd_ps(w, v0, a[0]);
                        a[1] = _mm512_fmadd_ps(w, v1, a[1]);
                    }
                }
            }
            for (r, a) in acc.iter().enumerate().take(g.rows) {
                let scale = _mm512_set1_ps(1.0 / sums[r]);
                let dst = out.add(r * g.stride + c0);
                _mm512_mask_storeu_ps(dst, m[0], _mm512_mul_ps(a[0], scale));
                _mm512_mask_storeu_ps(dst.add(16), m[1], _mm512_mul_ps(a[1], scale));
            }
        }
    }

    /// `e^x` to about 1 ulp (Cephes' polynomial after reduction by ln 2); exactly 0
    /// below -103.9, where f32 has nothing but zero and subnormals.
    #[target_feature(enable = "avx512f")]
    unsafe fn exp(x: __m512) -> __m512 {
        let keep = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(x, _mm512_set1_ps(-103.9));
        let x = _mm512_min_ps(
            _mm512_max_ps(x, _mm512_set1_ps(-103.9)),
            _mm512_set1_ps(88.37),
        );
        let n = _mm512_roundscale_ps::<0x08>(_mm512_mul_ps(
            x,
            _mm512_set1_ps(std::f32::consts::LOG2_E),
        ));
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
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The unfused softmax attention in f64.
    fn reference(q: &[f32], k: &[f32], v: &[f32], mask: &[f32], d: Dims) -> Vec<f32> {
        let (t, n, dh) = (d.queries, d.keys, d.head_dim);
        let mut out = vec![0.0; d.batch * d.heads * t * dh];
        let hd = d.heads * dh;
        for bh in 0..d.batch * d.heads {
            let (b, h) = (bh / d.heads, bh % d.heads);
            let qi = |i: usize, c: usize| q[b * t * hd + i * hd + h * dh + c] as f64;
            let kj = |x: &[f32], j: usize, c: usize| x[b * n * hd + j * hd + h * dh + c] as f64;
            for i in 0..t {
                let s: Vec<f64> = (0..n)
                    .map(|j| {
                        let dot: f64 = (0..dh).map(|c| qi(i, c) * kj(k, j, c)).sum();
                        // f32 as the model adds it: the minimum swallows the product.
                        (dot as f32 + mask[(b * t + i) * n + j]) as f64
                    })
                    .collect();
                let top = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = s.iter().map(|x| (x - top).exp()).collect();
                let total: f64 = e.iter().sum();
                for c in 0..dh {
                    let y: f64 = (0..n).map(|j| e[j] * kj(v, j, c)).sum();
                    out[b * t * hd + i * hd + h * dh + c] = (y / total) as f32;
                }
            }
        }
        out
    }

    fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut x = seed;
        (0..len)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((x >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 4.0
            })
            .collect()
    }

    /// Causal with a prefix of `prefix` keys, some padded keys, and one row that sees
    /// nothing (uniform attention).
    fn mask(d: Dims, prefix: usize) -> Vec<f32> {
        let (t, n) = (d.queries, d.keys);
        let offset = n - t;
        let mut m = vec![0.0f32; d.batch * t * n];
        for b in 0..d.batch {
            for i in 0..t {
                for j in 0..n {
                    let seen = j <= i + offset || j < prefix;
                    let padded = b == 1 && j + 3 >= n;
                    let blind = b == 0 && i == t / 2;
                    if !seen || padded || blind {
                        m[(b * t + i) * n + j] = f32::MIN;
                    }
                }
            }
        }
        m
    }

    #[test]
    fn matches_the_unfused_softmax() {
        if !available() {
            eprintln!("skipped: no AVX-512");
            return;
        }
        for (t, n, dh, prefix) in [
            (70, 70, 32, 5),
            (37, 38, 20, 0),
            (64, 64, 64, 64),
            (100, 100, 48, 40),
            (1, 9, 32, 0),
        ] {
            let d = Dims {
                batch: 2,
                heads: 3,
                queries: t,
                keys: n,
                head_dim: dh,
            };
            let q = values(d.batch * d.heads * t * dh, 1);
            let k = values(d.batch * d.heads * n * dh, 2);
            let v = values(d.batch * d.heads * n * dh, 3);
            let m = mask(d, prefix);
            let want = reference(&q, &k, &v, &m, d);
            for threads in [1, 2] {
                let mut out = vec![f32::NAN; want.len()];
                let ops = Operands {
                    q: q.as_ptr(),
                    k: k.as_ptr(),
                    v: v.as_ptr(),
                    mask: m.as_ptr(),
                    out: out.as_mut_ptr(),
                };
                unsafe { run(ops, d, threads) };
                for (i, (a, b)) in out.iter().zip(&want).enumerate() {
                    assert!(
                        (a - b).abs() <= 2e-5 * (1.0 + b.abs()),
                        "{d:?} threads {threads}: element {i} is {a}, expected {b}"
                    );
                }
            }
        }
    }
}
