//! `POST /v1/inspect`: which expert every token of a prompt was routed to in every switch
//! layer, how sure the router was, and which tokens were dropped for capacity (the values
//! of `gptsan forward`'s `router.{l}.*` outputs for the same ids).

use super::api::{tokenize, ApiError};
use super::forward::{Answer, RouterLayer, Task};
use super::http::{forward, json_endpoint, parse_json, AppState};
use crate::cli::generate::PromptSpec;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// `{"prompt": T, "prefix": P}` (tokenized as `generate` does) or `{"ids": [...]}` (used as
/// given; tokens before the first SEG are the prefix).
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct InspectRequest {
    pub prompt: Option<String>,
    pub prefix: Option<String>,
    pub ids: Option<Vec<i64>>,
}

#[derive(Serialize, Debug)]
pub struct InspectResponse {
    pub ids: Vec<i32>,
    /// Each id's spelling in the vocabulary.
    pub tokens: Vec<String>,
    /// One entry per switch layer.
    pub layers: Vec<RouterLayer>,
}

pub async fn inspect(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    json_endpoint("POST /v1/inspect", answer(&state, &body)).await
}

async fn answer(state: &AppState, body: &[u8]) -> Result<InspectResponse, ApiError> {
    let request: InspectRequest = parse_json(body)?;
    if request.prompt.is_none() && request.prefix.is_none() && request.ids.is_none() {
        return Err(ApiError::bad_request("give a prompt (and prefix) or ids"));
    }
    let spec = PromptSpec {
        prompt: request.prompt,
        prefix: request.prefix,
        ids: request.ids,
    };
    let prompt = tokenize(&spec, &state.tok, &state.cfg, 0).map_err(ApiError::bad_request)?;
    let task = Task::Inspect {
        ids: prompt.ids.clone(),
        types: prompt.types,
    };
    let Answer::Routing(layers) = forward(state, task).await? else {
        return Err(ApiError::internal("the engine answered another question"));
    };
    let tokens = prompt.ids.iter().map(|&id| spelling(state, id)).collect();
    Ok(InspectResponse {
        ids: prompt.ids,
        tokens,
        layers,
    })
}

/// The vocabulary's spelling of `id` (`#id` when the tokenizer lacks it).
fn spelling(state: &AppState, id: i32) -> String {
    u32::try_from(id)
        .ok()
        .and_then(|i| state.tok.id_to_token(i))
        .map_or_else(|| format!("#{id}"), str::to_string)
}
