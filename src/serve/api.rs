//! The OpenAI-style completion request and response, and the checks a request passes
//! before it reaches the engine: every field is validated and every prompt tokenized
//! here, so the engine only ever sees prompts that fit the model.

use crate::cli::generate::{prompt_ids, PromptSpec};
use crate::generate::sampling::Strategy;
use crate::model::ModelConfig;
use crate::tokenizer::Tokenizer;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

/// `POST /v1/completions` body. Unknown fields are ignored, as OpenAI clients send
/// fields (`user`, `logit_bias`, ...) that do not change greedy or sampled text here.
#[derive(Deserialize, Debug)]
pub struct CompletionRequest {
    pub prompt: Option<Prompt>,
    pub max_tokens: Option<usize>,
    /// 0 means greedy.
    pub temperature: Option<f64>,
    /// 0 (or -1, as some clients send) means no top-k cut.
    pub top_k: Option<i64>,
    pub top_p: Option<f64>,
    pub seed: Option<u64>,
    pub stop: Option<Stop>,
    #[serde(default)]
    pub stream: bool,
    /// Only 1 is supported (one choice per prompt).
    pub n: Option<u64>,
    /// Keep generating past the end-of-text token (fixed token counts, for benchmarks).
    #[serde(default)]
    pub ignore_eos: bool,
    /// Bidirectional prefix text for text prompts (prefix-LM, as `generate --prefix`).
    pub prefix: Option<String>,
    /// Beam search with this many hypotheses (1 or absent: no beam search).
    pub beam_width: Option<usize>,
    /// Conditions on spout class K (a one-hot spout, as `generate --spout onehot:K`).
    pub spout_class: Option<i64>,
}

/// OpenAI's four prompt forms: text, texts, token ids, lists of token ids.
#[derive(Deserialize, Debug)]
#[serde(untagged)]
pub enum Prompt {
    Text(String),
    Texts(Vec<String>),
    Ids(Vec<i64>),
    IdLists(Vec<Vec<i64>>),
}

#[derive(Deserialize, Debug)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

/// Defaults follow OpenAI (16 tokens, temperature 1) and `gptsan generate` (top-k 120).
const DEFAULT_MAX_TOKENS: usize = 16;
const DEFAULT_TOP_K: usize = 120;
/// OpenAI allows at most four stop sequences.
const MAX_STOPS: usize = 4;

/// How one request's prompts are continued (shared by all of them).
#[derive(Clone, Debug)]
pub struct Sampling {
    pub strategy: Strategy,
    pub seed: u64,
    pub max_tokens: usize,
    pub stop: Vec<String>,
    pub stop_at_eot: bool,
    /// Beam search width (1: sample or greedy by `strategy`).
    pub beam_width: usize,
    /// The spout vector, for models with a spout.
    pub spout: Option<Vec<f32>>,
}

impl Sampling {
    /// Whether a prompt must run alone (beam search, or a spout) instead of in the batch.
    pub fn solo(&self) -> bool {
        self.beam_width > 1 || self.spout.is_some()
    }
}

/// One tokenized prompt: ids and prefix flags, exactly as `gptsan generate` builds them.
#[derive(Clone, Debug)]
pub struct PromptIds {
    pub ids: Vec<i32>,
    pub types: Vec<i32>,
}

/// A request that passed every check.
#[derive(Debug)]
pub struct Validated {
    pub prompts: Vec<PromptIds>,
    pub sampling: Sampling,
    pub stream: bool,
}

/// A JSON error `{"error": {"message", "type"}}` with its HTTP status.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub kind: &'static str,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
        }
    }

    pub fn busy(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: message.into(),
            kind: "server_busy",
        }
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: message.into(),
            kind: "server_error",
        }
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
            kind: "not_found",
        }
    }

    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({ "error": { "message": self.message, "type": self.kind } })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body())).into_response()
    }
}

/// Parses a request body; malformed JSON and wrongly typed fields are both 400s, told
/// apart in the message.
pub fn parse(body: &[u8]) -> Result<CompletionRequest, ApiError> {
    super::http::parse_json(body)
}

impl CompletionRequest {
    /// Checks every field and tokenizes the prompts for `cfg`'s context and vocabulary.
    pub fn validate(self, tok: &Tokenizer, cfg: &ModelConfig) -> Result<Validated, ApiError> {
        if self.n.is_some_and(|n| n != 1) {
            return Err(ApiError::bad_request("n: only 1 is supported"));
        }
        let mut sampling = self.sampling()?;
        sampling.spout = spout(self.spout_class, cfg)?;
        let specs = prompt_specs(self.prompt, self.prefix)?;
        let room = 1 + sampling.spout.is_some() as usize;
        let prompts = specs
            .iter()
            .enumerate()
            .map(|(k, p)| tokenize(p, tok, cfg, room).map_err(|m| at_prompt(k, specs.len(), m)))
            .collect::<Result<_, _>>()?;
        Ok(Validated {
            prompts,
            sampling,
            stream: self.stream,
        })
    }

    fn sampling(&self) -> Result<Sampling, ApiError> {
        let max_tokens = self.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS);
        if max_tokens == 0 {
            return Err(ApiError::bad_request("max_tokens must be at least 1"));
        }
        let temperature = self.temperature.unwrap_or(1.0);
        if !temperature.is_finite() || temperature < 0.0 {
            return Err(ApiError::bad_request("temperature must be 0 or more"));
        }
        let top_p = self.top_p.unwrap_or(1.0);
        if !(top_p > 0.0 && top_p <= 1.0) {
            return Err(ApiError::bad_request("top_p must be in (0, 1]"));
        }
        let top_k = match self.top_k {
            None => DEFAULT_TOP_K,
            Some(k) if k == -1 || k == 0 => 0,
            Some(k) if k > 0 => k as usize,
            Some(k) => return Err(ApiError::bad_request(format!("top_k {k} is negative"))),
        };
        let stop = match &self.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s.clone()],
            Some(Stop::Many(v)) => v.clone(),
        };
        if stop.len() > MAX_STOPS || stop.iter().any(String::is_empty) {
            return Err(ApiError::bad_request(
                "stop must be at most 4 non-empty strings",
            ));
        }
        let beam_width = self.beam_width.unwrap_or(1);
        if beam_width == 0 {
            return Err(ApiError::bad_request("beam_width must be at least 1"));
        }
        let strategy = if temperature == 0.0 {
            Strategy::Greedy
        } else {
            Strategy::Sample {
                temperature,
                top_k,
                top_p,
            }
        };
        Ok(Sampling {
            strategy,
            seed: self.seed.unwrap_or(0),
            max_tokens,
            stop,
            stop_at_eot: !self.ignore_eos,
            beam_width,
            spout: None,
        })
    }
}

/// The one-hot spout of class `class`, checked against the model.
fn spout(class: Option<i64>, cfg: &ModelConfig) -> Result<Option<Vec<f32>>, ApiError> {
    let Some(k) = class else {
        return Ok(None);
    };
    if !cfg.has_spout() {
        return Err(ApiError::bad_request(
            "spout_class: this model has no spout",
        ));
    }
    let width = cfg.spout_width;
    if k < 0 || k >= width {
        return Err(ApiError::bad_request(format!(
            "spout_class {k} is out of range for a spout width of {width}"
        )));
    }
    Ok(Some((0..width).map(|i| (i == k) as i32 as f32).collect()))
}

/// The prompts of a request as `generate`'s prompt specs (text or ids), none empty;
/// `prefix` goes with every text prompt.
fn prompt_specs(
    prompt: Option<Prompt>,
    prefix: Option<String>,
) -> Result<Vec<PromptSpec>, ApiError> {
    if prefix.is_some() && matches!(prompt, Some(Prompt::Ids(_) | Prompt::IdLists(_))) {
        return Err(ApiError::bad_request(
            "prefix goes with text prompts; put a prefix into ids before the first SEG",
        ));
    }
    let text = |t: String| PromptSpec {
        prompt: Some(t),
        prefix: prefix.clone(),
        ..PromptSpec::default()
    };
    let ids = |i: Vec<i64>| PromptSpec {
        ids: Some(i),
        ..PromptSpec::default()
    };
    let specs: Vec<PromptSpec> = match prompt {
        None => return Err(ApiError::bad_request("prompt is required")),
        Some(Prompt::Text(t)) => vec![text(t)],
        Some(Prompt::Texts(v)) => v.into_iter().map(text).collect(),
        Some(Prompt::Ids(v)) => vec![ids(v)],
        Some(Prompt::IdLists(v)) => v.into_iter().map(ids).collect(),
    };
    if specs.is_empty() {
        return Err(ApiError::bad_request("the prompt list is empty"));
    }
    Ok(specs)
}

/// Prefixes a prompt's error with its index when the request has several.
fn at_prompt(k: usize, count: usize, message: String) -> ApiError {
    if count > 1 {
        ApiError::bad_request(format!("prompt {k}: {message}"))
    } else {
        ApiError::bad_request(message)
    }
}

/// An empty text or id list (`generate` would still add SOT and SEG to an empty text).
fn is_empty(p: &PromptSpec) -> bool {
    let blank = |t: &Option<String>| t.as_deref().unwrap_or_default().is_empty();
    (p.prompt.is_some() && blank(&p.prompt) && blank(&p.prefix))
        || p.ids.as_ref().is_some_and(Vec::is_empty)
}

/// One prompt's ids, as `generate` makes them, checked against the model; `room`: cache
/// slots the prompt must leave free (a new token, a spout).
pub fn tokenize(
    p: &PromptSpec,
    tok: &Tokenizer,
    cfg: &ModelConfig,
    room: usize,
) -> Result<PromptIds, String> {
    if is_empty(p) {
        return Err("the prompt is empty".into());
    }
    let (ids, types) = prompt_ids(p, tok, cfg).map_err(|e| format!("{e:#}"))?;
    if (ids.len() + room) as i64 > cfg.context {
        return Err(match room {
            0 => format!(
                "the prompt has {} tokens, more than the model's context of {}",
                ids.len(),
                cfg.context
            ),
            _ => format!(
                "the prompt has {} tokens; the model's context of {} leaves no room for a new token",
                ids.len(),
                cfg.context
            ),
        });
    }
    if let Some(bad) = ids.iter().find(|&&i| i < 0 || i as i64 >= cfg.vocab_size) {
        return Err(format!(
            "token id {bad} is out of range for a vocabulary of {}",
            cfg.vocab_size
        ));
    }
    Ok(PromptIds { ids, types })
}

/// Why a choice ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FinishReason {
    /// End of text or a stop sequence.
    Stop,
    /// `max_tokens` or the context was reached.
    Length,
}

#[derive(Serialize, Debug, Clone)]
pub struct Choice {
    pub text: String,
    pub index: usize,
    pub finish_reason: Option<FinishReason>,
    pub logprobs: Option<()>,
}

#[derive(Serialize, Debug, Clone, Copy, Default)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
}

/// A whole completion, or one server-sent chunk of it (same shape, no usage).
#[derive(Serialize, Debug, Clone)]
pub struct Completion {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<Choice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_json_and_bad_fields_are_told_apart() {
        let e = parse(b"{\"prompt\": ").unwrap_err();
        assert!(e.message.starts_with("malformed JSON"), "{}", e.message);
        let e = parse(b"{\"prompt\": \"a\", \"max_tokens\": \"x\"}").unwrap_err();
        assert!(e.message.starts_with("invalid request"), "{}", e.message);
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn temperature_zero_is_greedy_and_fields_are_checked() {
        let r = parse(b"{\"prompt\": \"a\", \"temperature\": 0}").unwrap();
        assert_eq!(r.sampling().unwrap().strategy, Strategy::Greedy);
        for bad in [
            "{\"prompt\": \"a\", \"temperature\": -1}",
            "{\"prompt\": \"a\", \"top_p\": 0}",
            "{\"prompt\": \"a\", \"max_tokens\": 0}",
            "{\"prompt\": \"a\", \"stop\": [\"\"]}",
            "{\"prompt\": \"a\", \"top_k\": -5}",
        ] {
            let r = parse(bad.as_bytes()).unwrap();
            assert!(r.sampling().is_err(), "{bad}");
        }
    }

    #[test]
    fn empty_prompts_are_refused() {
        assert!(prompt_specs(None, None).is_err());
        assert!(prompt_specs(Some(Prompt::Texts(vec![])), None).is_err());
        let ids = prompt_specs(Some(Prompt::Ids(vec![])), None).unwrap();
        assert!(is_empty(&ids[0]));
        let text = prompt_specs(Some(Prompt::Text(String::new())), None).unwrap();
        assert!(is_empty(&text[0]));
        let with_prefix = Some("p".to_string());
        assert!(prompt_specs(Some(Prompt::Ids(vec![1])), with_prefix.clone()).is_err());
        let text = prompt_specs(Some(Prompt::Text("a".into())), with_prefix).unwrap();
        assert_eq!(text[0].prefix.as_deref(), Some("p"));
    }

    #[test]
    fn beam_and_spout_prompts_run_alone_and_spout_classes_are_checked() {
        let text = include_str!("../../configs/tiny.toml");
        let cfg = ModelConfig::from_toml(text, "tiny.toml").unwrap();
        let one_hot = spout(Some(3), &cfg).unwrap().unwrap();
        assert_eq!(one_hot.len(), 16);
        assert_eq!(one_hot.iter().sum::<f32>(), 1.0);
        assert_eq!(one_hot[3], 1.0);
        assert!(spout(Some(16), &cfg).is_err());
        assert!(spout(Some(-1), &cfg).is_err());
        assert_eq!(spout(None, &cfg).unwrap(), None);
        let beam = parse(b"{\"prompt\": \"a\", \"beam_width\": 2}").unwrap();
        assert!(beam.sampling().unwrap().solo());
        let plain = parse(b"{\"prompt\": \"a\"}").unwrap();
        assert!(!plain.sampling().unwrap().solo());
    }

    #[test]
    fn errors_are_json() {
        let e = ApiError::busy("full");
        assert_eq!(e.body()["error"]["type"], "server_busy");
        assert_eq!(e.body()["error"]["message"], "full");
    }
}
