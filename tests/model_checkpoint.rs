//! Checkpoint loading and saving against the reference port's fixture model.

mod common;

use gptsan::model::checkpoint::{load_model_dir, read_safetensors, save_model_dir, WEIGHTS_FILE};
use gptsan::model::{param_specs, RoutingSemantics};

#[test]
fn loads_the_hf_fixture_folder_and_round_trips() {
    let (cfg, params) = load_model_dir(&common::hf_tiny()).expect("fixture loads");
    assert_eq!(cfg.router.semantics, RoutingSemantics::Hf);
    assert_eq!(cfg.num_experts, 4);
    let specs = param_specs(&cfg);
    assert_eq!(params.len(), specs.len());
    for (s, p) in specs.iter().zip(&params) {
        assert_eq!(p.dims(), s.dims.as_slice(), "{}", s.name);
    }
    // Stacked experts: expert 2's wi equals the port's expert_2 tensor.
    let raw = read_safetensors(&common::hf_tiny().join(WEIGHTS_FILE)).unwrap();
    let e2 = raw["model.blocks.0.feed_forward.mlp.experts.expert_2.wi.weight"]
        .to_vec::<f32>()
        .unwrap();
    let idx = specs
        .iter()
        .position(|s| s.name == "model.blocks.0.feed_forward.mlp.experts.wi.weight")
        .unwrap();
    let stacked = params[idx].to_vec::<f32>().unwrap();
    assert_eq!(&stacked[2 * e2.len()..3 * e2.len()], e2.as_slice());

    let dir = tempfile::tempdir().unwrap();
    save_model_dir(dir.path(), &cfg, &params).unwrap();
    let again = read_safetensors(&dir.path().join(WEIGHTS_FILE)).unwrap();
    for (name, lit) in &raw {
        assert_eq!(again.get(name), Some(lit), "{name} differs after save");
    }
    let (cfg2, params2) = load_model_dir(dir.path()).unwrap();
    assert_eq!(cfg2, cfg);
    assert_eq!(params2, params);
}

#[test]
fn corrupt_and_mismatched_checkpoints_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(common::hf_tiny().join(WEIGHTS_FILE)).unwrap();
    std::fs::copy(
        common::hf_tiny().join("config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    std::fs::write(dir.path().join(WEIGHTS_FILE), &bytes[..bytes.len() / 2]).unwrap();
    let err = format!("{:#}", load_model_dir(dir.path()).unwrap_err());
    assert!(err.contains("not a valid safetensors file"), "{err}");

    // A config asking for more experts than the file has.
    std::fs::write(dir.path().join(WEIGHTS_FILE), &bytes).unwrap();
    let cfg = std::fs::read_to_string(common::hf_tiny().join("config.json")).unwrap();
    std::fs::write(
        dir.path().join("config.json"),
        cfg.replace("\"d_model\": 32", "\"d_model\": 64"),
    )
    .unwrap();
    let err = format!("{:#}", load_model_dir(dir.path()).unwrap_err());
    assert!(
        err.contains("has shape") && err.contains("config needs"),
        "{err}"
    );
}
