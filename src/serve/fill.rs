//! `POST /v1/fill-mask`: `gptsan fill-mask` over HTTP. `{"text": "...[MASK]..."}` or
//! `{"ids": [SOT, ...]}` gives the filled text, every output token with its score, and
//! which outputs filled a mask.

use super::api::ApiError;
use super::forward::{Answer, Task};
use super::http::{forward, json_endpoint, parse_json, AppState};
use crate::cli::batch_input::decode_text;
use crate::infer::check_row;
use crate::infer::fill_mask::{check_ids, text_ids, Filled};
use axum::body::Bytes;
use axum::extract::State;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct FillRequest {
    pub text: Option<String>,
    pub ids: Option<Vec<i64>>,
}

#[derive(Serialize, Debug)]
pub struct FillResponse {
    /// The output tokens as text (masks filled).
    pub text: String,
    pub input_ids: Vec<u32>,
    pub output_ids: Vec<u32>,
    /// Each output id's spelling in the vocabulary.
    pub tokens: Vec<String>,
    /// `logits[i][input[i+1]]`, as `fill-mask` prints.
    pub scores: Vec<f32>,
    /// `log_softmax(logits[i])[output[i]]`.
    pub logprobs: Vec<f64>,
    /// Per output: true where it filled a mask.
    pub filled: Vec<bool>,
}

pub async fn fill_mask(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    json_endpoint("POST /v1/fill-mask", answer(&state, &body)).await
}

async fn answer(state: &AppState, body: &[u8]) -> Result<FillResponse, ApiError> {
    let request: FillRequest = parse_json(body)?;
    let ids = input_ids(state, request).map_err(|e| ApiError::bad_request(format!("{e:#}")))?;
    let Answer::Filled(f) = forward(state, Task::FillMask { ids }).await? else {
        return Err(ApiError::internal("the engine answered another question"));
    };
    Ok(response(state, f))
}

/// `[SOT] + tokens` with MSK for every mask, checked against the model.
fn input_ids(state: &AppState, request: FillRequest) -> anyhow::Result<Vec<u32>> {
    let cfg = &state.cfg;
    let ids = match (request.text, request.ids) {
        (Some(text), None) => {
            crate::cli::batch_input::check_tokenizer(&state.tok, cfg)?;
            text_ids(&state.tok, &text)?
        }
        (None, Some(ids)) => ids
            .iter()
            .map(|&i| u32::try_from(i).map_err(|_| anyhow::anyhow!("token id {i} is negative")))
            .collect::<anyhow::Result<_>>()?,
        _ => anyhow::bail!("give either text or ids"),
    };
    check_row(&ids, cfg)?;
    check_ids(&ids, (cfg.vocab_size - 6) as u32)?;
    Ok(ids)
}

fn response(state: &AppState, f: Filled) -> FillResponse {
    let msk = (state.cfg.vocab_size - 6) as u32;
    let filled = f.input_ids[1..].iter().map(|&i| i == msk).collect();
    let tokens = f
        .output_ids
        .iter()
        .map(|&id| {
            state
                .tok
                .id_to_token(id)
                .map_or_else(|| format!("#{id}"), str::to_string)
        })
        .collect();
    FillResponse {
        text: decode_text(&state.tok, &state.cfg, &f.output_ids).unwrap_or_default(),
        input_ids: f.input_ids,
        output_ids: f.output_ids,
        tokens,
        scores: f.scores,
        logprobs: f.logprobs,
        filled,
    }
}
