//! Gradient checking: finite differences against [`crate::autodiff`], on any evaluator.
//!
//! The checker and the catalogue of small programs ([`op_cases`]: one or more per
//! differentiable primitive, several shapes) are plain functions over [`Function`] and
//! [`Literal`]s. The `hlo` tests run them on the reference interpreter
//! ([`interpreter`]); a runtime can run the very same cases on a real XLA backend by
//! passing its own evaluator, like JAX's `check_grads`.

use crate::autodiff::{vjp_function, AutodiffError};
use crate::builder::{Builder, Tensor};
use crate::dtype::DType;
use crate::error::BuildError;
use crate::ir::{DotDims, Function, GatherDims, ScatterDims};
use crate::literal::Literal;
use crate::shape::Shape;
use crate::sharding::PartitionSpec;

/// Runs a function on host literals: the interpreter, or a device backend.
pub type Evaluator<'a> = &'a dyn Fn(&Function, &[Literal]) -> Result<Vec<Literal>, String>;

/// The reference interpreter as an evaluator.
pub fn interpreter(f: &Function, args: &[Literal]) -> Result<Vec<Literal>, String> {
    crate::interpret::evaluate(f, args).map_err(|e| e.to_string())
}

/// Why a gradient check failed.
#[derive(Debug, thiserror::Error)]
pub enum GradCheckError {
    #[error("{case}: evaluation failed: {message}")]
    Eval { case: String, message: String },
    #[error("{case}: building the VJP failed: {source}")]
    Autodiff { case: String, source: AutodiffError },
    #[error("{case}: parameter {param} must be f64 for finite differences, got {got}")]
    NotF64 {
        case: String,
        param: usize,
        got: DType,
    },
    #[error("{case}: output {output} of the VJP function differs from the function's own")]
    OutputChanged { case: String, output: usize },
    #[error("{case}: output {output} of `{function}` differs between evaluators\n  reference: {reference:?}\n  other: {other:?}")]
    Differs {
        case: String,
        function: String,
        output: usize,
        reference: Vec<f64>,
        other: Vec<f64>,
    },
    #[error("{case}: d/d{param}[{index}]: autodiff {got}, finite differences {want}\n  autodiff: {all_got:?}\n  finite differences: {all_want:?}")]
    Mismatch {
        case: String,
        param: String,
        index: usize,
        got: f64,
        want: f64,
        all_got: Vec<f64>,
        all_want: Vec<f64>,
    },
}

/// SplitMix64: a tiny deterministic generator for test inputs.
#[derive(Clone, Debug)]
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
        let n = dims.iter().product::<i64>().max(0) as usize;
        f64_literal(dims, &self.vec(n, lo, hi))
    }
}

fn f64_literal(dims: &[i64], values: &[f64]) -> Literal {
    Literal::from_slice(dims, values).expect("element count follows dims")
}

/// A literal of a float or integer type from f64 values (cotangents; integer outputs get
/// zeros).
fn literal_like(shape: &Shape, values: &[f64]) -> Result<Literal, String> {
    let d = &shape.dims;
    let r = match shape.dtype {
        DType::F64 => Literal::from_slice(d, values),
        DType::F32 => Literal::from_slice(d, &values.iter().map(|&x| x as f32).collect::<Vec<_>>()),
        DType::F16 => Literal::from_slice(
            d,
            &values
                .iter()
                .map(|&x| half::f16::from_f64(x))
                .collect::<Vec<_>>(),
        ),
        DType::Bf16 => Literal::from_slice(
            d,
            &values
                .iter()
                .map(|&x| half::bf16::from_f64(x))
                .collect::<Vec<_>>(),
        ),
        _ => return Ok(Literal::zeros(shape.clone())),
    };
    r.map_err(|e| e.to_string())
}

/// One program to check: the gradient of `<ct, function(args)>` w.r.t. the f64
/// parameters `wrt`, for random cotangents `ct`.
#[derive(Clone, Debug)]
pub struct Case {
    pub name: String,
    pub function: Function,
    pub args: Vec<Literal>,
    pub wrt: Vec<usize>,
    pub seed: u64,
}

impl Case {
    /// Runs this case's function and its VJP function (with fixed cotangents) on both
    /// `reference` and `other` (e.g. the interpreter and an XLA backend) and compares
    /// every output within `tol` (absolute, plus relative to the reference's magnitude).
    /// Cheaper than [`Case::check`] on a slow backend: two runs per evaluator.
    pub fn compare(
        &self,
        reference: Evaluator,
        other: Evaluator,
        tol: f64,
    ) -> Result<(), GradCheckError> {
        let case = || self.name.clone();
        let g =
            vjp_function(&self.function, &self.wrt).map_err(|source| GradCheckError::Autodiff {
                case: case(),
                source,
            })?;
        let mut rng = Rng::new(self.seed);
        let mut vjp_args = self.args.clone();
        for s in self.function.output_shapes() {
            let v = rng.vec(s.element_count() as usize, -1.0, 1.0);
            vjp_args.push(
                literal_like(&s, &v).map_err(|message| GradCheckError::Eval {
                    case: case(),
                    message,
                })?,
            );
        }
        for (func, args) in [(&self.function, &self.args), (&g, &vjp_args)] {
            let run = |eval: Evaluator| {
                eval(func, args).map_err(|message| GradCheckError::Eval {
                    case: case(),
                    message,
                })
            };
            let (want, got) = (run(reference)?, run(other)?);
            for (output, (w, o)) in want.iter().zip(&got).enumerate() {
                let (w, o) = (w.to_f64_vec(), o.to_f64_vec());
                let bad = w.len() != o.len()
                    || w.iter()
                        .zip(&o)
                        .any(|(a, b)| (a - b).abs() > tol * (1.0 + a.abs()));
                if bad {
                    return Err(GradCheckError::Differs {
                        case: case(),
                        function: func.name.clone(),
                        output,
                        reference: w,
                        other: o,
                    });
                }
            }
            if want.len() != got.len() {
                return Err(GradCheckError::Differs {
                    case: case(),
                    function: func.name.clone(),
                    output: want.len().min(got.len()),
                    reference: Vec::new(),
                    other: Vec::new(),
                });
            }
        }
        Ok(())
    }

    /// Checks this case on `eval`; returns autodiff's gradients.
    pub fn check(&self, eval: Evaluator) -> Result<Vec<Vec<f64>>, GradCheckError> {
        check_vjp(
            eval,
            &self.name,
            &self.function,
            &self.args,
            &self.wrt,
            self.seed,
        )
    }
}

/// Relative/absolute tolerance of the comparison with finite differences (f64, step 1e-6).
pub const TOLERANCE: f64 = 1e-5;

/// Compares the VJP of `f` w.r.t. the f64 parameters `wrt` at `args` with central finite
/// differences of `<ct, f(args)>` for random cotangents (fixed `seed`). Also checks that
/// the derived VJP function reproduces `f`'s outputs. Returns autodiff's gradients.
pub fn check_vjp(
    eval: Evaluator,
    name: &str,
    f: &Function,
    args: &[Literal],
    wrt: &[usize],
    seed: u64,
) -> Result<Vec<Vec<f64>>, GradCheckError> {
    let case = || name.to_string();
    let run = |func: &Function, a: &[Literal]| {
        eval(func, a).map_err(|message| GradCheckError::Eval {
            case: case(),
            message,
        })
    };
    for &p in wrt {
        let got = args.get(p).map(Literal::dtype).unwrap_or(DType::Pred);
        if got != DType::F64 {
            return Err(GradCheckError::NotF64 {
                case: case(),
                param: p,
                got,
            });
        }
    }
    let g = vjp_function(f, wrt).map_err(|source| GradCheckError::Autodiff {
        case: case(),
        source,
    })?;
    let mut rng = Rng::new(seed);
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
    for (s, c) in out_shapes.iter().zip(&cts) {
        all_args.push(literal_like(s, c).map_err(|message| GradCheckError::Eval {
            case: case(),
            message,
        })?);
    }
    let res = run(&g, &all_args)?;
    let plain = run(f, args)?;
    for (output, o) in plain.iter().enumerate() {
        if res.get(output) != Some(o) {
            return Err(GradCheckError::OutputChanged {
                case: case(),
                output,
            });
        }
    }
    let pairing = |a: &[Literal]| -> Result<f64, GradCheckError> {
        let outs = run(f, a)?;
        Ok(outs
            .iter()
            .zip(&cts)
            .map(|(o, c)| {
                o.to_f64_vec()
                    .iter()
                    .zip(c)
                    .map(|(x, y)| x * y)
                    .sum::<f64>()
            })
            .sum())
    };
    let h = 1e-6;
    let mut grads = Vec::with_capacity(wrt.len());
    for (k, &p) in wrt.iter().enumerate() {
        let got = res
            .get(plain.len() + k)
            .map(Literal::to_f64_vec)
            .unwrap_or_default();
        let base = args[p].to_f64_vec();
        let mut want = Vec::with_capacity(base.len());
        for e in 0..base.len() {
            let mut shifted = args.to_vec();
            let mut v = base.clone();
            v[e] = base[e] + h;
            shifted[p] = f64_literal(args[p].dims(), &v);
            let plus = pairing(&shifted)?;
            v[e] = base[e] - h;
            shifted[p] = f64_literal(args[p].dims(), &v);
            let minus = pairing(&shifted)?;
            want.push((plus - minus) / (2.0 * h));
        }
        let bad = (0..want.len()).find(|&i| {
            got.get(i)
                .is_none_or(|g| (g - want[i]).abs() > TOLERANCE * (1.0 + want[i].abs()))
        });
        if let Some(index) = bad.or((got.len() != want.len()).then_some(0)) {
            return Err(GradCheckError::Mismatch {
                case: case(),
                param: f.params[p].name.clone(),
                index,
                got: got.get(index).copied().unwrap_or(f64::NAN),
                want: want.get(index).copied().unwrap_or(f64::NAN),
                all_got: got,
                all_want: want,
            });
        }
        grads.push(got);
    }
    Ok(grads)
}

// ---------------------------------------------------------------------------------------
// The catalogue

/// A case from a closure over f64 parameters of the given dims, random inputs in
/// [lo, hi), differentiated w.r.t. every parameter.
fn case(
    name: &str,
    dims: &[&[i64]],
    (lo, hi): (f64, f64),
    seed: u64,
    body: impl Fn(&Builder, &[Tensor]) -> Vec<Tensor>,
) -> Result<Case, BuildError> {
    let b = Builder::new(name);
    let params: Vec<Tensor> = dims
        .iter()
        .enumerate()
        .map(|(i, d)| b.parameter(&format!("x{i}"), Shape::new(DType::F64, d.to_vec())))
        .collect();
    let outs = body(&b, &params);
    let function = b.build(&outs.iter().collect::<Vec<_>>())?;
    let mut rng = Rng::new(seed ^ 0x5eed);
    Ok(Case {
        name: name.to_string(),
        function,
        args: dims.iter().map(|d| rng.literal(d, lo, hi)).collect(),
        wrt: (0..dims.len()).collect(),
        seed,
    })
}

type Unary = fn(&Tensor) -> Tensor;
type Binary = fn(&Tensor, &Tensor) -> Tensor;

/// Small programs covering every differentiable primitive (several shapes each), for
/// [`Case::check`].
pub fn op_cases() -> Result<Vec<Case>, BuildError> {
    let mut cases = Vec::new();
    let mut seed = 0u64;
    let mut next = || {
        seed += 1;
        seed
    };
    const SHAPES: [&[i64]; 3] = [&[], &[5], &[2, 3]];

    // Unary ops; ranges keep log/sqrt/rsqrt inside their domains and away from kinks.
    let unary: [(&str, Unary, f64, f64); 15] = [
        ("negate", |x| x.neg(), -2.0, 2.0),
        ("abs+", |x| x.abs(), 0.1, 2.0),
        ("abs-", |x| x.abs(), -2.0, -0.1),
        ("exponential", |x| x.exp(), -2.0, 2.0),
        ("log", |x| x.log(), 0.2, 3.0),
        ("log_plus_one", |x| x.log1p(), -0.5, 2.0),
        ("tanh", |x| x.tanh(), -2.0, 2.0),
        ("logistic", |x| x.logistic(), -3.0, 3.0),
        ("sqrt", |x| x.sqrt(), 0.2, 3.0),
        ("rsqrt", |x| x.rsqrt(), 0.2, 3.0),
        ("cosine", |x| x.cos(), -3.0, 3.0),
        ("sine", |x| x.sin(), -3.0, 3.0),
        // Locally constant: d(op(x) * x) = op(x).
        ("sign", |x| x.sign().mul(x), -2.0, 2.0),
        ("floor", |x| x.floor().mul(x), -2.0, 2.0),
        ("swish", |x| x.swish(), -3.0, 3.0),
    ];
    for (name, op, lo, hi) in unary {
        for dims in SHAPES {
            cases.push(case(name, &[dims], (lo, hi), next(), |_, p| {
                vec![op(&p[0])]
            })?);
        }
    }

    // Binary ops, with NumPy broadcasting (adds broadcast_in_dim nodes).
    let binary: [(&str, Binary, f64, f64); 7] = [
        ("add", |x, y| x.add(y), -2.0, 2.0),
        ("subtract", |x, y| x.sub(y), -2.0, 2.0),
        ("multiply", |x, y| x.mul(y), -2.0, 2.0),
        ("divide", |x, y| x.div(y), 0.5, 2.0),
        ("maximum", |x, y| x.max(y), -2.0, 2.0),
        ("minimum", |x, y| x.min(y), -2.0, 2.0),
        ("power", |x, y| x.pow(y), 0.5, 2.0),
    ];
    let pairs: [(&[i64], &[i64]); 4] = [
        (&[], &[]),
        (&[4], &[4]),
        (&[2, 3], &[3]),
        (&[2, 1], &[1, 3]),
    ];
    for (name, op, lo, hi) in binary {
        for (a, c) in pairs {
            cases.push(case(name, &[a, c], (lo, hi), next(), |_, p| {
                vec![op(&p[0], &p[1])]
            })?);
        }
    }

    // broadcast_in_dim: new dims, expanded size-1 dims, permuted dims, scalars.
    let bcasts: [(&[i64], &[i64], &[i64]); 5] = [
        (&[3], &[2, 3], &[1]),
        (&[3, 1], &[3, 4], &[0, 1]),
        (&[2, 3], &[3, 4, 2], &[2, 0]),
        (&[], &[2, 2], &[]),
        (&[1, 2], &[1, 2, 3], &[0, 1]),
    ];
    for (x, shape, dims) in bcasts {
        cases.push(case(
            "broadcast_in_dim",
            &[x],
            (-1.0, 1.0),
            next(),
            |_, p| vec![p[0].broadcast_in_dim(shape, dims)],
        )?);
    }

    // Layout.
    cases.push(case("reshape", &[&[2, 6]], (-1.0, 1.0), next(), |_, p| {
        vec![p[0].reshape(&[3, 2, 2])]
    })?);
    cases.push(case(
        "transpose",
        &[&[2, 3, 4]],
        (-1.0, 1.0),
        next(),
        |_, p| vec![p[0].transpose(&[2, 0, 1])],
    )?);
    cases.push(case(
        "slice/strided",
        &[&[5, 6]],
        (-1.0, 1.0),
        next(),
        |_, p| vec![p[0].slice(&[1, 0], &[5, 5], &[2, 3])],
    )?);
    cases.push(case("slice", &[&[4]], (-1.0, 1.0), next(), |_, p| {
        vec![p[0].slice(&[1], &[3], &[1])]
    })?);
    cases.push(case(
        "concatenate",
        &[&[2, 1], &[2, 3], &[2, 2]],
        (-1.0, 1.0),
        next(),
        |b, p| vec![b.concatenate(p, 1)],
    )?);
    // pad: negative low trims, interior spreads; the padding value is differentiated too.
    for (low, high, interior) in [(-1i64, 2i64, 1i64), (2, -2, 0), (1, 1, 2), (-2, -1, 1)] {
        cases.push(case(
            "pad",
            &[&[3, 4], &[]],
            (-1.0, 1.0),
            next(),
            |_, p| vec![p[0].pad(&p[1], &[low, 0], &[high, 1], &[interior, 0])],
        )?);
    }

    // Dynamic slicing, including starts that XLA clamps.
    for (s0, s1) in [(1.0, 0.0), (3.0, 2.0), (-1.0, 1.0)] {
        cases.push(case(
            "dynamic_slice",
            &[&[4, 3]],
            (-1.0, 1.0),
            next(),
            |b, p| {
                let s = [b.scalar(s0, DType::S32), b.scalar(s1, DType::S32)];
                vec![p[0].dynamic_slice(&s, &[3, 1])]
            },
        )?);
        cases.push(case(
            "dynamic_update_slice",
            &[&[4, 3], &[2, 2]],
            (-1.0, 1.0),
            next(),
            |b, p| {
                let s = [b.scalar(s0, DType::S32), b.scalar(s1, DType::S32)];
                vec![p[0].dynamic_update_slice(&p[1], &s)]
            },
        )?);
    }

    // select (pred gets nothing) and clamp (all three operands).
    let mut rng = Rng::new(9);
    let mask: Vec<bool> = (0..6).map(|_| rng.uniform(0.0, 1.0) < 0.5).collect();
    cases.push(case(
        "select",
        &[&[2, 3], &[2, 3]],
        (-1.0, 1.0),
        next(),
        |b, p| vec![b.array(&[2, 3], &mask).select(&p[0], &p[1])],
    )?);
    cases.push(case(
        "select/scalar_pred",
        &[&[2, 3], &[2, 3]],
        (-1.0, 1.0),
        next(),
        |b, p| vec![b.constant(Literal::scalar(false)).select(&p[0], &p[1])],
    )?);
    cases.push(case(
        "clamp/scalar_bounds",
        &[&[], &[3, 4], &[]],
        (-1.0, 1.0),
        next(),
        |_, p| vec![p[1].mul_scalar(3.0).clamp(&p[0], &p[2])],
    )?);
    cases.push(case(
        "clamp/tensor_bounds",
        &[&[6], &[6], &[6]],
        (-1.0, 1.0),
        next(),
        |_, p| vec![p[1].clamp(&p[0].sub_scalar(0.5), &p[2].add_scalar(0.5))],
    )?);

    // dot_general: matmul, batched, scattered/out-of-order batch and contracting dims,
    // outer product, full contraction.
    let dots: [(&[i64], &[i64], DotDims); 5] = [
        (&[3, 4], &[4, 2], dot(&[], &[], &[1], &[0])),
        (&[2, 3, 4], &[2, 4, 5], dot(&[0], &[0], &[2], &[1])),
        (
            &[2, 3, 2, 4],
            &[4, 2, 3, 2],
            dot(&[1], &[2], &[3, 0], &[0, 3]),
        ),
        (&[3], &[2], dot(&[], &[], &[], &[])),
        (&[2, 3], &[2, 3], dot(&[], &[], &[0, 1], &[0, 1])),
    ];
    for (l, r, d) in dots {
        cases.push(case(
            "dot_general",
            &[l, r],
            (-1.0, 1.0),
            next(),
            |_, p| vec![p[0].dot_general(&p[1], d.clone())],
        )?);
    }

    // Reductions (random inputs: no ties).
    for dims in [vec![0i64], vec![1], vec![0, 2], vec![0, 1, 2]] {
        cases.push(case(
            "reduce_sum",
            &[&[2, 3, 4]],
            (-1.0, 1.0),
            next(),
            |_, p| vec![p[0].reduce_sum(&dims)],
        )?);
        cases.push(case(
            "reduce_max",
            &[&[2, 3, 4]],
            (-1.0, 1.0),
            next(),
            |_, p| vec![p[0].reduce_max(&dims)],
        )?);
        cases.push(case(
            "reduce_min",
            &[&[2, 3, 4]],
            (-1.0, 1.0),
            next(),
            |_, p| vec![p[0].reduce_min(&dims)],
        )?);
    }

    // gather: an embedding lookup with repeated ids, and 2x2 windows with a clamped start.
    cases.push(case(
        "gather/take_rows",
        &[&[5, 3]],
        (-1.0, 1.0),
        next(),
        |b, p| vec![p[0].take_rows(&b.array(&[2, 3], &[4i32, 1, 4, 0, 2, 4]))],
    )?);
    cases.push(case(
        "gather/windows",
        &[&[4, 5]],
        (-1.0, 1.0),
        next(),
        |b, p| {
            let starts = b.array(&[3, 2], &[0i32, 0, 2, 3, 3, 4]);
            vec![p[0].gather(
                &starts,
                GatherDims {
                    offset_dims: vec![1, 2],
                    collapsed_slice_dims: vec![],
                    start_index_map: vec![0, 1],
                    index_vector_dim: 1,
                    slice_sizes: vec![2, 2],
                },
            )]
        },
    )?);
    // scatter_add: squared afterwards so the operand's gradient depends on the updates.
    cases.push(case(
        "scatter_add",
        &[&[4, 3], &[3, 3]],
        (-1.0, 1.0),
        next(),
        |b, p| {
            let y = p[0].scatter_add(
                &b.array(&[3, 1], &[2i32, 0, 2]),
                &p[1],
                ScatterDims {
                    update_window_dims: vec![1],
                    inserted_window_dims: vec![0],
                    scatter_dims_to_operand_dims: vec![0],
                    index_vector_dim: 1,
                },
            );
            vec![y.mul(&y)]
        },
    )?);

    // sort: values through the permutation (two float operands; descending; top_k).
    cases.push(case(
        "sort/two_operands",
        &[&[3, 4], &[3, 4]],
        (-1.0, 1.0),
        next(),
        |b, p| b.sort(p, 1, false),
    )?);
    cases.push(case(
        "sort/descending_dim0",
        &[&[4, 2]],
        (-1.0, 1.0),
        next(),
        |b, p| b.sort(p, 0, true),
    )?);
    cases.push(case(
        "sort/top_k",
        &[&[2, 5]],
        (-1.0, 1.0),
        next(),
        |_, p| vec![p[0].top_k(2).0],
    )?);

    // Pass-through ops and several outputs sharing inputs.
    cases.push(case(
        "sharding_constraint",
        &[&[2, 4]],
        (-1.0, 1.0),
        next(),
        |_, p| {
            vec![p[0]
                .with_sharding(PartitionSpec::new(&[None, Some("model")]))
                .tanh()]
        },
    )?);
    cases.push(case(
        "several_outputs",
        &[&[3], &[3]],
        (-1.0, 1.0),
        next(),
        |_, p| {
            let h = p[0].mul(&p[1]);
            vec![h.add(&p[0].exp()), h.tanh().mul(&p[0])]
        },
    )?);
    Ok(cases)
}

fn dot(lb: &[i64], rb: &[i64], lc: &[i64], rc: &[i64]) -> DotDims {
    DotDims {
        lhs_batch: lb.to_vec(),
        rhs_batch: rb.to_vec(),
        lhs_contracting: lc.to_vec(),
        rhs_contracting: rc.to_vec(),
    }
}

// ---------------------------------------------------------------------------------------
// Composite programs shaped like a transformer training step

/// Softmax along the last axis, written with raw primitives (the max is differentiated
/// through, which must cancel out).
fn softmax_last(x: &Tensor) -> Tensor {
    let last = x.rank() as i64 - 1;
    let m = x.reduce_max(&[last]).expand_dim(last);
    let e = x.sub(&m).exp();
    e.div(&e.reduce_sum(&[last]).expand_dim(last))
}

/// `[B, T, dh]` q, k, v -> causal attention output `[B, T, dh]`.
fn attention(b: &Builder, q: &Tensor, k: &Tensor, v: &Tensor) -> Tensor {
    let (t, dh) = (q.dims()[1], q.dims()[2]);
    let scores = q
        .dot_general(
            k,
            DotDims {
                lhs_batch: vec![0],
                rhs_batch: vec![0],
                lhs_contracting: vec![2],
                rhs_contracting: vec![2],
            },
        )
        .mul_scalar(1.0 / (dh as f64).sqrt());
    let rows = b.iota(&Shape::new(DType::S32, [t, t]), 0);
    let cols = b.iota(&Shape::new(DType::S32, [t, t]), 1);
    let visible = rows.ge(&cols);
    let masked = visible.select(&scores, &b.scalar(-1e9, DType::F64));
    let p = softmax_last(&masked);
    p.dot_general(
        v,
        DotDims {
            lhs_batch: vec![0],
            rhs_batch: vec![0],
            lhs_contracting: vec![2],
            rhs_contracting: vec![1],
        },
    )
}

/// Mean cross entropy over labels != -100: logsumexp(logits) - logits[label].
fn cross_entropy(b: &Builder, logits: &Tensor, labels: &Tensor) -> Tensor {
    let n = logits.dims()[0];
    let valid = labels.ne(&b.scalar(-100.0, DType::S32));
    let safe = valid.select(labels, &b.scalar(0.0, DType::S32));
    let rows = b.iota(&Shape::new(DType::S32, [n, 1]), 0);
    let index = b.concatenate(&[rows, safe.reshape(&[n, 1])], 1);
    let target = logits.gather(
        &index,
        GatherDims {
            offset_dims: vec![],
            collapsed_slice_dims: vec![0, 1],
            start_index_map: vec![0, 1],
            index_vector_dim: 1,
            slice_sizes: vec![1, 1],
        },
    );
    let nll = logits.logsumexp(1).sub(&target);
    let w = valid.convert(logits.dtype());
    nll.mul(&w).sum_all().div(&w.sum_all())
}

/// LayerNorm over the last axis.
fn layer_norm(x: &Tensor, gain: &Tensor, bias: &Tensor) -> Tensor {
    let mu = x.mean(&[-1]).expand_dim(-1);
    let c = x.sub(&mu);
    let var = c.square().mean(&[-1]).expand_dim(-1);
    c.mul(&var.add_scalar(1e-5).rsqrt()).mul(gain).add(bias)
}

/// Composite programs: causal attention (`attention`), softmax cross-entropy with ignored
/// labels (`cross_entropy`) and a small Switch-Transformer block with top-1 routing,
/// one-hot dispatch/combine, LayerNorm, tanh, swish and a tied head (`switch_block`).
/// The tests compare the first two with hand-computed values as well.
pub fn composite_cases() -> Result<Vec<Case>, BuildError> {
    Ok(vec![
        attention_case()?,
        cross_entropy_case()?,
        switch_block_case()?,
    ])
}

fn attention_case() -> Result<Case, BuildError> {
    let (bsz, t, dh) = (2i64, 4i64, 3i64);
    let b = Builder::new("attention");
    let shape = Shape::new(DType::F64, [bsz, t, dh]);
    let q = b.parameter("q", shape.clone());
    let k = b.parameter("k", shape.clone());
    let v = b.parameter("v", shape);
    let out = attention(&b, &q, &k, &v);
    let mut rng = Rng::new(11);
    Ok(Case {
        name: "attention".into(),
        function: b.build(&[&out])?,
        args: (0..3)
            .map(|_| rng.literal(&[bsz, t, dh], -1.5, 1.5))
            .collect(),
        wrt: vec![0, 1, 2],
        seed: 12,
    })
}

fn cross_entropy_case() -> Result<Case, BuildError> {
    let (n, vocab) = (6i64, 5i64);
    let b = Builder::new("cross_entropy");
    let logits = b.parameter("logits", Shape::new(DType::F64, [n, vocab]));
    let labels = b.parameter("labels", Shape::new(DType::S32, [n]));
    let loss = cross_entropy(&b, &logits, &labels);
    let ids = Literal::from_slice(&[n], &[3i32, -100, 0, 4, -100, 1]).expect("6 labels");
    Ok(Case {
        name: "cross_entropy".into(),
        function: b.build(&[&loss])?,
        args: vec![Rng::new(21).literal(&[n, vocab], -3.0, 3.0), ids],
        wrt: vec![0],
        seed: 22,
    })
}

fn switch_block_case() -> Result<Case, BuildError> {
    let (bsz, t, d, e, hid, vocab) = (2i64, 3i64, 4i64, 2i64, 5i64, 7i64);
    let b = Builder::new("switch_block");
    let p = |name: &str, dims: &[i64]| b.parameter(name, Shape::new(DType::F64, dims.to_vec()));
    let wte = p("wte", &[vocab, d]);
    let wpe = p("wpe", &[t, d]);
    let router = p("router", &[d, e]);
    let wi = p("wi", &[e, d, hid]);
    let wo = p("wo", &[e, hid, d]);
    let bypass = p("bypass", &[d, d]);
    let ln_g = p("ln_g", &[d]);
    let ln_b = p("ln_b", &[d]);
    let head_w = p("head_w", &[d, d]);
    let head_b = p("head_b", &[d]);
    let ids = b.parameter("ids", Shape::new(DType::S32, [bsz, t]));
    let labels = b.parameter("labels", Shape::new(DType::S32, [bsz * t]));

    // Embeddings (gather) plus learned positions.
    let x = wte.take_rows(&ids).add(&wpe);
    // Router: softmax, top-1 by argmax, one-hot dispatch/combine, scaled by the top prob.
    let probs = softmax_last(&x.matmul(&router));
    let onehot = probs.argmax(-1).one_hot(e, DType::F64);
    let top_prob = probs.mul(&onehot).reduce_sum(&[2]).expand_dim(-1);
    let hidden = x
        .dot_general(
            &wi,
            DotDims {
                lhs_contracting: vec![2],
                rhs_contracting: vec![1],
                ..Default::default()
            },
        )
        .relu(); // [B, T, E, hid]
    let expert_out = hidden.dot_general(
        &wo,
        DotDims {
            lhs_batch: vec![2],
            rhs_batch: vec![0],
            lhs_contracting: vec![3],
            rhs_contracting: vec![1],
        },
    ); // [E, B, T, d]
    let combined = onehot.dot_general(
        &expert_out,
        DotDims {
            lhs_batch: vec![0, 1],
            rhs_batch: vec![1, 2],
            lhs_contracting: vec![2],
            rhs_contracting: vec![0],
        },
    ); // [B, T, d]
    let h = combined.mul(&top_prob).add(&x.matmul(&bypass).tanh());
    let x = x.add(&layer_norm(&h, &ln_g, &ln_b));
    // Head: swish(x W + b) tied to the embedding.
    let hh = x.matmul(&head_w).add(&head_b).swish();
    let logits = hh.dot_general(
        &wte,
        DotDims {
            lhs_contracting: vec![2],
            rhs_contracting: vec![1],
            ..Default::default()
        },
    );
    let loss = cross_entropy(&b, &logits.reshape(&[bsz * t, vocab]), &labels);
    let f = b.build(&[&loss])?;

    let mut rng = Rng::new(31);
    let mut args: Vec<Literal> = f.params[..10]
        .iter()
        .map(|prm| rng.literal(&prm.shape.dims, -0.8, 0.8))
        .collect();
    args[6] = f64_literal(&[d], &[1.0, 0.9, 1.1, 1.2]); // LayerNorm gain near 1
    args.push(Literal::from_slice(&[bsz, t], &[1i32, 5, 2, 6, 0, 5]).expect("6 ids"));
    args.push(Literal::from_slice(&[bsz * t], &[5i32, 2, -100, 0, 5, 3]).expect("6 labels"));
    Ok(Case {
        name: "switch_block".into(),
        function: f,
        args,
        wrt: (0..10).collect(),
        seed: 32,
    })
}
