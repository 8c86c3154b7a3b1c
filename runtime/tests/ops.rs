//! Every `hlo` op, built with the builder, emitted by `hlo::emit` and executed on the real
//! CPU plugin, compared with values computed independently on the host with `ndarray`.

mod common;

use common::{assert_close, client};
use half::{bf16, f16};
use hlo::ir::{DotDims, GatherDims, Op, RngAlgorithm, ScatterDims};
use hlo::{to_stablehlo, Builder, DType, EmitOptions, Function, Literal, Shape, Tensor};
use ndarray::{s, Array, ArrayD, Axis, IxDyn};
use runtime::{Buffer, CompileOptions};

// ---------- harness ----------

/// Emits, compiles for one device, runs on `args` and downloads every result.
fn run(f: &Function, args: &[Literal]) -> Vec<Literal> {
    let text = to_stablehlo(f, &EmitOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    let c = client();
    let exe = c
        .compile(&text, &CompileOptions::default())
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
    let bufs: Vec<Buffer> = args.iter().map(|a| c.upload(a, 0).unwrap()).collect();
    let out = exe.execute(&[bufs.iter().collect()]).unwrap();
    out[0].iter().map(|b| b.to_literal().unwrap()).collect()
}

/// Builds a function of parameters with the given types; `body` returns the results.
fn build(params: &[Shape], body: impl Fn(&Builder, &[Tensor]) -> Vec<Tensor>) -> Function {
    let b = Builder::new("op_test");
    let ps: Vec<Tensor> = params
        .iter()
        .enumerate()
        .map(|(i, s)| b.parameter(&format!("p{i}"), s.clone()))
        .collect();
    let outs = body(&b, &ps);
    let refs: Vec<&Tensor> = outs.iter().collect();
    b.build(&refs).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs a function of one parameter per argument literal (types taken from the literals).
fn eval(args: &[Literal], body: impl Fn(&Builder, &[Tensor]) -> Vec<Tensor>) -> Vec<Literal> {
    let shapes: Vec<Shape> = args.iter().map(|a| a.shape().clone()).collect();
    run(&build(&shapes, body), args)
}

/// Deterministic pseudo-random values in [lo, hi).
fn values(n: usize, seed: u64, lo: f64, hi: f64) -> Vec<f64> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            lo + (hi - lo) * ((s >> 11) as f64 / (1u64 << 53) as f64)
        })
        .collect()
}

fn arr(dims: &[usize], v: Vec<f64>) -> ArrayD<f64> {
    Array::from_shape_vec(IxDyn(dims), v).unwrap()
}

fn random(dims: &[usize], seed: u64, lo: f64, hi: f64) -> ArrayD<f64> {
    let n = dims.iter().product();
    arr(dims, values(n, seed, lo, hi))
}

/// A host array as a literal of `dtype` (values converted as `Literal::scalar_from_f64`).
fn lit(a: &ArrayD<f64>, dtype: DType) -> Literal {
    let dims: Vec<i64> = a.shape().iter().map(|&d| d as i64).collect();
    let v: Vec<f64> = a.iter().copied().collect();
    match dtype {
        DType::F32 => Literal::from_slice(&dims, &v.iter().map(|&x| x as f32).collect::<Vec<_>>()),
        DType::F64 => Literal::from_slice(&dims, &v),
        DType::Bf16 => Literal::from_slice(
            &dims,
            &v.iter().map(|&x| bf16::from_f64(x)).collect::<Vec<_>>(),
        ),
        DType::F16 => Literal::from_slice(
            &dims,
            &v.iter().map(|&x| f16::from_f64(x)).collect::<Vec<_>>(),
        ),
        DType::S32 => Literal::from_slice(&dims, &v.iter().map(|&x| x as i32).collect::<Vec<_>>()),
        DType::S64 => Literal::from_slice(&dims, &v.iter().map(|&x| x as i64).collect::<Vec<_>>()),
        DType::U32 => Literal::from_slice(&dims, &v.iter().map(|&x| x as u32).collect::<Vec<_>>()),
        DType::U64 => Literal::from_slice(&dims, &v.iter().map(|&x| x as u64).collect::<Vec<_>>()),
        DType::Pred => Literal::from_slice(&dims, &v.iter().map(|&x| x != 0.0).collect::<Vec<_>>()),
    }
    .unwrap()
}

/// A literal's values as an f64 array of its shape.
fn host(l: &Literal) -> ArrayD<f64> {
    let dims: Vec<usize> = l.dims().iter().map(|&d| d as usize).collect();
    arr(&dims, l.to_f64_vec())
}

/// `got` equals `want` within `tol` relative to max(1, |want|), with the same shape.
#[track_caller]
fn close(got: &Literal, want: &ArrayD<f64>, tol: f64) {
    let g = host(got);
    assert_eq!(g.shape(), want.shape(), "shapes differ");
    for (i, (a, b)) in g.iter().zip(want.iter()).enumerate() {
        let ok = (a - b).abs() <= tol * b.abs().max(1.0) || (a.is_nan() && b.is_nan());
        assert!(
            ok,
            "element {i}: got {a}, want {b} (tol {tol})\n got {g}\nwant {want}"
        );
    }
}

/// Exact equality of values and shape.
#[track_caller]
fn exact(got: &Literal, want: &ArrayD<f64>) {
    close(got, want, 0.0);
}

/// The value an f64 takes after rounding to `dtype` (for references of low-precision ops).
fn round_to(x: f64, dtype: DType) -> f64 {
    match dtype {
        DType::F32 => x as f32 as f64,
        DType::Bf16 => bf16::from_f64(x).to_f64(),
        DType::F16 => f16::from_f64(x).to_f64(),
        _ => x,
    }
}

/// Float element types and the relative error allowed for one rounding in each.
const FLOATS: [(DType, f64); 4] = [
    (DType::F32, 2e-6),
    (DType::F64, 1e-12),
    (DType::Bf16, 1.6e-2),
    (DType::F16, 2e-3),
];

// ---------- elementwise ----------

#[test]
fn unary_float_ops() {
    type Case = (
        &'static str,
        fn(&Tensor) -> Tensor,
        fn(f64) -> f64,
        f64,
        f64,
    );
    let cases: Vec<Case> = vec![
        ("neg", |t| t.neg(), |x| -x, -3.0, 3.0),
        ("abs", |t| t.abs(), f64::abs, -3.0, 3.0),
        ("exp", |t| t.exp(), f64::exp, -3.0, 3.0),
        ("log", |t| t.log(), f64::ln, 0.1, 5.0),
        ("log1p", |t| t.log1p(), f64::ln_1p, -0.5, 5.0),
        ("tanh", |t| t.tanh(), f64::tanh, -3.0, 3.0),
        (
            "logistic",
            |t| t.logistic(),
            |x| 1.0 / (1.0 + (-x).exp()),
            -6.0,
            6.0,
        ),
        ("sqrt", |t| t.sqrt(), f64::sqrt, 0.0, 9.0),
        ("rsqrt", |t| t.rsqrt(), |x| 1.0 / x.sqrt(), 0.1, 9.0),
        (
            "sign",
            |t| t.sign(),
            |x| if x == 0.0 { 0.0 } else { x.signum() },
            -2.0,
            2.0,
        ),
        ("floor", |t| t.floor(), f64::floor, -4.0, 4.0),
        ("cos", |t| t.cos(), f64::cos, -4.0, 4.0),
        ("sin", |t| t.sin(), f64::sin, -4.0, 4.0),
    ];
    // One program per element type and shape, with one parameter and result per op.
    for (dtype, tol) in FLOATS {
        for dims in [&[3usize, 5][..], &[], &[7]] {
            let inputs: Vec<ArrayD<f64>> = cases
                .iter()
                .enumerate()
                .map(|(k, (name, _, _, lo, hi))| {
                    let mut x = random(dims, k as u64 + 1, *lo, *hi);
                    if *name == "sign" {
                        x.iter_mut().take(1).for_each(|v| *v = 0.0);
                    }
                    x.mapv(|v| round_to(v, dtype))
                })
                .collect();
            let args: Vec<Literal> = inputs.iter().map(|x| lit(x, dtype)).collect();
            let out = eval(&args, |_, p| {
                cases.iter().zip(p).map(|(c, t)| (c.1)(t)).collect()
            });
            for ((name, _, reference, _, _), (x, got)) in cases.iter().zip(inputs.iter().zip(&out))
            {
                assert_eq!(got.dtype(), dtype, "{name}");
                let want = x.mapv(|v| round_to(reference(v), dtype));
                // Results are rounded to the element type; allow one more rounding step.
                close(got, &want, tol * 2.0);
            }
        }
    }
}

#[test]
fn not_on_pred_and_integers() {
    let p = arr(&[4], vec![1.0, 0.0, 0.0, 1.0]);
    let n = arr(&[4], vec![0.0, -1.0, 5.0, 2147483647.0]);
    let out = eval(&[lit(&p, DType::Pred), lit(&n, DType::S32)], |_, t| {
        vec![t[0].not(), t[1].not()]
    });
    assert_eq!(
        out[0].to_vec::<bool>().unwrap(),
        vec![false, true, true, false]
    );
    assert_eq!(out[1].to_vec::<i32>().unwrap(), vec![-1, 0, -6, i32::MIN]);
}

#[test]
fn binary_float_ops() {
    type Case = (
        &'static str,
        fn(&Tensor, &Tensor) -> Tensor,
        fn(f64, f64) -> f64,
    );
    let cases: Vec<Case> = vec![
        ("add", |a, b| a.add(b), |a, b| a + b),
        ("sub", |a, b| a.sub(b), |a, b| a - b),
        ("mul", |a, b| a.mul(b), |a, b| a * b),
        ("div", |a, b| a.div(b), |a, b| a / b),
        ("max", |a, b| a.max(b), f64::max),
        ("min", |a, b| a.min(b), f64::min),
        ("pow", |a, b| a.pow(b), f64::powf),
        ("rem", |a, b| a.rem(b), |a, b| a % b),
    ];
    for (dtype, tol) in FLOATS {
        for dims in [&[4usize, 3][..], &[], &[5]] {
            // Positive bases for pow; divisors of both signs, away from zero.
            let a: Vec<ArrayD<f64>> = cases
                .iter()
                .enumerate()
                .map(|(k, (name, _, _))| {
                    let lo = if *name == "pow" { 0.1 } else { -5.0 };
                    random(dims, 10 + k as u64, lo, 5.0).mapv(|v| round_to(v, dtype))
                })
                .collect();
            let b: Vec<ArrayD<f64>> = cases
                .iter()
                .enumerate()
                .map(|(k, (name, _, _))| {
                    let y = random(dims, 20 + k as u64, 0.5, 3.0);
                    let signs = random(dims, 30 + k as u64, -1.0, 1.0);
                    let y = if *name == "pow" {
                        y
                    } else {
                        y * signs.mapv(f64::signum)
                    };
                    y.mapv(|v| round_to(v, dtype))
                })
                .collect();
            let mut args: Vec<Literal> = a.iter().map(|x| lit(x, dtype)).collect();
            args.extend(b.iter().map(|x| lit(x, dtype)));
            let n = cases.len();
            let out = eval(&args, |_, p| {
                (0..n).map(|k| (cases[k].1)(&p[k], &p[n + k])).collect()
            });
            for (k, (name, _, reference)) in cases.iter().enumerate() {
                let want = ndarray::Zip::from(&a[k])
                    .and(&b[k])
                    .map_collect(|&x, &y| round_to(reference(x, y), dtype));
                assert_eq!(out[k].dtype(), dtype, "{name}");
                close(&out[k], &want, tol * 2.0);
            }
        }
    }
}

#[test]
fn binary_integer_ops() {
    let a = arr(&[6], vec![7.0, -7.0, 100.0, -1.0, 0.0, 2147483647.0]);
    let b = arr(&[6], vec![2.0, 3.0, -7.0, 5.0, 9.0, -2.0]);
    let out = eval(&[lit(&a, DType::S32), lit(&b, DType::S32)], |_, p| {
        let (x, y) = (&p[0], &p[1]);
        vec![
            x.add(y),
            x.sub(y),
            x.mul(y),
            x.div(y),
            x.rem(y),
            x.max(y),
            x.min(y),
            x.and(y),
            x.or(y),
            x.xor(y),
        ]
    });
    let av: Vec<i32> = a.iter().map(|&v| v as i32).collect();
    let bv: Vec<i32> = b.iter().map(|&v| v as i32).collect();
    type F = fn(i32, i32) -> i32;
    let refs: [F; 10] = [
        i32::wrapping_add,
        i32::wrapping_sub,
        i32::wrapping_mul,
        |x, y| x / y,
        |x, y| x % y,
        std::cmp::max,
        std::cmp::min,
        |x, y| x & y,
        |x, y| x | y,
        |x, y| x ^ y,
    ];
    for (k, r) in refs.iter().enumerate() {
        let want: Vec<i32> = av.iter().zip(&bv).map(|(&x, &y)| r(x, y)).collect();
        assert_eq!(out[k].to_vec::<i32>().unwrap(), want, "integer op {k}");
    }
}

#[test]
fn shifts_are_logical_and_saturate() {
    let x = Literal::from_slice(&[5], &[0x8000_0001u32, 1, 0xFFFF_FFFF, 12, 3]).unwrap();
    let k = Literal::from_slice(&[5], &[1u32, 31, 4, 0, 32]).unwrap();
    let out = eval(&[x, k], |_, p| {
        vec![p[0].shift_left(&p[1]), p[0].shift_right_logical(&p[1])]
    });
    // A shift by the bit width or more gives 0.
    assert_eq!(
        out[0].to_vec::<u32>().unwrap(),
        vec![2, 0x8000_0000, 0xFFFF_FFF0, 12, 0]
    );
    assert_eq!(
        out[1].to_vec::<u32>().unwrap(),
        vec![0x4000_0000, 0, 0x0FFF_FFFF, 12, 0]
    );
    // On signed integers the right shift is logical too (no sign extension).
    let s = Literal::from_slice(&[2], &[-8i32, 8]).unwrap();
    let k = Literal::from_slice(&[2], &[1i32, 1]).unwrap();
    let out = eval(&[s, k], |_, p| vec![p[0].shift_right_logical(&p[1])]);
    assert_eq!(out[0].to_vec::<i32>().unwrap(), vec![0x7FFF_FFFC, 4]);
}

#[test]
fn logical_ops_on_pred() {
    let a = Literal::from_slice(&[4], &[true, true, false, false]).unwrap();
    let b = Literal::from_slice(&[4], &[true, false, true, false]).unwrap();
    let out = eval(&[a, b], |_, p| {
        vec![p[0].and(&p[1]), p[0].or(&p[1]), p[0].xor(&p[1])]
    });
    assert_eq!(
        out[0].to_vec::<bool>().unwrap(),
        vec![true, false, false, false]
    );
    assert_eq!(
        out[1].to_vec::<bool>().unwrap(),
        vec![true, true, true, false]
    );
    assert_eq!(
        out[2].to_vec::<bool>().unwrap(),
        vec![false, true, true, false]
    );
}

#[test]
fn compare_in_every_direction_and_element_kind() {
    type Cmp = fn(&Tensor, &Tensor) -> Tensor;
    type HostCmp = fn(f64, f64) -> bool;
    let dirs: [(Cmp, HostCmp); 6] = [
        (|a, b| a.eq(b), |a, b| a == b),
        (|a, b| a.ne(b), |a, b| a != b),
        (|a, b| a.lt(b), |a, b| a < b),
        (|a, b| a.le(b), |a, b| a <= b),
        (|a, b| a.gt(b), |a, b| a > b),
        (|a, b| a.ge(b), |a, b| a >= b),
    ];
    // Unsigned values above 2^31 would compare wrongly as signed.
    let cases = [
        (
            DType::F32,
            vec![-1.5, 0.0, 2.0, 3.0],
            vec![1.0, 0.0, -2.0, 3.0],
        ),
        (
            DType::Bf16,
            vec![-1.5, 0.5, 2.0, 3.0],
            vec![1.0, 0.0, -2.0, 3.0],
        ),
        (
            DType::S32,
            vec![-5.0, 0.0, 7.0, 3.0],
            vec![4.0, 0.0, -7.0, 3.0],
        ),
        (
            DType::U32,
            vec![4294967295.0, 1.0, 0.0, 5.0],
            vec![1.0, 4294967295.0, 0.0, 5.0],
        ),
    ];
    for (dtype, a, b) in cases {
        let (a, b) = (arr(&[4], a), arr(&[4], b));
        let out = eval(&[lit(&a, dtype), lit(&b, dtype)], |_, p| {
            dirs.iter().map(|(op, _)| op(&p[0], &p[1])).collect()
        });
        for (k, (_, r)) in dirs.iter().enumerate() {
            let want: Vec<bool> = a.iter().zip(&b).map(|(&x, &y)| r(x, y)).collect();
            assert_eq!(
                out[k].to_vec::<bool>().unwrap(),
                want,
                "{dtype} direction {k}"
            );
        }
    }
}

#[test]
fn select_and_clamp() {
    let p = arr(&[2, 3], vec![1.0, 0.0, 1.0, 0.0, 0.0, 1.0]);
    let x = random(&[2, 3], 3, -4.0, 4.0);
    let y = random(&[2, 3], 4, -4.0, 4.0);
    let out = eval(
        &[
            lit(&p, DType::Pred),
            lit(&x, DType::F32),
            lit(&y, DType::F32),
        ],
        |b, t| {
            vec![
                t[0].select(&t[1], &t[2]),
                t[1].clamp(&b.scalar(-1.0, DType::F32), &b.scalar(2.0, DType::F32)),
                // Tensor bounds.
                t[1].clamp(&t[2].neg().abs().neg(), &t[2].abs()),
            ]
        },
    );
    let x32 = x.mapv(|v| v as f32 as f64);
    let y32 = y.mapv(|v| v as f32 as f64);
    let sel = ndarray::Zip::from(&p)
        .and(&x32)
        .and(&y32)
        .map_collect(|&c, &a, &b| if c != 0.0 { a } else { b });
    exact(&out[0], &sel);
    exact(&out[1], &x32.mapv(|v| v.clamp(-1.0, 2.0)));
    let clamp2 = ndarray::Zip::from(&x32)
        .and(&y32)
        .map_collect(|&a, &b| a.clamp(-b.abs(), b.abs()));
    exact(&out[2], &clamp2);
    // Integers.
    let n = Literal::from_slice(&[4], &[-9i32, 0, 5, 100]).unwrap();
    let out = eval(&[n], |b, t| {
        vec![t[0].clamp(&b.scalar(-3.0, DType::S32), &b.scalar(10.0, DType::S32))]
    });
    assert_eq!(out[0].to_vec::<i32>().unwrap(), vec![-3, 0, 5, 10]);
}

// ---------- types ----------

#[test]
fn convert_between_element_types() {
    let x = arr(&[6], vec![-2.75, -0.5, 0.0, 1.5, 2.999, 1e6 + 0.3]);
    let out = eval(&[lit(&x, DType::F32)], |_, t| {
        vec![
            t[0].convert(DType::S32),
            t[0].convert(DType::Bf16),
            t[0].convert(DType::F16),
            t[0].convert(DType::F64),
            t[0].convert(DType::Pred),
            t[0].convert(DType::S32).convert(DType::F32),
        ]
    });
    // Float -> int truncates toward zero.
    assert_eq!(
        out[0].to_vec::<i32>().unwrap(),
        vec![-2, 0, 0, 1, 2, 1_000_000]
    );
    let x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
    let want_bf: Vec<bf16> = x32.iter().map(|&v| bf16::from_f32(v)).collect();
    assert_eq!(out[1].to_vec::<bf16>().unwrap(), want_bf);
    let want_h: Vec<f16> = x32.iter().map(|&v| f16::from_f32(v)).collect();
    assert_eq!(out[2].to_vec::<f16>().unwrap(), want_h);
    let want_d: Vec<f64> = x32.iter().map(|&v| v as f64).collect();
    assert_eq!(out[3].to_vec::<f64>().unwrap(), want_d);
    assert_eq!(
        out[4].to_vec::<bool>().unwrap(),
        vec![true, true, false, true, true, true]
    );
    assert_eq!(
        out[5].to_vec::<f32>().unwrap(),
        vec![-2.0, 0.0, 0.0, 1.0, 2.0, 1e6]
    );
    // Pred and integers to floats.
    let p = Literal::from_slice(&[3], &[true, false, true]).unwrap();
    let n = Literal::from_slice(&[3], &[-3i64, 0, 1 << 40]).unwrap();
    let out = eval(&[p, n], |_, t| {
        vec![
            t[0].convert(DType::F32),
            t[1].convert(DType::F64),
            t[1].convert(DType::S32),
        ]
    });
    assert_eq!(out[0].to_vec::<f32>().unwrap(), vec![1.0, 0.0, 1.0]);
    assert_eq!(
        out[1].to_vec::<f64>().unwrap(),
        vec![-3.0, 0.0, (1u64 << 40) as f64]
    );
    // s64 -> s32 keeps the low 32 bits.
    assert_eq!(out[2].to_vec::<i32>().unwrap(), vec![-3, 0, 0]);
}

#[test]
fn bitcast_convert_reinterprets_bits() {
    let x = Literal::from_slice(&[4], &[1.0f32, -2.5, 0.0, f32::INFINITY]).unwrap();
    let out = eval(&[x], |_, t| {
        let bits = t[0].bitcast(DType::U32);
        vec![
            bits.clone(),
            bits.bitcast(DType::S32),
            bits.bitcast(DType::F32),
        ]
    });
    let want: Vec<u32> = [1.0f32, -2.5, 0.0, f32::INFINITY]
        .iter()
        .map(|v| v.to_bits())
        .collect();
    assert_eq!(out[0].to_vec::<u32>().unwrap(), want);
    let signed: Vec<i32> = want.iter().map(|&v| v as i32).collect();
    assert_eq!(out[1].to_vec::<i32>().unwrap(), signed);
    assert_eq!(
        out[2].to_vec::<f32>().unwrap(),
        vec![1.0, -2.5, 0.0, f32::INFINITY]
    );
    let h = Literal::from_slice(&[2], &[bf16::from_f32(1.0), bf16::from_f32(-0.5)]).unwrap();
    let out = eval(&[h], |_, t| {
        // bf16 has no 16-bit integer partner in our dtype set: go through f32 bits.
        vec![t[0].convert(DType::F32).bitcast(DType::U32)]
    });
    assert_eq!(
        out[0].to_vec::<u32>().unwrap(),
        vec![0x3F80_0000, 0xBF00_0000]
    );
}

// ---------- constants and iota ----------

#[test]
fn constants_of_every_kind() {
    let big: Vec<f32> = (0..300).map(|i| (i as f32) * 0.37 - 50.0).collect();
    let big_i: Vec<i32> = (0..100).map(|i| i * i - 5000).collect();
    let f = build(&[], |b, _| {
        vec![
            b.array(&[2, 2], &[1.0f32, -2.5, f32::NEG_INFINITY, f32::INFINITY]),
            b.array(
                &[3],
                &[bf16::from_f32(1.5), bf16::from_f32(-0.1), bf16::MAX],
            ),
            b.array(&[2], &[f16::from_f32(0.5), f16::MAX]),
            b.array(&[3], &[true, false, true]),
            b.array(&[2], &[u64::MAX, 7]),
            b.array(&[2], &[i64::MIN, 3]),
            b.array(&[3, 100], &big),
            b.array(&[100], &big_i),
            b.scalar(0.1, DType::F64),
            b.splat(2.5, &Shape::new(DType::F32, [2, 3])),
            b.array::<f32>(&[0, 2], &[]),
        ]
    });
    let out = run(&f, &[]);
    assert_eq!(
        out[0].to_vec::<f32>().unwrap(),
        vec![1.0, -2.5, f32::NEG_INFINITY, f32::INFINITY]
    );
    assert_eq!(
        out[1].to_vec::<bf16>().unwrap(),
        vec![bf16::from_f32(1.5), bf16::from_f32(-0.1), bf16::MAX]
    );
    assert_eq!(
        out[2].to_vec::<f16>().unwrap(),
        vec![f16::from_f32(0.5), f16::MAX]
    );
    assert_eq!(out[3].to_vec::<bool>().unwrap(), vec![true, false, true]);
    assert_eq!(out[4].to_vec::<u64>().unwrap(), vec![u64::MAX, 7]);
    assert_eq!(out[5].to_vec::<i64>().unwrap(), vec![i64::MIN, 3]);
    assert_eq!(out[6].to_vec::<f32>().unwrap(), big);
    assert_eq!(out[7].to_vec::<i32>().unwrap(), big_i);
    assert_eq!(out[8].to_vec::<f64>().unwrap(), vec![0.1]);
    assert_eq!(out[9].to_vec::<f32>().unwrap(), vec![2.5; 6]);
    assert_eq!(out[10].dims(), &[0, 2]);
}

#[test]
fn iota_along_each_dimension() {
    let f = build(&[], |b, _| {
        vec![
            b.iota(&Shape::new(DType::S32, [2, 3]), 1),
            b.iota(&Shape::new(DType::F32, [2, 3]), 0),
            b.iota(&Shape::new(DType::U64, [4]), 0),
        ]
    });
    let out = run(&f, &[]);
    assert_eq!(out[0].to_vec::<i32>().unwrap(), vec![0, 1, 2, 0, 1, 2]);
    assert_eq!(
        out[1].to_vec::<f32>().unwrap(),
        vec![0.0, 0.0, 0.0, 1.0, 1.0, 1.0]
    );
    assert_eq!(out[2].to_vec::<u64>().unwrap(), vec![0, 1, 2, 3]);
}

// ---------- layout ----------

#[test]
fn broadcast_reshape_transpose() {
    for dtype in [DType::F32, DType::S32, DType::Bf16] {
        let x = random(&[2, 3, 4], 5, -8.0, 8.0).mapv(|v| round_to(v.round(), dtype));
        let v = random(&[3], 6, -8.0, 8.0).mapv(|v| v.round());
        let out = eval(&[lit(&x, dtype), lit(&v, dtype)], |_, t| {
            vec![
                t[0].transpose(&[2, 0, 1]),
                t[0].reshape(&[6, 4]),
                t[1].broadcast_in_dim(&[2, 3, 4], &[1]),
                t[1].reshape(&[3, 1]).broadcast_in_dim(&[3, 5], &[0, 1]),
            ]
        });
        exact(&out[0], &x.clone().permuted_axes(IxDyn(&[2, 0, 1])));
        exact(&out[1], &x.to_shape(IxDyn(&[6, 4])).unwrap().to_owned());
        let b1 = v
            .to_shape(IxDyn(&[1, 3, 1]))
            .unwrap()
            .broadcast(IxDyn(&[2, 3, 4]))
            .unwrap()
            .to_owned();
        exact(&out[2], &b1);
        let b2 = v
            .to_shape(IxDyn(&[3, 1]))
            .unwrap()
            .broadcast(IxDyn(&[3, 5]))
            .unwrap()
            .to_owned();
        exact(&out[3], &b2);
    }
}

#[test]
fn slices_static_and_dynamic() {
    let x = random(&[5, 6], 7, -3.0, 3.0).mapv(|v| v as f32 as f64);
    let i = Literal::scalar(1i32);
    let j = Literal::scalar(4i32);
    let far = Literal::scalar(100i32);
    let wide = Literal::scalar(2i64);
    let out = eval(&[lit(&x, DType::F32), i, j, far, wide], |_, t| {
        vec![
            t[0].slice(&[1, 0], &[5, 6], &[2, 3]),
            t[0].slice_dim(1, 2, 5),
            t[0].dynamic_slice(&[t[1].clone(), t[2].clone()], &[3, 2]),
            // Start indices are clamped so the slice stays inside the tensor.
            t[0].dynamic_slice(&[t[3].clone(), t[1].clone()], &[2, 3]),
            // Start indices of different integer types.
            t[0].dynamic_slice(&[t[4].clone(), t[1].clone()], &[2, 2]),
            t[0].dynamic_update_slice(&t[0].slice_dim(0, 0, 1), &[t[1].clone(), t[4].clone()]),
        ]
    });
    exact(&out[0], &x.slice(s![1..5;2, 0..6;3]).to_owned().into_dyn());
    exact(&out[1], &x.slice(s![.., 2..5]).to_owned().into_dyn());
    exact(&out[2], &x.slice(s![1..4, 4..6]).to_owned().into_dyn());
    exact(&out[3], &x.slice(s![3..5, 1..4]).to_owned().into_dyn());
    exact(&out[4], &x.slice(s![2..4, 1..3]).to_owned().into_dyn());
    let mut dus = x.clone();
    dus.slice_mut(s![1..2, 0..6]).assign(&x.slice(s![0..1, ..]));
    exact(&out[5], &dus);
}

#[test]
fn dynamic_update_slice_concatenate_pad() {
    for dtype in [DType::F32, DType::S32] {
        let x = random(&[4, 5], 8, -9.0, 9.0).mapv(f64::round);
        let u = random(&[2, 2], 9, -9.0, 9.0).mapv(f64::round);
        let y = random(&[1, 5], 10, -9.0, 9.0).mapv(f64::round);
        let args = [
            lit(&x, dtype),
            lit(&u, dtype),
            Literal::scalar(2i32),
            Literal::scalar(1i32),
            lit(&y, dtype),
        ];
        let out = eval(&args, |b, t| {
            let pad_value = b.scalar(-1.0, dtype);
            vec![
                t[0].dynamic_update_slice(&t[1], &[t[2].clone(), t[3].clone()]),
                b.concatenate(&[t[0].clone(), t[4].clone(), t[4].clone()], 0),
                t[0].pad(&pad_value, &[1, 0], &[0, 2], &[0, 0]),
                // Negative padding trims; interior padding goes between elements.
                t[0].pad(&pad_value, &[0, -1], &[-2, 0], &[1, 0]),
            ]
        });
        let mut dus = x.clone();
        dus.slice_mut(s![2..4, 1..3]).assign(&u);
        exact(&out[0], &dus);
        let cat = ndarray::concatenate(Axis(0), &[x.view(), y.view(), y.view()]).unwrap();
        exact(&out[1], &cat);
        let mut p1 = Array::from_elem(IxDyn(&[5, 7]), -1.0);
        p1.slice_mut(s![1..5, 0..5]).assign(&x);
        exact(&out[2], &p1);
        // Interior 1 on dim 0: 4 rows -> 7 (rows 0,2,4,6 hold data); high -2 drops 2 rows.
        // Low -1 on dim 1 drops column 0.
        let mut p2 = Array::from_elem(IxDyn(&[5, 4]), -1.0);
        for r in 0..3 {
            p2.slice_mut(s![2 * r, ..]).assign(&x.slice(s![r, 1..5]));
        }
        exact(&out[3], &p2);
    }
}

// ---------- contractions and reductions ----------

/// Host batched matmul `[b, m, k] x [b, k, n]`.
fn batched_matmul(a: &ArrayD<f64>, b: &ArrayD<f64>) -> ArrayD<f64> {
    let (bs, m, n) = (a.shape()[0], a.shape()[1], b.shape()[2]);
    let mut out = Array::zeros(IxDyn(&[bs, m, n]));
    for i in 0..bs {
        let a2 = a
            .index_axis(Axis(0), i)
            .into_dimensionality::<ndarray::Ix2>()
            .unwrap();
        let b2 = b
            .index_axis(Axis(0), i)
            .into_dimensionality::<ndarray::Ix2>()
            .unwrap();
        out.index_axis_mut(Axis(0), i)
            .assign(&a2.dot(&b2).into_dyn());
    }
    out
}

#[test]
fn dot_general_matmul_batched_and_outer() {
    for (dtype, tol) in [(DType::F32, 1e-5), (DType::F64, 1e-12), (DType::Bf16, 3e-2)] {
        let a = random(&[3, 4], 11, -1.0, 1.0).mapv(|v| round_to(v, dtype));
        let b = random(&[4, 5], 12, -1.0, 1.0).mapv(|v| round_to(v, dtype));
        let ba = random(&[2, 3, 4], 13, -1.0, 1.0).mapv(|v| round_to(v, dtype));
        let bb = random(&[2, 4, 5], 14, -1.0, 1.0).mapv(|v| round_to(v, dtype));
        let args = [
            lit(&a, dtype),
            lit(&b, dtype),
            lit(&ba, dtype),
            lit(&bb, dtype),
        ];
        let out = eval(&args, |_, t| {
            vec![
                t[0].matmul(&t[1]),
                t[2].matmul(&t[3]),
                // Contract lhs dim 0 with rhs dim 1: a^T-ish with batch on dim 0 of both.
                t[2].dot_general(
                    &t[3],
                    DotDims {
                        lhs_batch: vec![0],
                        rhs_batch: vec![0],
                        lhs_contracting: vec![2],
                        rhs_contracting: vec![1],
                    },
                ),
                // No contraction: an outer product.
                t[0].reshape(&[12])
                    .dot_general(&t[1].reshape(&[20]), DotDims::default()),
            ]
        });
        let a2 = a.clone().into_dimensionality::<ndarray::Ix2>().unwrap();
        let b2 = b.clone().into_dimensionality::<ndarray::Ix2>().unwrap();
        close(&out[0], &a2.dot(&b2).into_dyn(), tol);
        let bm = batched_matmul(&ba, &bb);
        close(&out[1], &bm, tol);
        close(&out[2], &bm, tol);
        let av: Vec<f64> = a.iter().copied().collect();
        let bv: Vec<f64> = b.iter().copied().collect();
        let outer: Vec<f64> = av
            .iter()
            .flat_map(|x| bv.iter().map(move |y| x * y))
            .collect();
        close(&out[3], &arr(&[12, 20], outer), tol);
    }
    // Integer matmul is exact.
    let a = random(&[3, 4], 15, -5.0, 5.0).mapv(f64::round);
    let b = random(&[4, 2], 16, -5.0, 5.0).mapv(f64::round);
    let out = eval(&[lit(&a, DType::S32), lit(&b, DType::S32)], |_, t| {
        vec![t[0].matmul(&t[1])]
    });
    let a2 = a.into_dimensionality::<ndarray::Ix2>().unwrap();
    let b2 = b.into_dimensionality::<ndarray::Ix2>().unwrap();
    exact(&out[0], &a2.dot(&b2).into_dyn());
}

#[test]
fn reductions_sum_max_min() {
    for (dtype, tol) in [
        (DType::F32, 1e-5),
        (DType::F64, 1e-12),
        (DType::Bf16, 2e-2),
        (DType::S32, 0.0),
    ] {
        let x = random(&[3, 4, 5], 17, -10.0, 10.0).mapv(|v| round_to(v.round(), dtype));
        let out = eval(&[lit(&x, dtype)], |_, t| {
            vec![
                t[0].reduce_sum(&[1]),
                t[0].reduce_sum(&[0, 2]),
                t[0].reduce_max(&[2]),
                t[0].reduce_min(&[0]),
                t[0].sum_all(),
            ]
        });
        close(&out[0], &x.sum_axis(Axis(1)), tol);
        close(&out[1], &x.sum_axis(Axis(2)).sum_axis(Axis(0)), tol);
        close(
            &out[2],
            &x.map_axis(Axis(2), |v| v.fold(f64::MIN, |a, &b| a.max(b))),
            0.0,
        );
        close(
            &out[3],
            &x.map_axis(Axis(0), |v| v.fold(f64::MAX, |a, &b| a.min(b))),
            0.0,
        );
        close(&out[4], &arr(&[], vec![x.sum()]), tol);
    }
    // Max over -inf and min over +inf inputs: the init values do not leak into results.
    let x =
        Literal::from_slice(&[2, 2], &[f32::NEG_INFINITY, f32::NEG_INFINITY, 1.0, 2.0]).unwrap();
    let out = eval(&[x], |_, t| {
        vec![t[0].reduce_max(&[1]), t[0].reduce_min(&[1])]
    });
    assert_eq!(
        out[0].to_vec::<f32>().unwrap(),
        vec![f32::NEG_INFINITY, 2.0]
    );
    assert_eq!(
        out[1].to_vec::<f32>().unwrap(),
        vec![f32::NEG_INFINITY, 1.0]
    );
    // Unsigned min/max use the full range.
    let u = Literal::from_slice(&[3], &[4_000_000_000u32, 3, 70]).unwrap();
    let out = eval(&[u], |_, t| {
        vec![t[0].reduce_max(&[0]), t[0].reduce_min(&[0])]
    });
    assert_eq!(out[0].to_vec::<u32>().unwrap(), vec![4_000_000_000]);
    assert_eq!(out[1].to_vec::<u32>().unwrap(), vec![3]);
}

#[test]
fn reductions_and_or() {
    let p = Literal::from_slice(&[2, 3], &[true, true, true, false, true, false]).unwrap();
    let n = Literal::from_slice(&[2, 2], &[0b1100i32, 0b1010, -1, 6]).unwrap();
    let out = eval(&[p, n], |_, t| {
        vec![
            t[0].reduce_and(&[1]),
            t[0].reduce_or(&[1]),
            t[0].reduce_and(&[0]),
            t[1].reduce_and(&[1]),
            t[1].reduce_or(&[1]),
        ]
    });
    assert_eq!(out[0].to_vec::<bool>().unwrap(), vec![true, false]);
    assert_eq!(out[1].to_vec::<bool>().unwrap(), vec![true, true]);
    assert_eq!(out[2].to_vec::<bool>().unwrap(), vec![false, true, false]);
    assert_eq!(out[3].to_vec::<i32>().unwrap(), vec![0b1000, 6]);
    assert_eq!(out[4].to_vec::<i32>().unwrap(), vec![0b1110, -1]);
}

#[test]
fn argmax_argmin_softmax() {
    // Ties pick the first index.
    let x = arr(
        &[3, 4],
        vec![
            1.0, 5.0, 5.0, -2.0, 0.0, 0.0, 0.0, 0.0, -3.0, 7.0, -3.0, 2.0,
        ],
    );
    for dtype in [DType::F32, DType::Bf16, DType::S32] {
        let out = eval(&[lit(&x, dtype)], |_, t| {
            vec![t[0].argmax(1), t[0].argmin(1), t[0].argmax(0)]
        });
        assert_eq!(out[0].to_vec::<i32>().unwrap(), vec![1, 0, 1], "{dtype}");
        assert_eq!(out[1].to_vec::<i32>().unwrap(), vec![3, 0, 0], "{dtype}");
        assert_eq!(out[2].to_vec::<i32>().unwrap(), vec![0, 2, 0, 2], "{dtype}");
    }
    let z = random(&[4, 6], 18, -20.0, 20.0);
    for (dtype, tol) in [(DType::F32, 1e-6), (DType::F64, 1e-12)] {
        let z = z.mapv(|v| round_to(v, dtype));
        let out = eval(&[lit(&z, dtype)], |_, t| {
            vec![t[0].softmax(-1), t[0].log_softmax(1), t[0].logsumexp(1)]
        });
        let lse = z.map_axis(Axis(1), |r| {
            let m = r.fold(f64::MIN, |a, &b| a.max(b));
            m + r.mapv(|v| (v - m).exp()).sum().ln()
        });
        let col = lse.clone().insert_axis(Axis(1));
        let logsm = &z - &col;
        close(&out[0], &logsm.mapv(f64::exp), tol);
        close(&out[1], &logsm, tol * 10.0);
        close(&out[2], &lse, tol * 10.0);
        // Rows sum to one.
        let sums: Vec<f64> = host(&out[0]).sum_axis(Axis(1)).iter().copied().collect();
        assert_close(&sums, &[1.0; 4], tol * 10.0);
    }
}

// ---------- indexing ----------

#[test]
fn embedding_lookup_and_its_gradient() {
    let (v, d) = (10usize, 4usize);
    let table = random(&[v, d], 19, -1.0, 1.0).mapv(|x| x as f32 as f64);
    let ids = [3i32, 0, 3, 9, 9, 9];
    let ids_lit = Literal::from_slice(&[2, 3], &ids).unwrap();
    let upstream = random(&[2, 3, d], 20, -1.0, 1.0).mapv(|x| x as f32 as f64);
    for dtype in [DType::F32, DType::F64] {
        let out = eval(
            &[lit(&table, dtype), ids_lit.clone(), lit(&upstream, dtype)],
            |b, t| {
                let rows = t[0].take_rows(&t[1]);
                // The VJP of take_rows: scatter-add the row gradients into a zero table.
                let grad = b.zeros(t[0].shape()).scatter_add(
                    &t[1],
                    &t[2],
                    ScatterDims {
                        update_window_dims: vec![2],
                        inserted_window_dims: vec![0],
                        scatter_dims_to_operand_dims: vec![0],
                        index_vector_dim: 2,
                    },
                );
                vec![rows, grad]
            },
        );
        let mut rows = Array::zeros(IxDyn(&[2, 3, d]));
        let mut grad = Array::zeros(IxDyn(&[v, d]));
        for (k, &id) in ids.iter().enumerate() {
            let (i, j) = (k / 3, k % 3);
            rows.slice_mut(s![i, j, ..])
                .assign(&table.slice(s![id as usize, ..]));
            let mut g = grad.slice_mut(s![id as usize, ..]);
            g += &upstream.slice(s![i, j, ..]);
        }
        exact(&out[0], &rows);
        // Repeated ids accumulate.
        close(&out[1], &grad, 1e-6);
    }
}

#[test]
fn general_gather_and_scatter() {
    let x = random(&[5, 6], 21, -1.0, 1.0).mapv(|v| v as f32 as f64);
    // Two 2x2 windows starting at (row, col) = (0, 1) and (3, 4).
    let starts = Literal::from_slice(&[2, 2], &[0i32, 1, 3, 4]).unwrap();
    let upd = random(&[2, 2, 2], 22, -1.0, 1.0).mapv(|v| v as f32 as f64);
    let out = eval(
        &[lit(&x, DType::F32), starts, lit(&upd, DType::F32)],
        |_, t| {
            vec![
                t[0].gather(
                    &t[1],
                    GatherDims {
                        offset_dims: vec![1, 2],
                        collapsed_slice_dims: vec![],
                        start_index_map: vec![0, 1],
                        index_vector_dim: 1,
                        slice_sizes: vec![2, 2],
                    },
                ),
                t[0].scatter_add(
                    &t[1],
                    &t[2],
                    ScatterDims {
                        update_window_dims: vec![1, 2],
                        inserted_window_dims: vec![],
                        scatter_dims_to_operand_dims: vec![0, 1],
                        index_vector_dim: 1,
                    },
                ),
            ]
        },
    );
    let mut g = Array::zeros(IxDyn(&[2, 2, 2]));
    g.slice_mut(s![0, .., ..]).assign(&x.slice(s![0..2, 1..3]));
    g.slice_mut(s![1, .., ..]).assign(&x.slice(s![3..5, 4..6]));
    exact(&out[0], &g);
    let mut sc = x.clone();
    {
        let mut w = sc.slice_mut(s![0..2, 1..3]);
        w += &upd.slice(s![0, .., ..]);
    }
    {
        let mut w = sc.slice_mut(s![3..5, 4..6]);
        w += &upd.slice(s![1, .., ..]);
    }
    close(&out[1], &sc.mapv(|v| v as f32 as f64), 1e-6);
}

#[test]
fn sort_and_top_k() {
    // Ties keep input order (stable), in both directions.
    let x = arr(
        &[2, 6],
        vec![3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 2.0, -1.0, 8.0, 2.0, 0.0],
    );
    for dtype in [DType::F32, DType::S32, DType::Bf16] {
        let out = eval(&[lit(&x, dtype)], |b, t| {
            let idx = b.iota(&t[0].shape().with_dtype(DType::S32), 1);
            let asc = b.sort(&[t[0].clone(), idx.clone()], 1, false);
            let (vals, ids) = t[0].top_k(3);
            vec![asc[0].clone(), asc[1].clone(), vals, ids]
        });
        let mut want_sorted = Vec::new();
        let mut want_idx = Vec::new();
        let mut want_top = Vec::new();
        let mut want_top_idx = Vec::new();
        for r in 0..2 {
            let row: Vec<(f64, usize)> = (0..6).map(|c| (x[[r, c]], c)).collect();
            let mut asc = row.clone();
            asc.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap()); // stable
            want_sorted.extend(asc.iter().map(|p| p.0));
            want_idx.extend(asc.iter().map(|p| p.1 as f64));
            let mut desc = row.clone();
            desc.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap()); // stable
            want_top.extend(desc.iter().take(3).map(|p| p.0));
            want_top_idx.extend(desc.iter().take(3).map(|p| p.1 as f64));
        }
        exact(&out[0], &arr(&[2, 6], want_sorted));
        exact(&out[1], &arr(&[2, 6], want_idx));
        exact(&out[2], &arr(&[2, 3], want_top));
        exact(&out[3], &arr(&[2, 3], want_top_idx));
    }
    // Sorting along dimension 0 of an unsigned key.
    let u = Literal::from_slice(&[3, 2], &[4_000_000_000u32, 1, 2, 9, 3, 5]).unwrap();
    let out = eval(&[u], |b, t| b.sort(&[t[0].clone()], 0, false));
    assert_eq!(
        out[0].to_vec::<u32>().unwrap(),
        vec![2, 1, 3, 5, 4_000_000_000, 9]
    );
}

// ---------- random numbers ----------

fn seed(a: u64, b: u64) -> Literal {
    Literal::from_slice(&[2], &[a, b]).unwrap()
}

fn mean_var(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    (m, v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / n)
}

#[test]
fn rng_uniform_and_normal_statistics() {
    let n = 100_000i64;
    let f = build(&[Shape::new(DType::U64, [2])], |b, t| {
        let (s1, u) = b.uniform(&t[0], &[n], 0.0, 1.0);
        let (s2, g) = b.normal(&s1, &[n]);
        let (_, w) = b.uniform(&s2, &[n], -2.0, 6.0);
        vec![u, g, w]
    });
    let out = run(&f, &[seed(42, 7)]);
    let u = out[0].to_f64_vec();
    assert!(u.iter().all(|&x| (0.0..1.0).contains(&x)));
    let (m, v) = mean_var(&u);
    assert!((m - 0.5).abs() < 0.01, "uniform mean {m}");
    assert!((v - 1.0 / 12.0).abs() < 0.005, "uniform variance {v}");
    let below = u.iter().filter(|&&x| x < 0.25).count() as f64 / n as f64;
    assert!((below - 0.25).abs() < 0.01, "P(u < 0.25) = {below}");
    let (m, v) = mean_var(&out[1].to_f64_vec());
    assert!(m.abs() < 0.02, "normal mean {m}");
    assert!((v - 1.0).abs() < 0.03, "normal variance {v}");
    let w = out[2].to_f64_vec();
    assert!(w.iter().all(|&x| (-2.0..6.0).contains(&x)));
    let (m, v) = mean_var(&w);
    assert!((m - 2.0).abs() < 0.05, "scaled uniform mean {m}");
    assert!((v - 64.0 / 12.0).abs() < 0.2, "scaled uniform variance {v}");
}

#[test]
fn rng_is_reproducible_and_advances_its_state() {
    for algorithm in [RngAlgorithm::ThreeFry, RngAlgorithm::Philox] {
        let f = build(&[Shape::new(DType::U64, [2])], |b, t| {
            let op = |state: &Tensor| {
                b.apply(
                    Op::RngBitGenerator {
                        algorithm,
                        shape: Shape::new(DType::U32, [64]),
                    },
                    &[state],
                )
            };
            let first = op(&t[0]);
            let second = op(&first[0]);
            vec![first[0].clone(), first[1].clone(), second[1].clone()]
        });
        let a = run(&f, &[seed(1, 2)]);
        let b = run(&f, &[seed(1, 2)]);
        let c = run(&f, &[seed(1, 3)]);
        assert_eq!(a[1], b[1], "{algorithm:?}: same seed, same bits");
        assert_eq!(a[0], b[0]);
        assert_ne!(a[1], c[1], "{algorithm:?}: another seed, other bits");
        assert_ne!(a[1], a[2], "{algorithm:?}: the new state gives new bits");
        assert_ne!(a[0], seed(1, 2), "{algorithm:?}: the state advances");
        // Bits look random: about half of them set.
        let ones: u32 = a[1]
            .to_vec::<u32>()
            .unwrap()
            .iter()
            .map(|v| v.count_ones())
            .sum();
        assert!(
            (900..1150).contains(&ones),
            "{algorithm:?}: {ones} of 2048 bits set"
        );
    }
    // 64-bit output.
    let f = build(&[Shape::new(DType::U64, [2])], |b, t| {
        let (s, bits) = b.rng_bit_generator(&t[0], &Shape::new(DType::U64, [4, 4]));
        vec![s, bits]
    });
    let out = run(&f, &[seed(9, 9)]);
    assert_eq!(out[1].dims(), &[4, 4]);
    let v = out[1].to_vec::<u64>().unwrap();
    assert!(v.iter().any(|&x| x > u32::MAX as u64));
}

// ---------- annotations, identities, multiple results ----------

#[test]
fn sharding_constraint_and_stop_gradient_are_identities_on_one_device() {
    let x = random(&[4, 6], 23, -1.0, 1.0).mapv(|v| v as f32 as f64);
    let out = eval(&[lit(&x, DType::F32)], |_, t| {
        let y = t[0]
            .with_sharding(hlo::PartitionSpec::new(&[Some("data"), None]))
            .stop_gradient()
            .mul_scalar(2.0);
        vec![y]
    });
    exact(&out[0], &x.mapv(|v| v * 2.0));
}

#[test]
fn several_results_of_mixed_types() {
    let x = random(&[3, 3], 24, -2.0, 2.0).mapv(|v| v as f32 as f64);
    let out = eval(&[lit(&x, DType::F32)], |_, t| {
        vec![
            t[0].clone(),
            t[0].gt(&t[0].scalar_like(0.0)),
            t[0].argmax(0),
            t[0].convert(DType::F64).sum_all(),
        ]
    });
    assert_eq!(out.len(), 4);
    exact(&out[0], &x);
    exact(&out[1], &x.mapv(|v| (v > 0.0) as i32 as f64));
    assert_eq!(out[2].dtype(), DType::S32);
    close(&out[3], &arr(&[], vec![x.sum()]), 1e-12);
}

#[test]
fn donated_parameter_is_updated_in_place() {
    let b = Builder::new("sgd");
    let w = b.parameter("w", Shape::new(DType::F32, [4]));
    let g = b.parameter("g", Shape::new(DType::F32, [4]));
    let nw = w.sub(&g.mul_scalar(0.5));
    let mut f = b.build(&[&nw]).unwrap();
    f.donate(0, 0).unwrap();
    let text = to_stablehlo(&f, &EmitOptions::default()).unwrap();
    let c = client();
    let exe = c.compile(&text, &CompileOptions::default()).unwrap();
    let wl = Literal::from_slice(&[4], &[1.0f32, 2.0, 3.0, 4.0]).unwrap();
    let gl = Literal::from_slice(&[4], &[2.0f32, 2.0, -2.0, 0.0]).unwrap();
    let (wb, gb) = (c.upload(&wl, 0).unwrap(), c.upload(&gl, 0).unwrap());
    let out = exe.execute(&[vec![&wb, &gb]]).unwrap();
    assert_eq!(
        out[0][0].to_literal().unwrap().to_vec::<f32>().unwrap(),
        vec![0.0, 1.0, 4.0, 4.0]
    );
    assert!(wb.is_deleted().unwrap(), "the donated buffer is consumed");
    assert!(!gb.is_deleted().unwrap());
}

#[test]
fn assert_close_helper_is_strict() {
    // The comparison helpers used above must fail on a wrong value.
    let l = Literal::from_slice(&[2], &[1.0f32, 2.0]).unwrap();
    let r = std::panic::catch_unwind(|| exact(&l, &arr(&[2], vec![1.0, 2.5])));
    assert!(r.is_err());
    assert_close(&[1.0], &[1.0], 0.0);
}
