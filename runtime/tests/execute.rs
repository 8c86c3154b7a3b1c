//! Handwritten StableHLO programs on the real CPU plugin: arithmetic, transfers of every
//! element type, multiple results, argument checks.

mod common;

use common::{assert_close, client};
use half::{bf16, f16};
use hlo::{DType, Literal, Shape};
use runtime::{Backend, CompileOptions, Error};

const ADD_MATMUL: &str = r#"
module @add_matmul {
  func.func public @main(%a: tensor<2x3xf32>, %b: tensor<2x3xf32>, %w: tensor<3x2xf32>) -> (tensor<2x3xf32>, tensor<2x2xf32>) {
    %sum = stablehlo.add %a, %b : tensor<2x3xf32>
    %prod = stablehlo.dot_general %sum, %w, contracting_dims = [1] x [0] : (tensor<2x3xf32>, tensor<3x2xf32>) -> tensor<2x2xf32>
    return %sum, %prod : tensor<2x3xf32>, tensor<2x2xf32>
  }
}
"#;

#[test]
fn add_and_matmul_round_trip_with_two_results() {
    let c = client();
    let exe = c.compile(ADD_MATMUL, &CompileOptions::default()).unwrap();
    assert_eq!(exe.num_outputs(), 2);
    assert_eq!(exe.device_ids().len(), 1);
    let a = Literal::from_slice(&[2, 3], &[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
    let b = Literal::from_slice(&[2, 3], &[0.5f32, -1.0, 2.0, 0.0, 1.0, -6.0]).unwrap();
    let w = Literal::from_slice(&[3, 2], &[1.0f32, 0.0, 0.0, 1.0, 1.0, 1.0]).unwrap();
    let bufs: Vec<_> = [&a, &b, &w]
        .iter()
        .map(|l| c.upload(l, 0).unwrap())
        .collect();
    let out = exe.execute(&[bufs.iter().collect()]).unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].len(), 2);
    let sum = out[0][0].to_literal().unwrap();
    assert_eq!(sum.shape(), &Shape::new(DType::F32, [2, 3]));
    assert_eq!(
        sum.to_vec::<f32>().unwrap(),
        vec![1.5, 1.0, 5.0, 4.0, 6.0, 0.0]
    );
    let prod = out[0][1].to_literal().unwrap();
    assert_eq!(prod.dims(), &[2, 2]);
    // rows of sum times w: [1.5+5, 1+5], [4+0, 6+0]
    assert_close(&prod.to_f64_vec(), &[6.5, 6.0, 4.0, 6.0], 1e-6);
    // The inputs stay usable (not donated).
    assert_eq!(bufs[0].to_literal().unwrap(), a);
}

fn identity_program(d: DType, dims: &[i64]) -> String {
    let ty = Shape::new(d, dims.to_vec()).mlir_type();
    format!("func.func public @main(%x: {ty}) -> {ty} {{\n  return %x : {ty}\n}}\n")
}

#[test]
fn every_dtype_round_trips_through_the_device_and_a_program() {
    let c = client();
    let lits = vec![
        Literal::from_slice(&[3], &[true, false, true]).unwrap(),
        Literal::from_slice(&[2, 2], &[-1i32, 2, i32::MIN, i32::MAX]).unwrap(),
        Literal::from_slice(&[2], &[i64::MIN, 7]).unwrap(),
        Literal::from_slice(&[2], &[u32::MAX, 3]).unwrap(),
        Literal::from_slice(&[2], &[u64::MAX, 9]).unwrap(),
        Literal::from_slice(&[3], &[f16::from_f32(1.5), f16::from_f32(-2.25), f16::MAX]).unwrap(),
        Literal::from_slice(
            &[3],
            &[
                bf16::from_f32(1.5),
                bf16::from_f32(-3.0e38),
                bf16::MIN_POSITIVE,
            ],
        )
        .unwrap(),
        Literal::from_slice(&[1, 2], &[f32::MIN_POSITIVE, -0.0]).unwrap(),
        Literal::from_slice(&[2], &[std::f64::consts::PI, 1e300]).unwrap(),
        Literal::scalar(42.5f32),
    ];
    let mut seen = Vec::new();
    for lit in &lits {
        let buf = c.upload(lit, 0).unwrap();
        assert_eq!(buf.shape().unwrap(), *lit.shape());
        assert_eq!(
            &buf.to_literal().unwrap(),
            lit,
            "direct round trip of {}",
            lit.shape()
        );
        // And through an executable, which returns a fresh buffer.
        let exe = c
            .compile(
                &identity_program(lit.dtype(), lit.dims()),
                &CompileOptions::default(),
            )
            .unwrap();
        let out = exe.execute(&[vec![&buf]]).unwrap();
        assert_eq!(
            &out[0][0].to_literal().unwrap(),
            lit,
            "program round trip of {}",
            lit.shape()
        );
        seen.push(lit.dtype());
    }
    for d in DType::ALL {
        assert!(seen.contains(&d), "{d} not covered");
    }
}

#[test]
fn bf16_matmul_accumulates_in_f32() {
    let c = client();
    let text = r#"
func.func public @main(%a: tensor<2x2xbf16>, %b: tensor<2x2xbf16>) -> tensor<2x2xf32> {
  %0 = stablehlo.dot_general %a, %b, contracting_dims = [1] x [0] : (tensor<2x2xbf16>, tensor<2x2xbf16>) -> tensor<2x2xf32>
  return %0 : tensor<2x2xf32>
}"#;
    let exe = c.compile(text, &CompileOptions::default()).unwrap();
    let v = |xs: [f32; 4]| xs.map(bf16::from_f32);
    let a = Literal::from_slice(&[2, 2], &v([1.0, 2.0, 3.0, 4.0])).unwrap();
    let b = Literal::from_slice(&[2, 2], &v([0.5, -1.0, 0.25, 2.0])).unwrap();
    let (a, b) = (c.upload(&a, 0).unwrap(), c.upload(&b, 0).unwrap());
    let out = exe.execute(&[vec![&a, &b]]).unwrap();
    let got = out[0][0].to_literal().unwrap();
    assert_eq!(got.dtype(), DType::F32);
    assert_eq!(got.to_vec::<f32>().unwrap(), vec![1.0, 3.0, 2.5, 5.0]);
}

#[test]
fn wrong_argument_dtype_is_rejected_in_rust() {
    let c = client();
    let exe = c
        .compile(
            &identity_program(DType::F32, &[2]),
            &CompileOptions::default(),
        )
        .unwrap();
    // Same byte size, wrong type: the plugin itself would accept it.
    let wrong = c
        .upload(&Literal::from_slice(&[2], &[1i32, 2]).unwrap(), 0)
        .unwrap();
    let err = exe.execute(&[vec![&wrong]]).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    assert!(
        err.to_string().contains("must be f32, got a s32 buffer"),
        "{err}"
    );
    // Wrong number of argument lists.
    let err = exe.execute(&[vec![&wrong], vec![&wrong]]).unwrap_err();
    assert!(err.to_string().contains("got 2 argument lists"), "{err}");
    // Device index out of range.
    let err = c.upload(&Literal::scalar(1.0f32), 99).unwrap_err();
    assert!(err.to_string().contains("out of range"), "{err}");
}

#[test]
fn bad_program_reports_the_parser_message() {
    let c = client();
    let text = "func.func public @main(%x: tensor<2xf32>) -> tensor<2xf32> {\n  %0 = stablehlo.frobnicate %x : tensor<2xf32>\n  return %0 : tensor<2xf32>\n}\n";
    let err = c.compile(text, &CompileOptions::default()).unwrap_err();
    match &err {
        Error::Pjrt {
            function, message, ..
        } => {
            assert_eq!(*function, "PJRT_Client_Compile");
            assert!(message.contains("stablehlo.frobnicate"), "{message}");
        }
        other => panic!("expected a PJRT error, got {other:?}"),
    }
    // The client still works afterwards.
    let exe = c
        .compile(
            &identity_program(DType::S32, &[1]),
            &CompileOptions::default(),
        )
        .unwrap();
    assert_eq!(exe.num_outputs(), 1);
}

#[test]
fn backend_trait_runs_a_program() {
    let backend: &dyn Backend = client();
    assert!(
        backend.describe().contains("4 devices"),
        "{}",
        backend.describe()
    );
    assert_eq!(backend.device_count(), 4);
    let exe = backend
        .compile(
            &identity_program(DType::F64, &[2]),
            &CompileOptions::default(),
        )
        .unwrap();
    let lit = Literal::from_slice(&[2], &[1.0f64, -2.0]).unwrap();
    let buf = backend.upload(&lit, 3).unwrap();
    assert_eq!(
        buf.device_id().unwrap(),
        client().addressable_devices()[3].id
    );
    // The executable runs on the first device: a buffer elsewhere is refused in Rust.
    let err = backend.execute(&exe, &[vec![&buf]]).unwrap_err();
    assert!(err.to_string().contains("lives on device"), "{err}");
    let here = backend.upload(&lit, exe.device_indices()[0]).unwrap();
    let out = backend.execute(&exe, &[vec![&here]]).unwrap();
    assert_eq!(backend.download(&out[0][0]).unwrap(), lit);
    assert_eq!(backend.download(&buf).unwrap(), lit);
}

#[test]
fn client_reports_platform_and_devices() {
    let c = client();
    assert_eq!(c.platform_name(), "cpu");
    let (major, minor) = c.api_version();
    assert_eq!(major, 0);
    assert!(minor >= 81, "API {major}.{minor}");
    let devs = c.addressable_devices();
    assert_eq!(devs.len(), 4);
    let mut ids: Vec<i32> = devs.iter().map(|d| d.id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 4);
    assert!(
        devs.iter()
            .all(|d| d.addressable && d.kind.to_lowercase().contains("cpu")),
        "{devs:?}"
    );
    assert!(c.devices().len() >= 4);
}

#[test]
fn threads_share_one_client_and_executable() {
    let c = client();
    let exe = c.compile(ADD_MATMUL, &CompileOptions::default()).unwrap();
    std::thread::scope(|s| {
        for t in 0..2 {
            let exe = &exe;
            s.spawn(move || {
                for i in 0..20 {
                    let x = (t * 100 + i) as f32;
                    let a = c
                        .upload(&Literal::from_slice(&[2, 3], &[x; 6]).unwrap(), 0)
                        .unwrap();
                    let w = c
                        .upload(&Literal::from_slice(&[3, 2], &[1.0f32; 6]).unwrap(), 0)
                        .unwrap();
                    let out = exe.execute(&[vec![&a, &a, &w]]).unwrap();
                    let prod = out[0][1].to_literal().unwrap().to_vec::<f32>().unwrap();
                    assert_eq!(prod, vec![6.0 * x; 4]);
                }
            });
        }
    });
}
