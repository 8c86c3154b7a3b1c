//! Our AMX bf16 products as custom calls inside compiled programs give what XLA's own
//! bf16 dots give (both sum in f32 and round once to bf16; the order of the sums differs).

mod common;

use half::bf16;
use hlo::ir::DotDims;
use hlo::{to_stablehlo, Builder, DType, EmitOptions, Literal, Shape};

fn values(n: usize, seed: u64) -> Vec<bf16> {
    common::uniform(n, seed)
        .into_iter()
        .map(bf16::from_f64)
        .collect()
}

#[test]
fn custom_call_products_equal_xla_bf16_dots() {
    let client = common::client();
    let Some(prefix) = client.bf16_dot_call() else {
        assert!(
            !runtime::amx::available(),
            "AMX is there but the calls were not registered"
        );
        eprintln!("no AMX bf16 here: the products stay XLA's");
        return;
    };
    let bf16s = |dims: &[i64]| Shape::new(DType::Bf16, dims.to_vec());
    let b = Builder::new("products");
    let x = b.parameter("x", bf16s(&[2, 100, 300])); // two free dimensions
    let w = b.parameter("w", bf16s(&[77, 300])); // [n, k]
    let g = b.parameter("g", bf16s(&[300, 77])); // [k, n]
    let contract = |l: i64, r: i64| DotDims {
        lhs_contracting: vec![l],
        rhs_contracting: vec![r],
        ..Default::default()
    };
    let nt = x.dot_general(&w, contract(2, 1)); // [2, 100, 77]
    let nn = x.dot_general(&g, contract(2, 0)); // [2, 100, 77]
    let tn = g.dot_general(&g, contract(0, 0)); // [77, 77], left stored [k, m]
    let tt = g.dot_general(&w, contract(0, 1)); // [77, 77], both transposed
                                                // Batched, the right operand's batch dimension second (as the experts' slots are).
    let e = b.parameter("e", bf16s(&[4, 96, 300]));
    let z = b.parameter("z", bf16s(&[40, 4, 300]));
    let batched = e.dot_general(
        &z,
        DotDims {
            lhs_batch: vec![0],
            rhs_batch: vec![1],
            lhs_contracting: vec![2],
            rhs_contracting: vec![2],
        },
    ); // [4, 96, 40]
    let f = b.build(&[&nt, &nn, &tn, &tt, &batched]).unwrap();
    let ours = EmitOptions {
        bf16_dot_call: Some(prefix.to_string()),
        ..EmitOptions::default()
    };
    let with_calls = to_stablehlo(&f, &ours).unwrap();
    assert_eq!(with_calls.matches("stablehlo.custom_call").count(), 5);
    let xla = to_stablehlo(&f, &EmitOptions::default()).unwrap();
    let inputs = [
        Literal::from_slice(&[2, 100, 300], &values(60_000, 1)).unwrap(),
        Literal::from_slice(&[77, 300], &values(23_100, 2)).unwrap(),
        Literal::from_slice(&[300, 77], &values(23_100, 3)).unwrap(),
        Literal::from_slice(&[4, 96, 300], &values(115_200, 4)).unwrap(),
        Literal::from_slice(&[40, 4, 300], &values(48_000, 5)).unwrap(),
    ];
    let run = |text: &str| common::run_on_device(text, &inputs);
    let (got, want) = (run(&with_calls), run(&xla));
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g.len(), w.len());
        for (a, b) in g.iter().zip(w) {
            // One bf16 rounding step apart at most (sums in another order).
            assert!(
                (a - b).abs() <= b.abs() * 8e-3 + 1e-3,
                "output {i}: {a} vs {b}"
            );
        }
        assert!(g.iter().any(|v| *v != 0.0), "output {i} is all zeros");
    }
}
