//! Shared test helpers: a fixed-seed generator, literal helpers and a finite-difference
//! VJP checker that takes the evaluator as a parameter, so the same checks can later run
//! on the real XLA CPU plugin instead of the reference interpreter.

#![allow(dead_code)]

use hlo::{vjp_function, DType, Function, Literal, Shape};

/// Evaluates a function on host literals (the interpreter, or a PJRT backend).
pub type Eval = dyn Fn(&Function, &[Literal]) -> Result<Vec<Literal>, String>;

/// The reference interpreter as an [`Eval`].
pub fn interp(f: &Function, args: &[Literal]) -> Result<Vec<Literal>, String> {
    hlo::evaluate(f, args).map_err(|e| e.to_string())
}

/// SplitMix64: tiny, deterministic, good enough for test inputs.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [lo, hi).
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        let u = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        lo + (hi - lo) * u
    }

    pub fn vec(&mut self, n: usize, lo: f64, hi: f64) -> Vec<f64> {
        (0..n).map(|_| self.uniform(lo, hi)).collect()
    }

    /// An f64 literal of `dims` with values in [lo, hi).
    pub fn literal(&mut self, dims: &[i64], lo: f64, hi: f64) -> Literal {
        let n = dims.iter().product::<i64>() as usize;
        f64s(dims, &self.vec(n, lo, hi))
    }

    /// Random values converted to `shape`'s element type (integers rounded, pred by sign).
    pub fn literal_of(&mut self, shape: &Shape, lo: f64, hi: f64) -> Literal {
        let n = shape.element_count() as usize;
        let v = self.vec(n, lo, hi);
        from_f64(shape, &v)
    }
}

pub fn f64s(dims: &[i64], values: &[f64]) -> Literal {
    Literal::from_slice(dims, values).unwrap()
}

pub fn s32s(dims: &[i64], values: &[i32]) -> Literal {
    Literal::from_slice(dims, values).unwrap()
}

/// A literal of any element type from f64 values.
pub fn from_f64(shape: &Shape, v: &[f64]) -> Literal {
    let d = &shape.dims;
    match shape.dtype {
        DType::F64 => Literal::from_slice(d, v).unwrap(),
        DType::F32 => {
            Literal::from_slice(d, &v.iter().map(|&x| x as f32).collect::<Vec<_>>()).unwrap()
        }
        DType::S32 => {
            Literal::from_slice(d, &v.iter().map(|&x| x.round() as i32).collect::<Vec<_>>())
                .unwrap()
        }
        DType::S64 => {
            Literal::from_slice(d, &v.iter().map(|&x| x.round() as i64).collect::<Vec<_>>())
                .unwrap()
        }
        DType::Pred => {
            Literal::from_slice(d, &v.iter().map(|&x| x > 0.0).collect::<Vec<_>>()).unwrap()
        }
        other => panic!("test helper does not make {other} literals"),
    }
}

pub fn assert_close(got: &[f64], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * (1.0 + w.abs()),
            "{what}[{i}]: got {g}, want {w} (all: got {got:?}, want {want:?})"
        );
    }
}

/// <ct, f(args)> summed over the float outputs.
fn pairing(eval: &Eval, f: &Function, args: &[Literal], cts: &[Vec<f64>]) -> f64 {
    let outs = eval(f, args).unwrap();
    outs.iter()
        .zip(cts)
        .map(|(o, c)| {
            o.to_f64_vec()
                .iter()
                .zip(c)
                .map(|(a, b)| a * b)
                .sum::<f64>()
        })
        .sum()
}

/// Checks the VJP of `f` w.r.t. the (f64) parameters `wrt` at `args` against central
/// finite differences of `<ct, f>` for random cotangents `ct`. Returns the gradients.
pub fn check_vjp_with(
    eval: &Eval,
    f: &Function,
    args: &[Literal],
    wrt: &[usize],
    seed: u64,
) -> Vec<Vec<f64>> {
    let mut rng = Rng::new(seed);
    let g = vjp_function(f, wrt).unwrap_or_else(|e| panic!("vjp_function: {e}"));
    let out_shapes = f.output_shapes();
    let cts: Vec<Vec<f64>> = out_shapes
        .iter()
        .map(|s| {
            let n = s.element_count() as usize;
            if s.dtype.is_float() {
                rng.vec(n, -1.0, 1.0)
            } else {
                vec![0.0; n]
            }
        })
        .collect();
    let mut all_args = args.to_vec();
    all_args.extend(out_shapes.iter().zip(&cts).map(|(s, c)| from_f64(s, c)));
    let res = eval(&g, &all_args).unwrap_or_else(|e| panic!("evaluating the vjp function: {e}"));
    // The derived function recomputes f's outputs unchanged.
    let plain = eval(f, args).unwrap();
    for (i, o) in plain.iter().enumerate() {
        assert_eq!(o, &res[i], "output {i} of the vjp function differs from f");
    }
    let h = 1e-6;
    let mut grads = Vec::new();
    for (k, &p) in wrt.iter().enumerate() {
        let got = res[plain.len() + k].to_f64_vec();
        let base = args[p].to_f64_vec();
        assert_eq!(
            args[p].dtype(),
            DType::F64,
            "finite differences need f64 parameters"
        );
        let mut want = Vec::with_capacity(base.len());
        for e in 0..base.len() {
            let mut plus = args.to_vec();
            let mut minus = args.to_vec();
            let mut v = base.clone();
            v[e] = base[e] + h;
            plus[p] = f64s(args[p].dims(), &v);
            v[e] = base[e] - h;
            minus[p] = f64s(args[p].dims(), &v);
            want.push((pairing(eval, f, &plus, &cts) - pairing(eval, f, &minus, &cts)) / (2.0 * h));
        }
        assert_close(
            &got,
            &want,
            1e-5,
            &format!("gradient w.r.t. parameter {p} of `{}`", f.name),
        );
        grads.push(got);
    }
    grads
}

/// [`check_vjp_with`] on the reference interpreter.
pub fn check_vjp(f: &Function, args: &[Literal], wrt: &[usize], seed: u64) -> Vec<Vec<f64>> {
    check_vjp_with(&interp, f, args, wrt, seed)
}

/// Builds a function from a closure over f64 parameters of the given dims, then checks
/// its VJP w.r.t. every parameter at random inputs in [lo, hi).
pub fn check_op(
    name: &str,
    dims: &[&[i64]],
    lo: f64,
    hi: f64,
    seed: u64,
    body: impl Fn(&hlo::Builder, &[hlo::Tensor]) -> Vec<hlo::Tensor>,
) -> Vec<Vec<f64>> {
    let b = hlo::Builder::new(name);
    let params: Vec<hlo::Tensor> = dims
        .iter()
        .enumerate()
        .map(|(i, d)| b.parameter(&format!("x{i}"), Shape::new(DType::F64, d.to_vec())))
        .collect();
    let outs = body(&b, &params);
    let refs: Vec<&hlo::Tensor> = outs.iter().collect();
    let f = b.build(&refs).unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut rng = Rng::new(seed ^ 0x5eed);
    let args: Vec<Literal> = dims.iter().map(|d| rng.literal(d, lo, hi)).collect();
    let wrt: Vec<usize> = (0..dims.len()).collect();
    check_vjp(&f, &args, &wrt, seed)
}
