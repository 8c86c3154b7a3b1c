//! Data and model parallelism on the configuration users run (the built-in tiny config of
//! `gptsan train`): every mesh trains exactly like one device, and a collective that never
//! completes ends the run with one clear line and an intact checkpoint.

mod common;

use common::{gptsan_command as gptsan, losses, run_ok};
use std::path::Path;

/// `gptsan train --steps 10` with the default config on `mesh` (None: one device).
fn train_default(out: &Path, mesh: Option<(&str, &str)>) -> Vec<(u64, f64)> {
    let out_s = out.to_str().unwrap();
    let mut args = vec![
        "train",
        "--steps",
        "10",
        "--samples",
        "0",
        "--quiet",
        "--out",
        out_s,
    ];
    if let Some((m, devices)) = mesh {
        args.extend(["--mesh", m, "--devices", devices]);
    }
    run_ok(&args);
    losses(out)
}

#[test]
fn every_mesh_of_the_default_config_trains_like_one_device() {
    let dir = tempfile::tempdir().unwrap();
    let single = train_default(&dir.path().join("single"), None);
    assert_eq!(single.len(), 10);
    for (i, (mesh, devices)) in [("model=2", "2"), ("model=4", "4"), ("data=2,model=2", "4")]
        .into_iter()
        .enumerate()
    {
        let got = train_default(&dir.path().join(format!("mesh{i}")), Some((mesh, devices)));
        assert_eq!(got.len(), 10, "{mesh}");
        for ((s, x), (_, y)) in single.iter().zip(&got) {
            assert!(
                (x - y).abs() <= 1e-4 * x.abs(),
                "{mesh}, step {s}: one device {x} vs mesh {y}"
            );
        }
    }
}

#[test]
fn a_stuck_collective_stops_the_run_with_one_clear_line_and_an_intact_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let run_s = run.to_str().unwrap();
    let common = [
        "--mesh",
        "model=2",
        "--devices",
        "2",
        "--samples",
        "0",
        "--quiet",
    ];
    let first: Vec<&str> = [
        "train",
        "--steps",
        "4",
        "--checkpoint-every",
        "2",
        "--out",
        run_s,
    ]
    .into_iter()
    .chain(common)
    .collect();
    run_ok(&first);

    // A watchdog far shorter than one step stands in for a device that never arrives.
    let resume: Vec<&str> = ["train", "--steps", "8", "--resume", "--out", run_s]
        .into_iter()
        .chain(common)
        .collect();
    let out = gptsan(&resume)
        .env("GPTSAN_COLLECTIVE_TIMEOUT", "0.001")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "stderr:\n{err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(errors.len(), 1, "stderr:\n{err}");
    for part in [
        "program train_step on mesh data=1,model=2",
        "did not finish",
        "checkpoint of step 4",
        "intact",
    ] {
        assert!(
            errors[0].contains(part),
            "missing {part:?} in {}",
            errors[0]
        );
    }
    assert!(
        !err.contains("panicked") && !err.contains("Check failed"),
        "{err}"
    );
    assert_eq!(
        losses(&run).len(),
        4,
        "no step after the checkpoint was recorded"
    );

    // The checkpoint is usable: the run continues from it.
    let resumed = run_ok(&resume);
    assert!(String::from_utf8_lossy(&resumed.stderr).contains("(step 4)"));
    let steps: Vec<u64> = losses(&run).iter().map(|(s, _)| *s).collect();
    assert_eq!(steps, (1..=8).collect::<Vec<_>>());
}

/// The collectives of the default config's train step on `mesh`, compiled on 4 devices.
fn train_step_collectives(mesh: &str) -> Vec<runtime::CollectiveStat> {
    use gptsan::train::run::{configs_from_toml, parse_mesh, DEFAULT_CONFIG};
    use gptsan::train::step::{train_step_program, LossKind, StepSpec};
    let (cfg, train) = configs_from_toml(DEFAULT_CONFIG, "tiny").unwrap();
    let spec = StepSpec {
        batch: train.batch_size,
        len: train.seq_len,
        spout: false,
        optimizer: train.optimizer.clone(),
        loss: LossKind::Original,
        clip_norm: train.clip_norm,
        decay_all: false,
        training: true,
        frozen: Vec::new(),
        mesh: Some(parse_mesh(mesh).unwrap()),
        compute: hlo::DType::F32,
        loss_scale: Default::default(),
    };
    let device = gptsan::device::Device::shared().unwrap();
    let program = device
        .compile(&train_step_program(&cfg, &spec).unwrap())
        .unwrap();
    runtime::collectives(&program.executable().optimized_program().unwrap()).unwrap()
}

fn stat(stats: &[runtime::CollectiveStat], kind: &str) -> (usize, u64) {
    stats
        .iter()
        .find(|s| s.kind == kind)
        .map_or((0, 0), |s| (s.count, s.bytes))
}

/// Expert parallelism: tokens travel to their experts by all-to-all (two per switch layer
/// forward, and their transposes backward); only token activations are all-gathered (never
/// expert weights); the number of collectives is pinned so that it cannot grow unnoticed.
#[test]
fn the_model_axis_moves_tokens_by_all_to_all_and_nothing_more() {
    // tiny: 2 switch layers, batch 8 x 64 tokens of width 128 (f32).
    let tokens_bytes = 8 * 64 * 128 * 4;
    for mesh in ["model=4", "model=2"] {
        let stats = train_step_collectives(mesh);
        let kinds: Vec<&str> = stats.iter().map(|s| s.kind.as_str()).collect();
        assert_eq!(
            kinds,
            ["all-gather", "all-reduce", "all-to-all"],
            "{mesh}: {stats:?}"
        );
        assert!(stat(&stats, "all-to-all").0 >= 2 * 2, "{mesh}: {stats:?}");
        assert_eq!(
            stat(&stats, "all-gather"),
            (4, 4 * tokens_bytes),
            "{mesh}: all-gathers other than the tokens after each switch layer: {stats:?}"
        );
        let total: usize = stats.iter().map(|s| s.count).sum();
        assert!(
            total <= 18,
            "{mesh}: {total} collectives (was 18): {stats:?}"
        );
    }
    let stats = train_step_collectives("data=2,model=2");
    assert!(stat(&stats, "all-to-all").0 >= 2 * 2, "{stats:?}");
    let total: usize = stats.iter().map(|s| s.count).sum();
    assert!(
        total <= 40,
        "data=2,model=2: {total} collectives (was 40): {stats:?}"
    );
}
