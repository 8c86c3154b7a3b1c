//! fill-mask and vectors against the reference port's fixture (../shared/fixtures/hf-tiny):
//! fill outputs derived from its logits with the original's rule, vectors from its
//! per-layer block outputs; batches of different lengths equal single inputs.

mod common;

use gptsan::device::Device;
use gptsan::infer::fill_mask::{fill_from_logits, fill_rows};
use gptsan::infer::vector::vectors;
use gptsan::infer::{Row, Runner};
use gptsan::model::checkpoint::{load_model_dir, read_safetensors};
use gptsan::model::inputs::int_rows;
use hlo::Literal;
use std::collections::BTreeMap;

const MSK: u32 = 35994;

/// The fixture case's rows (every case used here has no padding).
fn rows(cases: &BTreeMap<String, Literal>, case: &str) -> Vec<Row> {
    let ids = &cases[&format!("{case}/input.input_ids")];
    let t = ids.dims()[1] as usize;
    let ids = int_rows(ids, "ids").unwrap();
    let types = int_rows(&cases[&format!("{case}/input.token_type_ids")], "types").unwrap();
    let mask = int_rows(&cases[&format!("{case}/input.attention_mask")], "mask").unwrap();
    assert!(mask.iter().all(|&m| m == 1), "case {case} has padding");
    ids.chunks(t)
        .zip(types.chunks(t))
        .map(|(i, ty)| Row {
            ids: i.iter().map(|&x| x as u32).collect(),
            token_types: ty.to_vec(),
        })
        .collect()
}

fn max_diff<T: Into<f64> + Copy>(a: &[T], b: &[T]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| ((*x).into() - (*y).into()).abs())
        .fold(0.0, f64::max)
}

#[test]
fn fill_mask_follows_the_rule_on_the_fixture_logits() {
    let (cfg, params) = load_model_dir(&common::hf_tiny()).unwrap();
    let cases = read_safetensors(&common::hf_tiny().join("cases.safetensors")).unwrap();
    let device = Device::shared().unwrap();
    let mut runner = Runner::new(device, &cfg, &params).unwrap();
    let v = cfg.vocab_size as usize;
    let mut masks_filled = 0;
    for case in ["plain", "prefix"] {
        let rows = rows(&cases, case);
        let logits = cases[&format!("{case}/logits")].to_vec::<f32>().unwrap();
        let ours = fill_rows(&mut runner, &rows, 8).unwrap();
        let per_row = logits.len() / rows.len();
        for (b, (row, got)) in rows.iter().zip(&ours).enumerate() {
            let want = fill_from_logits(&row.ids, &logits[b * per_row..(b + 1) * per_row], v, MSK);
            assert_eq!(got.output_ids, want.output_ids, "case {case} row {b}");
            assert!(
                max_diff(&got.scores, &want.scores) <= 1e-4,
                "case {case} row {b}"
            );
            assert!(
                max_diff(&got.logprobs, &want.logprobs) <= 1e-4,
                "case {case} row {b}"
            );
            masks_filled += row.ids[1..].iter().filter(|&&t| t == MSK).count();
        }
    }
    assert!(masks_filled > 0, "the fixture has an MSK to fill");
}

#[test]
fn vectors_are_the_fixture_block_outputs() {
    let (cfg, params) = load_model_dir(&common::hf_tiny()).unwrap();
    let cases = read_safetensors(&common::hf_tiny().join("cases.safetensors")).unwrap();
    let device = Device::shared().unwrap();
    let mut runner = Runner::new(device, &cfg, &params).unwrap();
    let (layers, d) = (cfg.num_layers() as usize, cfg.d_model as usize);
    for case in ["plain", "prefix"] {
        let rows = rows(&cases, case);
        let t = rows[0].ids.len();
        let blocks: Vec<Vec<f32>> = (0..layers)
            .map(|l| {
                cases[&format!("{case}/block_output.{l}")]
                    .to_vec::<f32>()
                    .unwrap()
            })
            .collect();
        for pos in [0, 7, t - 1] {
            let asked: Vec<(Row, usize)> = rows.iter().map(|r| (r.clone(), pos)).collect();
            let got = vectors(&mut runner, &asked, 8).unwrap();
            for (b, v) in got.iter().enumerate() {
                assert_eq!(v.len(), layers * d);
                let want: Vec<f32> = blocks
                    .iter()
                    .flat_map(|blk| blk[(b * t + pos) * d..(b * t + pos + 1) * d].to_vec())
                    .collect();
                assert!(max_diff(v, &want) <= 1e-4, "case {case} row {b} pos {pos}");
            }
        }
    }
}

#[test]
fn a_padded_batch_equals_single_inputs() {
    let (cfg, params) = load_model_dir(&common::hf_tiny()).unwrap();
    let cases = read_safetensors(&common::hf_tiny().join("cases.safetensors")).unwrap();
    let device = Device::shared().unwrap();
    let mut runner = Runner::new(device, &cfg, &params).unwrap();
    let full = rows(&cases, "prefix");
    let mut short = Row::hybrid(full[0].ids[..9].to_vec());
    short.ids[3] = MSK;
    let inputs = vec![
        short,
        Row::hybrid(full[1].ids.clone()),
        Row::hybrid(full[0].ids[..14].to_vec()),
    ];
    let together = fill_rows(&mut runner, &inputs, 8).unwrap();
    let with_pos: Vec<(Row, usize)> = inputs
        .iter()
        .map(|r| (r.clone(), r.ids.len() - 1))
        .collect();
    let vecs = vectors(&mut runner, &with_pos, 8).unwrap();
    for (i, row) in inputs.iter().enumerate() {
        let alone = fill_rows(&mut runner, std::slice::from_ref(row), 8).unwrap();
        assert_eq!(together[i].output_ids, alone[0].output_ids, "input {i}");
        assert!(
            max_diff(&together[i].scores, &alone[0].scores) <= 1e-5,
            "input {i}"
        );
        let v = vectors(&mut runner, &with_pos[i..i + 1], 8).unwrap();
        assert!(max_diff(&vecs[i], &v[0]) <= 1e-5, "input {i}");
    }
}

/// With ext layers, the port's `hidden_states.{L_s-1}` already holds the extra position
/// embedding of the next layer's input; the vector is the true block output.
#[test]
fn vectors_leave_out_the_extra_position_embedding() {
    use gptsan::model::inputs::PositionRule;
    use gptsan::model::programs::{forward_args, forward_program, ForwardShape};
    use gptsan::model::{param_specs, ModelConfig, RouterConfig, RoutingSemantics};
    let cfg = ModelConfig {
        vocab_size: 300,
        context: 16,
        d_model: 16,
        num_heads: 2,
        num_switch_layers: 1,
        num_ext_layers: 1,
        num_experts: 2,
        expert_hidden: 32,
        ext_hidden: 32,
        spout_width: 0,
        layer_norm_eps: 1e-5,
        router: RouterConfig {
            semantics: RoutingSemantics::Hf,
            expert_capacity: 16,
            ..RouterConfig::default()
        },
    };
    let specs = param_specs(&cfg);
    let mut params = gptsan::train::run::init_params(&specs, 5);
    let ete_at = specs
        .iter()
        .position(|s| s.name == "model.extra_position_embeddings.weight")
        .unwrap();
    let ete: Vec<f32> = (0..16 * 16)
        .map(|i| ((i * 37) % 11) as f32 * 0.1 - 0.5)
        .collect();
    params[ete_at] = Literal::from_slice(&[16, 16], &ete).unwrap();

    let row = Row::hybrid(vec![290, 5, 6, 7, 8, 9]);
    let (t, d) = (row.ids.len(), 16);
    let device = Device::shared().unwrap();
    let mut runner = Runner::new(device, &cfg, &params).unwrap();
    let batch = gptsan::infer::pad_rows(std::slice::from_ref(&row));
    let shape = ForwardShape {
        batch: 1,
        len: t as i64,
        spout: false,
        grads: false,
        loss: true,
        weights: hlo::DType::F32,
    };
    let f = forward_program(&cfg, shape).unwrap();
    let positions = batch.positions(cfg.context, PositionRule::Reference);
    let args = forward_args(&params, &batch, &positions, &vec![-100; t]).unwrap();
    let out = device.compile(&f).unwrap().run_literals(&args).unwrap();
    let names: Vec<String> = f.outputs.iter().map(|o| o.name.clone().unwrap()).collect();
    let hidden = |l: usize| {
        let i = names
            .iter()
            .position(|n| *n == format!("hidden_states.{l}"))
            .unwrap();
        out[i].to_vec::<f32>().unwrap()
    };
    for pos in [2, t - 1] {
        let v = &vectors(&mut runner, &[(row.clone(), pos)], 1).unwrap()[0];
        let with_ete: Vec<f32> = (0..d)
            .map(|k| v[k] + ete[positions[pos] as usize * d + k])
            .collect();
        assert!(max_diff(&with_ete, &hidden(0)[pos * d..(pos + 1) * d]) <= 1e-5);
        assert!(max_diff(&v[d..], &hidden(1)[pos * d..(pos + 1) * d]) <= 1e-5);
        assert!(max_diff(&v[..d], &hidden(0)[pos * d..(pos + 1) * d]) > 0.1);
    }
}
