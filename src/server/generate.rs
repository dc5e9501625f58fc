//! `POST /rag` and `POST /fine-tuned`: parse, call the pipeline, and answer
//! as one JSON object or, with `"stream": true`, as Server-Sent Events (one
//! `token` event per text piece, then one `done` event with the rest).

use super::error::{reject_unknown, ApiError, ApiJson, ErrorBody};
use super::AppState;
use crate::config::GenerationConfig;
use crate::engine::FinishReason;
use crate::engine::{Completion, Event, GenerationStream};
use crate::error::Error;
use crate::models::llm::chat::Message;
use crate::models::llm::sampling::SamplingParams;
use crate::pipelines::fine_tuned::Input;
use crate::pipelines::rag::ms;
use crate::store::Passage;
use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream::{self, Stream};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;
use utoipa::ToSchema;

/// Sampling fields shared by both routes; unset ones take the config's defaults.
#[derive(Debug, Deserialize, Default, ToSchema)]
pub struct SamplingFields {
    pub max_tokens: Option<usize>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub repetition_penalty: Option<f32>,
    pub seed: Option<u64>,
    pub stop: Option<StopField>,
}

/// A stop sequence or a list of them.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum StopField {
    One(String),
    Many(Vec<String>),
}

impl StopField {
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            StopField::One(s) => vec![s.clone()],
            StopField::Many(v) => v.clone(),
        }
    }
}

impl SamplingFields {
    pub fn params(&self, defaults: &GenerationConfig, top_k: usize) -> SamplingParams {
        let base = SamplingParams::default();
        SamplingParams {
            max_tokens: self.max_tokens.unwrap_or(defaults.max_tokens),
            temperature: self.temperature.unwrap_or(defaults.temperature),
            top_p: self.top_p.unwrap_or(base.top_p),
            top_k,
            repetition_penalty: self.repetition_penalty.unwrap_or(base.repetition_penalty),
            seed: self.seed,
            stop: self
                .stop
                .as_ref()
                .map(StopField::to_vec)
                .unwrap_or_default(),
            ..base
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct RagRequest {
    pub question: String,
    /// Passages to retrieve.
    pub top_k: Option<usize>,
    #[serde(default)]
    pub stream: bool,
    #[serde(flatten)]
    pub sampling: SamplingFields,
    #[serde(flatten)]
    #[schema(ignore)]
    pub unknown: Map<String, Value>,
}

/// Give `messages` (a conversation) or `prompt` (raw text), not both.
#[derive(Debug, Deserialize, ToSchema)]
pub struct FineTunedRequest {
    pub messages: Option<Vec<Message>>,
    pub prompt: Option<String>,
    /// Sampling: keep only the k most likely tokens (0 = off).
    pub top_k: Option<usize>,
    #[serde(default)]
    pub stream: bool,
    #[serde(flatten)]
    pub sampling: SamplingFields,
    #[serde(flatten)]
    #[schema(ignore)]
    pub unknown: Map<String, Value>,
}

/// Token counts of one generation.
#[derive(Debug, Serialize, ToSchema)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
}

/// Where the time went, in milliseconds (`ttft_ms` and `total_ms` from the
/// request's arrival).
#[derive(Debug, Serialize, ToSchema)]
pub struct GenerationTimings {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embed_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub search_ms: Option<f64>,
    pub queue_ms: f64,
    pub prompt_ms: f64,
    pub generate_ms: f64,
    pub ttft_ms: f64,
    pub total_ms: f64,
    pub tokens_per_s: f64,
}

impl GenerationTimings {
    fn of(c: &Completion, began: Instant) -> Self {
        let total_ms = ms(began);
        Self {
            embed_ms: None,
            search_ms: None,
            queue_ms: c.timings.queue_ms,
            prompt_ms: c.timings.prompt_ms,
            generate_ms: c.timings.generate_ms,
            ttft_ms: total_ms - (c.timings.total_ms - c.timings.ttft_ms),
            total_ms,
            tokens_per_s: c.timings.tokens_per_s,
        }
    }
}

/// `POST /rag`'s answer (also the `done` event of its stream).
#[derive(Debug, Serialize, ToSchema)]
pub struct RagResponse {
    pub answer: String,
    /// The passages in the prompt, best first.
    pub sources: Vec<Passage>,
    pub model: String,
    pub finish_reason: FinishReason,
    pub usage: Usage,
    pub timings: GenerationTimings,
    /// Retrieved passages left out so the prompt fits the context.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub passages_dropped: Option<usize>,
}

/// `POST /fine-tuned`'s answer (also the `done` event of its stream).
#[derive(Debug, Serialize, ToSchema)]
pub struct FineTunedResponse {
    pub text: String,
    pub model: String,
    pub finish_reason: FinishReason,
    pub usage: Usage,
    pub timings: GenerationTimings,
}

/// Answer a question from the stored documents.
#[utoipa::path(post, path = "/rag", tag = "pipelines", request_body = RagRequest,
    responses(
        (status = 200, description = "The answer and its sources; with `stream: true`, SSE: `token` events `{\"text\"}` then one `done` event holding this object", body = RagResponse),
        (status = 400, description = "Invalid value, or the question does not fit the context", body = ErrorBody),
        (status = 422, description = "Missing field, wrong type or unknown field", body = ErrorBody),
        (status = 503, description = "Loading or overloaded; see Retry-After", body = ErrorBody),
    ))]
pub async fn rag(
    State(state): State<Arc<AppState>>,
    ApiJson(req): ApiJson<RagRequest>,
) -> Result<Response, ApiError> {
    reject_unknown(&req.unknown)?;
    let services = state.services()?;
    let params = req.sampling.params(&state.config.generation, 0);
    let mut answer = services
        .rag()?
        .answer(&req.question, req.top_k, params)
        .await?;
    let prompt_tokens = started(&mut answer.stream).await?;
    let model = services.rag()?.generator().name().to_string();
    let (passages, embed_ms, search_ms, began) = (
        answer.passages,
        answer.embed_ms,
        answer.search_ms,
        answer.started,
    );
    let dropped = answer.dropped;
    let finish = move |c: Completion| {
        json!(RagResponse {
            timings: GenerationTimings {
                embed_ms: Some(embed_ms),
                search_ms: Some(search_ms),
                ..GenerationTimings::of(&c, began)
            },
            usage: usage(prompt_tokens, &c),
            finish_reason: c.finish_reason,
            answer: c.text,
            sources: passages,
            model,
            passages_dropped: (dropped > 0).then_some(dropped),
        })
    };
    respond(req.stream, answer.stream, finish).await
}

/// Generate with the fine-tuned model.
#[utoipa::path(post, path = "/fine-tuned", tag = "pipelines", request_body = FineTunedRequest,
    responses(
        (status = 200, description = "The generated text; with `stream: true`, SSE: `token` events `{\"text\"}` then one `done` event holding this object", body = FineTunedResponse),
        (status = 400, description = "Invalid value, or the prompt does not fit the context", body = ErrorBody),
        (status = 422, description = "Missing field, wrong type or unknown field", body = ErrorBody),
        (status = 503, description = "Loading or overloaded; see Retry-After", body = ErrorBody),
    ))]
pub async fn fine_tuned(
    State(state): State<Arc<AppState>>,
    ApiJson(req): ApiJson<FineTunedRequest>,
) -> Result<Response, ApiError> {
    reject_unknown(&req.unknown)?;
    let began = Instant::now();
    let services = state.services()?;
    let input = match (req.messages, req.prompt) {
        (Some(m), None) => Input::Messages(m),
        (None, Some(p)) => Input::Prompt(p),
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "give either `messages` or `prompt`, not both",
            ))
        }
        (None, None) => {
            return Err(ApiError::bad_request(
                "missing `messages` (a conversation) or `prompt` (raw text)",
            ))
        }
    };
    let params = req
        .sampling
        .params(&state.config.generation, req.top_k.unwrap_or(0));
    let mut stream = services.fine_tuned()?.generate(input, params)?;
    let prompt_tokens = started(&mut stream).await?;
    let model = services.fine_tuned()?.generator().name().to_string();
    let finish = move |c: Completion| {
        json!(FineTunedResponse {
            timings: GenerationTimings::of(&c, began),
            usage: usage(prompt_tokens, &c),
            finish_reason: c.finish_reason,
            text: c.text,
            model,
        })
    };
    respond(req.stream, stream, finish).await
}

/// Wait until the worker accepts the prompt, so that a prompt it refuses is
/// an HTTP error rather than an event in a stream that already said 200.
pub(super) async fn started(stream: &mut GenerationStream) -> Result<usize, ApiError> {
    match stream.next().await {
        Some(Event::Started { prompt_tokens }) => Ok(prompt_tokens),
        Some(Event::Error(e)) => Err(e.into()),
        Some(_) | None => Err(Error::Unavailable("the generation worker stopped".into()).into()),
    }
}

/// The whole answer as JSON, or the stream as SSE.
async fn respond<F>(
    stream_it: bool,
    stream: GenerationStream,
    finish: F,
) -> Result<Response, ApiError>
where
    F: FnOnce(Completion) -> Value + Send + 'static,
{
    if !stream_it {
        let completion = stream.finish().await?;
        return Ok(Json(finish(completion)).into_response());
    }
    let events = sse_stream(
        stream,
        |text| json_event("token", &json!({ "text": text })),
        move |end| match end {
            Ok(c) => vec![json_event("done", &finish(c))],
            Err(e) => vec![json_event("error", &e.body())],
        },
    );
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}

enum Progress<T, D> {
    Running(GenerationStream, T, D),
    Draining(std::collections::VecDeque<SseEvent>),
}

/// A generation as SSE: `text` shapes each piece of text, `end` the events
/// that close the stream (after the completion or an error). Dropping the
/// stream (the client went away) drops the generation, which the worker
/// then cancels.
pub(super) fn sse_stream<T, D>(
    stream: GenerationStream,
    text: T,
    end: D,
) -> impl Stream<Item = Result<SseEvent, Infallible>> + Send
where
    T: Fn(String) -> SseEvent + Send + 'static,
    D: FnOnce(Result<Completion, ApiError>) -> Vec<SseEvent> + Send + 'static,
{
    stream::unfold(
        Progress::Running(stream, text, end),
        |progress| async move {
            match progress {
                Progress::Draining(mut rest) => {
                    let next = rest.pop_front()?;
                    Some((Ok(next), Progress::Draining(rest)))
                }
                Progress::Running(mut stream, text, end) => loop {
                    let outcome = match stream.next().await {
                        Some(Event::Started { .. }) => continue,
                        Some(Event::Text(piece)) => {
                            let event = text(piece);
                            return Some((Ok(event), Progress::Running(stream, text, end)));
                        }
                        Some(Event::Done(c)) => Ok(c),
                        Some(Event::Error(e)) => Err(ApiError::from(e)),
                        None => Err(ApiError::from(Error::Unavailable(
                            "the generation worker stopped".into(),
                        ))),
                    };
                    let mut rest: std::collections::VecDeque<SseEvent> = end(outcome).into();
                    let first = rest.pop_front()?;
                    return Some((Ok(first), Progress::Draining(rest)));
                },
            }
        },
    )
}

fn json_event(name: &str, value: &Value) -> SseEvent {
    SseEvent::default().event(name).data(value.to_string())
}

pub(super) fn usage(prompt_tokens: usize, c: &Completion) -> Usage {
    Usage {
        prompt_tokens,
        completion_tokens: c.tokens.len(),
        total_tokens: prompt_tokens + c.tokens.len(),
    }
}
