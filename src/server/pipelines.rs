//! `POST /rag` and `POST /fine-tuned`: parse, call the pipeline, and answer
//! as one JSON object or, with `"stream": true`, as Server-Sent Events (one
//! `token` event per text piece, then one `done` event with the rest).

use super::error::{reject_unknown, ApiError, ApiJson, ErrorBody};
use super::fields::{RetrievalFields, SamplingFields};
use super::state::AppState;
use super::stream::{event_stream, json_event, started, usage, Usage};
use crate::engine::protocol::{event, Text};
use crate::engine::FinishReason;
use crate::engine::{Completion, GenerationStream};
use crate::models::llm::message::Message;
use crate::pipelines::fine_tuned::Input;
use crate::pipelines::rag::ms;
use crate::store::Passage;
use axum::extract::State;
use axum::response::sse::{KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::sync::Arc;
use std::time::Instant;
use utoipa::ToSchema;

#[derive(Debug, Deserialize, ToSchema)]
pub struct RagRequest {
    #[schema(min_length = 1)]
    pub question: String,
    /// Passages to retrieve.
    #[serde(default, deserialize_with = "crate::server::fields::integer::opt")]
    pub top_k: Option<usize>,
    #[serde(default)]
    pub stream: bool,
    #[serde(flatten)]
    pub retrieval: RetrievalFields,
    #[serde(flatten)]
    pub sampling: SamplingFields,
    #[serde(flatten)]
    #[schema(ignore)]
    pub unknown: Map<String, Value>,
}

/// Give `messages` (a conversation) or `prompt` (raw text), not both.
#[derive(Debug, Deserialize, ToSchema)]
pub struct FineTunedRequest {
    #[schema(min_items = 1)]
    pub messages: Option<Vec<Message>>,
    #[schema(min_length = 1)]
    pub prompt: Option<String>,
    /// A LoRA adapter loaded on the fine-tuned model (`GET /adapters`);
    /// default: the configured one, if any.
    pub adapter: Option<String>,
    /// Sampling: keep only the k most likely tokens (0 = off).
    #[serde(default, deserialize_with = "crate::server::fields::integer::opt")]
    pub top_k: Option<usize>,
    #[serde(default)]
    pub stream: bool,
    #[serde(flatten)]
    pub sampling: SamplingFields,
    #[serde(flatten)]
    #[schema(ignore)]
    pub unknown: Map<String, Value>,
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
    /// Tokens drafted by prompt-lookup decoding (`generation.draft_tokens`)
    /// and how many of them were kept: each kept one saved a step.
    pub draft_tokens: usize,
    pub draft_tokens_kept: usize,
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
            draft_tokens: c.timings.draft_tokens,
            draft_tokens_kept: c.timings.draft_tokens_kept,
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
    axum::Extension(caller): axum::Extension<super::auth::Caller>,
    ApiJson(req): ApiJson<RagRequest>,
) -> Result<Response, ApiError> {
    reject_unknown(&req.unknown)?;
    let services = state.services()?;
    let mut params = req.sampling.params(&state.config.generation, 0);
    params.format = req.sampling.output_format()?;
    let mut answer = services
        .rag()?
        .answer(
            &req.question,
            &req.retrieval.options(&caller, req.top_k, false)?,
            params,
        )
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
    let mut params = req
        .sampling
        .params(&state.config.generation, req.top_k.unwrap_or(0));
    params.format = req.sampling.output_format()?;
    let pipeline = match &req.adapter {
        Some(name) => services.fine_tuned()?.select(name)?,
        None => services.fine_tuned()?.clone(),
    };
    let mut stream = pipeline.generate(input, params).await?;
    let prompt_tokens = started(&mut stream).await?;
    let model = pipeline.model_name().to_string();
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
    let events = event_stream(
        stream,
        |text, _| {
            vec![json_event(
                event::TOKEN,
                &json!(Text {
                    text,
                    logprobs: Vec::new()
                }),
            )]
        },
        move |end| match end {
            Ok(c) => vec![json_event(event::DONE, &finish(c))],
            Err(e) => vec![json_event(event::ERROR, &e.body())],
        },
    );
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}
