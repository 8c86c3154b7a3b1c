//! The texts printed at the end of a run, so a person sees what the model learned.

use crate::device::Device;
use crate::generate::sampling::Strategy;
use crate::generate::{GenerateOptions, Generator};
use crate::model::inputs::HostBatch;
use crate::model::ModelConfig;
use crate::tokenizer::Tokenizer;
use anyhow::Result;
use hlo::Literal;

/// A few generated texts from the trained parameters.
pub(crate) fn sample_texts(
    device: &Device,
    cfg: &ModelConfig,
    params: &[Literal],
    tok: &Tokenizer,
    n: usize,
    tokens: usize,
    seed: u64,
) -> Result<Vec<String>> {
    let prompts = ["吾輩は", "今日は", "猫が"];
    let mut g = Generator::new(device, cfg, params)?;
    let sp = tok.special();
    let mut out = Vec::new();
    for i in 0..n {
        let prompt = prompts[i % prompts.len()];
        let mut ids = vec![sp.sot as i32, sp.seg as i32];
        ids.extend(tok.encode(prompt, false).into_iter().map(|t| t as i32));
        let len = ids.len();
        let batch = HostBatch {
            batch: 1,
            len,
            input_ids: ids,
            attention_mask: vec![1; len],
            token_type_ids: (0..len).map(|i| (i == 0) as i32).collect(),
            spout: None,
        };
        let opts = GenerateOptions {
            max_new_tokens: tokens,
            strategy: Strategy::Sample {
                temperature: 0.8,
                top_k: 40,
                top_p: 1.0,
            },
            seed: seed + i as u64,
            stop_at_eot: true,
        };
        let gen = g.generate(&batch, &opts, false, |_, _| {})?;
        let text = tok.decode_with(
            &gen.tokens[0],
            &crate::tokenizer::DecodeOptions::generated(),
        )?;
        out.push(format!("{prompt}{text}"));
    }
    Ok(out)
}
