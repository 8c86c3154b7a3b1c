//! A switch layer's expert MLPs, `relu(x wi^T) wo^T`, over the filled capacity slots
//! only, and their gradient, for the CPU plugin's custom calls (see
//! [`crate::custom_calls::EXPERT_MLP`]).
//!
//! Why: XLA computes a batched product over every capacity slot, filled or not. In
//! evaluation the `original` routing gives each expert twice its share of slots, so
//! half of that work is on empty slots (a fifth in training). Each expert's filled slots
//! are a prefix of its slots in every group, so this kernel gathers them into one matrix
//! per expert and multiplies only those rows ([`crate::gemm`]). The experts are shared
//! out between the threads, largest first; each thread multiplies whole experts.

use crate::gemm::{self, MatRef, Packs, Store};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Sizes: slots `[groups, experts, capacity]`, model width `d_model`, expert width
/// `hidden`.
#[derive(Clone, Copy, Debug)]
pub struct Dims {
    pub groups: usize,
    pub experts: usize,
    pub capacity: usize,
    pub d_model: usize,
    pub hidden: usize,
}

/// The forward pass's buffers. `x [G, E, C, d]` (empty slots are zero rows),
/// `filled [G, E]` (how many of each expert's first slots in a group hold a token; read
/// clamped to `[0, C]`), `wi [E, f, d]`, `wo [E, d, f]`; results `out [G, E, C, d]`, zero
/// on empty slots, and `hidden [G, E, C, f]` (`relu(x wi^T)`, for the gradient), written
/// on filled slots only: nothing reads the others, and zeroing them cost a pass over 16 MB
/// per layer of `small`'s 4x512 forward pass.
#[derive(Clone, Copy)]
pub struct Operands {
    pub x: *const f32,
    pub filled: *const i32,
    pub wi: *const f32,
    pub wo: *const f32,
    pub out: *mut f32,
    pub hidden: *mut f32,
}

/// The gradient's buffers: the forward operands, its `hidden` result and the cotangent
/// `d_out [G, E, C, d]`; results `dx [G, E, C, d]` (zero on empty slots), `dwi [E, f, d]`
/// and `dwo [E, d, f]`.
#[derive(Clone, Copy)]
pub struct GradOperands {
    pub x: *const f32,
    pub filled: *const i32,
    pub wi: *const f32,
    pub wo: *const f32,
    pub hidden: *const f32,
    pub d_out: *const f32,
    pub dx: *mut f32,
    pub dwi: *mut f32,
    pub dwo: *mut f32,
}

// SAFETY: the threads of one call read the operands and write disjoint experts' slots
// and weight gradients.
unsafe impl Send for Operands {}
// SAFETY: as for `Send`.
unsafe impl Sync for Operands {}
// SAFETY: as for `Operands`.
unsafe impl Send for GradOperands {}
// SAFETY: as for `Send`.
unsafe impl Sync for GradOperands {}

/// Whether the kernels can run here.
pub fn available() -> bool {
    gemm::available()
}

/// The filled slot count of every (group, expert), clamped to `[0, C]`.
unsafe fn filled_counts(filled: *const i32, d: Dims) -> Vec<usize> {
    (0..d.groups * d.experts)
        .map(|i| (*filled.add(i)).clamp(0, d.capacity as i32) as usize)
        .collect()
}

/// One thread's working matrices for one expert, reused across experts.
#[derive(Default)]
struct Scratch {
    packs: Packs,
    x: Vec<f32>,
    hidden: Vec<f32>,
    out: Vec<f32>,
    d_hidden: Vec<f32>,
}

/// Working matrices kept between calls: allocated afresh, their pages are faulted in
/// again on every call.
static SCRATCH: std::sync::Mutex<Vec<Scratch>> = std::sync::Mutex::new(Vec::new());

/// Runs `work(expert, scratch)` for every expert on `threads` threads (the caller's and
/// `threads - 1` more), the experts with the most filled slots first.
fn for_each_expert<F>(counts: &[usize], d: Dims, threads: usize, work: F)
where
    F: Fn(usize, &mut Scratch) + Sync,
{
    let rows = |e: usize| {
        (0..d.groups)
            .map(|g| counts[g * d.experts + e])
            .sum::<usize>()
    };
    let mut order: Vec<usize> = (0..d.experts).collect();
    order.sort_by_key(|&e| std::cmp::Reverse(rows(e)));
    let next = AtomicUsize::new(0);
    let worker = || {
        let mut scratch = SCRATCH
            .lock()
            .map(|mut s| s.pop())
            .ok()
            .flatten()
            .unwrap_or_default();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(&e) = order.get(i) else { break };
            work(e, &mut scratch);
        }
        if let Ok(mut pool) = SCRATCH.lock() {
            pool.push(scratch);
        }
    };
    std::thread::scope(|s| {
        for _ in 1..threads.clamp(1, d.experts.max(1)) {
            s.spawn(worker);
        }
        worker();
    });
}

/// Copies expert `e`'s filled rows of `src [G, E, C, width]` into `dst` (`[R, width]`,
/// R the total); returns R.
unsafe fn gather(
    src: *const f32,
    e: usize,
    width: usize,
    counts: &[usize],
    d: Dims,
    dst: &mut Vec<f32>,
) -> usize {
    let total: usize = (0..d.groups).map(|g| counts[g * d.experts + e]).sum();
    dst.resize(total * width, 0.0);
    let mut at = 0;
    for g in 0..d.groups {
        let n = counts[g * d.experts + e] * width;
        let from = src.add((g * d.experts + e) * d.capacity * width);
        std::ptr::copy_nonoverlapping(from, dst.as_mut_ptr().add(at), n);
        at += n;
    }
    total
}

/// Writes `src [R, width]` back to expert `e`'s filled rows of `dst [G, E, C, width]`,
/// and zeros to its empty ones if `zero_empty`.
unsafe fn scatter(
    src: &[f32],
    e: usize,
    width: usize,
    counts: &[usize],
    d: Dims,
    dst: *mut f32,
    zero_empty: bool,
) {
    let mut at = 0;
    for g in 0..d.groups {
        let n = counts[g * d.experts + e] * width;
        let to = dst.add((g * d.experts + e) * d.capacity * width);
        std::ptr::copy_nonoverlapping(src.as_ptr().add(at), to, n);
        if zero_empty {
            std::ptr::write_bytes(to.add(n), 0, d.capacity * width - n);
        }
        at += n;
    }
}

/// The forward pass (see [`Operands`]).
///
/// # Safety
/// [`available`] must hold and every buffer must have the size [`Operands`] gives it.
pub unsafe fn run(ops: Operands, d: Dims, threads: usize) {
    let counts = filled_counts(ops.filled, d);
    let (dm, f) = (d.d_model, d.hidden);
    for_each_expert(&counts, d, threads, |e, s| {
        let ops = &ops; // the whole struct (Sync), not its pointer fields
        let r = gather(ops.x, e, dm, &counts, d, &mut s.x);
        let wi = MatRef::rows(ops.wi.add(e * f * dm), dm);
        let wo = MatRef::rows(ops.wo.add(e * dm * f), f);
        s.hidden.resize(r * f, 0.0);
        s.out.resize(r * dm, 0.0);
        let x = MatRef::rows(s.x.as_ptr(), dm);
        gemm::gemm(
            r,
            f,
            dm,
            x,
            wi.t(),
            s.hidden.as_mut_ptr(),
            f,
            Store::Relu,
            &mut s.packs,
        );
        let h = MatRef::rows(s.hidden.as_ptr(), f);
        gemm::gemm(
            r,
            dm,
            f,
            h,
            wo.t(),
            s.out.as_mut_ptr(),
            dm,
            Store::Overwrite,
            &mut s.packs,
        );
        scatter(&s.out, e, dm, &counts, d, ops.out, true);
        scatter(&s.hidden, e, f, &counts, d, ops.hidden, false);
    });
}

/// The gradient (see [`GradOperands`]): with `dy` the filled rows of `d_out`,
/// `dwo = dy^T h`, `dh = (dy wo) * (h > 0)`, `dwi = dh^T x`, `dx = dh wi`.
///
/// # Safety
/// [`available`] must hold and every buffer must have the size [`GradOperands`] gives it.
pub unsafe fn run_grad(ops: GradOperands, d: Dims, threads: usize) {
    let counts = filled_counts(ops.filled, d);
    let (dm, f) = (d.d_model, d.hidden);
    for_each_expert(&counts, d, threads, |e, s| {
        let ops = &ops; // the whole struct (Sync), not its pointer fields
        let r = gather(ops.x, e, dm, &counts, d, &mut s.x);
        gather(ops.hidden, e, f, &counts, d, &mut s.hidden);
        gather(ops.d_out, e, dm, &counts, d, &mut s.out);
        let wi = MatRef::rows(ops.wi.add(e * f * dm), dm);
        let wo = MatRef::rows(ops.wo.add(e * dm * f), f);
        let (x, h, dy) = (
            MatRef::rows(s.x.as_ptr(), dm),
            MatRef::rows(s.hidden.as_ptr(), f),
            MatRef::rows(s.out.as_ptr(), dm),
        );
        let dwo = ops.dwo.add(e * dm * f);
        gemm::gemm(dm, f, r, dy.t(), h, dwo, f, Store::Overwrite, &mut s.packs);
        s.d_hidden.resize(r * f, 0.0);
        gemm::gemm(
            r,
            f,
            dm,
            dy,
            wo,
            s.d_hidden.as_mut_ptr(),
            f,
            Store::Overwrite,
            &mut s.packs,
        );
        for (g, &hv) in s.d_hidden.iter_mut().zip(&s.hidden) {
            if hv <= 0.0 {
                *g = 0.0;
            }
        }
        let dh = MatRef::rows(s.d_hidden.as_ptr(), f);
        let dwi = ops.dwi.add(e * f * dm);
        gemm::gemm(f, dm, r, dh.t(), x, dwi, dm, Store::Overwrite, &mut s.packs);
        // dx reuses the x scratch: x is not read after dwi.
        gemm::gemm(
            r,
            dm,
            f,
            dh,
            wi,
            s.x.as_mut_ptr(),
            dm,
            Store::Overwrite,
            &mut s.packs,
        );
        scatter(&s.x, e, dm, &counts, d, ops.dx, true);
    });
}

#[cfg(test)]
mod tests;
