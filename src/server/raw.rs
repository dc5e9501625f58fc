//! The model-level routes that `generate` and `embed` processes serve to
//! the `rag` processes using them (see `engine::remote`): `GET /generator`
//! (with the tokenizer and chat template), `POST /generate` (SSE: `started`, `text`, `done`,
//! `error`), and `GET /embedder`. They are hearth's internal protocol
//! (its types and event names: `engine::protocol`), not a client API, and
//! are left out of the OpenAPI document.

use super::error::{ApiError, ApiJson};
use super::state::AppState;
use super::stream::{event_stream, json_event, started};
use crate::engine::protocol::{
    event, EmbedderInfo, GenerateRequest, GeneratorDescription, GeneratorInfo, Started, Text,
};
use crate::engine::Generation;
use crate::error::Error;
use axum::extract::State;
use axum::response::sse::{KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use std::sync::Arc;

/// The LLM this process serves and its limits.
pub async fn generator(
    State(state): State<Arc<AppState>>,
) -> Result<Json<GeneratorDescription>, ApiError> {
    let g = state.services()?.generator()?;
    let Generation::Local(local) = g else {
        return Err(Error::NotServed("this process's generator is remote".into()).into());
    };
    let llm = local.llm();
    Ok(Json(GeneratorDescription {
        info: GeneratorInfo {
            name: g.name().to_string(),
            context_length: g.context_length(),
            max_prompt_tokens: g.max_prompt_tokens(),
            max_tokens_limit: local.limits().max_tokens,
        },
        tokenizer: llm.tokenizer.to_wire()?,
        chat_template: llm.chat.to_wire(),
    }))
}

/// Generate from a prompt, a conversation or token ids.
pub async fn generate(
    State(state): State<Arc<AppState>>,
    ApiJson(req): ApiJson<GenerateRequest>,
) -> Result<Response, ApiError> {
    let g = state.services()?.generator()?;
    let mut stream = g.submit(req.prompt, req.params).await?;
    let prompt_tokens = started(&mut stream).await?;
    if !req.stream {
        return Ok(Json(stream.finish().await?).into_response());
    }
    let first = futures_util::stream::once(async move {
        Ok(json_event(
            event::STARTED,
            &json!(Started { prompt_tokens }),
        ))
    });
    let rest = event_stream(
        stream,
        |text, logprobs| vec![json_event(event::TEXT, &json!(Text { text, logprobs }))],
        |end| match end {
            Ok(c) => vec![json_event(event::DONE, &json!(c))],
            Err(e) => vec![json_event(event::ERROR, &e.body())],
        },
    );
    use futures_util::StreamExt;
    Ok(Sse::new(first.chain(rest))
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// The embedder this process serves, with its tokenizer.
pub async fn embedder(State(state): State<Arc<AppState>>) -> Result<Json<EmbedderInfo>, ApiError> {
    let e = state.services()?.embedding()?;
    let tokenizer = e
        .tokenizer()
        .to_string(false)
        .map_err(crate::error::Error::tokenizer)?;
    Ok(Json(EmbedderInfo {
        name: e.name().to_string(),
        dimensions: e.dim(),
        max_tokens: e.max_tokens(),
        tokenizer: serde_json::from_str(&tokenizer)
            .map_err(|e| Error::tokenizer(format!("serialising the tokenizer: {e}")))?,
    }))
}
