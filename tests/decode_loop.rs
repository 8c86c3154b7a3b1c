//! The generation loop on the device (one compiled while loop per chunk of tokens)
//! against the host loop (one decode call per token) on the fixture model: greedy gives
//! the same tokens in the same streaming order for both routing semantics, left-padded
//! batches, a spout, a bidirectional prefix, chunk boundaries in the middle, and rows
//! stopping at EOT at different steps. Sampling is reproducible from its seed, never
//! picks SEP or NOT, and degenerates to greedy with top-k 1.

mod common;

use gptsan::device::Device;
use gptsan::generate::sampling::Strategy;
use gptsan::generate::{GenerateOptions, Generation, Generator, LoopMode};
use gptsan::model::checkpoint::{load_model_dir, read_safetensors};
use gptsan::model::config::RoutingSemantics;
use gptsan::model::inputs::HostBatch;
use gptsan::model::params::param_specs;
use gptsan::model::ModelConfig;
use hlo::Literal;
use std::collections::BTreeMap;

fn opts(n: usize, strategy: Strategy, seed: u64, stop_at_eot: bool) -> GenerateOptions {
    GenerateOptions {
        max_new_tokens: n,
        strategy,
        seed,
        stop_at_eot,
    }
}

fn greedy(n: usize, stop_at_eot: bool) -> GenerateOptions {
    opts(n, Strategy::Greedy, 0, stop_at_eot)
}

/// Generates with `mode`; returns the result and the streamed `(row, id)` sequence.
fn run(
    g: &mut Generator,
    mode: LoopMode,
    batch: &HostBatch,
    o: &GenerateOptions,
) -> (Generation, Vec<(usize, u32)>) {
    g.set_loop_mode(mode);
    let mut streamed = Vec::new();
    let out = g
        .generate(batch, o, false, |r, id| streamed.push((r, id)))
        .unwrap();
    (out, streamed)
}

/// Asserts that the device loop with `chunk` gives what the host loop gives.
fn same_as_host(
    g: &mut Generator,
    batch: &HostBatch,
    o: &GenerateOptions,
    chunk: usize,
    what: &str,
) {
    let (want, want_stream) = run(g, LoopMode::Host, batch, o);
    let (got, got_stream) = run(g, LoopMode::Device { chunk }, batch, o);
    assert_eq!(got.tokens, want.tokens, "{what}, chunk {chunk}");
    assert_eq!(
        got_stream, want_stream,
        "{what}, chunk {chunk}: streaming order"
    );
    for (r, row) in got.tokens.iter().enumerate() {
        assert!(
            !row.is_empty() && row.len() <= o.max_new_tokens,
            "{what} row {r}"
        );
    }
}

fn fixture() -> (ModelConfig, Vec<Literal>, BTreeMap<String, Literal>) {
    let (cfg, params) = load_model_dir(&common::hf_tiny()).unwrap();
    let cases = read_safetensors(&common::hf_tiny().join("cases.safetensors")).unwrap();
    (cfg, params, cases)
}

fn with_routing(cfg: &ModelConfig, semantics: RoutingSemantics) -> ModelConfig {
    let mut c = cfg.clone();
    c.router.semantics = semantics;
    c
}

/// The parameters with `final_logits_bias[id] += by` for each `(id, by)`.
fn biased(cfg: &ModelConfig, params: &[Literal], bias: &[(u32, f32)]) -> Vec<Literal> {
    let at = param_specs(cfg)
        .iter()
        .position(|s| s.name == "final_logits_bias")
        .unwrap();
    let mut out = params.to_vec();
    let mut v = out[at].to_vec::<f32>().unwrap();
    for &(id, by) in bias {
        v[id as usize] += by;
    }
    out[at] = Literal::from_slice(out[at].dims(), &v).unwrap();
    out
}

#[test]
fn greedy_on_the_device_equals_the_host_loop() {
    let (cfg, params, cases) = fixture();
    let device = Device::shared().unwrap();
    for semantics in [RoutingSemantics::Hf, RoutingSemantics::Original] {
        let cfg = with_routing(&cfg, semantics);
        let mut g = Generator::new(device, &cfg, &params).unwrap();
        for case in ["gen", "gen_spout", "gen_prefix", "gen_batch_leftpad"] {
            let batch = common::fixture_batch(&cases, case);
            let what = format!("{semantics:?} {case}");
            // 16 in chunks of 16; 13 in chunks of 5 (boundaries after 6 and 11 tokens).
            same_as_host(&mut g, &batch, &greedy(16, true), 16, &what);
            same_as_host(&mut g, &batch, &greedy(13, false), 5, &what);
        }
    }
}

#[test]
fn greedy_on_the_device_matches_the_reference_generations() {
    let (cfg, params, cases) = fixture();
    let text = std::fs::read_to_string(common::hf_tiny().join("cases.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut g = Generator::new(Device::shared().unwrap(), &cfg, &params).unwrap();
    assert!(
        matches!(g.loop_mode(), LoopMode::Device { .. }),
        "the default"
    );
    for case in ["gen", "gen_spout", "gen_prefix"] {
        let want: Vec<Vec<u32>> =
            serde_json::from_value(v["cases"][case]["cached_new_tokens"].clone()).unwrap();
        let out = g
            .generate(
                &common::fixture_batch(&cases, case),
                &greedy(16, true),
                false,
                |_, _| {},
            )
            .unwrap();
        assert_eq!(out.tokens, want, "case {case}");
    }
}

/// A bias on EOT that makes some rows of the left-padded batch stop early and at
/// different steps, then the device loop (which exits when every row is done) must stop
/// them exactly where the host loop does.
#[test]
fn rows_stop_at_eot_where_the_host_loop_stops_them() {
    let (cfg, params, cases) = fixture();
    let device = Device::shared().unwrap();
    let batch = common::fixture_batch(&cases, "gen_batch_leftpad");
    let eot = cfg.vocab_size as u32 - 1;
    let mut exercised = false;
    for by in [2.0f32, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0] {
        let mut g = Generator::new(device, &cfg, &biased(&cfg, &params, &[(eot, by)])).unwrap();
        let (host, _) = run(&mut g, LoopMode::Host, &batch, &greedy(16, true));
        let stops: Vec<Option<usize>> = host
            .tokens
            .iter()
            .map(|r| r.iter().position(|&t| t == eot))
            .collect();
        same_as_host(
            &mut g,
            &batch,
            &greedy(16, true),
            5,
            &format!("EOT bias {by}"),
        );
        // Without stopping, the rows run on past EOT: the same on both loops too.
        same_as_host(
            &mut g,
            &batch,
            &greedy(16, false),
            5,
            &format!("EOT bias {by}, no stop"),
        );
        let (ended, _) = run(
            &mut g,
            LoopMode::Device { chunk: 5 },
            &batch,
            &greedy(16, true),
        );
        for (r, s) in stops.iter().enumerate() {
            if let Some(s) = s {
                assert_eq!(ended.tokens[r].len(), s + 1, "row {r} ends at its EOT");
            }
        }
        if stops.iter().any(|s| s.is_some_and(|s| s > 0)) {
            exercised = true;
        }
    }
    assert!(
        exercised,
        "no bias made a row stop at EOT after its first token"
    );
}

#[test]
fn sampling_on_the_device_is_seeded_and_never_picks_sep_or_not() {
    let (cfg, params, cases) = fixture();
    let v = cfg.vocab_size as u32;
    let (sep, not) = (v - 5, v - 4);
    // SEP and NOT made the likeliest ids by far: still never chosen.
    let params = biased(&cfg, &params, &[(sep, 30.0), (not, 30.0)]);
    let mut g = Generator::new(Device::shared().unwrap(), &cfg, &params).unwrap();
    let batch = common::fixture_batch(&cases, "gen_batch_leftpad");
    let hot = Strategy::Sample {
        temperature: 2.0,
        top_k: 0,
        top_p: 1.0,
    };
    let device = LoopMode::Device { chunk: 5 };
    let (a, _) = run(&mut g, device, &batch, &opts(24, hot.clone(), 7, false));
    let (b, _) = run(&mut g, device, &batch, &opts(24, hot.clone(), 7, false));
    let (c, _) = run(&mut g, device, &batch, &opts(24, hot.clone(), 8, false));
    assert_eq!(a.tokens, b.tokens, "the same seed gives the same tokens");
    assert_ne!(a.tokens, c.tokens, "another seed gives other tokens");
    for row in a.tokens.iter().chain(&c.tokens) {
        assert_eq!(row.len(), 24);
        assert!(row.iter().all(|&t| t != sep && t != not), "{row:?}");
        assert!(row.iter().all(|&t| t < v));
    }
    // Hot sampling over the whole vocabulary does not just repeat the greedy choice.
    let (greedy_out, _) = run(&mut g, device, &batch, &greedy(24, false));
    assert!(greedy_out
        .tokens
        .iter()
        .flatten()
        .all(|&t| t != sep && t != not));
    assert_ne!(a.tokens, greedy_out.tokens);
}

#[test]
fn sampling_with_one_candidate_is_greedy() {
    let (cfg, params, cases) = fixture();
    let mut g = Generator::new(Device::shared().unwrap(), &cfg, &params).unwrap();
    let device = LoopMode::Device { chunk: 5 };
    for case in ["gen_batch_leftpad", "gen_spout"] {
        let batch = common::fixture_batch(&cases, case);
        let (want, _) = run(&mut g, LoopMode::Host, &batch, &greedy(12, true));
        for (k, p) in [(1, 1.0), (0, 1e-6), (3, 1e-6)] {
            let s = Strategy::Sample {
                temperature: 0.7,
                top_k: k,
                top_p: p,
            };
            for seed in [1, 2] {
                let (got, _) = run(&mut g, device, &batch, &opts(12, s.clone(), seed, true));
                assert_eq!(got.tokens, want.tokens, "{case}: top_k {k}, top_p {p}");
            }
        }
    }
}

/// `n` device draws per setting: the pick program on `rows` copies of `logits`, seeds
/// 0, 1, ...
fn device_draws(logits: &[f32], s: &Strategy, n: usize) -> Vec<u32> {
    use gptsan::generate::device_pick::pick_program;
    let rows = 50;
    let v = logits.len() as i64;
    let device = Device::shared().unwrap();
    let program = device
        .compile(&pick_program(rows, v, false).unwrap())
        .unwrap();
    let all: Vec<f32> = (0..rows).flat_map(|_| logits.iter().copied()).collect();
    let (t, k, p) = match s {
        Strategy::Sample {
            temperature,
            top_k,
            top_p,
        } => (*temperature as f32, *top_k as i32, *top_p as f32),
        Strategy::Greedy => unreachable!(),
    };
    let mut out = Vec::new();
    for seed in 0..(n / rows as usize) as u64 {
        let args = [
            Literal::from_slice(&[rows, v], &all).unwrap(),
            Literal::from_slice(&[2], &[seed, 0x9E37_79B9_7F4A_7C15u64]).unwrap(),
            Literal::scalar(t),
            Literal::scalar(k),
            Literal::scalar(p),
        ];
        let res = program.run_literals(&args).unwrap();
        out.extend(res[0].to_vec::<i32>().unwrap().iter().map(|&x| x as u32));
    }
    out
}

fn histogram(draws: &[u32], v: usize) -> Vec<f64> {
    let mut h = vec![0.0; v];
    for &d in draws {
        h[d as usize] += 1.0 / draws.len() as f64;
    }
    h
}

/// The distribution `sampling::pick` draws from, by its rules: the allowed ids sorted by
/// logit (stable), the first `k`, softmax at temperature `t`, the shortest prefix whose
/// mass reaches `p`, renormalised.
fn expected(logits: &[f32], t: f64, k: usize, p: f64, banned: &[u32]) -> Vec<f64> {
    let mut ids: Vec<usize> = (0..logits.len())
        .filter(|&i| !banned.contains(&(i as u32)))
        .collect();
    ids.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    if k > 0 {
        ids.truncate(k);
    }
    let best = logits[ids[0]] as f64;
    let w: Vec<f64> = ids
        .iter()
        .map(|&i| ((logits[i] as f64 - best) / t).exp())
        .collect();
    let z: f64 = w.iter().sum();
    let mut keep = ids.len();
    let mut acc = 0.0;
    for (j, x) in w.iter().enumerate() {
        acc += x / z;
        if acc >= p {
            keep = j + 1;
            break;
        }
    }
    let z: f64 = w[..keep].iter().sum();
    let mut out = vec![0.0; logits.len()];
    for (j, &i) in ids[..keep].iter().enumerate() {
        out[i] = w[j] / z;
    }
    out
}

/// The device sampler draws from the distribution the host's `pick` draws from: the same
/// support (top-k and top-p cuts with their ties, SEP and NOT excluded) and frequencies
/// within sampling noise.
#[test]
fn device_sampling_draws_from_the_host_distribution() {
    use gptsan::generate::sampling::{pick, Rng};
    let v = 16usize;
    let (sep, not) = (v as u32 - 5, v as u32 - 4);
    let mut logits = vec![0.0f32, 2.0, 1.0, 3.0, 0.5, -1.0, 2.5, 1.5, 2.0, -0.5, 0.2];
    logits.extend([9.0, 9.0, 0.0, 1.0, 0.3]); // SEP and NOT the likeliest
    let n = 6000;
    for (t, k, p) in [
        (1.0, 3, 1.0), // ids 1 and 8 tie for the 3rd place: only id 1 is kept
        (1.0, 0, 0.6), // ids 1 and 8 tie at the cut: only id 1 is kept
        (0.5, 0, 1.0),
        (2.0, 5, 0.9),
        (1.0, 4, 1.0), // ids 1 and 8 take the 3rd and 4th places: both kept
    ] {
        let s = Strategy::Sample {
            temperature: t,
            top_k: k,
            top_p: p,
        };
        let want = expected(&logits, t, k, p, &[sep, not]);
        let device = histogram(&device_draws(&logits, &s, n), v);
        let mut rng = Rng::new(1);
        let host: Vec<u32> = (0..n)
            .map(|_| pick(&logits, &s, &[sep, not], &mut rng))
            .collect();
        let host = histogram(&host, v);
        let what = format!("t {t} k {k} p {p}");
        for (name, got) in [("device", &device), ("host", &host)] {
            for id in 0..v {
                assert!(
                    want[id] > 0.0 || got[id] == 0.0,
                    "{what}: the {name} drew id {id}, which is cut"
                );
                assert!(
                    want[id] < 0.01 || got[id] > 0.0,
                    "{what}: the {name} never drew id {id} (p = {})",
                    want[id]
                );
            }
            let tv: f64 = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .sum::<f64>()
                / 2.0;
            assert!(
                tv < 0.03,
                "{what}: the {name} is {tv} off\n{got:?}\n{want:?}"
            );
        }
    }
}
