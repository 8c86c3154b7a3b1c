//! Greedy KV-cache generation against the reference port's cached generations, and
//! left-padded batches row by row against generating each row alone.

mod common;

use gptsan::device::Device;
use gptsan::generate::sampling::Strategy;
use gptsan::generate::{GenerateOptions, Generator};
use gptsan::model::checkpoint::{load_model_dir, read_safetensors};
use gptsan::model::inputs::HostBatch;
use hlo::Literal;

fn expected_tokens(case: &str) -> Vec<Vec<u32>> {
    let text = std::fs::read_to_string(common::hf_tiny().join("cases.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    serde_json::from_value(v["cases"][case]["cached_new_tokens"].clone()).unwrap()
}

fn greedy(n: usize) -> GenerateOptions {
    GenerateOptions {
        max_new_tokens: n,
        strategy: Strategy::Greedy,
        seed: 0,
        stop_at_eot: true,
    }
}

#[test]
fn greedy_generation_matches_the_reference_cache_semantics() {
    let (cfg, params) = load_model_dir(&common::hf_tiny()).unwrap();
    let cases = read_safetensors(&common::hf_tiny().join("cases.safetensors")).unwrap();
    let device = Device::shared().unwrap();
    let mut g = Generator::new(device, &cfg, &params).unwrap();
    for case in ["gen", "gen_spout", "gen_prefix"] {
        let batch = common::fixture_batch(&cases, case);
        let out = g.generate(&batch, &greedy(16), true, |_, _| {}).unwrap();
        assert_eq!(out.tokens, expected_tokens(case), "case {case}");
        // The logits of every step match too.
        let reference = cases[&format!("{case}/cached.step_logits")]
            .to_vec::<f32>()
            .unwrap();
        let v = cfg.vocab_size as usize;
        for (s, rows) in out.step_logits.iter().enumerate() {
            let want = &reference[s * v..(s + 1) * v];
            let diff = rows[0]
                .iter()
                .zip(want)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(
                diff <= 1e-4,
                "case {case}: step {s} logits differ by {diff}"
            );
        }
    }
}

#[test]
fn left_padded_rows_generate_what_they_generate_alone() {
    let (cfg, params) = load_model_dir(&common::hf_tiny()).unwrap();
    let cases = read_safetensors(&common::hf_tiny().join("cases.safetensors")).unwrap();
    let device = Device::shared().unwrap();
    let mut g = Generator::new(device, &cfg, &params).unwrap();
    let batch = common::fixture_batch(&cases, "gen_batch_leftpad");
    let together = g.generate(&batch, &greedy(16), false, |_, _| {}).unwrap();
    for r in 0..batch.batch {
        let row = &batch.attention_mask[r * batch.len..(r + 1) * batch.len];
        let first = row.iter().position(|&m| m == 1).unwrap();
        let ids = batch.input_ids[r * batch.len + first..(r + 1) * batch.len].to_vec();
        let n = ids.len();
        let alone = HostBatch {
            batch: 1,
            len: n,
            input_ids: ids,
            attention_mask: vec![1; n],
            token_type_ids: vec![0; n],
            spout: None,
        };
        let solo = g.generate(&alone, &greedy(16), false, |_, _| {}).unwrap();
        assert_eq!(
            together.tokens[r], solo.tokens[0],
            "row {r} differs from its solo generation"
        );
    }
    // The unpadded row is unaffected by its neighbour in the reference too.
    assert_eq!(together.tokens[1], expected_tokens("gen_batch_leftpad")[1]);
}

/// Generation over a model-sharded mesh (experts and heads split) equals one device: the
/// same tokens, and the same logits at every step.
#[test]
fn generation_on_a_model_sharded_mesh_equals_one_device() {
    let (cfg, params) = load_model_dir(&common::hf_tiny()).unwrap();
    let cases = read_safetensors(&common::hf_tiny().join("cases.safetensors")).unwrap();
    let device = Device::shared().unwrap();
    let mut single = Generator::new(device, &cfg, &params).unwrap();
    for model in [2, 4] {
        let mesh = hlo::Mesh::new(&[("data", 1), ("model", model)]);
        let mut sharded = Generator::on_mesh(device, &cfg, &params, Some(mesh)).unwrap();
        for case in ["gen", "gen_spout", "gen_prefix", "gen_batch_leftpad"] {
            let batch = common::fixture_batch(&cases, case);
            let want = single
                .generate(&batch, &greedy(16), true, |_, _| {})
                .unwrap();
            let got = sharded
                .generate(&batch, &greedy(16), true, |_, _| {})
                .unwrap();
            assert_eq!(got.tokens, want.tokens, "model={model}, case {case}");
            let flat = |g: &gptsan::generate::Generation| -> Vec<f32> {
                g.step_logits.iter().flatten().flatten().copied().collect()
            };
            let diff = flat(&got)
                .iter()
                .zip(&flat(&want))
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(
                diff <= 1e-5,
                "model={model}, case {case}: logits differ by {diff}"
            );
        }
    }
}

/// bf16 weights on the device (`--precision bf16`) compute in f32 from the rounded
/// weights: every step's logits equal f32 generation from weights rounded to bf16 on the
/// host.
#[test]
fn bf16_weights_generate_as_f32_from_rounded_weights() {
    let (cfg, params) = load_model_dir(&common::hf_tiny()).unwrap();
    let cases = read_safetensors(&common::hf_tiny().join("cases.safetensors")).unwrap();
    let device = Device::shared().unwrap();
    let rounded: Vec<Literal> = params
        .iter()
        .map(|p| {
            p.convert_float(hlo::DType::Bf16)
                .unwrap()
                .convert_float(hlo::DType::F32)
                .unwrap()
        })
        .collect();
    let mut half = Generator::with_weights(device, &cfg, &params, None, hlo::DType::Bf16).unwrap();
    let mut exact = Generator::new(device, &cfg, &rounded).unwrap();
    let mut plain = Generator::new(device, &cfg, &params).unwrap();
    for case in ["gen", "gen_spout", "gen_prefix"] {
        let batch = common::fixture_batch(&cases, case);
        let a = half.generate(&batch, &greedy(8), true, |_, _| {}).unwrap();
        let b = exact.generate(&batch, &greedy(8), true, |_, _| {}).unwrap();
        let c = plain.generate(&batch, &greedy(8), true, |_, _| {}).unwrap();
        assert_eq!(a.tokens, b.tokens, "case {case}");
        let max_diff = |x: &[Vec<Vec<f32>>], y: &[Vec<Vec<f32>>]| {
            x.iter()
                .flatten()
                .flatten()
                .zip(y.iter().flatten().flatten())
                .map(|(p, q)| (p - q).abs())
                .fold(0.0f32, f32::max)
        };
        let same = max_diff(&a.step_logits, &b.step_logits);
        assert!(
            same <= 1e-4,
            "case {case}: bf16 vs rounded f32 differ by {same}"
        );
        // The weights really were rounded (a top-1 router can then pick another expert,
        // so the size of the change says little on this random model).
        let moved = max_diff(&a.step_logits[..1], &c.step_logits[..1]);
        assert!(moved > 0.0, "case {case}: bf16 weights changed nothing");
    }
}
