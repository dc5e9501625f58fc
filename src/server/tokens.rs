//! Each LLM's tokenizer and chat template over HTTP, in the shapes of
//! llama.cpp's server (which RAG frameworks and UIs call to count and cut
//! text): `POST /tokenize`, `POST /detokenize` and `POST /apply-template`.
//! The body's `model` picks the LLM as on the OpenAI routes; without one,
//! the fine-tuned pipeline's LLM ([`super::target::llm`]). Tokenizing runs
//! off the async runtime.

use super::error::{AnyJson, ApiError};
use super::fields::invalid;
use super::openai::{to_messages, ChatMessage};
use super::state::AppState;
use super::target::llm;
use super::tool_calls::{self, ToolDef};
use crate::engine::blocking;
use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use utoipa::ToSchema;

#[derive(Debug, Deserialize, ToSchema)]
pub struct TokenizeRequest {
    /// The LLM (default: the fine-tuned pipeline's).
    model: Option<String>,
    /// The text; special tokens written in it (`<|im_start|>`) become
    /// their ids. vLLM's name, `prompt`, is taken too.
    #[serde(alias = "prompt")]
    content: String,
    /// Put the model's BOS token first, as a generation does (default
    /// false, as in llama.cpp; vLLM's `add_special_tokens` too).
    #[serde(default, alias = "add_special_tokens")]
    add_special: bool,
    /// Each token with its text: `[{"id", "piece"}]`.
    #[serde(default)]
    with_pieces: bool,
}

/// Text to token ids.
#[utoipa::path(post, path = "/tokenize", tag = "tokens", request_body = TokenizeRequest,
    responses(
        (status = 200, description = "`{\"tokens\": [id, ...], \"count\", \"max_model_len\"}`; with `with_pieces`, `tokens` holds `{\"id\", \"piece\"}` objects", body = Object),
        (status = 404, description = "Unknown model", body = super::error::ErrorBody),
    ))]
pub async fn tokenize(
    State(state): State<Arc<AppState>>,
    AnyJson(req): AnyJson<TokenizeRequest>,
) -> Result<Json<Value>, ApiError> {
    let model = llm(state.services()?, req.model.as_deref()).await?;
    let context = model.context_length();
    let tokens = blocking(move || {
        let tokenizer = model.tokenizer();
        let ids = if req.add_special {
            tokenizer.encode_prompt(&req.content)?
        } else {
            tokenizer.encode(&req.content)?
        };
        if !req.with_pieces {
            return Ok(json!(ids));
        }
        let pieces = ids
            .iter()
            .map(|&id| {
                // A special token decodes to nothing: its own text then.
                let piece = tokenizer
                    .decode(&[id])
                    .ok()
                    .filter(|p| !p.is_empty())
                    .or_else(|| tokenizer.token_text(id))
                    .unwrap_or_default();
                json!({ "id": id, "piece": piece })
            })
            .collect::<Vec<_>>();
        Ok(json!(pieces))
    })
    .await?;
    let count = tokens.as_array().map_or(0, Vec::len);
    Ok(Json(
        json!({ "tokens": tokens, "count": count, "max_model_len": context }),
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct DetokenizeRequest {
    /// The LLM (default: the fine-tuned pipeline's).
    model: Option<String>,
    /// Token ids, each below the vocabulary's size.
    #[serde(deserialize_with = "crate::server::fields::integer::vec")]
    tokens: Vec<u32>,
}

/// Token ids to text (special tokens left out).
#[utoipa::path(post, path = "/detokenize", tag = "tokens", request_body = DetokenizeRequest,
    responses(
        (status = 200, description = "`{\"content\": text}`", body = Object),
        (status = 400, description = "An id outside the vocabulary", body = super::error::ErrorBody),
    ))]
pub async fn detokenize(
    State(state): State<Arc<AppState>>,
    AnyJson(req): AnyJson<DetokenizeRequest>,
) -> Result<Json<Value>, ApiError> {
    let model = llm(state.services()?, req.model.as_deref()).await?;
    let vocab = model.tokenizer().vocab_size();
    if let Some(bad) = req.tokens.iter().find(|&&t| t as usize >= vocab) {
        return Err(invalid(
            "tokens",
            format!("token id {bad} is outside the vocabulary (size {vocab})"),
        ));
    }
    let content = blocking(move || model.tokenizer().decode(&req.tokens)).await?;
    Ok(Json(json!({ "content": content })))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ApplyTemplateRequest {
    /// The LLM (default: the fine-tuned pipeline's).
    model: Option<String>,
    /// A conversation in OpenAI's shape (as on `/v1/chat/completions`).
    messages: Vec<ChatMessage>,
    /// Tools offered, in OpenAI's shape: the template describes them.
    tools: Option<Vec<ToolDef>>,
}

/// A conversation rendered with the model's chat template, ending with the
/// assistant's turn opened: the prompt text a chat request generates from.
#[utoipa::path(post, path = "/apply-template", tag = "tokens", request_body = ApplyTemplateRequest,
    responses(
        (status = 200, description = "`{\"prompt\": text}`", body = Object),
        (status = 400, description = "An invalid conversation or tool", body = super::error::ErrorBody),
    ))]
pub async fn apply_template(
    State(state): State<Arc<AppState>>,
    AnyJson(req): AnyJson<ApplyTemplateRequest>,
) -> Result<Json<Value>, ApiError> {
    let model = llm(state.services()?, req.model.as_deref()).await?;
    let messages = to_messages(req.messages)?;
    let tools = tool_calls::tooling(req.tools, None, None)?
        .map(|t| t.tools)
        .unwrap_or_default();
    let prompt =
        blocking(move || model.chat_template().render_with_tools(&messages, &tools)).await?;
    Ok(Json(json!({ "prompt": prompt })))
}
