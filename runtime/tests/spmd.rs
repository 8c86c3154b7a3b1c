//! SPMD over the 4 virtual CPU devices: a two-layer MLP with a column-sharded first weight
//! and a row-sharded second weight, written as Shardy MLIR. The partitioned result must match
//! the single-device result, and XLA must have inserted the all-reduce that sums the
//! row-sharded products.

mod common;

use common::{assert_close, client};
use hlo::Literal;
use runtime::{Buffer, CompileOptions};

const B: usize = 8;
const IN: usize = 16;
const HID: usize = 32;
const OUT: usize = 16;

/// The MLP; `mesh` and the shardings are spliced in (all empty = unsharded program).
fn mlp(partitions: usize, mesh: &str, x: &str, w1: &str, w2: &str, y: &str) -> String {
    let attr = |s: &str| {
        if s.is_empty() {
            String::new()
        } else {
            format!(" {{sdy.sharding = #sdy.sharding<@mesh, {s}>}}")
        }
    };
    let mesh_line = if mesh.is_empty() {
        String::new()
    } else {
        format!("  sdy.mesh @mesh = <{mesh}>\n")
    };
    format!(
        r#"module @mlp attributes {{mhlo.num_partitions = {partitions} : i32, mhlo.num_replicas = 1 : i32}} {{
{mesh_line}  func.func public @main(%x: tensor<{B}x{IN}xf32>{ax}, %w1: tensor<{IN}x{HID}xf32>{aw1}, %w2: tensor<{HID}x{OUT}xf32>{aw2}) -> (tensor<{B}x{OUT}xf32>{ay}) {{
    %h = stablehlo.dot_general %x, %w1, contracting_dims = [1] x [0] : (tensor<{B}x{IN}xf32>, tensor<{IN}x{HID}xf32>) -> tensor<{B}x{HID}xf32>
    %zero = stablehlo.constant dense<0.000000e+00> : tensor<{B}x{HID}xf32>
    %r = stablehlo.maximum %h, %zero : tensor<{B}x{HID}xf32>
    %y = stablehlo.dot_general %r, %w2, contracting_dims = [1] x [0] : (tensor<{B}x{HID}xf32>, tensor<{HID}x{OUT}xf32>) -> tensor<{B}x{OUT}xf32>
    return %y : tensor<{B}x{OUT}xf32>
  }}
}}
"#,
        ax = attr(x),
        aw1 = attr(w1),
        aw2 = attr(w2),
        ay = attr(y),
    )
}

/// Deterministic pseudo-random values in [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Rows `r0..r1` and columns `c0..c1` of a row-major `rows x cols` matrix.
fn block(m: &[f32], cols: usize, (r0, r1): (usize, usize), (c0, c1): (usize, usize)) -> Literal {
    let mut out = Vec::new();
    for r in r0..r1 {
        out.extend_from_slice(&m[r * cols + c0..r * cols + c1]);
    }
    Literal::from_slice(&[(r1 - r0) as i64, (c1 - c0) as i64], &out).unwrap()
}

struct Data {
    x: Vec<f32>,
    w1: Vec<f32>,
    w2: Vec<f32>,
    reference: Vec<f64>,
}

/// Inputs and the single-device result (compiled without any sharding).
fn data() -> Data {
    let c = client();
    let (x, w1, w2) = (values(B * IN, 1), values(IN * HID, 2), values(HID * OUT, 3));
    let exe = c
        .compile(&mlp(1, "", "", "", "", ""), &CompileOptions::default())
        .unwrap();
    let up = |m: &[f32], r: usize, k: usize| c.upload(&block(m, k, (0, r), (0, k)), 0).unwrap();
    let args = [up(&x, B, IN), up(&w1, IN, HID), up(&w2, HID, OUT)];
    let out = exe.execute(&[args.iter().collect()]).unwrap();
    let reference = out[0][0].to_literal().unwrap().to_f64_vec();
    // Without sharding there is nothing to reduce: the collective check below means something.
    let hlo = exe.optimized_program().unwrap();
    assert!(!hlo.windows(10).any(|w| w == b"all-reduce"));
    // Sanity check of the reference itself against a host computation.
    let mut host = vec![0f64; B * OUT];
    for b in 0..B {
        for h in 0..HID {
            let mut acc = 0f64;
            for i in 0..IN {
                acc += x[b * IN + i] as f64 * w1[i * HID + h] as f64;
            }
            let r = acc.max(0.0);
            for o in 0..OUT {
                host[b * OUT + o] += r * w2[h * OUT + o] as f64;
            }
        }
    }
    assert_close(&reference, &host, 1e-4);
    Data {
        x,
        w1,
        w2,
        reference,
    }
}

fn assert_has_all_reduce(exe: &runtime::Executable) {
    let hlo = exe.optimized_program().unwrap();
    assert!(!hlo.is_empty());
    let found = hlo.windows(10).any(|w| w == b"all-reduce");
    assert!(
        found,
        "no all-reduce in the optimized program ({} bytes)",
        hlo.len()
    );
}

#[test]
fn model_parallel_mlp_over_four_devices_matches_single_device() {
    let c = client();
    let d = data();
    let text = mlp(
        4,
        r#"["model"=4]"#,
        "[{}, {}]",
        r#"[{}, {"model"}]"#,
        r#"[{"model"}, {}]"#,
        "[{}, {}]",
    );
    let options = CompileOptions {
        device_assignment: Some(vec![vec![0, 1, 2, 3]]),
        ..CompileOptions::spmd(4)
    };
    let exe = c.compile(&text, &options).unwrap();
    assert_eq!(exe.num_partitions(), 4);
    assert_eq!(exe.device_ids(), vec![0, 1, 2, 3]);
    let idx = exe.device_indices();
    let (hs, os) = (HID / 4, OUT);
    let args: Vec<Vec<Buffer>> = (0..4)
        .map(|p| {
            vec![
                c.upload(&block(&d.x, IN, (0, B), (0, IN)), idx[p]).unwrap(),
                c.upload(&block(&d.w1, HID, (0, IN), (p * hs, (p + 1) * hs)), idx[p])
                    .unwrap(),
                c.upload(&block(&d.w2, os, (p * hs, (p + 1) * hs), (0, OUT)), idx[p])
                    .unwrap(),
            ]
        })
        .collect();
    assert_eq!(args[1][1].dims().unwrap(), vec![IN as i64, hs as i64]);
    let lists: Vec<Vec<&Buffer>> = args.iter().map(|l| l.iter().collect()).collect();
    let out = exe.execute(&lists).unwrap();
    assert_eq!(out.len(), 4);
    for (p, res) in out.iter().enumerate() {
        assert_eq!(res.len(), 1);
        let y = res[0].to_literal().unwrap();
        assert_eq!(y.dims(), &[B as i64, OUT as i64], "device {p}");
        assert_close(&y.to_f64_vec(), &d.reference, 1e-5);
    }
    assert_has_all_reduce(&exe);
}

#[test]
fn data_and_model_parallel_mlp_on_a_two_by_two_mesh() {
    let c = client();
    let d = data();
    let text = mlp(
        4,
        r#"["data"=2, "model"=2]"#,
        r#"[{"data"}, {}]"#,
        r#"[{}, {"model"}]"#,
        r#"[{"model"}, {}]"#,
        r#"[{"data"}, {}]"#,
    );
    let options = CompileOptions {
        device_assignment: Some(vec![vec![0, 1, 2, 3]]),
        ..CompileOptions::spmd(4)
    };
    let exe = c.compile(&text, &options).unwrap();
    let idx = exe.device_indices();
    let (bs, hs) = (B / 2, HID / 2);
    // Partition p sits at mesh coordinates (data, model) = (p / 2, p % 2).
    let args: Vec<Vec<Buffer>> = (0..4)
        .map(|p| {
            let (di, mi) = (p / 2, p % 2);
            vec![
                c.upload(&block(&d.x, IN, (di * bs, (di + 1) * bs), (0, IN)), idx[p])
                    .unwrap(),
                c.upload(
                    &block(&d.w1, HID, (0, IN), (mi * hs, (mi + 1) * hs)),
                    idx[p],
                )
                .unwrap(),
                c.upload(
                    &block(&d.w2, OUT, (mi * hs, (mi + 1) * hs), (0, OUT)),
                    idx[p],
                )
                .unwrap(),
            ]
        })
        .collect();
    let lists: Vec<Vec<&Buffer>> = args.iter().map(|l| l.iter().collect()).collect();
    let out = exe.execute(&lists).unwrap();
    for (p, res) in out.iter().enumerate() {
        let di = p / 2;
        let y = res[0].to_literal().unwrap();
        assert_eq!(y.dims(), &[bs as i64, OUT as i64], "device {p}");
        let want = &d.reference[di * bs * OUT..(di + 1) * bs * OUT];
        assert_close(&y.to_f64_vec(), want, 1e-5);
    }
    assert_has_all_reduce(&exe);

    // The partitioned executable also survives serialization.
    let bytes = exe.serialize().unwrap();
    let again = c.deserialize_executable(&bytes).unwrap();
    assert_eq!(again.device_ids(), exe.device_ids());
    let out2 = again.execute(&lists).unwrap();
    for (a, b) in out.iter().zip(&out2) {
        assert_eq!(a[0].to_literal().unwrap(), b[0].to_literal().unwrap());
    }
}
