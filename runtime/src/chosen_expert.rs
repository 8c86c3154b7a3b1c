//! Each token through the MLP of its chosen expert, `relu(x wi[e]^T) wo[e]^T`, in f32 on
//! AVX-512, for the CPU plugin's custom calls (see [`crate::custom_calls`]).
//!
//! Why: a decode step runs one token per row through one expert of each switch layer,
//! reading that expert's two matrices (2 MB for `small`) from the expert tables. XLA CPU
//! fuses the gather that picks the expert into its product and computes it in a loop
//! kernel at about 18 GB/s; a plain matrix-vector product on one core reads about
//! 27 GB/s; here both products are [`crate::matvec`]'s, on two cores (about 45 GB/s).

#[cfg(target_arch = "x86_64")]
use crate::matvec::Matvec;

/// Sizes of one call: `x [N, d]`, `expert [N]` s32, `kept [N]` f32 (0 zeroes a token's
/// output), `wi [E, f, d]`, `wo [E, d, f]`, result `[N, d]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dims {
    pub tokens: usize,
    pub experts: usize,
    pub d_model: usize,
    pub hidden: usize,
}

/// Pointers of one call's operands and result.
#[derive(Clone, Copy)]
pub struct Operands {
    pub x: *const f32,
    pub expert: *const i32,
    pub kept: *const f32,
    pub wi: *const f32,
    pub wo: *const f32,
    pub out: *mut f32,
}

/// Whether this CPU can run the kernel.
pub fn available() -> bool {
    crate::masked_attention::available()
}

/// Runs every token through its expert; an expert index out of range is clamped, as
/// XLA's gather clamps it.
///
/// # Safety
/// The pointers must hold the sizes `d` gives and the CPU must pass [`available`].
pub unsafe fn run(ops: Operands, d: Dims) {
    #[cfg(target_arch = "x86_64")]
    {
        let mut hidden = vec![0.0f32; d.hidden];
        for n in 0..d.tokens {
            let e = (*ops.expert.add(n)).clamp(0, d.experts as i32 - 1) as usize;
            let x = ops.x.add(n * d.d_model);
            let out = ops.out.add(n * d.d_model);
            let wi = ops.wi.add(e * d.hidden * d.d_model);
            let wo = ops.wo.add(e * d.d_model * d.hidden);
            let up = Matvec {
                w: wi,
                rows: d.hidden,
                cols: d.d_model,
                x,
                y: hidden.as_mut_ptr(),
                scale: 1.0,
                relu: true,
            };
            up.shared();
            let down = Matvec {
                w: wo,
                rows: d.d_model,
                cols: d.hidden,
                x: hidden.as_ptr(),
                y: out,
                scale: *ops.kept.add(n),
                relu: false,
            };
            down.shared();
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (ops, d);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_a_plain_loop() {
        if !available() {
            eprintln!("skipped: no AVX-512");
            return;
        }
        let d = Dims {
            tokens: 3,
            experts: 4,
            d_model: 37,
            hidden: 70,
        };
        let wave =
            |n: usize, k: f32| -> Vec<f32> { (0..n).map(|i| (i as f32 * k).sin()).collect() };
        let x = wave(d.tokens * d.d_model, 0.37);
        let wi = wave(d.experts * d.hidden * d.d_model, 0.11);
        let wo = wave(d.experts * d.d_model * d.hidden, 0.23);
        let expert = [2i32, 0, 9]; // 9 is clamped to 3
        let kept = [1.0f32, 0.0, 1.0];
        let mut out = vec![f32::NAN; d.tokens * d.d_model];
        let ops = Operands {
            x: x.as_ptr(),
            expert: expert.as_ptr(),
            kept: kept.as_ptr(),
            wi: wi.as_ptr(),
            wo: wo.as_ptr(),
            out: out.as_mut_ptr(),
        };
        unsafe { run(ops, d) };
        for n in 0..d.tokens {
            let e = expert[n].clamp(0, 3) as usize;
            let h: Vec<f64> = (0..d.hidden)
                .map(|j| {
                    let s: f64 = (0..d.d_model)
                        .map(|i| {
                            wi[(e * d.hidden + j) * d.d_model + i] as f64
                                * x[n * d.d_model + i] as f64
                        })
                        .sum();
                    s.max(0.0)
                })
                .collect();
            for o in 0..d.d_model {
                let y: f64 = (0..d.hidden)
                    .map(|j| wo[(e * d.d_model + o) * d.hidden + j] as f64 * h[j])
                    .sum::<f64>()
                    * kept[n] as f64;
                let got = out[n * d.d_model + o] as f64;
                assert!(
                    (got - y).abs() <= 1e-4 * (1.0 + y.abs()),
                    "token {n} output {o}: {got} vs {y}"
                );
            }
        }
    }
}
