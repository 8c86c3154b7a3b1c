//! What XLA makes of the `small` train step (8 x 256 tokens, 36K vocabulary), read from
//! the optimized program the plugin returns: the tied head's loss never holds the logits
//! (or their gradient) of all tokens at once, and never transposes or copies them.

use gptsan::device::Device;
use gptsan::train::setup::load_configs;
use gptsan::train::step::{train_step_program, StepSpec};
use std::path::Path;

#[test]
fn the_head_loss_keeps_no_full_logits_and_moves_none() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (cfg, train) = load_configs(&root.join("configs/small.toml")).unwrap();
    let (batch, len) = (8, 256);
    let spec = StepSpec::benchmark(batch, len, &train, hlo::DType::F32);
    let device = Device::shared().unwrap();
    let program = device
        .compile(&train_step_program(&cfg, &spec).unwrap())
        .unwrap();
    let optimized = program.executable().optimized_program().unwrap();
    let instructions = runtime::instructions(&optimized).unwrap();

    let v = cfg.vocab_size;
    let tokens = batch * len;
    let elements = |dims: &[i64]| dims.iter().product::<i64>();
    let logits_sized: Vec<_> = instructions
        .iter()
        .filter(|i| i.dims.contains(&v) && elements(&i.dims) > v * (cfg.d_model + 1))
        .collect();
    // The chunks' logits are there (the check below is not vacuous): a dot's result,
    // or where our CPU kernels run, a result of the head's log-sum-exp custom call ...
    assert!(
        logits_sized
            .iter()
            .any(|i| matches!(i.opcode.as_str(), "dot" | "get-tuple-element")),
        "no logits-sized dot or custom-call result in the optimized train step"
    );
    for i in &logits_sized {
        // ... but never all tokens' logits at once,
        assert!(
            elements(&i.dims) < tokens * v,
            "{} of shape {:?} holds the logits of all {tokens} tokens",
            i.opcode,
            i.dims
        );
        // and no logits-sized value is transposed or copied.
        assert!(
            !matches!(i.opcode.as_str(), "transpose" | "copy"),
            "a {} of logits-sized {:?}",
            i.opcode,
            i.dims
        );
    }
}
