//! SPMD with programs built by `hlo::Builder` and emitted by `hlo::emit`: a two-layer MLP
//! with a column-sharded first weight and a row-sharded second weight over the 4 virtual CPU
//! devices, as `model=4` and as `data=2 x model=2`, for both partitioners. Each device's
//! result must equal its shard of the single-device result, and XLA must have inserted the
//! all-reduce that sums the row-sharded products.

mod common;

use common::{assert_close, client};
use hlo::{to_stablehlo, Builder, DType, EmitOptions, Function, Literal, Mesh, Partitioner};
use hlo::{PartitionSpec, Shape};
use ndarray::{Array, ArrayD, IxDyn, Slice};
use runtime::{Buffer, CompileOptions};

const B: usize = 8;
const IN: usize = 16;
const HID: usize = 32;
const OUT: usize = 16;

/// Shardings of x, w1, w2, the hidden activation and y.
struct Layout {
    mesh: Mesh,
    /// Whether partial sums must be combined (row-sharded second weight), which the
    /// optimized program must show as an all-reduce.
    all_reduce: bool,
    x: PartitionSpec,
    w1: PartitionSpec,
    w2: PartitionSpec,
    h: PartitionSpec,
    y: PartitionSpec,
}

fn spec(dims: &[Option<&str>]) -> PartitionSpec {
    PartitionSpec::new(dims)
}

/// `y = relu(x w1) w2`, annotated with `layout` when given.
fn mlp(layout: Option<&Layout>) -> Function {
    let b = Builder::new("mlp");
    let shape = |r: usize, c: usize| Shape::new(DType::F32, [r as i64, c as i64]);
    let (x, w1, w2) = match layout {
        Some(l) => {
            b.set_mesh(l.mesh.clone());
            (
                b.parameter_sharded("x", shape(B, IN), l.x.clone()),
                b.parameter_sharded("w1", shape(IN, HID), l.w1.clone()),
                b.parameter_sharded("w2", shape(HID, OUT), l.w2.clone()),
            )
        }
        None => (
            b.parameter("x", shape(B, IN)),
            b.parameter("w1", shape(IN, HID)),
            b.parameter("w2", shape(HID, OUT)),
        ),
    };
    let mut h = x.matmul(&w1).relu();
    if let Some(l) = layout {
        h = h.with_sharding(l.h.clone());
    }
    let y = h.named("h").matmul(&w2);
    let mut f = b.build_named(&[("y", &y)]).unwrap();
    if let Some(l) = layout {
        f.outputs[0].sharding = Some(l.y.clone());
    }
    f
}

/// Deterministic values in [-1, 1).
fn random(dims: &[usize], seed: u64) -> ArrayD<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let n = dims.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    Array::from_shape_vec(IxDyn(dims), v).unwrap()
}

fn literal(a: &ArrayD<f32>) -> Literal {
    let dims: Vec<i64> = a.shape().iter().map(|&d| d as i64).collect();
    Literal::from_slice(&dims, &a.iter().copied().collect::<Vec<_>>()).unwrap()
}

/// The block of `full` that partition `device` holds under `spec` (devices are numbered
/// row-major over the mesh axes; a dimension split over several axes takes the first axis
/// as the outermost).
fn shard(full: &ArrayD<f32>, spec: &PartitionSpec, mesh: &Mesh, device: usize) -> ArrayD<f32> {
    let mut coord = vec![0usize; mesh.axes.len()];
    let mut rest = device;
    for (i, (_, size)) in mesh.axes.iter().enumerate().rev() {
        coord[i] = rest % *size as usize;
        rest /= *size as usize;
    }
    let mut view = full.view();
    for (d, axes) in spec.dims.iter().enumerate() {
        let (mut index, mut pieces) = (0, 1);
        for a in axes {
            let i = mesh.axes.iter().position(|(n, _)| n == a).unwrap();
            let size = mesh.axes[i].1 as usize;
            index = index * size + coord[i];
            pieces *= size;
        }
        let len = full.shape()[d] / pieces;
        view.slice_axis_inplace(
            ndarray::Axis(d),
            Slice::from(index * len..(index + 1) * len),
        );
    }
    view.to_owned()
}

fn layouts() -> Vec<(&'static str, Layout)> {
    vec![
        (
            "model=4",
            Layout {
                mesh: Mesh::new(&[("model", 4)]),
                all_reduce: true,
                x: spec(&[None, None]),
                w1: spec(&[None, Some("model")]),
                w2: spec(&[Some("model"), None]),
                h: spec(&[None, Some("model")]),
                y: spec(&[None, None]),
            },
        ),
        (
            "data=2 x model=2",
            Layout {
                mesh: Mesh::new(&[("data", 2), ("model", 2)]),
                all_reduce: true,
                x: spec(&[Some("data"), None]),
                w1: spec(&[None, Some("model")]),
                w2: spec(&[Some("model"), None]),
                h: spec(&[Some("data"), Some("model")]),
                y: spec(&[Some("data"), None]),
            },
        ),
        (
            // The batch split four ways over both axes, `model` major (the tiles' device
            // order is the transposed mesh), and two ways over `data` on the way out, so
            // XLA must gather rows between devices exactly as we number them.
            "batch over model x data, then over data",
            Layout {
                mesh: Mesh::new(&[("data", 2), ("model", 2)]),
                all_reduce: false,
                x: two_axes("model", "data"),
                w1: spec(&[None, None]),
                w2: spec(&[None, None]),
                h: two_axes("model", "data"),
                y: spec(&[Some("data"), None]),
            },
        ),
    ]
}

/// Dimension 0 over two mesh axes (major first), dimension 1 replicated.
fn two_axes(major: &str, minor: &str) -> PartitionSpec {
    PartitionSpec {
        dims: vec![vec![major.into(), minor.into()], vec![]],
    }
}

#[test]
fn emitted_mlp_partitions_like_the_single_device_program() {
    let c = client();
    let (x, w1, w2) = (
        random(&[B, IN], 1),
        random(&[IN, HID], 2),
        random(&[HID, OUT], 3),
    );

    // Single device, no annotations.
    let text = to_stablehlo(&mlp(None), &EmitOptions::default()).unwrap();
    let exe = c.compile(&text, &CompileOptions::default()).unwrap();
    let args: Vec<Buffer> = [&x, &w1, &w2]
        .iter()
        .map(|a| c.upload(&literal(a), 0).unwrap())
        .collect();
    let out = exe.execute(&[args.iter().collect()]).unwrap();
    let y1 = out[0][0].to_literal().unwrap();
    let reference = Array::from_shape_vec(IxDyn(&[B, OUT]), y1.to_vec::<f32>().unwrap()).unwrap();
    // The reference itself against the host.
    let x2 = x.view().into_dimensionality::<ndarray::Ix2>().unwrap();
    let w12 = w1.view().into_dimensionality::<ndarray::Ix2>().unwrap();
    let w22 = w2.view().into_dimensionality::<ndarray::Ix2>().unwrap();
    let host = x2.dot(&w12).mapv(|v| v.max(0.0)).dot(&w22);
    let to64 = |a: &[f32]| a.iter().map(|&v| v as f64).collect::<Vec<_>>();
    assert_close(
        &to64(reference.as_slice().unwrap()),
        &to64(host.as_slice().unwrap()),
        1e-5,
    );

    for (name, layout) in layouts() {
        let f = mlp(Some(&layout));
        for partitioner in [Partitioner::Shardy, Partitioner::Gspmd] {
            let what = format!("{name}, {partitioner:?}");
            let text = to_stablehlo(
                &f,
                &EmitOptions {
                    partitioner,
                    ..Default::default()
                },
            )
            .unwrap();
            assert!(text.contains("mhlo.num_partitions = 4 : i32"), "{what}");
            let options = CompileOptions {
                use_shardy_partitioner: partitioner == Partitioner::Shardy,
                device_assignment: Some(vec![vec![0, 1, 2, 3]]),
                ..CompileOptions::spmd(hlo::emit::num_partitions(&f))
            };
            let exe = c
                .compile(&text, &options)
                .unwrap_or_else(|e| panic!("{what}: {e}\n{text}"));
            assert_eq!(exe.num_partitions(), 4, "{what}");
            let idx = exe.device_indices();
            let m = &layout.mesh;
            let args: Vec<Vec<Buffer>> = (0..4)
                .map(|p| {
                    [(&x, &layout.x), (&w1, &layout.w1), (&w2, &layout.w2)]
                        .iter()
                        .map(|(a, s)| c.upload(&literal(&shard(a, s, m, p)), idx[p]).unwrap())
                        .collect()
                })
                .collect();
            let lists: Vec<Vec<&Buffer>> = args.iter().map(|l| l.iter().collect()).collect();
            let out = exe.execute(&lists).unwrap();
            assert_eq!(out.len(), 4, "{what}");
            for (p, res) in out.iter().enumerate() {
                let want = shard(&reference, &layout.y, m, p);
                let got = res[0].to_literal().unwrap();
                let dims: Vec<i64> = want.shape().iter().map(|&d| d as i64).collect();
                assert_eq!(got.dims(), &dims[..], "{what}: device {p}");
                assert_close(
                    &got.to_f64_vec(),
                    &to64(&want.iter().copied().collect::<Vec<_>>()),
                    1e-5,
                );
            }
            let program = exe.optimized_program().unwrap();
            if layout.all_reduce {
                assert!(
                    program.windows(10).any(|w| w == b"all-reduce"),
                    "{what}: no all-reduce in the optimized program"
                );
            }
        }
    }
}
