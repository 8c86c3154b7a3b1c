//! `softmax(q k^T + mask) v` in f32 on AVX-512, and its gradient, for the CPU plugin's
//! custom calls (see [`crate::custom_calls`]).
//!
//! Why: XLA CPU cannot fuse a reduction with its producer, so attention as separate ops
//! writes and reads the `[B, H, T, S]` scores several times (the product, the masked
//! scores for the row maximum, the exponentials for the value product, and as many
//! again in the backward pass), and it computes every key block of a causal mask only
//! to multiply it by zero. Here each group of [`ROWS`] query rows keeps its scores in
//! the core's cache from the product to the value product, and key blocks that the mask
//! hides from every row of the group are skipped.
//!
//! Skipping is exact: a hidden key (mask at most [`HIDDEN`]) of a row that sees some
//! key has `exp(score - max) = 0` in f32. Rows that see no key at all are computed over
//! every key, so they attend uniformly, as the unfused ops do with the f32 minimum as
//! mask.
//!
//! The forward pass can also give each row's maximum and sum of exponentials; the
//! backward pass recomputes the probabilities from them (as FlashAttention does) instead
//! of keeping the `[B, H, T, S]` weights between the passes.

#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(test)]
mod tests;

/// Mask values at or below this hide a key (the model adds the f32 minimum).
pub const HIDDEN: f32 = -1e30;

/// Query rows computed together (their scores stay in registers, then in L1).
const ROWS: usize = 8;
/// Keys per block of the score product (two vectors of 16).
const KEYS: usize = 32;

/// Sizes of one call: `q [B, T, H, dh]`, `k` and `v [B, S, H, dh]`, `mask [B, T, S]`,
/// result `[B, T, H, dh]`, row statistics `[B, T, H]`, all row-major f32. Token-major,
/// as the projections come out of their products and as the output projection takes
/// the result: no head-major copies on either side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dims {
    pub batch: usize,
    pub heads: usize,
    pub queries: usize,
    pub keys: usize,
    pub head_dim: usize,
}

impl Dims {
    /// Offset of head `h`'s first row of batch row `b` in a tensor of `len` tokens.
    fn head(&self, b: usize, h: usize, len: usize) -> usize {
        (b * len * self.heads + h) * self.head_dim
    }

    /// Distance between one token's row of a head and the next.
    fn stride(&self) -> usize {
        self.heads * self.head_dim
    }
}

/// Whether this CPU can run the kernels.
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

/// Each row's softmax statistics, `[B, T, H]`: the maximum of its scores and the sum of
/// `exp(score - maximum)`.
#[derive(Clone, Copy)]
pub struct Stats<P> {
    pub row_max: P,
    pub row_sum: P,
}

/// Pointers of one forward call's operands and results.
#[derive(Clone, Copy)]
pub struct Operands {
    pub q: *const f32,
    pub k: *const f32,
    pub v: *const f32,
    pub mask: *const f32,
    pub out: *mut f32,
    /// Where to write the rows' statistics, if wanted (for [`run_grad`]).
    pub stats: Option<Stats<*mut f32>>,
}

/// Pointers of one backward call: the forward call's operands, result and statistics,
/// the result's cotangent, and the operands' cotangents to write.
#[derive(Clone, Copy)]
pub struct GradOperands {
    pub q: *const f32,
    pub k: *const f32,
    pub v: *const f32,
    pub mask: *const f32,
    pub out: *const f32,
    pub stats: Stats<*const f32>,
    pub d_out: *const f32,
    pub dq: *mut f32,
    pub dk: *mut f32,
    pub dv: *mut f32,
}

/// Raw pointers shared by the threads of one call.
#[derive(Clone, Copy)]
struct Shared<T>(T);
// SAFETY: threads read the inputs and write disjoint (batch, head) slices of the results.
unsafe impl<T> Send for Shared<T> {}
unsafe impl<T> Sync for Shared<T> {}

impl<T: Copy> Shared<T> {
    /// The pointers (a method, so that closures capture the whole wrapper).
    fn get(&self) -> T {
        self.0
    }
}

/// The forward pass on `threads` threads (the caller's and `threads - 1` more).
///
/// # Safety
/// The pointers must hold the sizes `d` gives, the CPU must pass [`available`], and the
/// results must not overlap the inputs.
pub unsafe fn run(ops: Operands, d: Dims, threads: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        let ops = Shared(ops);
        for_each_head(d, ops.0.mask, threads, false, |task, visible, scratch| {
            // SAFETY: the caller's contract; each task writes its own (b, h) slices.
            unsafe { forward_head(ops.get(), d, task, visible, scratch) }
        });
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (ops, d, threads);
}

/// The backward pass: `dq`, `dk`, `dv` from the forward call's operands, result and
/// statistics and the result's cotangent `d_out` (all token-major as in [`Dims`]).
///
/// # Safety
/// As [`run`]; `stats` must be what [`run`] wrote for these operands.
pub unsafe fn run_grad(ops: GradOperands, d: Dims, threads: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        let ops = Shared(ops);
        for_each_head(d, ops.0.mask, threads, true, |task, visible, scratch| {
            // SAFETY: as above.
            unsafe { grad_head(ops.get(), d, task, visible, scratch) }
        });
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (ops, d, threads);
}

#[cfg(target_arch = "x86_64")]
/// Runs `work` for every (batch row, head) on `threads` threads, each with its own
/// scratch memory.
fn for_each_head(
    d: Dims,
    mask: *const f32,
    threads: usize,
    backward: bool,
    work: impl Fn(usize, &KeyBlocks, &mut Scratch) + Sync,
) {
    // SAFETY: the callers' contract covers the mask.
    let visible = unsafe { KeyBlocks::scan(mask, d) };
    let tasks = d.batch * d.heads;
    let next = std::sync::atomic::AtomicUsize::new(0);
    let worker = || {
        let mut scratch = Scratch::new(d, backward);
        loop {
            let task = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if task >= tasks {
                break;
            }
            work(task, &visible, &mut scratch);
        }
    };
    let threads = threads.clamp(1, tasks.max(1));
    std::thread::scope(|s| {
        for _ in 1..threads {
            s.spawn(worker);
        }
        worker();
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
                    let row = mask.add((b * d.queries + r) * d.keys);
                    all_rows_see &= blocks_seen(row, d.keys, &mut row_sees);
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

/// Which key blocks of one mask row show a key (into `seen`), and whether any does.
unsafe fn blocks_seen(row: *const f32, keys: usize, seen: &mut [bool]) -> bool {
    #[cfg(target_arch = "x86_64")]
    if available() {
        return avx512::blocks_seen(row, keys, seen);
    }
    let row = std::slice::from_raw_parts(row, keys);
    for (kb, s) in seen.iter_mut().enumerate() {
        *s = row[kb * KEYS..((kb + 1) * KEYS).min(keys)]
            .iter()
            .any(|&m| m > HIDDEN);
    }
    seen.iter().any(|&s| s)
}

/// One thread's working memory: the keys (and for the backward pass the values)
/// transposed in blocks, `[blocks, dh, KEYS]`; one group's scores (and probability
/// gradients), `[ROWS, blocks * KEYS]`; the key and value gradients being summed,
/// `[blocks * KEYS, dh]`.
struct Scratch {
    keys_t: Vec<f32>,
    values_t: Vec<f32>,
    scores: Vec<f32>,
    grads: Vec<f32>,
    dk: Vec<f32>,
    dv: Vec<f32>,
}

impl Scratch {
    fn new(d: Dims, backward: bool) -> Scratch {
        let padded = d.keys.div_ceil(KEYS) * KEYS;
        let table = padded * d.head_dim;
        let only_back = |len: usize| if backward { vec![0.0; len] } else { Vec::new() };
        Scratch {
            keys_t: vec![0.0; table],
            values_t: only_back(table),
            scores: vec![0.0; ROWS * padded],
            grads: only_back(ROWS * padded),
            dk: only_back(table),
            dv: only_back(table),
        }
    }
}

/// A group of up to [`ROWS`] rows of one (batch row, head): query rows (or the
/// result's cotangent rows, whose product with the values has no mask).
struct Group {
    rows_at: *const f32,
    mask: Option<*const f32>,
    rows: usize,
    keys: usize,
    dh: usize,
    /// Distance between one token's row and the next.
    stride: usize,
}

impl Group {
    /// Row `r` of the group, the last real one for the padding rows (computed, unused).
    fn row(&self, r: usize) -> usize {
        r.min(self.rows - 1)
    }
}

/// The forward pass of one (batch row, head): every group of query rows.
#[cfg(target_arch = "x86_64")]
unsafe fn forward_head(ops: Operands, d: Dims, task: usize, visible: &KeyBlocks, s: &mut Scratch) {
    let (b, h) = (task / d.heads, task % d.heads);
    let (t, n, stride) = (d.queries, d.keys, d.stride());
    let q = ops.q.add(d.head(b, h, t));
    let v = ops.v.add(d.head(b, h, n));
    let out = ops.out.add(d.head(b, h, t));
    transpose_keys(
        ops.k.add(d.head(b, h, n)),
        n,
        d.head_dim,
        stride,
        &mut s.keys_t,
    );
    for g in 0..visible.groups {
        let first = g * ROWS;
        let group = Group {
            rows_at: q.add(first * stride),
            mask: Some(ops.mask.add((b * t + first) * n)),
            rows: (t - first).min(ROWS),
            keys: n,
            dh: d.head_dim,
            stride,
        };
        let blocks = visible.of(b, g);
        avx512::scores(&group, &s.keys_t, blocks, &mut s.scores);
        let (tops, sums) = avx512::softmax_numerators(&group, blocks, &mut s.scores);
        let scale = sums.map(|x| 1.0 / x);
        let out = out.add(first * stride);
        avx512::weighted_values(&group, v, blocks, &s.scores, &scale, out);
        if let Some(st) = ops.stats {
            for r in 0..group.rows {
                let at = (b * t + first + r) * d.heads + h;
                *st.row_max.add(at) = tops[r];
                *st.row_sum.add(at) = sums[r];
            }
        }
    }
}

/// The backward pass of one (batch row, head): for each group of query rows, the
/// probabilities `p` again, `dp = d_out v^T`, `ds = p (dp - rowsum(d_out out))`; then
/// `dq = ds k`, and `dk += ds^T q`, `dv += p^T d_out` summed over the groups.
#[cfg(target_arch = "x86_64")]
unsafe fn grad_head(ops: GradOperands, d: Dims, task: usize, visible: &KeyBlocks, s: &mut Scratch) {
    let (b, h) = (task / d.heads, task % d.heads);
    let (t, n, dh, stride) = (d.queries, d.keys, d.head_dim, d.stride());
    let (q, d_out, out) = (
        ops.q.add(d.head(b, h, t)),
        ops.d_out.add(d.head(b, h, t)),
        ops.out.add(d.head(b, h, t)),
    );
    let k = ops.k.add(d.head(b, h, n));
    transpose_keys(k, n, dh, stride, &mut s.keys_t);
    transpose_keys(ops.v.add(d.head(b, h, n)), n, dh, stride, &mut s.values_t);
    s.dk.fill(0.0);
    s.dv.fill(0.0);
    for g in 0..visible.groups {
        let first = g * ROWS;
        let rows = (t - first).min(ROWS);
        let queries = Group {
            rows_at: q.add(first * stride),
            mask: Some(ops.mask.add((b * t + first) * n)),
            rows,
            keys: n,
            dh,
            stride,
        };
        let cotangents = Group {
            rows_at: d_out.add(first * stride),
            mask: None,
            ..queries
        };
        let blocks = visible.of(b, g);
        let (mut tops, mut sums) = ([0.0f32; ROWS], [1.0f32; ROWS]);
        let mut dots = [0.0f32; ROWS];
        for r in 0..rows {
            let at = (b * t + first + r) * d.heads + h;
            tops[r] = *ops.stats.row_max.add(at);
            sums[r] = *ops.stats.row_sum.add(at);
            let (x, y) = (
                d_out.add((first + r) * stride),
                out.add((first + r) * stride),
            );
            dots[r] = (0..dh).map(|c| *x.add(c) * *y.add(c)).sum();
        }
        avx512::scores(&queries, &s.keys_t, blocks, &mut s.scores);
        avx512::probabilities(&queries, blocks, &mut s.scores, &tops, &sums);
        avx512::scores(&cotangents, &s.values_t, blocks, &mut s.grads);
        avx512::softmax_grad(&queries, blocks, &s.scores, &mut s.grads, &dots);
        let dq = ops.dq.add(d.head(b, h, t) + first * stride);
        avx512::weighted_values(&queries, k, blocks, &s.grads, &[1.0; ROWS], dq);
        avx512::accumulate_keys(&queries, blocks, &s.grads, &mut s.dk);
        avx512::accumulate_keys(&cotangents, blocks, &s.scores, &mut s.dv);
    }
    for j in 0..n {
        let (dk, dv) = (
            ops.dk.add(d.head(b, h, n) + j * stride),
            ops.dv.add(d.head(b, h, n) + j * stride),
        );
        std::ptr::copy_nonoverlapping(s.dk.as_ptr().add(j * dh), dk, dh);
        std::ptr::copy_nonoverlapping(s.dv.as_ptr().add(j * dh), dv, dh);
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
