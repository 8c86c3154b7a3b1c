//! Prompts that cannot share the batch run alone on the engine's generator, as `gptsan
//! generate` runs them: beam search (its hypotheses are the rows of a program of their
//! own) and spout-conditioned prompts (the spout takes a cache slot the batch rows lack).
//! The batch waits meanwhile; a beam's text is sent once the search ends.

use super::api::{FinishReason, Usage};
use super::engine::{Event, Job};
use super::text::TextStream;
use crate::cli::batch_input::decode_text;
use crate::generate::beam::BeamOptions;
use crate::generate::{GenerateOptions, Generator};
use crate::model::inputs::HostBatch;
use crate::model::ModelConfig;
use crate::tokenizer::Tokenizer;
use anyhow::Result;

/// Generates `job`'s text alone and sends its events.
pub fn run(gen: &mut Generator, tok: &Tokenizer, cfg: &ModelConfig, job: &Job) -> Result<()> {
    let p = &job.prompt;
    let s = &job.sampling;
    let n = p.ids.len();
    let batch = HostBatch {
        batch: 1,
        len: n,
        input_ids: p.ids.clone(),
        attention_mask: vec![1; n],
        token_type_ids: p.types.clone(),
        spout: s.spout.clone(),
    };
    let send = |e: Event| {
        let _ = job.events.send((job.index, e));
    };
    let mut text = TextStream::new(s.stop.clone());
    let tokens = if s.beam_width > 1 {
        let opts = BeamOptions {
            width: s.beam_width,
            max_new_tokens: s.max_tokens,
            num_results: 1,
            stop_at_eot: s.stop_at_eot,
        };
        let best = gen.beam_search(&batch, &opts)?;
        best.into_iter()
            .next()
            .map(|h| h.tokens)
            .unwrap_or_default()
    } else {
        let opts = GenerateOptions {
            max_new_tokens: s.max_tokens,
            strategy: s.strategy.clone(),
            seed: s.seed,
            stop_at_eot: s.stop_at_eot,
        };
        let mut so_far = Vec::new();
        let generation = gen.generate(&batch, &opts, false, |_, id| {
            so_far.push(id);
            let full = decode_text(tok, cfg, &so_far).unwrap_or_default();
            let delta = text.update(&full, false).delta;
            if !delta.is_empty() {
                send(Event::Text(delta));
            }
        })?;
        generation.tokens.into_iter().next().unwrap_or_default()
    };
    let full = decode_text(tok, cfg, &tokens).unwrap_or_default();
    let update = text.update(&full, true);
    if !update.delta.is_empty() {
        send(Event::Text(update.delta));
    }
    let eot = (cfg.vocab_size - 1) as u32;
    let ended = s.stop_at_eot && tokens.last() == Some(&eot);
    let reason = if update.stopped || ended {
        FinishReason::Stop
    } else {
        FinishReason::Length
    };
    send(Event::Done {
        text: text.text().to_string(),
        reason,
        usage: Usage {
            prompt_tokens: n,
            completion_tokens: tokens.len(),
            total_tokens: n + tokens.len(),
        },
    });
    Ok(())
}
