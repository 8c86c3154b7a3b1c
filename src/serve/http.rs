//! Routes: `GET /health`, `POST /v1/completions` (JSON, or server-sent events with
//! `stream: true`), `POST /v1/inspect` ([`super::inspect`]), `POST /v1/fill-mask`
//! ([`super::fill`]) and the playground page (`GET /`, [`super::playground`]). Handlers
//! validate, hand work to the engine's queue and turn its events into responses; they
//! never touch the device.

use super::api::{self, ApiError, Choice, Completion, Usage, Validated};
use super::engine::{Event, Job, Work};
use super::forward::{Answer, ForwardJob, Task};
use crate::model::ModelConfig;
use crate::tokenizer::Tokenizer;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

/// What every handler shares.
pub struct AppState {
    pub jobs: SyncSender<Work>,
    pub active: Arc<AtomicUsize>,
    pub tok: Arc<Tokenizer>,
    pub cfg: ModelConfig,
    /// The name reported in responses (the model folder's name).
    pub model: String,
    pub max_batch: usize,
    pub next_id: AtomicU64,
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/", get(super::playground::page))
        .route("/playground.css", get(super::playground::css))
        .route("/playground.js", get(super::playground::js))
        .route("/v1/completions", post(completions))
        .route("/v1/inspect", post(super::inspect::inspect))
        .route("/v1/fill-mask", post(super::fill::fill_mask))
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError {
                status: axum::http::StatusCode::METHOD_NOT_ALLOWED,
                message: "method not allowed".into(),
                kind: "invalid_request_error",
            }
        })
        .with_state(state)
}

async fn health(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "status": "ok",
        "model": state.model,
        "context": state.cfg.context,
        "vocab_size": state.cfg.vocab_size,
        "spout_width": if state.cfg.has_spout() { state.cfg.spout_width } else { 0 },
        "max_batch": state.max_batch,
        "active": state.active.load(Ordering::Relaxed),
    }))
}

/// One tracing line per request, written when the request ends (also when a streaming
/// client goes away early), so every outcome is logged once.
struct RequestLog {
    id: String,
    started: Instant,
    status: u16,
    stream: bool,
    prompts: usize,
    usage: Usage,
}

impl Drop for RequestLog {
    fn drop(&mut self) {
        tracing::info!(
            id = %self.id,
            status = self.status,
            stream = self.stream,
            prompts = self.prompts,
            prompt_tokens = self.usage.prompt_tokens,
            completion_tokens = self.usage.completion_tokens,
            ms = self.started.elapsed().as_millis() as u64,
            "POST /v1/completions"
        );
    }
}

/// A one-shot JSON endpoint: the answer as JSON or its JSON error, logged with the
/// status and the time taken.
pub(crate) async fn json_endpoint<T: serde::Serialize>(
    route: &'static str,
    answer: impl std::future::Future<Output = Result<T, ApiError>>,
) -> Response {
    let started = std::time::Instant::now();
    let response = match answer.await {
        Ok(r) => axum::Json(r).into_response(),
        Err(e) => e.into_response(),
    };
    tracing::info!(
        status = response.status().as_u16(),
        ms = started.elapsed().as_millis() as u64,
        "{route}"
    );
    response
}

async fn completions(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let mut log = RequestLog {
        id: format!("cmpl-{}", state.next_id.fetch_add(1, Ordering::Relaxed)),
        started: Instant::now(),
        status: 200,
        stream: false,
        prompts: 0,
        usage: Usage::default(),
    };
    let request = match api::parse(&body).and_then(|r| r.validate(&state.tok, &state.cfg)) {
        Ok(r) => r,
        Err(e) => return failed(&mut log, e),
    };
    log.stream = request.stream;
    log.prompts = request.prompts.len();
    let events = match submit(&state.jobs, &request) {
        Ok(rx) => rx,
        Err(e) => return failed(&mut log, e),
    };
    let head = Completion {
        id: log.id.clone(),
        object: "text_completion",
        created: now(),
        model: state.model.clone(),
        choices: Vec::new(),
        usage: None,
    };
    if request.stream {
        return stream(head, events, log).into_response();
    }
    match collect(events, request.prompts.len()).await {
        Ok((choices, usage)) => {
            log.usage = usage;
            Json(Completion {
                choices,
                usage: Some(usage),
                ..head
            })
            .into_response()
        }
        Err(e) => failed(&mut log, e),
    }
}

fn failed(log: &mut RequestLog, e: ApiError) -> Response {
    log.status = e.status.as_u16();
    e.into_response()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Queues every prompt of the request; a full queue refuses the whole request (prompts
/// already queued are dropped by the engine once it sees nobody waits for them).
fn submit(
    jobs: &SyncSender<Work>,
    request: &Validated,
) -> Result<UnboundedReceiver<(usize, Event)>, ApiError> {
    let (tx, rx) = unbounded_channel();
    let sampling = Arc::new(request.sampling.clone());
    for (index, prompt) in request.prompts.iter().enumerate() {
        let job = Job {
            prompt: prompt.clone(),
            index,
            sampling: sampling.clone(),
            events: tx.clone(),
        };
        jobs.try_send(Work::Generate(job)).map_err(queue_error)?;
    }
    Ok(rx)
}

/// Queues a one-forward task and waits for its answer (engine failures are 500s).
pub(super) async fn forward(state: &AppState, task: Task) -> Result<Answer, ApiError> {
    let (reply, answer) = tokio::sync::oneshot::channel();
    state
        .jobs
        .try_send(Work::Forward(ForwardJob { task, reply }))
        .map_err(queue_error)?;
    match answer.await {
        Ok(Ok(a)) => Ok(a),
        Ok(Err(m)) => Err(ApiError::internal(m)),
        Err(_) => Err(ApiError::internal("the engine stopped")),
    }
}

/// Parses a JSON body into `T`; malformed JSON and wrongly typed fields are 400s.
pub(super) fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        if e.is_syntax() || e.is_eof() {
            ApiError::bad_request(format!("malformed JSON: {e}"))
        } else {
            ApiError::bad_request(format!("invalid request: {e}"))
        }
    })
}

/// Why a job could not be queued.
pub(super) fn queue_error<T>(e: TrySendError<T>) -> ApiError {
    match e {
        TrySendError::Full(_) => ApiError::busy("the request queue is full; try again later"),
        TrySendError::Disconnected(_) => ApiError::busy("the server is shutting down"),
    }
}

/// Waits for every prompt's result.
async fn collect(
    mut events: UnboundedReceiver<(usize, Event)>,
    count: usize,
) -> Result<(Vec<Choice>, Usage), ApiError> {
    let mut choices: Vec<Option<Choice>> = vec![None; count];
    let mut usage = Usage::default();
    while choices.iter().any(Option::is_none) {
        let Some((index, event)) = events.recv().await else {
            return Err(ApiError::internal("the engine stopped"));
        };
        match event {
            Event::Text(_) => {}
            Event::Failed(m) => return Err(ApiError::internal(m)),
            Event::Done {
                text,
                reason,
                usage: u,
            } => {
                usage.prompt_tokens += u.prompt_tokens;
                usage.completion_tokens += u.completion_tokens;
                usage.total_tokens += u.total_tokens;
                if let Some(slot) = choices.get_mut(index) {
                    *slot = Some(Choice {
                        text,
                        index,
                        finish_reason: Some(reason),
                        logprobs: None,
                    });
                }
            }
        }
    }
    Ok((choices.into_iter().flatten().collect(), usage))
}

/// Where a server-sent event stream stands.
struct Streaming {
    head: Completion,
    events: UnboundedReceiver<(usize, Event)>,
    left: usize,
    finished: bool,
    log: RequestLog,
}

/// Server-sent events: a chunk per text delta, a last chunk per choice with its
/// finish_reason, then `data: [DONE]`.
fn stream(
    head: Completion,
    events: UnboundedReceiver<(usize, Event)>,
    log: RequestLog,
) -> Sse<impl futures_util::Stream<Item = Result<SseEvent, Infallible>>> {
    let state = Streaming {
        head,
        left: log.prompts,
        events,
        finished: false,
        log,
    };
    Sse::new(futures_util::stream::unfold(state, |mut s| async move {
        let event = next_event(&mut s).await?;
        Some((Ok(event), s))
    }))
}

async fn next_event(s: &mut Streaming) -> Option<SseEvent> {
    if s.finished {
        return None;
    }
    if s.left == 0 {
        s.finished = true;
        return Some(SseEvent::default().data("[DONE]"));
    }
    let chunk = |s: &Streaming, index, text, finish_reason| {
        let c = Completion {
            choices: vec![Choice {
                text,
                index,
                finish_reason,
                logprobs: None,
            }],
            ..s.head.clone()
        };
        SseEvent::default().data(serde_json::to_string(&c).unwrap_or_default())
    };
    let error = |s: &mut Streaming, e: ApiError| {
        s.left = 0;
        s.log.status = e.status.as_u16();
        SseEvent::default().data(e.body().to_string())
    };
    match s.events.recv().await {
        None => Some(error(s, ApiError::internal("the engine stopped"))),
        Some((_, Event::Failed(m))) => Some(error(s, ApiError::internal(m))),
        Some((index, Event::Text(text))) => Some(chunk(s, index, text, None)),
        Some((index, Event::Done { reason, usage, .. })) => {
            s.left -= 1;
            s.log.usage.prompt_tokens += usage.prompt_tokens;
            s.log.usage.completion_tokens += usage.completion_tokens;
            Some(chunk(s, index, String::new(), Some(reason)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::sampling::Strategy;
    use crate::serve::api::{PromptIds, Sampling};

    fn request(prompts: usize) -> Validated {
        let p = PromptIds {
            ids: vec![1, 2],
            types: vec![1, 0],
        };
        Validated {
            prompts: vec![p; prompts],
            sampling: Sampling {
                strategy: Strategy::Greedy,
                seed: 0,
                max_tokens: 4,
                stop: Vec::new(),
                stop_at_eot: true,
                beam_width: 1,
                spout: None,
            },
            stream: false,
        }
    }

    #[test]
    fn a_full_queue_or_a_stopped_engine_is_a_503() {
        let (jobs, queue) = std::sync::mpsc::sync_channel(2);
        assert!(submit(&jobs, &request(2)).is_ok());
        let full = submit(&jobs, &request(1)).unwrap_err();
        assert_eq!(full.status.as_u16(), 503);
        assert!(full.message.contains("queue is full"), "{}", full.message);
        drop(queue);
        let gone = submit(&jobs, &request(1)).unwrap_err();
        assert_eq!(gone.status.as_u16(), 503);
    }
}
