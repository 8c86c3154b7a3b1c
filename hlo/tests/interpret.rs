//! The reference interpreter against hand-computed values (it is what the autodiff tests
//! trust, so it is tested on its own first).

mod common;

use common::{f64s, s32s};
use hlo::ir::{DotDims, GatherDims, ScatterDims};
use hlo::{evaluate, Builder, DType, InterpretError, Literal, Shape};

fn run(b: &Builder, outs: &[&hlo::Tensor], args: &[Literal]) -> Vec<Vec<f64>> {
    let f = b.build(outs).unwrap();
    evaluate(&f, args)
        .unwrap()
        .iter()
        .map(Literal::to_f64_vec)
        .collect()
}

#[test]
fn elementwise_broadcast_and_reduce() {
    let b = Builder::new("f");
    let x = b.parameter("x", Shape::new(DType::F32, [2, 3]));
    let bias = b.array(&[3], &[1.0f32, 2.0, 3.0]);
    let y = x.add(&bias).mul_scalar(2.0);
    let s = y.reduce_sum(&[1]);
    let m = y.reduce_max(&[0]);
    let e = x.exp().log();
    let arg = Literal::from_slice(&[2, 3], &[0.0f32, 1.0, 2.0, 3.0, 4.0, 5.0]).unwrap();
    let out = run(&b, &[&y, &s, &m, &e], &[arg]);
    assert_eq!(out[0], vec![2.0, 6.0, 10.0, 8.0, 12.0, 16.0]);
    assert_eq!(out[1], vec![18.0, 36.0]);
    assert_eq!(out[2], vec![8.0, 12.0, 16.0]);
    for (a, w) in out[3].iter().zip([0.0, 1.0, 2.0, 3.0, 4.0, 5.0]) {
        assert!((a - w).abs() < 1e-6);
    }
}

#[test]
fn results_keep_the_declared_precision() {
    let b = Builder::new("f");
    let x = b.parameter("x", Shape::new(DType::Bf16, [1]));
    let y = x.add_scalar(1.0 / 1024.0);
    let f = b.build(&[&y]).unwrap();
    let one = Literal::from_slice(&[1], &[half::bf16::from_f32(1.0)]).unwrap();
    let out = evaluate(&f, &[one]).unwrap();
    assert_eq!(out[0].dtype(), DType::Bf16);
    // 1 + 2^-10 is not representable in bf16 (8 mantissa bits): rounds back to 1.
    assert_eq!(out[0].to_f64_vec(), vec![1.0]);
}

#[test]
fn broadcast_in_dim_with_permuted_dims() {
    let b = Builder::new("f");
    let x = b.array(&[2, 3], &[1.0f64, 2.0, 3.0, 4.0, 5.0, 6.0]);
    // operand dim 0 -> result dim 1, operand dim 1 -> result dim 0: out[j, i, k] = x[i, j]
    let y = x.broadcast_in_dim(&[3, 2, 2], &[1, 0]);
    let out = run(&b, &[&y], &[]);
    assert_eq!(
        out[0],
        vec![1.0, 1.0, 4.0, 4.0, 2.0, 2.0, 5.0, 5.0, 3.0, 3.0, 6.0, 6.0]
    );
}

#[test]
fn slices_pads_and_concatenation() {
    let b = Builder::new("f");
    let x = b.array(&[5], &[0.0f64, 1.0, 2.0, 3.0, 4.0]);
    let s = x.slice(&[1], &[5], &[2]);
    let p = x.pad(&b.scalar(9.0, DType::F64), &[-1], &[2], &[1]);
    let c = b.concatenate(&[s.clone(), x.slice(&[0], &[1], &[1])], 0);
    let ds = x.dynamic_slice(&[b.scalar(4.0, DType::S32)], &[2]); // clamped to start 3
    let dus = x.dynamic_update_slice(
        &b.array(&[2], &[7.0f64, 8.0]),
        &[b.scalar(-3.0, DType::S32)],
    );
    let out = run(&b, &[&s, &p, &c, &ds, &dus], &[]);
    assert_eq!(out[0], vec![1.0, 3.0]);
    // interior 1: 0 9 1 9 2 9 3 9 4, low -1 drops the 0, high 2 adds 9 9
    assert_eq!(
        out[1],
        vec![9.0, 1.0, 9.0, 2.0, 9.0, 3.0, 9.0, 4.0, 9.0, 9.0]
    );
    assert_eq!(out[2], vec![1.0, 3.0, 0.0]);
    assert_eq!(out[3], vec![3.0, 4.0]);
    assert_eq!(out[4], vec![7.0, 8.0, 2.0, 3.0, 4.0]);
}

#[test]
fn dot_general_with_batch_and_odd_dimension_order() {
    let b = Builder::new("f");
    // lhs [k=2, batch=2, m=1], rhs [batch=2, k=2]: out[b, m] = sum_k lhs[k,b,m] rhs[b,k]
    let l = b.array(&[2, 2, 1], &[1.0f64, 2.0, 3.0, 4.0]);
    let r = b.array(&[2, 2], &[10.0f64, 20.0, 30.0, 40.0]);
    let y = l.dot_general(
        &r,
        DotDims {
            lhs_batch: vec![1],
            rhs_batch: vec![0],
            lhs_contracting: vec![0],
            rhs_contracting: vec![1],
        },
    );
    let out = run(&b, &[&y], &[]);
    // b=0: l[0,0]=1, l[1,0]=3 with r[0,:]=10,20 -> 70; b=1: 2,4 with 30,40 -> 220
    assert_eq!(out[0], vec![70.0, 220.0]);
}

#[test]
fn gather_clamps_and_scatter_skips_out_of_bounds() {
    let b = Builder::new("f");
    let table = b.array(&[3, 2], &[0.0f64, 1.0, 10.0, 11.0, 20.0, 21.0]);
    let ids = b.array(&[3], &[2i32, 0, 7]);
    let rows = table.take_rows(&ids);
    // A window of 2 rows starting at the index: start 2 is clamped to 1.
    let win = table.gather(
        &b.array(&[1], &[2i32]),
        GatherDims {
            offset_dims: vec![0, 1],
            collapsed_slice_dims: vec![],
            start_index_map: vec![0],
            index_vector_dim: 1,
            slice_sizes: vec![2, 2],
        },
    );
    let upd = b.array(&[3, 2], &[1.0f64, 1.0, 2.0, 2.0, 5.0, 5.0]);
    let sc = b.zeros(table.shape()).scatter_add(
        &b.array(&[3, 1], &[1i32, 1, 3]),
        &upd,
        ScatterDims {
            update_window_dims: vec![1],
            inserted_window_dims: vec![0],
            scatter_dims_to_operand_dims: vec![0],
            index_vector_dim: 1,
        },
    );
    let out = run(&b, &[&rows, &win, &sc], &[]);
    assert_eq!(out[0], vec![20.0, 21.0, 0.0, 1.0, 20.0, 21.0]);
    assert_eq!(out[1], vec![10.0, 11.0, 20.0, 21.0]);
    assert_eq!(out[2], vec![0.0, 0.0, 3.0, 3.0, 0.0, 0.0]);
}

#[test]
fn sort_is_stable_and_carries_other_operands() {
    let b = Builder::new("f");
    let keys = b.array(&[2, 3], &[3.0f64, 1.0, 3.0, 0.0, 5.0, 5.0]);
    let (vals, idx) = keys.top_k(3);
    let asc = b.sort(std::slice::from_ref(&keys), 1, false);
    let out = run(&b, &[&vals, &idx, &asc[0]], &[]);
    assert_eq!(out[0], vec![3.0, 3.0, 1.0, 5.0, 5.0, 0.0]);
    assert_eq!(out[1], vec![0.0, 2.0, 1.0, 1.0, 2.0, 0.0]);
    assert_eq!(out[2], vec![1.0, 3.0, 3.0, 0.0, 5.0, 5.0]);
}

#[test]
fn integers_wrap_and_divide_like_xla() {
    let b = Builder::new("f");
    let x = b.array(&[3], &[7i32, i32::MAX, -7]);
    let y = b.array(&[3], &[0i32, 1, 2]);
    let out = run(&b, &[&x.div(&y), &x.add(&y), &x.rem(&y)], &[]);
    assert_eq!(out[0], vec![-1.0, i32::MAX as f64, -3.0]);
    assert_eq!(out[1], vec![7.0, i32::MIN as f64, -5.0]);
    assert_eq!(out[2], vec![7.0, 0.0, -1.0]);
    let u = b.array(&[2], &[1u32, 0x8000_0000]);
    let sh = u.shift_left(&b.array(&[2], &[31u32, 1]));
    let out = run(&b, &[&sh, &u.not()], &[]);
    assert_eq!(out[0], vec![2147483648.0, 0.0]);
    assert_eq!(out[1], vec![4294967294.0, 2147483647.0]);
}

#[test]
fn converts_bitcasts_and_compares() {
    let b = Builder::new("f");
    let x = b.array(&[4], &[-1.7f64, 2.5, 3.9, f64::NAN]);
    let i = x.convert(DType::S32);
    let bits = b.array(&[1], &[0x3f80_0000u32]).bitcast(DType::F32);
    let lt = x.lt(&b.scalar(3.0, DType::F64).broadcast_to(&[4]));
    let sel = lt.select(&x, &b.zeros(x.shape()));
    let out = run(&b, &[&i, &bits, &lt, &sel], &[]);
    assert_eq!(out[0], vec![-1.0, 2.0, 3.0, 0.0]);
    assert_eq!(out[1], vec![1.0]);
    assert_eq!(out[2], vec![1.0, 1.0, 0.0, 0.0]);
    assert_eq!(out[3], vec![-1.7, 2.5, 0.0, 0.0]);
}

#[test]
fn clamp_iota_and_softmax() {
    let b = Builder::new("f");
    let x = b.array(&[4], &[-2.0f64, 0.5, 1.0, 3.0]);
    let c = x.clamp(&b.scalar(0.0, DType::F64), &b.scalar(1.0, DType::F64));
    let io = b.iota(&Shape::new(DType::F64, [2, 3]), 1);
    let sm = b.array(&[2], &[0.0f64, 2f64.ln()]).softmax(0);
    let out = run(&b, &[&c, &io, &sm], &[]);
    assert_eq!(out[0], vec![0.0, 0.5, 1.0, 1.0]);
    assert_eq!(out[1], vec![0.0, 1.0, 2.0, 0.0, 1.0, 2.0]);
    common::assert_close(&out[2], &[1.0 / 3.0, 2.0 / 3.0], 1e-12, "softmax");
}

#[test]
fn argument_and_unsupported_errors_are_clear() {
    let b = Builder::new("f");
    let x = b.parameter("x", Shape::new(DType::F64, [2]));
    let y = x.add(&x);
    let f = b.build(&[&y]).unwrap();
    assert!(matches!(
        evaluate(&f, &[]),
        Err(InterpretError::ArgCount {
            expected: 1,
            got: 0,
            ..
        })
    ));
    let err = evaluate(&f, &[s32s(&[2], &[1, 2])]).unwrap_err();
    assert!(
        err.to_string().contains("must be f64[2], got s32[2]"),
        "{err}"
    );
    assert_eq!(
        evaluate(&f, &[f64s(&[2], &[1.0, 2.0])]).unwrap()[0].to_f64_vec(),
        vec![2.0, 4.0]
    );

    let b = Builder::new("rng");
    let state = b.parameter("state", Shape::new(DType::U64, [2]));
    let (_, u) = b.uniform(&state, &[2], 0.0, 1.0);
    let f = b.build(&[&u]).unwrap();
    let err = evaluate(&f, &[Literal::from_slice(&[2], &[1u64, 2]).unwrap()]).unwrap_err();
    assert!(
        matches!(
            err,
            InterpretError::Unsupported {
                op: "rng_bit_generator",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn logical_ops_powers_and_remaining_types() {
    let b = Builder::new("f");
    let p = b.array(&[4], &[true, false, true, false]);
    let q = b.array(&[4], &[true, true, false, false]);
    let all = p.reduce_and(&[0]);
    let any = p.or(&q).reduce_or(&[0]);
    let x = p.xor(&q).convert(DType::S64);
    let i = b.array(&[3], &[2i64, -3, 5]);
    let pw = i.pow(&b.array(&[3], &[10i64, 3, -1]));
    let fr = b
        .array(&[2], &[5.5f64, -5.5])
        .rem(&b.scalar(2.0, DType::F64).broadcast_to(&[2]));
    let u = b.array(&[3], &[5u64, 1, 9]).reduce_max(&[0]);
    let out = run(&b, &[&all, &any, &x, &pw, &fr, &u], &[]);
    assert_eq!(out[0], vec![0.0]);
    assert_eq!(out[1], vec![1.0]);
    assert_eq!(out[2], vec![0.0, 1.0, 1.0, 0.0]);
    assert_eq!(out[3], vec![1024.0, -27.0, 0.0]);
    assert_eq!(out[4], vec![1.5, -1.5]);
    assert_eq!(out[5], vec![9.0]);
}

#[test]
fn inconsistent_hand_made_functions_are_errors_not_panics() {
    let b = Builder::new("f");
    let x = b.parameter("x", Shape::new(DType::F64, [2]));
    let y = x.add(&x);
    let mut f = b.build(&[&y]).unwrap();
    let args = [f64s(&[2], &[1.0, 2.0])];
    let last = f.nodes.len() - 1;
    f.nodes[last].operands.pop(); // add with one operand
    let err = evaluate(&f, &args).unwrap_err();
    assert!(
        matches!(err, InterpretError::Invalid { op: "add", .. }),
        "{err}"
    );
    let mut g = b.build(&[&y]).unwrap();
    g.nodes[last].outputs[0] = Shape::new(DType::F32, [2]); // declared type is wrong
    assert!(matches!(
        evaluate(&g, &args),
        Err(InterpretError::Invalid { .. })
    ));
    let mut h = b.build(&[&y]).unwrap();
    h.nodes[last].operands[0].node = 99; // dangling operand
    assert!(matches!(
        evaluate(&h, &args),
        Err(InterpretError::Invalid { .. })
    ));
}

#[test]
fn cumsum_is_an_inclusive_prefix_sum_along_a_dimension() {
    for n in [1usize, 2, 5, 8, 13] {
        let b = Builder::new("f");
        let x = b.parameter("x", Shape::new(DType::F64, [2, n as i64]));
        let vals: Vec<f64> = (0..2 * n).map(|i| (i * i % 7) as f64 - 2.5).collect();
        let arg = Literal::from_slice(&[2, n as i64], &vals).unwrap();
        let out = run(&b, &[&x.cumsum(1), &x.cumsum(0)], &[arg]);
        let mut along1 = vals.clone();
        for r in 0..2 {
            for c in 1..n {
                along1[r * n + c] += along1[r * n + c - 1];
            }
        }
        let along0: Vec<f64> = (0..2 * n)
            .map(|i| {
                if i < n {
                    vals[i]
                } else {
                    vals[i] + vals[i - n]
                }
            })
            .collect();
        assert_eq!(out[0], along1, "n = {n}");
        assert_eq!(out[1], along0, "n = {n}");
    }
}
