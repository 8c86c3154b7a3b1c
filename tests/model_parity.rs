//! The model against the reference port's fixture (../shared/fixtures/hf-tiny): every
//! forward case's logits, hidden states and router choices, and the loss.

mod common;

use gptsan::model::checkpoint::{load_model_dir, read_safetensors};
use gptsan::model::inputs::{int_rows, HostBatch, PositionRule};
use gptsan::model::programs::{forward_args, forward_program, ForwardShape};
use hlo::Literal;
use std::collections::BTreeMap;

fn max_abs_diff(a: &Literal, b: &Literal) -> f64 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    a.to_f64_vec()
        .iter()
        .zip(b.to_f64_vec())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

pub fn host_batch(cases: &BTreeMap<String, Literal>, case: &str) -> (HostBatch, Vec<i32>) {
    let get = |k: &str| cases.get(&format!("{case}/{k}"));
    let ids_lit = get("input.input_ids").expect("input ids");
    let (b, t) = (ids_lit.dims()[0] as usize, ids_lit.dims()[1] as usize);
    let ids = int_rows(ids_lit, "input_ids").unwrap();
    let mask = get("input.attention_mask")
        .map(|l| int_rows(l, "mask").unwrap())
        .unwrap_or(vec![1; b * t]);
    let types = get("input.token_type_ids")
        .map(|l| int_rows(l, "types").unwrap())
        .unwrap_or(vec![0; b * t]);
    let labels = get("labels")
        .map(|l| int_rows(l, "labels").unwrap())
        .unwrap_or(vec![-100; b * t]);
    let spout = get("input.spout").map(|l| l.to_vec::<f32>().unwrap());
    (
        HostBatch {
            batch: b,
            len: t,
            input_ids: ids,
            attention_mask: mask,
            token_type_ids: types,
            spout,
        },
        labels,
    )
}

type Runner = dyn Fn(&hlo::Function, &[Literal]) -> Vec<Literal>;

pub fn check_forward_cases(run: &Runner) {
    let (cfg, params) = load_model_dir(&common::hf_tiny()).unwrap();
    let cases = read_safetensors(&common::hf_tiny().join("cases.safetensors")).unwrap();
    for case in ["plain", "prefix", "spout", "padding", "spout_leftpad"] {
        let (batch, labels) = host_batch(&cases, case);
        let positions = batch.positions(cfg.context, PositionRule::Reference);
        let shape = ForwardShape {
            batch: batch.batch as i64,
            len: batch.len as i64,
            spout: batch.spout.is_some(),
            grads: false,
            loss: true,
            weights: hlo::DType::F32,
        };
        let f = forward_program(&cfg, shape).unwrap();
        let args = forward_args(&params, &batch, &positions, &labels).unwrap();
        let out = run(&f, &args);
        let names: Vec<String> = f.outputs.iter().map(|o| o.name.clone().unwrap()).collect();
        let get = |n: &str| &out[names.iter().position(|x| x == n).unwrap()];
        let mut checked = 0;
        for (key, expected) in cases.range(format!("{case}/")..format!("{case}0")) {
            let name = key.trim_start_matches(&format!("{case}/"));
            let ours = match name {
                "logits" | "last_hidden_state" | "loss" => get(name),
                n if n.starts_with("hidden_states.") => get(n),
                n if n.starts_with("router.")
                    && (n.ends_with(".probs")
                        || n.ends_with(".expert")
                        || n.ends_with(".kept")) =>
                {
                    get(n)
                }
                _ => continue,
            };
            let diff = max_abs_diff(ours, expected);
            assert!(diff <= 1e-4, "case {case}: {name} differs by {diff}");
            checked += 1;
        }
        assert!(
            checked >= 10,
            "case {case}: only {checked} tensors compared"
        );
    }
}

#[test]
fn forward_cases_match_the_reference_on_the_interpreter() {
    check_forward_cases(&|f, args| hlo::interpret::evaluate(f, args).expect("interpreter runs"));
}

/// Gradients of the port's loss for the `train_plain` / `train_spout` cases.
pub fn check_gradients(run: &Runner, train_case: &str, source_case: &str) {
    let (cfg, params) = load_model_dir(&common::hf_tiny()).unwrap();
    let cases = read_safetensors(&common::hf_tiny().join("cases.safetensors")).unwrap();
    let (batch, labels) = host_batch(&cases, source_case);
    let positions = batch.positions(cfg.context, PositionRule::Reference);
    let shape = ForwardShape {
        batch: 2,
        len: 20,
        spout: batch.spout.is_some(),
        grads: true,
        loss: true,
        weights: hlo::DType::F32,
    };
    let f = forward_program(&cfg, shape).unwrap();
    let out = run(
        &f,
        &forward_args(&params, &batch, &positions, &labels).unwrap(),
    );
    let names: Vec<String> = f.outputs.iter().map(|o| o.name.clone().unwrap()).collect();
    let grads: Vec<Literal> = names
        .iter()
        .zip(&out)
        .filter(|(n, _)| n.starts_with("grad.model") || *n == "grad.final_logits_bias")
        .map(|(_, l)| l.clone())
        .collect();
    let port = gptsan::model::checkpoint::tensors_for_save(&cfg, &grads);
    let mut checked = 0;
    for (name, ours) in &port {
        if let Some(expected) = cases.get(&format!("{train_case}/grad.{name}")) {
            let diff = max_abs_diff(ours, expected);
            assert!(diff <= 1e-4, "{train_case}: grad.{name} differs by {diff}");
            checked += 1;
        }
    }
    assert!(checked >= 10, "only {checked} gradients compared");
    let loss = &out[names.iter().position(|n| n == "loss").unwrap()];
    assert!(max_abs_diff(loss, &cases[&format!("{train_case}/loss")]) <= 1e-4);
    let norm = &out[names.iter().position(|n| n == "grad_global_norm").unwrap()];
    assert!(max_abs_diff(norm, &cases[&format!("{train_case}/grad_global_norm")]) <= 1e-4);
}

#[test]
fn gradients_match_the_reference_on_the_interpreter() {
    check_gradients(
        &|f, args| hlo::interpret::evaluate(f, args).expect("interpreter runs"),
        "train_plain",
        "plain",
    );
}

fn on_device(f: &hlo::Function, args: &[Literal]) -> Vec<Literal> {
    let dev = gptsan::device::Device::shared().expect("PJRT CPU plugin");
    dev.compile(f)
        .expect("compiles")
        .run_literals(args)
        .expect("runs")
}

#[test]
fn forward_cases_match_the_reference_on_the_cpu_plugin() {
    check_forward_cases(&on_device);
}

#[test]
fn gradients_match_the_reference_on_the_cpu_plugin() {
    check_gradients(&on_device, "train_plain", "plain");
    check_gradients(&on_device, "train_spout", "spout");
}

/// One AdamW step configured as the fixture (lr 1e-3, betas 0.9/0.999, eps 1e-8, weight
/// decay 0.01 on every parameter, as PyTorch's default group does) gives the fixture's
/// parameters, and the loss on the same batch afterwards.
fn check_adamw_step(train_case: &str, source_case: &str, frozen_extra: &[&str]) {
    use gptsan::train::optimizer::OptimizerConfig;
    use gptsan::train::step::{split_params, train_step_program, LossKind, StepSpec};
    let (cfg, params) = load_model_dir(&common::hf_tiny()).unwrap();
    let cases = read_safetensors(&common::hf_tiny().join("cases.safetensors")).unwrap();
    let (batch, labels) = host_batch(&cases, source_case);
    let positions = batch.positions(cfg.context, PositionRule::Reference);
    // The port's final_logits_bias is a buffer; parameters without a gradient are skipped
    // by torch's AdamW (no decay either).
    let mut frozen = vec!["final_logits_bias".to_string()];
    frozen.extend(frozen_extra.iter().map(|s| s.to_string()));
    let spec = StepSpec {
        batch: 2,
        len: 20,
        spout: batch.spout.is_some(),
        optimizer: OptimizerConfig::Adamw {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        },
        loss: LossKind::Plain,
        clip_norm: 0.0,
        decay_all: true,
        training: false,
        frozen: frozen.clone(),
        mesh: None,
        compute: hlo::DType::F32,
        loss_scale: Default::default(),
    };
    let f = train_step_program(&cfg, &spec).unwrap();
    let (trainable, frozen_specs) = split_params(&cfg, &frozen);
    let specs = gptsan::model::param_specs(&cfg);
    let value = |name: &str| params[specs.iter().position(|s| s.name == name).unwrap()].clone();
    let mut args: Vec<Literal> = trainable.iter().map(|s| value(&s.name)).collect();
    args.extend(frozen_specs.iter().map(|s| value(&s.name)));
    for s in &trainable {
        for dims in spec.optimizer.state_dims(&s.dims) {
            args.push(Literal::zeros(hlo::Shape::new(hlo::DType::F32, dims)));
        }
    }
    args.push(Literal::scalar(1.0f32));
    args.push(Literal::scalar(1e-3f32));
    args.push(Literal::from_slice(&[2], &[0u64, 0]).unwrap());
    let fwd = forward_args(&[], &batch, &positions, &labels).unwrap();
    args.extend(fwd);
    let out = on_device(&f, &args);
    let loss = &out[f
        .outputs
        .iter()
        .position(|o| o.name.as_deref() == Some("loss"))
        .unwrap()];
    assert!(max_abs_diff(loss, &cases[&format!("{train_case}/loss")]) <= 1e-4);

    // Parameters after the step, in our order, then in the port's names.
    let mut after: Vec<Literal> = Vec::new();
    for s in &specs {
        match trainable.iter().position(|t| t.name == s.name) {
            Some(i) => after.push(out[i].clone()),
            None => after.push(value(&s.name)),
        }
    }
    let port = gptsan::model::checkpoint::tensors_for_save(&cfg, &after);
    let mut checked = 0;
    for (name, ours) in &port {
        if let Some(expected) = cases.get(&format!("{train_case}/param_after_step.{name}")) {
            let diff = max_abs_diff(ours, expected);
            assert!(
                diff <= 1e-4,
                "{train_case}: {name} after the step differs by {diff}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 10, "only {checked} parameters compared");

    let fwd_f = forward_program(
        &cfg,
        ForwardShape {
            batch: 2,
            len: 20,
            spout: batch.spout.is_some(),
            grads: false,
            loss: true,
            weights: hlo::DType::F32,
        },
    )
    .unwrap();
    let res = on_device(
        &fwd_f,
        &forward_args(&after, &batch, &positions, &labels).unwrap(),
    );
    let loss_after = &res[fwd_f
        .outputs
        .iter()
        .position(|o| o.name.as_deref() == Some("loss"))
        .unwrap()];
    let diff = max_abs_diff(loss_after, &cases[&format!("{train_case}/loss_after_step")]);
    assert!(
        diff <= 1e-4,
        "{train_case}: loss after the step differs by {diff}"
    );
}

#[test]
fn one_adamw_step_matches_the_reference() {
    let spout: Vec<String> = (0..=16)
        .step_by(2)
        .map(|i| format!("model.spout.{i}.weight"))
        .collect();
    let spout_refs: Vec<&str> = spout.iter().map(String::as_str).collect();
    check_adamw_step("train_plain", "plain", &spout_refs);
    check_adamw_step("train_spout", "spout", &[]);
}

/// Four rows of 64 tokens (enough for the masked attention composite) with a spout, a
/// bidirectional prefix and padding: the forward pass and the gradients through our
/// kernels (attention, the experts over their filled slots, the head's product) equal
/// the same program with XLA's ops, in the model's `hf` routing and in `original` routing
/// (groups of 128 tokens, its evaluation capacity factor).
#[test]
fn the_kernels_give_the_ops_results() {
    let (cfg, params) = load_model_dir(&common::hf_tiny()).unwrap();
    let mut original = cfg.clone();
    original.router.semantics = gptsan::model::RoutingSemantics::Original;
    original.router.group_size = 128;
    for cfg in [cfg, original] {
        kernels_match_ops(&cfg, &params);
    }
}

/// `f`'s outputs for `args` with our kernels (the device's composite calls), then with
/// every composite as XLA's ops.
fn with_kernels_and_with_ops(
    dev: &gptsan::device::Device,
    f: &hlo::Function,
    args: &[Literal],
) -> (Vec<Literal>, Vec<Literal>) {
    let kernel = dev.compile(f).unwrap().run_literals(args).unwrap();
    let ops = dev
        .compile_with(f, &hlo::EmitOptions::default())
        .unwrap()
        .run_literals(args)
        .unwrap();
    (kernel, ops)
}

fn kernels_match_ops(cfg: &gptsan::model::ModelConfig, params: &[hlo::Literal]) {
    let dev = gptsan::device::Device::shared().expect("PJRT CPU plugin");
    // 256 positions: the head's logits go through the f32 product composite too.
    let (rows, len) = (4usize, 64usize);
    let n = rows * len;
    let batch = HostBatch {
        batch: rows,
        len,
        input_ids: (0..n).map(|i| (i * 7919 % 35_000) as i32).collect(),
        attention_mask: (0..n).map(|i| (i < n - 5) as i32).collect(),
        token_type_ids: (0..n).map(|i| (i % len < 10) as i32).collect(),
        spout: Some((0..rows * 16).map(|i| (i as f32 * 0.37).sin()).collect()),
    };
    let labels: Vec<i32> = (0..n)
        .map(|i| {
            if i < n - 5 {
                (i * 31 % 36_000) as i32
            } else {
                -100
            }
        })
        .collect();
    let positions = batch.positions(cfg.context, PositionRule::Reference);
    let shape = ForwardShape {
        batch: rows as i64,
        len: len as i64,
        spout: true,
        grads: true,
        loss: true,
        weights: hlo::DType::F32,
    };
    let f = forward_program(cfg, shape).unwrap();
    let args = forward_args(params, &batch, &positions, &labels).unwrap();
    let opts = dev.emit_options(&f);
    if opts.composite_calls.is_empty() {
        eprintln!("no kernel on this machine: nothing to compare");
        return;
    }
    let text = hlo::to_stablehlo(&f, &opts).unwrap();
    let switch_layers = cfg.num_switch_layers as usize;
    for (target, count) in [
        ("@gptsan_masked_attention(", cfg.num_layers() as usize),
        ("@gptsan_masked_attention_grad(", cfg.num_layers() as usize),
        ("@gptsan_expert_mlp(", switch_layers),
        ("@gptsan_expert_mlp_grad(", switch_layers),
        ("@gptsan_f32_matmul_nt(", 1),
    ] {
        assert_eq!(text.matches(target).count(), count, "{target}");
    }
    let (kernel, ops) = with_kernels_and_with_ops(dev, &f, &args);
    let mut grads = 0;
    for (o, (a, b)) in f.outputs.iter().zip(kernel.iter().zip(&ops)) {
        let name = o.name.clone().unwrap_or_default();
        if name.starts_with("router.") && name.ends_with(".expert") {
            assert_eq!(a.to_f64_vec(), b.to_f64_vec(), "{name}");
            continue;
        }
        // Relative to the output's largest value: measured at most 1.5e-6 for every
        // output; a kernel off by 0.1% in its forward normalisation or in `dq` makes
        // the embedding's gradient differ by 2e-3 or 2e-4.
        let scale = b.to_f64_vec().iter().fold(1e-30f64, |m, x| m.max(x.abs()));
        let diff = max_abs_diff(a, b) / scale;
        assert!(
            diff <= 5e-6,
            "{name} differs by {diff:e} of its largest value"
        );
        grads += name.starts_with("grad.") as usize;
    }
    assert!(grads >= 10, "only {grads} gradients compared");
}

/// The train step's head loss (cross entropy and z-loss of the tied head, chunk by
/// chunk) and its gradients through the head's kernels equal the same program with
/// XLA's ops: two rows of 600 tokens (a full 512-token chunk and a partial one), a
/// 1,000-word vocabulary (a partial last block of the gradient kernel) and unlabelled
/// tokens.
#[test]
fn the_head_loss_kernels_give_the_ops_results() {
    use gptsan::model::loss::chunked_head_loss;
    use hlo::{Builder, DType, Shape};
    let dev = gptsan::device::Device::shared().expect("PJRT CPU plugin");
    let (rows, len, d, v) = (2i64, 600i64, 20i64, 1000i64);
    let b = Builder::new("head_loss");
    let f32s = |dims: &[i64]| Shape::new(DType::F32, dims.to_vec());
    let h = b.parameter("h", f32s(&[rows, len, d]));
    let wte = b.parameter("wte", f32s(&[v, d]));
    let bias = b.parameter("bias", f32s(&[1, v]));
    let labels = b.parameter("labels", Shape::new(DType::S32, vec![rows, len]));
    let loss = chunked_head_loss(&h, &wte, &bias, &labels);
    let total = loss.ce.add(&loss.z.mul(&b.scalar(0.01, DType::F32)));
    let grads = hlo::vjp(
        std::slice::from_ref(&total),
        &[b.scalar(1.0, DType::F32)],
        &[h.clone(), wte.clone(), bias.clone()],
    )
    .unwrap();
    let f = b
        .build(&[&loss.ce, &loss.z, &grads[0], &grads[1], &grads[2]])
        .unwrap();
    let opts = dev.emit_options(&f);
    if !opts.composite_calls.contains_key("head_logsumexp") {
        eprintln!("no head kernel on this machine: nothing to compare");
        return;
    }
    let text = hlo::to_stablehlo(&f, &opts).unwrap();
    assert_eq!(text.matches("@gptsan_head_logsumexp(").count(), 2);
    assert_eq!(text.matches("@gptsan_head_logsumexp_grad(").count(), 2);
    let values = |n: i64, seed: usize, scale: f32| -> Vec<f32> {
        (0..n as usize)
            .map(|i| ((i * 7919 + seed * 104_729) % 1999) as f32 / 999.5 - 1.0)
            .map(|x| x * scale)
            .collect()
    };
    let label_ids: Vec<i32> = (0..(rows * len) as usize)
        .map(|i| {
            if i % 7 == 3 {
                -100
            } else {
                (i * 31 % 1000) as i32
            }
        })
        .collect();
    let args = [
        Literal::from_slice(&[rows, len, d], &values(rows * len * d, 1, 1.0)).unwrap(),
        Literal::from_slice(&[v, d], &values(v * d, 2, 0.5)).unwrap(),
        Literal::from_slice(&[1, v], &values(v, 3, 0.5)).unwrap(),
        Literal::from_slice(&[rows, len], &label_ids).unwrap(),
    ];
    let (kernel, ops) = with_kernels_and_with_ops(dev, &f, &args);
    for (name, (a, b)) in ["ce", "z", "dh", "dwte", "dbias"]
        .iter()
        .zip(kernel.iter().zip(&ops))
    {
        let scale = b.to_f64_vec().iter().fold(1e-30f64, |m, x| m.max(x.abs()));
        let diff = max_abs_diff(a, b) / scale;
        assert!(
            diff <= 2e-6,
            "{name} differs by {diff:e} of its largest value"
        );
    }
}
