use super::*;

fn values(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|i| (((i * 7919 + seed * 104_729) % 1000) as f32 / 500.0) - 1.0)
        .collect()
}

const D: Dims = Dims {
    groups: 2,
    experts: 3,
    capacity: 5,
    d_model: 20,
    hidden: 36,
};
/// Per (group, expert): none, all, some, and an out-of-range count read as all.
const FILLED: [i32; 6] = [0, 5, 2, 3, 1, 9];

/// Slots as the model makes them: filled rows hold values, the others are zero.
fn slots(width: usize, seed: usize) -> Vec<f32> {
    let mut x = values(D.groups * D.experts * D.capacity * width, seed);
    for (ge, &n) in FILLED.iter().enumerate() {
        let n = (n as usize).min(D.capacity);
        x[(ge * D.capacity + n) * width..(ge + 1) * D.capacity * width].fill(0.0);
    }
    x
}

/// The forward kernel on `threads` threads: (out, hidden), NaN where it wrote nothing.
fn forward(x: &[f32], wi: &[f32], wo: &[f32], threads: usize) -> (Vec<f32>, Vec<f32>) {
    let slots_n = D.groups * D.experts * D.capacity;
    let mut out = vec![f32::NAN; slots_n * D.d_model];
    let mut hidden = vec![f32::NAN; slots_n * D.hidden];
    let ops = Operands {
        x: x.as_ptr(),
        filled: FILLED.as_ptr(),
        wi: wi.as_ptr(),
        wo: wo.as_ptr(),
        out: out.as_mut_ptr(),
        hidden: hidden.as_mut_ptr(),
    };
    // SAFETY: the buffers have the sizes of `D`.
    unsafe { run(ops, D, threads) };
    (out, hidden)
}

/// `relu(x wi^T)` of one slot row in f64.
fn hidden_row(x: &[f32], wi: &[f32], e: usize) -> Vec<f64> {
    let (dm, f) = (D.d_model, D.hidden);
    (0..f)
        .map(|j| {
            let s: f64 = (0..dm)
                .map(|p| x[p] as f64 * wi[(e * f + j) * dm + p] as f64)
                .sum();
            s.max(0.0)
        })
        .collect()
}

fn assert_close(got: &[f32], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (*g as f64 - w).abs() < 1e-4 * (1.0 + w.abs()),
            "{what}[{i}]: {g} vs {w}"
        );
    }
}

#[test]
fn forward_matches_a_plain_loop_on_filled_slots() {
    if !available() {
        eprintln!("skipped: no AVX-512");
        return;
    }
    let (dm, f, e_n, c) = (D.d_model, D.hidden, D.experts, D.capacity);
    let x = slots(dm, 1);
    let wi = values(e_n * f * dm, 2);
    let wo = values(e_n * dm * f, 3);
    let slots_n = D.groups * e_n * c;
    for threads in [1, 2] {
        let (out, hidden) = forward(&x, &wi, &wo, threads);
        let (mut want_out, mut want_hidden) = (vec![0.0; slots_n * dm], vec![0.0; slots_n * f]);
        for slot in 0..slots_n {
            let (ge, s) = (slot / c, slot % c);
            if s >= (FILLED[ge] as usize).min(c) {
                continue;
            }
            let e = ge % e_n;
            let h = hidden_row(&x[slot * dm..(slot + 1) * dm], &wi, e);
            for i in 0..dm {
                want_out[slot * dm + i] =
                    (0..f).map(|j| h[j] * wo[(e * dm + i) * f + j] as f64).sum();
            }
            want_hidden[slot * f..(slot + 1) * f].copy_from_slice(&h);
        }
        assert_close(&out, &want_out, "out");
        // The hidden activations of empty slots are left as they were (NaN here).
        let filled_hidden: Vec<f32> = hidden
            .chunks(f)
            .enumerate()
            .flat_map(|(slot, row)| {
                let empty = slot % c >= (FILLED[slot / c] as usize).min(c);
                assert!(
                    !empty || row.iter().all(|v| v.is_nan()),
                    "slot {slot} was written"
                );
                row.iter().map(move |&v| if empty { 0.0 } else { v })
            })
            .collect();
        assert_close(&filled_hidden, &want_hidden, "hidden");
    }
}

#[test]
fn gradient_matches_a_plain_loop() {
    if !available() {
        eprintln!("skipped: no AVX-512");
        return;
    }
    let (dm, f, e_n, c) = (D.d_model, D.hidden, D.experts, D.capacity);
    let slots_n = D.groups * e_n * c;
    let x = slots(dm, 1);
    let wi = values(e_n * f * dm, 2);
    let wo = values(e_n * dm * f, 3);
    let d_out = slots(dm, 4);
    let (_, hidden) = forward(&x, &wi, &wo, 1);
    let mut want_dx = vec![0.0f64; slots_n * dm];
    let mut want_dwi = vec![0.0f64; e_n * f * dm];
    let mut want_dwo = vec![0.0f64; e_n * dm * f];
    for slot in 0..slots_n {
        let (ge, s) = (slot / c, slot % c);
        if s >= (FILLED[ge] as usize).min(c) {
            continue;
        }
        let e = ge % e_n;
        let xr = &x[slot * dm..(slot + 1) * dm];
        let h = hidden_row(xr, &wi, e);
        let dy = &d_out[slot * dm..(slot + 1) * dm];
        for i in 0..dm {
            for j in 0..f {
                want_dwo[(e * dm + i) * f + j] += dy[i] as f64 * h[j];
            }
        }
        for j in 0..f {
            if h[j] <= 0.0 {
                continue;
            }
            let dh: f64 = (0..dm)
                .map(|i| dy[i] as f64 * wo[(e * dm + i) * f + j] as f64)
                .sum();
            for p in 0..dm {
                want_dwi[(e * f + j) * dm + p] += dh * xr[p] as f64;
                want_dx[slot * dm + p] += dh * wi[(e * f + j) * dm + p] as f64;
            }
        }
    }
    for threads in [1, 2] {
        let mut dx = vec![f32::NAN; slots_n * dm];
        let mut dwi = vec![f32::NAN; e_n * f * dm];
        let mut dwo = vec![f32::NAN; e_n * dm * f];
        let ops = GradOperands {
            x: x.as_ptr(),
            filled: FILLED.as_ptr(),
            wi: wi.as_ptr(),
            wo: wo.as_ptr(),
            hidden: hidden.as_ptr(),
            d_out: d_out.as_ptr(),
            dx: dx.as_mut_ptr(),
            dwi: dwi.as_mut_ptr(),
            dwo: dwo.as_mut_ptr(),
        };
        // SAFETY: the buffers have the sizes of `D`.
        unsafe { run_grad(ops, D, threads) };
        assert_close(&dx, &want_dx, "dx");
        assert_close(&dwi, &want_dwi, "dwi");
        assert_close(&dwo, &want_dwo, "dwo");
    }
}
