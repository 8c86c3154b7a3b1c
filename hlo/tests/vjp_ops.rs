//! Every differentiable primitive's VJP against central finite differences (f64, on the
//! reference interpreter, random inputs from a fixed seed, several shapes).

mod common;

use common::{assert_close, check_op, check_vjp, f64s, s32s, Rng};
use hlo::ir::{DotDims, GatherDims, ScatterDims};
use hlo::{Builder, DType, Shape, Tensor};

const SHAPES: [&[i64]; 3] = [&[], &[5], &[2, 3]];

#[test]
fn unary_ops() {
    type U = fn(&Tensor) -> Tensor;
    // (name, op, input range): ranges keep log/sqrt/rsqrt in their domains.
    let ops: [(&str, U, f64, f64); 13] = [
        ("neg", |x| x.neg(), -2.0, 2.0),
        ("abs", |x| x.abs(), 0.1, 2.0),
        ("abs_neg", |x| x.abs(), -2.0, -0.1),
        ("exp", |x| x.exp(), -2.0, 2.0),
        ("log", |x| x.log(), 0.2, 3.0),
        ("log1p", |x| x.log1p(), -0.5, 2.0),
        ("tanh", |x| x.tanh(), -2.0, 2.0),
        ("logistic", |x| x.logistic(), -3.0, 3.0),
        ("sqrt", |x| x.sqrt(), 0.2, 3.0),
        ("rsqrt", |x| x.rsqrt(), 0.2, 3.0),
        ("cos", |x| x.cos(), -3.0, 3.0),
        ("sin", |x| x.sin(), -3.0, 3.0),
        ("swish", |x| x.swish(), -3.0, 3.0),
    ];
    for (i, (name, op, lo, hi)) in ops.iter().enumerate() {
        for (j, dims) in SHAPES.iter().enumerate() {
            check_op(name, &[dims], *lo, *hi, (i * 10 + j) as u64, |_, p| {
                vec![op(&p[0])]
            });
        }
    }
}

#[test]
fn piecewise_constant_unary_ops_have_zero_gradient() {
    for (name, op) in [
        ("sign", Tensor::sign as fn(&Tensor) -> Tensor),
        ("floor", Tensor::floor),
    ] {
        let g = check_op(name, &[&[2, 3]], -2.0, 2.0, 7, |_, p| {
            vec![op(&p[0]).mul(&p[0])]
        });
        // d(op(x) * x) = op(x) since op is locally constant.
        assert!(g[0].iter().all(|v| v.abs() > 0.0 || *v == 0.0));
    }
}

#[test]
fn binary_ops_with_broadcasting() {
    type B = fn(&Tensor, &Tensor) -> Tensor;
    let ops: [(&str, B, f64, f64); 7] = [
        ("add", |x, y| x.add(y), -2.0, 2.0),
        ("sub", |x, y| x.sub(y), -2.0, 2.0),
        ("mul", |x, y| x.mul(y), -2.0, 2.0),
        ("div", |x, y| x.div(y), 0.5, 2.0),
        ("max", |x, y| x.max(y), -2.0, 2.0),
        ("min", |x, y| x.min(y), -2.0, 2.0),
        ("pow", |x, y| x.pow(y), 0.5, 2.0),
    ];
    let pairs: [(&[i64], &[i64]); 4] = [
        (&[], &[]),
        (&[4], &[4]),
        (&[2, 3], &[3]),
        (&[2, 1], &[1, 3]),
    ];
    for (i, (name, op, lo, hi)) in ops.iter().enumerate() {
        for (j, (a, c)) in pairs.iter().enumerate() {
            check_op(
                name,
                &[a, c],
                *lo,
                *hi,
                (100 + i * 10 + j) as u64,
                |_, p| vec![op(&p[0], &p[1])],
            );
        }
    }
}

#[test]
fn broadcast_in_dim_sums_new_and_expanded_dims() {
    let cases: [(&[i64], &[i64], &[i64]); 5] = [
        (&[3], &[2, 3], &[1]),
        (&[3, 1], &[3, 4], &[0, 1]),
        (&[2, 3], &[3, 4, 2], &[2, 0]),
        (&[], &[2, 2], &[]),
        (&[1, 2], &[1, 2, 3], &[0, 1]),
    ];
    for (i, (x, shape, dims)) in cases.iter().enumerate() {
        check_op("broadcast", &[x], -1.0, 1.0, 200 + i as u64, |_, p| {
            vec![p[0].broadcast_in_dim(shape, dims)]
        });
    }
}

#[test]
fn layout_ops() {
    check_op("reshape", &[&[2, 6]], -1.0, 1.0, 1, |_, p| {
        vec![p[0].reshape(&[3, 2, 2])]
    });
    check_op("transpose", &[&[2, 3, 4]], -1.0, 1.0, 2, |_, p| {
        vec![p[0].transpose(&[2, 0, 1])]
    });
    check_op("slice", &[&[5, 6]], -1.0, 1.0, 3, |_, p| {
        vec![p[0].slice(&[1, 0], &[5, 5], &[2, 3])]
    });
    check_op("slice_unit", &[&[4]], -1.0, 1.0, 4, |_, p| {
        vec![p[0].slice(&[1], &[3], &[1])]
    });
    check_op(
        "concat",
        &[&[2, 1], &[2, 3], &[2, 2]],
        -1.0,
        1.0,
        5,
        |b, p| vec![b.concatenate(p, 1)],
    );
    // Negative low trims, interior spreads, positive high appends; the pad value is a
    // differentiable operand too.
    for (i, (low, high, interior)) in [(-1i64, 2i64, 1i64), (2, -2, 0), (1, 1, 2), (-2, -1, 1)]
        .iter()
        .enumerate()
    {
        check_op("pad", &[&[3, 4], &[]], -1.0, 1.0, 10 + i as u64, |_, p| {
            vec![p[0].pad(&p[1], &[*low, 0], &[*high, 1], &[*interior, 0])]
        });
    }
}

#[test]
fn dynamic_slice_and_update_slice() {
    // Starts 1 and 3 (the latter clamped to 1 for a window of 3 in 4).
    for (i, starts) in [(1.0, 0.0), (3.0, 2.0), (-1.0, 1.0)].iter().enumerate() {
        check_op(
            "dynamic_slice",
            &[&[4, 3]],
            -1.0,
            1.0,
            20 + i as u64,
            |b, p| {
                let s = [
                    b.scalar(starts.0, DType::S32),
                    b.scalar(starts.1, DType::S32),
                ];
                vec![p[0].dynamic_slice(&s, &[3, 1])]
            },
        );
        check_op(
            "dynamic_update_slice",
            &[&[4, 3], &[2, 2]],
            -1.0,
            1.0,
            30 + i as u64,
            |b, p| {
                let s = [
                    b.scalar(starts.0, DType::S32),
                    b.scalar(starts.1, DType::S32),
                ];
                vec![p[0].dynamic_update_slice(&p[1], &s)]
            },
        );
    }
}

#[test]
fn select_and_clamp() {
    let mut rng = Rng::new(9);
    let mask: Vec<bool> = (0..6).map(|_| rng.uniform(0.0, 1.0) < 0.5).collect();
    check_op("select", &[&[2, 3], &[2, 3]], -1.0, 1.0, 40, |b, p| {
        vec![b.array(&[2, 3], &mask).select(&p[0], &p[1])]
    });
    check_op(
        "select_scalar_pred",
        &[&[2, 3], &[2, 3]],
        -1.0,
        1.0,
        41,
        |b, p| vec![b.constant(hlo::Literal::scalar(true)).select(&p[0], &p[1])],
    );
    // Scalar bounds around the input range, so some elements clip each side.
    check_op(
        "clamp_scalar",
        &[&[], &[3, 4], &[]],
        -1.0,
        1.0,
        42,
        |_, p| vec![p[1].mul_scalar(3.0).clamp(&p[0], &p[2])],
    );
    check_op(
        "clamp_tensor",
        &[&[6], &[6], &[6]],
        -1.0,
        1.0,
        43,
        |_, p| vec![p[1].clamp(&p[0].sub_scalar(0.5), &p[2].add_scalar(0.5))],
    );
}

#[test]
fn dot_general_variants() {
    let mm = DotDims {
        lhs_contracting: vec![1],
        rhs_contracting: vec![0],
        ..Default::default()
    };
    let batched = DotDims {
        lhs_batch: vec![0],
        rhs_batch: vec![0],
        lhs_contracting: vec![2],
        rhs_contracting: vec![1],
    };
    // lhs [k1=2, b=3, m=2, k2=4], rhs [k2=4, n=2, b=3, k1=2]: batch and contracting
    // dimensions scattered and paired out of order.
    let odd = DotDims {
        lhs_batch: vec![1],
        rhs_batch: vec![2],
        lhs_contracting: vec![3, 0],
        rhs_contracting: vec![0, 3],
    };
    let outer = DotDims::default();
    let cases: [(&[i64], &[i64], &DotDims); 5] = [
        (&[3, 4], &[4, 2], &mm),
        (&[2, 3, 4], &[2, 4, 5], &batched),
        (&[2, 3, 2, 4], &[4, 2, 3, 2], &odd),
        (&[3], &[2], &outer),
        (
            &[2, 3],
            &[2, 3],
            &DotDims {
                lhs_contracting: vec![0, 1],
                rhs_contracting: vec![0, 1],
                ..Default::default()
            },
        ),
    ];
    for (i, (l, r, d)) in cases.iter().enumerate() {
        check_op("dot_general", &[l, r], -1.0, 1.0, 50 + i as u64, |_, p| {
            vec![p[0].dot_general(&p[1], (*d).clone())]
        });
    }
}

#[test]
fn reductions() {
    for (i, dims) in [vec![0i64], vec![1], vec![0, 2], vec![0, 1, 2]]
        .iter()
        .enumerate()
    {
        check_op(
            "reduce_sum",
            &[&[2, 3, 4]],
            -1.0,
            1.0,
            60 + i as u64,
            |_, p| vec![p[0].reduce_sum(dims)],
        );
        check_op(
            "reduce_max",
            &[&[2, 3, 4]],
            -1.0,
            1.0,
            70 + i as u64,
            |_, p| vec![p[0].reduce_max(dims)],
        );
        check_op(
            "reduce_min",
            &[&[2, 3, 4]],
            -1.0,
            1.0,
            80 + i as u64,
            |_, p| vec![p[0].reduce_min(dims)],
        );
    }
}

#[test]
fn gather_and_scatter_add() {
    // Embedding lookup with a repeated id (cotangents accumulate).
    let ids = s32s(&[2, 3], &[4, 1, 4, 0, 2, 4]);
    let b = Builder::new("take_rows");
    let table = b.parameter("table", Shape::new(DType::F64, [5, 3]));
    let idx = b.parameter("ids", Shape::new(DType::S32, [2, 3]));
    let rows = table.take_rows(&idx);
    let f = b.build(&[&rows]).unwrap();
    let g = check_vjp(
        &f,
        &[Rng::new(1).literal(&[5, 3], -1.0, 1.0), ids],
        &[0],
        90,
    );
    assert!(
        g[0][9..12].iter().all(|&v| v == 0.0),
        "row 3 is never gathered"
    );

    // Windows of 2x2 at (row, col) index vectors, one start clamped.
    let b = Builder::new("gather_windows");
    let x = b.parameter("x", Shape::new(DType::F64, [4, 5]));
    let starts = b.array(&[3, 2], &[0i32, 0, 2, 3, 3, 4]);
    let w = x.gather(
        &starts,
        GatherDims {
            offset_dims: vec![1, 2],
            collapsed_slice_dims: vec![],
            start_index_map: vec![0, 1],
            index_vector_dim: 1,
            slice_sizes: vec![2, 2],
        },
    );
    let f = b.build(&[&w]).unwrap();
    check_vjp(&f, &[Rng::new(2).literal(&[4, 5], -1.0, 1.0)], &[0], 91);

    // scatter_add: operand gets the cotangent, updates get it gathered back.
    let b = Builder::new("scatter_add");
    let x = b.parameter("x", Shape::new(DType::F64, [4, 3]));
    let u = b.parameter("u", Shape::new(DType::F64, [3, 3]));
    let idx = b.array(&[3, 1], &[2i32, 0, 2]);
    let y = x.scatter_add(
        &idx,
        &u,
        ScatterDims {
            update_window_dims: vec![1],
            inserted_window_dims: vec![0],
            scatter_dims_to_operand_dims: vec![0],
            index_vector_dim: 1,
        },
    );
    let f = b.build(&[&y.mul(&y)]).unwrap();
    let mut rng = Rng::new(3);
    check_vjp(
        &f,
        &[
            rng.literal(&[4, 3], -1.0, 1.0),
            rng.literal(&[3, 3], -1.0, 1.0),
        ],
        &[0, 1],
        92,
    );
}

#[test]
fn sort_values_and_top_k() {
    check_op(
        "sort_two_keys",
        &[&[3, 4], &[3, 4]],
        -1.0,
        1.0,
        95,
        |b, p| b.sort(&[p[0].clone(), p[1].clone()], 1, false),
    );
    check_op("sort_desc_dim0", &[&[4, 2]], -1.0, 1.0, 96, |b, p| {
        b.sort(&[p[0].clone()], 0, true)
    });
    check_op("top_k", &[&[2, 5]], -1.0, 1.0, 97, |_, p| {
        vec![p[0].top_k(2).0]
    });
}

#[test]
fn convert_sharding_constraint_and_stop_gradient() {
    // f64 -> f32 -> f64: the cotangent passes through both converts (checked exactly, not
    // by finite differences, since f32 rounding would swamp them).
    let b = Builder::new("convert");
    let x = b.parameter("x", Shape::new(DType::F64, [3]));
    let y = x.convert(DType::F32).mul_scalar(3.0).convert(DType::F64);
    let g = hlo::grad(&y.sum_all(), std::slice::from_ref(&x)).unwrap();
    assert_eq!(g[0].dtype(), DType::F64);
    let f = b.build(&[&g[0]]).unwrap();
    let out = hlo::evaluate(&f, &[f64s(&[3], &[1.0, 2.0, 3.0])]).unwrap();
    assert_eq!(out[0].to_f64_vec(), vec![3.0; 3]);

    // sharding_constraint: passes the cotangent through with the same constraint.
    let b = Builder::new("shard");
    let x = b.parameter("x", Shape::new(DType::F64, [2, 4]));
    let spec = hlo::PartitionSpec::new(&[None, Some("model")]);
    let y = x.with_sharding(spec.clone()).square().sum_all();
    let before = b.num_nodes();
    let g = hlo::grad(&y, std::slice::from_ref(&x)).unwrap();
    let constrained = (before..b.num_nodes())
        .filter(|&i| b.node(i).op == hlo::ir::Op::ShardingConstraint { spec: spec.clone() })
        .count();
    assert_eq!(constrained, 1, "the cotangent carries the same constraint");
    let f = b.build(&[&g[0]]).unwrap();
    let out = hlo::evaluate(
        &f,
        &[f64s(&[2, 4], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0])],
    )
    .unwrap();
    assert_eq!(
        out[0].to_f64_vec(),
        vec![2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0, 16.0]
    );
    check_op("sharding_constraint", &[&[2, 4]], -1.0, 1.0, 98, |_, p| {
        vec![p[0].with_sharding(spec.clone()).tanh()]
    });

    // stop_gradient: x * stop_gradient(x) has gradient stop_gradient(x) = x, not 2x
    // (finite differences would see 2x, so this is checked exactly).
    let b = Builder::new("stop_gradient");
    let x = b.parameter("x", Shape::new(DType::F64, [3]));
    let y = x.mul(&x.stop_gradient()).sum_all();
    let g = hlo::grad(&y, std::slice::from_ref(&x)).unwrap();
    let f = b.build(&[&g[0]]).unwrap();
    let out = hlo::evaluate(&f, &[f64s(&[3], &[1.5, -2.0, 0.25])]).unwrap();
    assert_eq!(out[0].to_f64_vec(), vec![1.5, -2.0, 0.25]);
}

#[test]
fn gradients_of_several_outputs_and_intermediates_accumulate() {
    // Two outputs sharing x, and x used twice in one of them.
    check_op("multi", &[&[3], &[3]], -1.0, 1.0, 120, |_, p| {
        let h = p[0].mul(&p[1]);
        vec![h.add(&p[0].exp()), h.tanh().mul(&p[0])]
    });
    // grad with respect to an intermediate value.
    let b = Builder::new("mid");
    let x = b.parameter("x", Shape::new(DType::F64, [2]));
    let h = x.mul_scalar(3.0);
    let loss = h.square().sum_all().add(&x.sum_all());
    let g = hlo::grad(&loss, &[h.clone(), x.clone()]).unwrap();
    let f = b.build(&[&g[0], &g[1]]).unwrap();
    let out = hlo::evaluate(&f, &[f64s(&[2], &[1.0, -2.0])]).unwrap();
    assert_close(&out[0].to_f64_vec(), &[6.0, -12.0], 1e-12, "d/dh = 2h");
    assert_close(
        &out[1].to_f64_vec(),
        &[19.0, -35.0],
        1e-12,
        "d/dx = 18x + 1",
    );
}
