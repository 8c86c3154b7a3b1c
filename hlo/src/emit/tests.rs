//! Text-level tests of emission. Execution on a real plugin is tested in `runtime`.
//!
//! Setting `HLO_EMIT_DUMP=DIR` makes `samples_emit` write every sample module to DIR, to
//! feed them to a PJRT compiler by hand.

use super::*;
use crate::builder::Builder;
use crate::dtype::DType;
use crate::ir::{CompareDirection, DotDims, GatherDims, ReduceKind, RngAlgorithm, ScatterDims};
use crate::literal::Literal;
use crate::shape::Shape;
use half::bf16;

fn f32s(dims: &[i64]) -> Shape {
    Shape::new(DType::F32, dims.to_vec())
}

/// Emits with default options and panics with the error otherwise.
fn emit(f: &Function) -> String {
    to_stablehlo(f, &EmitOptions::default()).unwrap_or_else(|e| panic!("{e}"))
}

/// Asserts that `text` has a line equal to `want` (after trimming indentation).
#[track_caller]
fn has_line(text: &str, want: &str) {
    assert!(
        text.lines().any(|l| l.trim() == want),
        "missing line\n  {want}\nin\n{text}"
    );
}

/// One small function per op family; together they use every `Op` variant.
fn samples() -> Vec<(&'static str, Function)> {
    let mut out = Vec::new();

    let b = Builder::new("elementwise");
    let x = b.parameter("x", f32s(&[2, 3]));
    let y = b.parameter("y", f32s(&[2, 3]));
    let n = b.parameter("n", Shape::new(DType::S32, [2, 3]));
    let u = b.parameter("u", Shape::new(DType::U32, [2, 3]));
    let unary = x
        .neg()
        .abs()
        .exp()
        .log()
        .log1p()
        .tanh()
        .logistic()
        .sqrt()
        .rsqrt()
        .sign()
        .floor()
        .cos()
        .sin();
    let binary = unary
        .add(&y)
        .sub(&y)
        .mul(&y)
        .div(&y)
        .max(&y)
        .min(&y)
        .pow(&y)
        .rem(&y);
    let ints = n.and(&n).or(&n).xor(&n).not().shift_left(&n);
    let shifted = u.shift_right_logical(&u);
    let cmp = x.lt(&y).and(&n.ge(&n)).or(&u.ne(&u));
    let sel = cmp.select(&binary, &x);
    let clamped = sel.clamp(&b.scalar(-1.0, DType::F32), &b.scalar(1.0, DType::F32));
    out.push((
        "elementwise",
        b.build(&[&clamped, &ints, &shifted]).unwrap(),
    ));

    let b = Builder::new("layout");
    let x = b.parameter("x", f32s(&[2, 3]));
    let i = b.parameter("i", Shape::scalar(DType::S32));
    let t = x.transpose(&[1, 0]).reshape(&[6]).reshape(&[3, 2]);
    let s = t.slice(&[0, 0], &[3, 2], &[2, 1]);
    let d = x.dynamic_slice(&[i.clone(), i.clone()], &[1, 2]);
    let up = x.dynamic_update_slice(&d, &[i.clone(), i.clone()]);
    let c = b.concatenate(&[up.clone(), x.clone()], 0);
    let p = c.pad(&b.scalar(0.5, DType::F32), &[1, 0], &[0, -1], &[0, 1]);
    let bc = b
        .iota(&Shape::new(DType::S32, [3]), 0)
        .convert(DType::F32)
        .broadcast_in_dim(&[2, 3], &[1]);
    let bits = x.bitcast(DType::U32).bitcast(DType::F32);
    out.push(("layout", b.build(&[&s, &p, &bc, &bits]).unwrap()));

    let b = Builder::new("contract_reduce");
    let x = b.parameter("x", f32s(&[4, 2, 3]));
    let w = b.parameter("w", f32s(&[4, 3, 5]));
    let m = x.matmul(&w);
    let outer = b
        .parameter("v", f32s(&[3]))
        .dot_general(&b.parameter("z", f32s(&[2])), DotDims::default());
    let sum = m.reduce_sum(&[1]);
    let mx = m.reduce(ReduceKind::Max, &[0, 2]);
    let mn = m.reduce(ReduceKind::Min, &[2]);
    let k = b.parameter("k", Shape::new(DType::S32, [4]));
    let kmax = k.reduce(ReduceKind::Max, &[0]);
    let flags = b.parameter("flags", Shape::new(DType::Pred, [2, 2]));
    let all = flags.reduce(ReduceKind::And, &[1]);
    let any = flags.reduce(ReduceKind::Or, &[0]);
    out.push((
        "contract_reduce",
        b.build(&[&sum, &mx, &mn, &outer, &kmax, &all, &any])
            .unwrap(),
    ));

    let b = Builder::new("indexing");
    let table = b.parameter("table", f32s(&[10, 4]));
    let ids = b.parameter("ids", Shape::new(DType::S32, [2, 3]));
    let rows = table.take_rows(&ids);
    let grad = b.zeros(&f32s(&[10, 4])).scatter_add(
        &ids,
        &rows,
        ScatterDims {
            update_window_dims: vec![2],
            inserted_window_dims: vec![0],
            scatter_dims_to_operand_dims: vec![0],
            index_vector_dim: 2,
        },
    );
    let g = table.gather(
        &b.array(&[2, 2], &[0i32, 1, 5, 2]),
        GatherDims {
            offset_dims: vec![1, 2],
            collapsed_slice_dims: vec![],
            start_index_map: vec![0, 1],
            index_vector_dim: 1,
            slice_sizes: vec![2, 2],
        },
    );
    let (vals, idx) = rows.top_k(2);
    out.push(("indexing", b.build(&[&grad, &g, &vals, &idx]).unwrap()));

    let b = Builder::new("random");
    let state = b.parameter("state", Shape::new(DType::U64, [2]));
    let (state2, bits) = b.rng_bit_generator(&state, &Shape::new(DType::U64, [3]));
    let philox = b.apply(
        Op::RngBitGenerator {
            algorithm: RngAlgorithm::Philox,
            shape: Shape::new(DType::U32, [4]),
        },
        &[&state2],
    );
    let (state3, unif) = b.uniform(&philox[0], &[4, 4], -1.0, 1.0);
    let (_, normal) = b.normal(&state3, &[8]);
    let sorted = b.sort(std::slice::from_ref(&unif), 1, false);
    out.push((
        "random",
        b.build(&[&state3, &bits, &philox[1], &sorted[0], &normal])
            .unwrap(),
    ));

    let b = Builder::new("constants");
    let c1 = b.array(&[2, 2], &[1.0f32, 2.0, 3.0, f32::NEG_INFINITY]);
    let c2 = b.array(&[3], &[bf16::from_f32(1.5), bf16::ONE, bf16::ZERO]);
    let c3 = b.array(&[2], &[true, false]);
    let c4 = b.array(&[2], &[u64::MAX, 7]);
    let big: Vec<f32> = (0..200).map(|i| i as f32 * 0.25).collect();
    let c5 = b.array(&[10, 20], &big);
    let c6 = b.array(&[2], &[half::f16::from_f32(0.5), half::f16::MAX]);
    let c7 = b.scalar(1e-30, DType::F64);
    out.push((
        "constants",
        b.build(&[&c1, &c2, &c3, &c4, &c5, &c6, &c7]).unwrap(),
    ));

    let b = Builder::new("edge_cases");
    let empty = b.array::<f32>(&[0, 3], &[]);
    let scalar = b.parameter("s", Shape::scalar(DType::Bf16));
    let same = scalar.slice(&[], &[], &[]);
    let h = b.parameter("h", Shape::new(DType::Bf16, [3, 4]));
    let hmax = h.reduce_max(&[1]);
    let ints: Vec<i32> = (0..100).collect();
    let big_ints = b.array(&[100], &ints);
    let keys = b.parameter("keys", Shape::new(DType::U32, [5]));
    let ks = b.sort(&[keys], 0, true);
    out.push((
        "edge_cases",
        b.build(&[&empty, &same, &hmax, &big_ints, &ks[0]]).unwrap(),
    ));

    let b = Builder::new("mlp");
    b.set_mesh(Mesh::new(&[("data", 2), ("model", 2)]));
    let x = b.parameter_sharded(
        "x",
        f32s(&[8, 16]),
        PartitionSpec::new(&[Some("data"), None]),
    );
    let w1 = b.parameter_sharded(
        "w1",
        f32s(&[16, 32]),
        PartitionSpec::new(&[None, Some("model")]),
    );
    let w2 = b.parameter_sharded(
        "w2",
        f32s(&[32, 16]),
        PartitionSpec::new(&[Some("model"), None]),
    );
    let h = x
        .matmul(&w1)
        .relu()
        .with_sharding(PartitionSpec::new(&[Some("data"), Some("model")]))
        .named("h");
    let y = h.matmul(&w2).stop_gradient();
    let mut f = b.build_named(&[("y", &y)]).unwrap();
    f.outputs[0].sharding = Some(PartitionSpec::new(&[Some("data"), None]));
    out.push(("mlp", f));
    out
}

#[test]
fn samples_emit() {
    let dump = std::env::var("HLO_EMIT_DUMP").ok();
    for (name, f) in samples() {
        for (tag, opts) in [
            ("shardy", EmitOptions::shardy()),
            ("gspmd", EmitOptions::gspmd()),
        ] {
            let text = to_stablehlo(&f, &opts).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(
                text.starts_with(&format!("module @{name} attributes")),
                "{text}"
            );
            assert!(text.trim_end().ends_with('}'));
            if let Some(dir) = &dump {
                let n = num_partitions(&f);
                std::fs::write(format!("{dir}/{name}.{tag}.{n}.mlir"), &text).unwrap();
            }
        }
    }
}

#[test]
fn every_op_variant_is_covered_by_samples() {
    let mut seen = HashSet::new();
    for (_, f) in samples() {
        for n in &f.nodes {
            seen.insert(std::mem::discriminant(&n.op));
        }
    }
    // The 26 variants of `Op` (Unary and Binary counted once each).
    assert_eq!(seen.len(), 26);
}

#[test]
fn module_header_signature_and_return() {
    let b = Builder::new("add");
    let x = b.parameter("x", f32s(&[2, 3]));
    let y = b.parameter("y", f32s(&[2, 3]));
    let z = x.add(&y);
    let f = b.build(&[&z]).unwrap();
    let text = emit(&f);
    assert_eq!(
        text,
        "module @add attributes {mhlo.num_partitions = 1 : i32, mhlo.num_replicas = 1 : i32} {\n\
         \x20 func.func public @main(%x: tensor<2x3xf32>, %y: tensor<2x3xf32>) -> (tensor<2x3xf32>) {\n\
         \x20   %2 = stablehlo.add %x, %y : tensor<2x3xf32>\n\
         \x20   return %2 : tensor<2x3xf32>\n\
         \x20 }\n\
         }\n"
    );
}

#[test]
fn representative_op_lines() {
    let (_, f) = samples().into_iter().find(|(n, _)| *n == "layout").unwrap();
    let text = emit(&f);
    has_line(
        &text,
        "%2 = stablehlo.transpose %x, dims = [1, 0] : (tensor<2x3xf32>) -> tensor<3x2xf32>",
    );
    has_line(
        &text,
        "%5 = \"stablehlo.slice\"(%4) <{limit_indices = array<i64: 3, 2>, start_indices = array<i64: 0, 0>, strides = array<i64: 2, 1>}> : (tensor<3x2xf32>) -> tensor<2x2xf32>",
    );
    has_line(
        &text,
        "%6 = stablehlo.dynamic_slice %x, %i, %i, sizes = [1, 2] : (tensor<2x3xf32>, tensor<i32>, tensor<i32>) -> tensor<1x2xf32>",
    );
    has_line(
        &text,
        "%10 = stablehlo.pad %8, %9, low = [1, 0], high = [0, -1], interior = [0, 1] : (tensor<4x3xf32>, tensor<f32>) -> tensor<5x4xf32>",
    );
    has_line(&text, "%11 = stablehlo.iota dim = 0 : tensor<3xi32>");

    let (_, f) = samples()
        .into_iter()
        .find(|(n, _)| *n == "contract_reduce")
        .unwrap();
    let text = emit(&f);
    has_line(
        &text,
        "%2 = stablehlo.dot_general %x, %w, batching_dims = [0] x [0], contracting_dims = [2] x [1] : (tensor<4x2x3xf32>, tensor<4x3x5xf32>) -> tensor<4x2x5xf32>",
    );
    has_line(
        &text,
        "%init_7 = stablehlo.constant dense<0xFF800000> : tensor<f32>",
    );
    has_line(
        &text,
        "%7 = stablehlo.reduce(%2 init: %init_7) applies stablehlo.maximum across dimensions = [0, 2] : (tensor<4x2x5xf32>, tensor<f32>) -> tensor<2xf32>",
    );
    has_line(
        &text,
        "%init_10 = stablehlo.constant dense<-2147483648> : tensor<i32>",
    );
    has_line(
        &text,
        "%init_12 = stablehlo.constant dense<true> : tensor<i1>",
    );
}

#[test]
fn compare_uses_the_element_types_comparison() {
    let b = Builder::new("cmp");
    let x = b.parameter("x", f32s(&[2]));
    let n = b.parameter("n", Shape::new(DType::S32, [2]));
    let u = b.parameter("u", Shape::new(DType::U32, [2]));
    let f = b
        .build(&[&x.lt(&x), &n.ge(&n), &u.compare(&u, CompareDirection::Ne)])
        .unwrap();
    let text = emit(&f);
    has_line(
        &text,
        "%3 = stablehlo.compare LT, %x, %x, FLOAT : (tensor<2xf32>, tensor<2xf32>) -> tensor<2xi1>",
    );
    has_line(
        &text,
        "%4 = stablehlo.compare GE, %n, %n, SIGNED : (tensor<2xi32>, tensor<2xi32>) -> tensor<2xi1>",
    );
    has_line(
        &text,
        "%5 = stablehlo.compare NE, %u, %u, UNSIGNED : (tensor<2xui32>, tensor<2xui32>) -> tensor<2xi1>",
    );
}

#[test]
fn multiple_results_regions_and_rng() {
    let (_, f) = samples().into_iter().find(|(n, _)| *n == "random").unwrap();
    let text = emit(&f);
    has_line(
        &text,
        "%1:2 = stablehlo.rng_bit_generator %state, algorithm = THREE_FRY : (tensor<2xui64>) -> (tensor<2xui64>, tensor<3xui64>)",
    );
    has_line(
        &text,
        "%2:2 = stablehlo.rng_bit_generator %1#0, algorithm = PHILOX : (tensor<2xui64>) -> (tensor<2xui64>, tensor<4xui32>)",
    );
    assert!(text.contains("\"stablehlo.sort\"("), "{text}");
    // Ascending sort compares with LT.
    assert!(text.contains("stablehlo.compare LT, %lhs_"), "{text}");
}

#[test]
fn sort_comparator_and_direction() {
    let b = Builder::new("topk");
    let x = b.parameter("x", f32s(&[2, 5]));
    let (v, i) = x.top_k(3);
    let f = b.build(&[&v, &i]).unwrap();
    let text = emit(&f);
    has_line(
        &text,
        "%2:2 = \"stablehlo.sort\"(%x, %1) <{dimension = 1 : i64, is_stable = true}> ({",
    );
    has_line(
        &text,
        "^bb0(%lhs_2_0: tensor<f32>, %rhs_2_0: tensor<f32>, %lhs_2_1: tensor<i32>, %rhs_2_1: tensor<i32>):",
    );
    has_line(
        &text,
        "%cmp_2 = stablehlo.compare GT, %lhs_2_0, %rhs_2_0, FLOAT : (tensor<f32>, tensor<f32>) -> tensor<i1>",
    );
    has_line(&text, "stablehlo.return %cmp_2 : tensor<i1>");
    has_line(
        &text,
        "}) : (tensor<2x5xf32>, tensor<2x5xi32>) -> (tensor<2x5xf32>, tensor<2x5xi32>)",
    );
    has_line(
        &text,
        "%3 = \"stablehlo.slice\"(%2#0) <{limit_indices = array<i64: 2, 3>, start_indices = array<i64: 0, 0>, strides = array<i64: 1, 1>}> : (tensor<2x5xf32>) -> tensor<2x3xf32>",
    );
}

#[test]
fn gather_and_scatter_text() {
    let (_, f) = samples()
        .into_iter()
        .find(|(n, _)| *n == "indexing")
        .unwrap();
    let text = emit(&f);
    has_line(
        &text,
        "%2 = \"stablehlo.gather\"(%table, %ids) <{dimension_numbers = #stablehlo.gather<offset_dims = [2], collapsed_slice_dims = [0], start_index_map = [0], index_vector_dim = 2>, indices_are_sorted = false, slice_sizes = array<i64: 1, 4>}> : (tensor<10x4xf32>, tensor<2x3xi32>) -> tensor<2x3x4xf32>",
    );
    assert!(text.contains("#stablehlo.scatter<update_window_dims = [2], inserted_window_dims = [0], scatter_dims_to_operand_dims = [0], index_vector_dim = 2>"), "{text}");
    has_line(&text, "%sum_5 = stablehlo.add %acc_5, %upd_5 : tensor<f32>");
}

#[test]
fn dead_nodes_are_skipped_and_stop_gradient_is_identity() {
    let b = Builder::new("dead");
    let x = b.parameter("x", f32s(&[2]));
    let _unused = x.exp().named("unused");
    let y = x.tanh().stop_gradient().named("y");
    let f = b.build(&[&y]).unwrap();
    let text = emit(&f);
    assert!(
        !text.contains("unused") && !text.contains("exponential"),
        "{text}"
    );
    has_line(&text, "%2 = stablehlo.tanh %x : tensor<2xf32>");
    has_line(&text, "return %2 : tensor<2xf32>");
}

#[test]
fn names_are_sanitized_and_unique() {
    let b = Builder::new("names");
    let x = b.parameter("model.embed tokens/weight", f32s(&[2]));
    let y = b.parameter("x", f32s(&[2]));
    let s = x.add(&y).named("x");
    let t = s.mul(&s).named("9lives");
    let f = b.build(&[&t]).unwrap();
    let text = emit(&f);
    assert!(
        text.contains("@main(%model.embed_tokens_weight: tensor<2xf32>, %x: tensor<2xf32>)"),
        "{text}"
    );
    has_line(
        &text,
        "%x_2 = stablehlo.add %model.embed_tokens_weight, %x : tensor<2xf32>",
    );
    has_line(
        &text,
        "%_9lives = stablehlo.multiply %x_2, %x_2 : tensor<2xf32>",
    );
}

#[test]
fn output_names_name_unnamed_values() {
    let b = Builder::new("out");
    let x = b.parameter("x", f32s(&[2]));
    let f = b.build_named(&[("loss", &x.exp())]).unwrap();
    has_line(
        &emit(&f),
        "%loss = stablehlo.exponential %x : tensor<2xf32>",
    );
}

#[test]
fn constants_text() {
    let (_, f) = samples()
        .into_iter()
        .find(|(n, _)| *n == "constants")
        .unwrap();
    let text = emit(&f);
    has_line(
        &text,
        "%0 = stablehlo.constant dense<[[1.0, 2.0], [3.0, 0xFF800000]]> : tensor<2x2xf32>",
    );
    has_line(
        &text,
        "%1 = stablehlo.constant dense<[1.5, 1.0, 0.0]> : tensor<3xbf16>",
    );
    has_line(
        &text,
        "%2 = stablehlo.constant dense<[true, false]> : tensor<2xi1>",
    );
    has_line(
        &text,
        "%3 = stablehlo.constant dense<[18446744073709551615, 7]> : tensor<2xui64>",
    );
    has_line(
        &text,
        "%5 = stablehlo.constant dense<[0.5, 65504.0]> : tensor<2xf16>",
    );
    has_line(
        &text,
        "%6 = stablehlo.constant dense<1.0e-30> : tensor<f64>",
    );
    assert!(
        text.contains("%4 = stablehlo.constant dense<\"0x000000000000803E"),
        "{text}"
    );
}

#[test]
fn aliasing_attribute() {
    let b = Builder::new("step");
    let w = b.parameter("w", f32s(&[4]));
    let g = b.parameter("g", f32s(&[4]));
    let nw = w.sub(&g);
    let mut f = b.build(&[&nw]).unwrap();
    f.donate(0, 0).unwrap();
    assert!(emit(&f)
        .contains("@main(%w: tensor<4xf32> {tf.aliasing_output = 0 : i32}, %g: tensor<4xf32>)"));
    f.params[1].alias_output = Some(3);
    assert!(matches!(
        to_stablehlo(&f, &EmitOptions::default()),
        Err(EmitError::BadAlias {
            param: 1,
            output: 3,
            ..
        })
    ));
}

#[test]
fn shardy_annotations() {
    let (_, f) = samples().into_iter().find(|(n, _)| *n == "mlp").unwrap();
    let text = emit(&f);
    assert!(text.starts_with(
        "module @mlp attributes {mhlo.num_partitions = 4 : i32, mhlo.num_replicas = 1 : i32} {\n  sdy.mesh @mesh = <[\"data\"=2, \"model\"=2]>\n"
    ), "{text}");
    assert!(
        text.contains(
            "%w1: tensor<16x32xf32> {sdy.sharding = #sdy.sharding<@mesh, [{}, {\"model\"}]>}"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "-> (tensor<8x16xf32> {sdy.sharding = #sdy.sharding<@mesh, [{\"data\"}, {}]>})"
        ),
        "{text}"
    );
    has_line(
        &text,
        "%h = sdy.sharding_constraint %6 <@mesh, [{\"data\"}, {\"model\"}]> : tensor<8x32xf32>",
    );
    has_line(&text, "%8 = stablehlo.dot_general %h, %w2, contracting_dims = [1] x [0] : (tensor<8x32xf32>, tensor<32x16xf32>) -> tensor<8x16xf32>");
}

#[test]
fn gspmd_annotations() {
    let (_, f) = samples().into_iter().find(|(n, _)| *n == "mlp").unwrap();
    let text = to_stablehlo(&f, &EmitOptions::gspmd()).unwrap();
    assert!(!text.contains("sdy"), "{text}");
    assert!(text.contains(
        "%w1: tensor<16x32xf32> {mhlo.sharding = \"{devices=[1,2,2]0,2,1,3 last_tile_dim_replicate}\"}"
    ), "{text}");
    has_line(
        &text,
        "%h = stablehlo.custom_call @Sharding(%6) {mhlo.sharding = \"{devices=[2,2]0,1,2,3}\"} : (tensor<8x32xf32>) -> tensor<8x32xf32>",
    );
}

#[test]
fn without_a_mesh_shardings_are_dropped() {
    let (_, mut f) = samples().into_iter().find(|(n, _)| *n == "mlp").unwrap();
    f.mesh = None;
    let text = emit(&f);
    assert!(text.contains("mhlo.num_partitions = 1 : i32"));
    assert!(!text.contains("sharding"), "{text}");
    has_line(&text, "%8 = stablehlo.dot_general %6, %w2, contracting_dims = [1] x [0] : (tensor<8x32xf32>, tensor<32x16xf32>) -> tensor<8x16xf32>");
}

#[test]
fn sharding_errors_are_typed() {
    let (_, mut f) = samples().into_iter().find(|(n, _)| *n == "mlp").unwrap();
    f.params[1].sharding = Some(PartitionSpec::new(&[None, Some("expert")]));
    let err = emit_err(&f);
    assert_eq!(
        err,
        EmitError::UnknownAxis {
            what: "parameter 1 (w1)".into(),
            axis: "expert".into(),
            mesh: "[data=2, model=2]".into()
        }
    );
    let (_, mut f) = samples().into_iter().find(|(n, _)| *n == "mlp").unwrap();
    f.outputs[0].sharding = Some(PartitionSpec::new(&[Some("data")]));
    assert!(matches!(
        emit_err(&f),
        EmitError::SpecRank {
            spec_rank: 1,
            rank: 2,
            ..
        }
    ));
    // A constraint on an intermediate: the error names the node.
    let (_, mut f) = samples().into_iter().find(|(n, _)| *n == "mlp").unwrap();
    for node in &mut f.nodes {
        if let Op::ShardingConstraint { spec } = &mut node.op {
            *spec = PartitionSpec::new(&[Some("model"), Some("model")]);
        }
    }
    let err = emit_err(&f);
    assert!(
        matches!(&err, EmitError::Malformed { op: "sharding_constraint", message, .. } if message.contains("more than once")),
        "{err}"
    );
}

fn emit_err(f: &Function) -> EmitError {
    to_stablehlo(f, &EmitOptions::default()).unwrap_err()
}

#[test]
fn malformed_functions_are_errors() {
    let b = Builder::new("bad");
    let x = b.parameter("x", f32s(&[2]));
    let mut f = b.build(&[&x.exp()]).unwrap();
    f.nodes[1].operands.clear();
    assert!(matches!(
        emit_err(&f),
        EmitError::Malformed {
            node: 1,
            op: "exponential",
            ..
        }
    ));
    f.outputs[0].value.node = 9;
    assert_eq!(emit_err(&f), EmitError::BadOutput { output: 0, node: 9 });
    let mut f = b.build(&[&x.exp()]).unwrap();
    f.nodes[0].op = Op::Parameter { index: 4 };
    assert!(matches!(emit_err(&f), EmitError::Malformed { node: 0, .. }));
    let lit = Literal::scalar(1.0f32);
    assert_eq!(dense_attr(&lit), "dense<1.0>");
}

#[test]
fn mixed_start_index_types_are_converted_to_s64() {
    let b = Builder::new("ds");
    let x = b.parameter("x", f32s(&[4, 4]));
    let i = b.parameter("i", Shape::scalar(DType::S32));
    let j = b.parameter("j", Shape::scalar(DType::S64));
    let y = x.dynamic_slice(&[i.clone(), j.clone()], &[2, 2]);
    let z = x.dynamic_update_slice(&y, &[i, j]);
    let text = emit(&b.build(&[&y, &z]).unwrap());
    has_line(
        &text,
        "%index_3_1 = stablehlo.convert %i : (tensor<i32>) -> tensor<i64>",
    );
    has_line(
        &text,
        "%3 = stablehlo.dynamic_slice %x, %index_3_1, %j, sizes = [2, 2] : (tensor<4x4xf32>, tensor<i64>, tensor<i64>) -> tensor<2x2xf32>",
    );
    has_line(
        &text,
        "%4 = stablehlo.dynamic_update_slice %x, %3, %index_4_2, %j : (tensor<4x4xf32>, tensor<2x2xf32>, tensor<i64>, tensor<i64>) -> tensor<4x4xf32>",
    );
}

/// Degenerate but legal programs: reductions over no dimensions, rank-0 layout ops,
/// comparisons of booleans, a Philox state of three words.
#[test]
fn degenerate_forms() {
    let b = Builder::new("degenerate");
    let x = b.parameter("x", f32s(&[2, 3]));
    let s = b.parameter("s", Shape::scalar(DType::F32));
    let p = b.parameter("p", Shape::new(DType::Pred, [2]));
    let st = b.parameter("st", Shape::new(DType::U64, [3]));
    let none = x.reduce(ReduceKind::Sum, &[]);
    let t0 = s.transpose(&[]).reshape(&[1, 1]).reshape(&[]);
    let peq = p.eq(&p.not());
    let r = b.apply(
        Op::RngBitGenerator {
            algorithm: RngAlgorithm::Philox,
            shape: Shape::new(DType::U64, [2]),
        },
        &[&st],
    );
    let f = b.build(&[&none, &t0, &peq, &r[0], &r[1]]).unwrap();
    let text = emit(&f);
    has_line(
        &text,
        "%4 = stablehlo.reduce(%x init: %init_4) applies stablehlo.add across dimensions = [] : (tensor<2x3xf32>, tensor<f32>) -> tensor<2x3xf32>",
    );
    has_line(
        &text,
        "%8 = stablehlo.compare EQ, %p, %7, UNSIGNED : (tensor<2xi1>, tensor<2xi1>) -> tensor<2xi1>",
    );
    if let Ok(dir) = std::env::var("HLO_EMIT_DUMP") {
        std::fs::write(format!("{dir}/degenerate.shardy.1.mlir"), &text).unwrap();
    }
}

/// `bf16_dot_call`: large bf16 products become the custom call, with the operands'
/// stored order in the target's suffix and rank-3 operands; f32 and small products stay
/// `dot_general`s.
#[test]
fn bf16_products_become_the_custom_call_when_asked() {
    let bf16s = |dims: &[i64]| Shape::new(DType::Bf16, dims.to_vec());
    let b = Builder::new("products");
    let x = b.parameter("x", bf16s(&[128, 256]));
    let w = b.parameter("w", bf16s(&[64, 256]));
    let h = b.parameter("h", bf16s(&[2, 64, 256]));
    let s = b.parameter("s", bf16s(&[4, 4]));
    let xf = b.parameter("xf", f32s(&[128, 256]));
    let wf = b.parameter("wf", f32s(&[64, 256]));
    let e = b.parameter("e", bf16s(&[4, 128, 256]));
    let contract = |l: i64, r: i64| DotDims {
        lhs_contracting: vec![l],
        rhs_contracting: vec![r],
        ..Default::default()
    };
    let xw = x.dot_general(&w, contract(1, 1)); // [128, 64], w stored [n, k]
    let wx = w.dot_general(&x, contract(1, 1)); // [64, 128]
    let hw = h.dot_general(&w, contract(2, 1)); // [2, 64, 64]: two free dims on the left
    let ss = s.dot_general(&s, contract(1, 0)); // 64 multiply-adds
    let ff = xf.dot_general(&wf, contract(1, 1));
    let batched = e.dot_general(
        &e,
        DotDims {
            lhs_batch: vec![0],
            rhs_batch: vec![0],
            lhs_contracting: vec![2],
            rhs_contracting: vec![2],
        },
    );
    let f = b.build(&[&xw, &wx, &hw, &ss, &ff, &batched]).unwrap();
    let opts = EmitOptions {
        bf16_dot_call: Some("k".into()),
        ..EmitOptions::default()
    };
    let text = to_stablehlo(&f, &opts).unwrap();
    for want in [
        "%lhs_r_7 = stablehlo.reshape %x : (tensor<128x256xbf16>) -> tensor<1x128x256xbf16>",
        "%rhs_r_7 = stablehlo.reshape %w : (tensor<64x256xbf16>) -> tensor<1x64x256xbf16>",
        "%bf16_dot_7 = stablehlo.custom_call @k_nt(%lhs_r_7, %rhs_r_7) {api_version = 4 : i32} : (tensor<1x128x256xbf16>, tensor<1x64x256xbf16>) -> tensor<1x128x64xbf16>",
        "%7 = stablehlo.reshape %bf16_dot_7 : (tensor<1x128x64xbf16>) -> tensor<128x64xbf16>",
        // Two free dimensions on the left are one row dimension of the call.
        "%lhs_r_9 = stablehlo.reshape %h : (tensor<2x64x256xbf16>) -> tensor<1x128x256xbf16>",
        "%9 = stablehlo.reshape %bf16_dot_9 : (tensor<1x128x64xbf16>) -> tensor<2x64x64xbf16>",
    ] {
        has_line(&text, want);
    }
    // A batched product keeps its batch dimension as the call's first.
    has_line(
        &text,
        "%12 = stablehlo.custom_call @k_nt(%e, %e) {api_version = 4 : i32} : (tensor<4x128x256xbf16>, tensor<4x128x256xbf16>) -> tensor<4x128x128xbf16>",
    );
    assert_eq!(text.matches("stablehlo.custom_call").count(), 4, "{text}");
    assert_eq!(text.matches("stablehlo.dot_general").count(), 2, "{text}");
    assert_eq!(text.matches("stablehlo.transpose").count(), 0, "{text}");
    assert_eq!(emit(&f).matches("stablehlo.custom_call").count(), 0);
}
