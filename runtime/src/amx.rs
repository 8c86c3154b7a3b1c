//! bf16 matrix products on Intel AMX tiles (Sapphire Rapids and later) for the CPU
//! plugin's custom calls (see [`crate::custom_calls`]).
//!
//! Why: XLA CPU computes every bf16 dot in f32 (its bf16 normalization converts the
//! operands), so bf16 training gains nothing from a CPU's bf16 units. The AMX tile unit
//! multiplies 16 x 32 bf16 by 32 x 16 bf16 into 16 x 16 f32 per instruction, several
//! times faster than the f32 vector units.
//!
//! Method: both operands are packed for the tiles (the left one as rows of 32 `k`
//! values, the right one in the pair-interleaved "VNNI" order the instruction reads),
//! padded with zeros to multiples of 32; every 32 x 32 block of the result accumulates
//! over all of `k` in four tiles and is rounded to bf16 once, as XLA's own bf16 dots
//! round their f32 sums. The threads pack their share of both operands, then split the
//! result's column panels (or row panels).

use std::arch::asm;
use std::sync::OnceLock;

/// Whether this process may use AMX bf16 tiles: the CPU has them and Linux granted the
/// tile data state (asked once).
pub fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| cpu_has_amx_bf16() && request_tile_data())
}

fn cpu_has_amx_bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        // CPUID leaf 7, sub-leaf 0: EDX bit 22 is AMX-BF16, bit 24 AMX-TILE.
        let r = std::arch::x86_64::__cpuid_count(7, 0);
        // The packing uses AVX-512BW (every AMX CPU has it; checked all the same).
        r.edx & (1 << 22) != 0
            && r.edx & (1 << 24) != 0
            && std::arch::is_x86_feature_detected!("avx512bw")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`: Linux hands out the 8 KB tile
/// state only to processes that ask.
fn request_tile_data() -> bool {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    {
        const SYS_ARCH_PRCTL: i64 = 158;
        const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
        const XFEATURE_XTILEDATA: i64 = 18;
        let ret: i64;
        // SAFETY: a plain system call with integer arguments; it changes only this
        // process's permitted extended state.
        unsafe {
            asm!("syscall", inlateout("rax") SYS_ARCH_PRCTL => ret,
                 in("rdi") ARCH_REQ_XCOMP_PERM, in("rsi") XFEATURE_XTILEDATA,
                 lateout("rcx") _, lateout("r11") _, options(nostack));
        }
        ret == 0
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    {
        false
    }
}

/// One operand of [`matmul_bf16`]: stored row-major as the product reads it, or
/// transposed (its columns are the stored rows).
#[derive(Clone, Copy)]
pub struct Operand {
    pub data: *const u16,
    pub transposed: bool,
}

const T: usize = 32; // rows, columns and k of one block

/// Steps of `k` (of 32) per piece of a long product: 8 keeps a 16 KB piece of each panel.
const K_STEPS: usize = 8;

/// A matrix as one side of a product reads it: element `(r, c)` at `data[r*rs + c*cs]`,
/// one of the two strides being 1.
#[derive(Clone, Copy)]
struct View {
    data: *const u16,
    rs: usize,
    cs: usize,
}

impl View {
    /// `op` read as a `rows x cols` matrix.
    fn of(op: Operand, rows: usize, cols: usize) -> View {
        let (rs, cs) = if op.transposed { (1, rows) } else { (cols, 1) };
        View {
            data: op.data,
            rs,
            cs,
        }
    }

    fn transposed(self) -> View {
        View {
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }
}

/// Where the threads write: the result of one product.
#[derive(Clone, Copy)]
struct Out(*mut u16);
// SAFETY: the views only read, and the threads write disjoint parts of their buffers.
unsafe impl Send for Out {}
unsafe impl Sync for Out {}
unsafe impl Send for View {}
unsafe impl Send for Operand {}
unsafe impl Sync for Operand {}
unsafe impl Sync for View {}

/// `out [m, n] = a [m, k] . b [k, n]` in bf16 (f32 sums), on AMX tiles with `threads`
/// threads. Call only when [`available`] is true.
///
/// # Safety
/// `a`, `b` and `out` must point to `m*k`, `k*n` and `m*n` valid elements.
pub unsafe fn matmul_bf16(
    m: usize,
    k: usize,
    n: usize,
    a: Operand,
    b: Operand,
    out: *mut u16,
    threads: usize,
) {
    Product::plan(m, k, n, a, b, Out(out)).run(threads.max(1));
}

/// `batch` products [`matmul_bf16`]-style, the items of `a`, `b` and `out` `m*k`, `k*n`
/// and `m*n` elements apart. With at least as many products as threads, each thread
/// computes whole products (one set of threads for all); otherwise they share each one.
///
/// # Safety
/// `a`, `b` and `out` must point to `batch` times as many valid elements.
pub unsafe fn matmul_bf16_batched(
    batch: usize,
    (m, k, n): (usize, usize, usize),
    a: Operand,
    b: Operand,
    out: *mut u16,
    threads: usize,
) {
    let out = Out(out);
    let item = move |i: usize| {
        let (a, b, out) = (a, b, out); // whole values, not their raw-pointer fields
        let a = Operand {
            data: a.data.add(i * m * k),
            ..a
        };
        let b = Operand {
            data: b.data.add(i * k * n),
            ..b
        };
        Product::plan(m, k, n, a, b, Out(out.0.add(i * m * n)))
    };
    let threads = threads.max(1);
    if batch < threads {
        (0..batch).for_each(|i| item(i).run(threads));
        return;
    }
    let mine = move |t: usize| (t..batch).step_by(threads).for_each(|i| item(i).run(1));
    std::thread::scope(|s| {
        for t in 1..threads {
            s.spawn(move || mine(t));
        }
        mine(0);
    });
}

/// `left [rows, k] . right [k, cols]`, written to `out` (transposed if asked).
#[derive(Clone, Copy)]
struct Product {
    rows: usize,
    k: usize,
    cols: usize,
    left: View,
    right: View,
    out: Out,
    out_transposed: bool,
}

impl Product {
    /// `a [m, k] . b [k, n]` into `out`. Packing reads one operand across its storage
    /// when it is stored the other way round, so of `A . B` and `(B^T . A^T)^T` the one
    /// with less of that is planned.
    fn plan(m: usize, k: usize, n: usize, a: Operand, b: Operand, out: Out) -> Product {
        let (av, bv) = (View::of(a, m, k), View::of(b, k, n));
        // Elements packed against their storage order.
        let against = |rows_view: View, rows: usize, vnni_view: View, cols: usize| {
            (if rows_view.cs == 1 { 0 } else { rows * k })
                + (if vnni_view.cs == 1 { 0 } else { k * cols })
        };
        let direct = against(av, m, bv, n);
        let flipped = against(bv.transposed(), n, av.transposed(), m);
        if flipped < direct {
            Product {
                rows: n,
                k,
                cols: m,
                left: bv.transposed(),
                right: av.transposed(),
                out,
                out_transposed: true,
            }
        } else {
            Product {
                rows: m,
                k,
                cols: n,
                left: av,
                right: bv,
                out,
                out_transposed: false,
            }
        }
    }

    unsafe fn run(self, threads: usize) {
        let (rp, kp, cp) = (
            self.rows.div_ceil(T),
            self.k.div_ceil(T),
            self.cols.div_ceil(T),
        );
        let panel = kp * T * T;
        // A row-major left operand in whole blocks is read by the tiles where it is.
        let direct = self.left.cs == 1 && self.rows.is_multiple_of(T) && self.k.is_multiple_of(T);
        let mut lpack: Vec<u16> = Vec::with_capacity(if direct { 0 } else { rp * panel });
        let mut rpack: Vec<u16> = Vec::with_capacity(cp * panel);
        // SAFETY: packing writes every element (padding included) before any is read.
        lpack.set_len(lpack.capacity());
        rpack.set_len(cp * panel);
        let left = if direct {
            Rows {
                base: self.left.data,
                row: self.left.rs,
                step: T,
                panel: T * self.left.rs,
            }
        } else {
            Rows {
                base: lpack.as_ptr(),
                row: T,
                step: T * T,
                panel,
            }
        };
        let barrier = std::sync::Barrier::new(threads);
        let (lout, rout) = (Out(lpack.as_mut_ptr()), Out(rpack.as_mut_ptr()));
        let work = |t: usize| {
            let (lout, rout) = (lout, rout);
            if !direct {
                for pi in share(t, threads, rp) {
                    pack_rows(self.left, self.rows, self.k, pi, lout.0.add(pi * panel));
                }
            }
            for pj in share(t, threads, cp) {
                pack_vnni(self.right, self.k, self.cols, pj, rout.0.add(pj * panel));
            }
            barrier.wait();
            self.multiply(t, threads, left, rout.0);
        };
        // The calling thread is worker 0.
        std::thread::scope(|s| {
            for t in 1..threads {
                let work = &work;
                s.spawn(move || work(t));
            }
            work(0);
        });
    }

    /// Thread `t`'s share of the 32 x 32 blocks: the longer side is split. A long `k` is
    /// taken [`K_STEPS`] steps at a time, so that the two panels' pieces stay in the L1
    /// cache, with the sums kept in f32 between the pieces.
    unsafe fn multiply(self, t: usize, threads: usize, left: Rows, rpack: *const u16) {
        let (rp, kp, cp) = (
            self.rows.div_ceil(T),
            self.k.div_ceil(T),
            self.cols.div_ceil(T),
        );
        let cfg = tile_config();
        asm!("ldtilecfg [{}]", in(reg) cfg.0.as_ptr(), options(nostack));
        let by_columns = cp >= rp;
        let (split, other) = if by_columns { (cp, rp) } else { (rp, cp) };
        let pieces = kp.div_ceil(K_STEPS);
        let mine = share(t, threads, split);
        // With few blocks, all their sums stay in the L2 cache and every piece of the
        // packed operands is read once; otherwise one outer panel's blocks at a time.
        let group = if pieces > 1 && mine.len() * other * T * T * 4 <= (1 << 20) {
            mine.len()
        } else {
            1
        };
        let mut sums = vec![0f32; group * other * T * T];
        for first in mine.clone().step_by(group) {
            let outers = first..(first + group).min(mine.end);
            for piece in 0..pieces {
                let (s0, steps) = (piece * K_STEPS, K_STEPS.min(kp - piece * K_STEPS));
                for (o, outer) in outers.clone().enumerate() {
                    for inner in 0..other {
                        let (pi, pj) = if by_columns {
                            (inner, outer)
                        } else {
                            (outer, inner)
                        };
                        let l = left.base.add(pi * left.panel + s0 * left.step);
                        let r = rpack.add((pj * kp + s0) * T * T);
                        let at = (o * other + inner) * T * T;
                        let tile = &mut sums[at..at + T * T];
                        block_product(l, left, r, steps, tile.as_mut_ptr(), piece > 0);
                        if piece + 1 == pieces {
                            self.store(tile, pi * T, pj * T);
                        }
                    }
                }
            }
        }
        asm!("tilerelease", options(nostack));
    }

    /// Rounds a block to bf16 (nearest even, as XLA converts) into the result.
    unsafe fn store(self, tile: &[f32], i0: usize, j0: usize) {
        let rows = T.min(self.rows - i0);
        let cols = T.min(self.cols - j0);
        for r in 0..rows {
            for c in 0..cols {
                let (i, j) = (i0 + r, j0 + c);
                let at = if self.out_transposed {
                    j * self.rows + i
                } else {
                    i * self.cols + j
                };
                *self.out.0.add(at) = bf16_bits(tile[r * T + c]);
            }
        }
    }
}

/// Where the left operand's blocks are: block `(row panel p, k step s)` starts at
/// `base + p*panel + s*step`, its rows `row` elements apart (packed: 32; read in place:
/// the operand's row length).
#[derive(Clone, Copy)]
struct Rows {
    base: *const u16,
    row: usize,
    step: usize,
    panel: usize,
}
// SAFETY: only read, while the product runs.
unsafe impl Send for Rows {}
unsafe impl Sync for Rows {}

/// Thread `t`'s contiguous share of `count` items.
fn share(t: usize, threads: usize, count: usize) -> std::ops::Range<usize> {
    let per = count.div_ceil(threads);
    (t * per).min(count)..((t + 1) * per).min(count)
}

/// Row panel `pi` of `v [rows, k]` as `[k step][32 rows][32 k]`, zero-padded.
unsafe fn pack_rows(v: View, rows: usize, k: usize, pi: usize, dst: *mut u16) {
    let i0 = pi * T;
    let h = T.min(rows - i0);
    for ks in 0..k.div_ceil(T) {
        let k0 = ks * T;
        let w = T.min(k - k0);
        let block = std::slice::from_raw_parts_mut(dst.add(ks * T * T), T * T);
        if h < T || w < T {
            block.fill(0);
        }
        if v.cs == 1 {
            for r in 0..h {
                let src = v.data.add((i0 + r) * v.rs + k0);
                std::ptr::copy_nonoverlapping(src, block.as_mut_ptr().add(r * T), w);
            }
        } else if h == T && w == T {
            // Rows contiguous in storage (rs == 1): two stored rows (k, k + 1) at a time
            // give each block row its next word.
            let words = block.as_mut_ptr() as *mut u32;
            for c in (0..T).step_by(2) {
                let r0 = v.data.add((k0 + c) * v.cs + i0);
                let r1 = r0.add(v.cs);
                for r in 0..T {
                    *words.add(r * 16 + c / 2) = *r0.add(r) as u32 | (*r1.add(r) as u32) << 16;
                }
            }
        } else {
            let out = block.as_mut_ptr();
            for c in 0..w {
                let src = v.data.add((k0 + c) * v.cs + i0 * v.rs);
                for r in 0..h {
                    *out.add(r * T + c) = *src.add(r);
                }
            }
        }
    }
}

/// Column panel `pj` of `v [k, cols]` in the tiles' pair-interleaved order:
/// `[k step][2 halves of 16 columns][16 k pairs][16 columns][2]`, zero-padded. Each pair
/// of `k` values of one column is one 32-bit word.
unsafe fn pack_vnni(v: View, k: usize, cols: usize, pj: usize, dst: *mut u16) {
    let j0 = pj * T;
    let w = T.min(cols - j0);
    let at = |v: View, p: usize, c: usize| -> u32 {
        if p < k && c < w {
            *v.data.add(p * v.rs + (j0 + c) * v.cs) as u32
        } else {
            0
        }
    };
    for ks in 0..k.div_ceil(T) {
        let k0 = ks * T;
        let full = w == T && k0 + T <= k;
        // Words at [half][pair][column], 16 x 16 per half.
        let words = std::slice::from_raw_parts_mut(dst.add(ks * T * T) as *mut u32, T * T / 2);
        if full && v.cs == 1 {
            for pair in 0..16 {
                let r0 = v.data.add((k0 + 2 * pair) * v.rs + j0);
                interleave_rows(r0, r0.add(v.rs), words.as_mut_ptr().add(pair * 16));
            }
        } else if full && v.rs == 1 {
            for c in 0..T {
                let col = v.data.add((j0 + c) * v.cs + k0) as *const u32;
                for pair in 0..16 {
                    words[(c / 16) * 256 + pair * 16 + c % 16] = col.add(pair).read_unaligned();
                }
            }
        } else {
            for pair in 0..16 {
                for c in 0..T {
                    let (p0, p1) = (k0 + 2 * pair, k0 + 2 * pair + 1);
                    words[(c / 16) * 256 + pair * 16 + c % 16] = at(v, p0, c) | at(v, p1, c) << 16;
                }
            }
        }
    }
}

/// Word lane `2c` takes `a[c]`, lane `2c + 1` takes `b[c]` (index `32 + c`): for the
/// columns 0-15 and 16-31 of two rows.
const INTERLEAVE: [[i16; 32]; 2] = {
    let mut lanes = [[0i16; 32]; 2];
    let mut half = 0;
    while half < 2 {
        let mut c = 0;
        while c < 16 {
            lanes[half][2 * c] = (half * 16 + c) as i16;
            lanes[half][2 * c + 1] = (32 + half * 16 + c) as i16;
            c += 1;
        }
        half += 1;
    }
    lanes
};

/// Two rows of 32 bf16 (`k` and `k + 1`) as 32 words `(r0[c], r1[c])` into a packed
/// block: columns 0-15 at `dst`, 16-31 at `dst + 256`.
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn interleave_rows(r0: *const u16, r1: *const u16, dst: *mut u32) {
    use std::arch::x86_64::*;
    let (a, b) = (
        _mm512_loadu_si512(r0 as *const _),
        _mm512_loadu_si512(r1 as *const _),
    );
    for (half, lanes) in INTERLEAVE.iter().enumerate() {
        let index = _mm512_loadu_si512(lanes.as_ptr() as *const _);
        _mm512_storeu_si512(
            dst.add(256 * half) as *mut _,
            _mm512_permutex2var_epi16(a, index, b),
        );
    }
}

/// The 64-byte tile configuration: palette 1, eight tiles of 16 rows x 64 bytes.
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

fn tile_config() -> TileConfig {
    let mut c = [0u8; 64];
    c[0] = 1;
    for t in 0..8 {
        c[16 + 2 * t] = 64; // bytes per row
        c[48 + t] = 16; // rows
    }
    TileConfig(c)
}

/// `tile [32 x 32] f32 (+)= A panel . B panel` over `ksteps` steps of 32, adding to the
/// tile's sums when `accumulate`; `ap` is the block's first row, laid out as `left` says.
#[inline(never)]
unsafe fn block_product(
    ap: *const u16,
    left: Rows,
    bp: *const u16,
    ksteps: usize,
    tile: *mut f32,
    accumulate: bool,
) {
    let row_bytes: usize = T * 4;
    let (c0, c1, c2, c3) = (tile, tile.add(16), tile.add(16 * T), tile.add(16 * T + 16));
    if accumulate {
        asm!(
            "tileloadd tmm0, [{c0} + {s}*1]",
            "tileloadd tmm1, [{c1} + {s}*1]",
            "tileloadd tmm2, [{c2} + {s}*1]",
            "tileloadd tmm3, [{c3} + {s}*1]",
            c0 = in(reg) c0, c1 = in(reg) c1, c2 = in(reg) c2, c3 = in(reg) c3,
            s = in(reg) row_bytes, options(nostack)
        );
    } else {
        asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            options(nostack)
        );
    }
    let stride: usize = 64;
    let a_stride = left.row * 2;
    let (mut a, mut b) = (ap, bp);
    for _ in 0..ksteps {
        asm!(
            "tileloadd tmm4, [{a} + {sa}*1]",
            "tileloadd tmm5, [{a2} + {sa}*1]",
            "tileloadd tmm6, [{b} + {s}*1]",
            "tileloadd tmm7, [{b2} + {s}*1]",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tdpbf16ps tmm1, tmm4, tmm7",
            "tdpbf16ps tmm2, tmm5, tmm6",
            "tdpbf16ps tmm3, tmm5, tmm7",
            a = in(reg) a, a2 = in(reg) a.add(16 * left.row), b = in(reg) b,
            b2 = in(reg) b.add(16 * T), s = in(reg) stride, sa = in(reg) a_stride,
            options(nostack)
        );
        a = a.add(left.step);
        b = b.add(T * T);
    }
    asm!(
        "tilestored [{c0} + {s}*1], tmm0",
        "tilestored [{c1} + {s}*1], tmm1",
        "tilestored [{c2} + {s}*1], tmm2",
        "tilestored [{c3} + {s}*1], tmm3",
        c0 = in(reg) c0, c1 = in(reg) c1, c2 = in(reg) c2, c3 = in(reg) c3,
        s = in(reg) row_bytes, options(nostack)
    );
}

/// f32 -> bf16 bits, rounding to nearest even (NaN stays NaN).
pub fn bf16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    if x.is_nan() {
        return ((b >> 16) | 0x40) as u16;
    }
    (b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32_of(h: u16) -> f32 {
        f32::from_bits((h as u32) << 16)
    }

    /// Every layout of both operands, with sizes that are not multiples of 32, against
    /// f64 sums of the same bf16 values rounded once to bf16.
    #[test]
    fn products_match_rounded_exact_sums_in_every_layout() {
        if !available() {
            eprintln!("no AMX bf16 on this machine: nothing to check");
            return;
        }
        // k = 300: ten steps of 32, so the sums are carried between two pieces; whole
        // blocks (64 x 96, 64 x 320) let the tiles read a row-major left operand in place.
        for (m, k, n) in [(37, 70, 45), (37, 300, 45), (64, 96, 45), (64, 320, 64)] {
            check_every_layout(m, k, n);
        }
    }

    fn check_every_layout(m: usize, k: usize, n: usize) {
        let a: Vec<u16> = (0..m * k)
            .map(|i| bf16_bits(((i * 7 % 13) as f32 - 6.0) * 0.37))
            .collect();
        let b: Vec<u16> = (0..k * n)
            .map(|i| bf16_bits(((i * 5 % 11) as f32 - 5.0) * 0.21))
            .collect();
        let at: Vec<u16> = (0..k * m).map(|x| a[(x % m) * k + x / m]).collect(); // [k, m]
        let bt: Vec<u16> = (0..n * k).map(|x| b[(x % k) * n + x / k]).collect(); // [n, k]
        for (a_t, b_t) in [(false, false), (true, false), (false, true), (true, true)] {
            let ao = Operand {
                data: if a_t { at.as_ptr() } else { a.as_ptr() },
                transposed: a_t,
            };
            let bo = Operand {
                data: if b_t { bt.as_ptr() } else { b.as_ptr() },
                transposed: b_t,
            };
            let mut out = vec![0u16; m * n];
            unsafe { matmul_bf16(m, k, n, ao, bo, out.as_mut_ptr(), 2) };
            for i in 0..m {
                for j in 0..n {
                    let s: f64 = (0..k)
                        .map(|p| f32_of(a[i * k + p]) as f64 * f32_of(b[p * n + j]) as f64)
                        .sum();
                    let want = f32_of(bf16_bits(s as f32));
                    let got = f32_of(out[i * n + j]);
                    assert!(
                        (got - want).abs() <= want.abs() * 8e-3 + 1e-6,
                        "layout ({a_t}, {b_t}) at ({i}, {j}): {got} vs {want}"
                    );
                }
            }
        }
    }
}
