//! OpenAI's API shapes over hearth's pipelines, so that existing clients
//! work unchanged: `/v1/models`, `/v1/chat/completions` (the `model` field
//! picks the pipeline), `/v1/completions`, `/v1/embeddings`, and the SSE
//! chunk format ending with `data: [DONE]`. Unknown request fields are
//! ignored, as OpenAI clients send many.

use super::error::ErrorBody;
use super::error::{ApiError, ApiJson};
use super::fields::{input_texts, invalid, RetrievalFields, SamplingFields};
use super::state::AppState;
use super::stream::{event_stream, new_id, started, unix_now, usage};
use super::target::{run, target};
use super::tool_calls::{self, ChatToolCall, ToolDef};
use crate::engine::{Completion, FinishReason, GenerationStream, TokenLogprob};
use crate::models::llm::grammar::Format;
use crate::models::llm::message::Message;
use crate::models::llm::message::ToolCall;
use crate::models::llm::sampling::SamplingParams;
use crate::models::llm::tools::CallParser;
use crate::pipelines::fine_tuned::Input;
use crate::roles::{FINE_TUNED_MODEL, RAG_MODEL};
use crate::store::Passage;
use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use utoipa::ToSchema;

fn fingerprint() -> String {
    format!("hearth-{}", env!("CARGO_PKG_VERSION"))
}

/// The served models: `hearth-rag`, `hearth-fine-tuned`, the LLM and the embedder.
#[utoipa::path(get, path = "/v1/models", tag = "openai", responses(
    (status = 200, description = "OpenAI's model list: `{\"object\": \"list\", \"data\": [{\"id\", \"object\", \"created\", \"owned_by\"}]}`; a local LLM's entry adds `gguf` (what `hearth models inspect` prints), a model of `models.llms` its `status` (`loaded` or `available`)", body = Object),
))]
pub async fn models(State(state): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    let services = state.services()?;
    let mut ids: Vec<String> = Vec::new();
    let mut add = |id: &str| {
        if !ids.iter().any(|i| i == id) {
            ids.push(id.to_string());
        }
    };
    if services.rag().is_ok() {
        add(RAG_MODEL);
    }
    // The fine-tuned pipeline's adapters, each with what it is.
    let mut adapters = std::collections::HashMap::new();
    if let Ok(pipeline) = services.fine_tuned() {
        add(FINE_TUNED_MODEL);
        let base = pipeline.generator().name().to_string();
        for a in pipeline
            .adapter()
            .into_iter()
            .cloned()
            .chain(pipeline.generator().adapters())
        {
            add(&a.name);
            adapters.insert(a.name.clone(), json!({ "base": base, "lora": a.info() }));
        }
    }
    // A local LLM's entry also says what its file holds (as in `/info`).
    let mut files = std::collections::HashMap::new();
    for (_, g) in services.generators() {
        add(g.name());
        if let crate::engine::Generation::Local(local) = g {
            files.insert(g.name().to_string(), json!(*local.llm().summary));
        }
    }
    if let Ok(e) = services.embedding() {
        add(e.name());
    }
    // The LLMs served by name: loaded now, or loaded when asked for.
    let mut statuses = std::collections::HashMap::new();
    for status in services.catalog().map(|c| c.list()).unwrap_or_default() {
        add(&status.name);
        let loaded = status.generation.is_some();
        statuses.insert(status.name, if loaded { "loaded" } else { "available" });
    }
    let created = unix_now() - state.started.elapsed().as_secs();
    let data: Vec<Value> = ids
        .iter()
        .map(|id| {
            let mut model =
                json!({ "id": id, "object": "model", "created": created, "owned_by": "hearth" });
            if let Some(file) = files.get(id) {
                model["gguf"] = file.clone();
            }
            if let Some(adapter) = adapters.get(id) {
                model["adapter"] = adapter.clone();
            }
            if let Some(status) = statuses.get(id) {
                model["status"] = json!(status);
            }
            model
        })
        .collect();
    Ok(Json(json!({ "object": "list", "data": data })))
}

/// Sampling fields common to both completion routes.
#[derive(Debug, Deserialize, ToSchema)]
pub struct Sampling {
    /// hearth's own sampling fields (`max_tokens`, `temperature`, `top_p`,
    /// `seed`, `stop`, ...), with the config's defaults.
    #[serde(flatten)]
    fields: SamplingFields,
    /// Overrides `max_tokens` (OpenAI's newer name).
    #[serde(default, deserialize_with = "crate::server::fields::integer::opt")]
    max_completion_tokens: Option<usize>,
    #[serde(default, deserialize_with = "crate::server::fields::integer::opt")]
    n: Option<u32>,
    #[serde(default)]
    stream: bool,
    stream_options: Option<StreamOptions>,
    /// `{"type": "text"}`, `{"type": "json_object"}` (any JSON object) or
    /// `{"type": "json_schema", "json_schema": {"name", "schema", "strict"}}`:
    /// decoding is constrained to it.
    response_format: Option<ResponseFormat>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResponseFormat {
    Text,
    JsonObject,
    JsonSchema { json_schema: JsonSchemaFormat },
}

/// OpenAI's `json_schema`: its `name`, `description` and `strict` are
/// accepted and need nothing (the output is always constrained to the
/// schema, as `strict: true` asks).
#[derive(Debug, Deserialize, ToSchema)]
pub struct JsonSchemaFormat {
    /// The schema (JSON Schema); absent: any JSON.
    #[schema(value_type = Option<Object>)]
    schema: Option<Value>,
}

#[derive(Debug, Deserialize, ToSchema, Default)]
pub struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

impl Sampling {
    fn params(&self, state: &AppState) -> Result<SamplingParams, ApiError> {
        if let Some(n) = self.n {
            if n != 1 {
                return Err(invalid("n", format!("only n = 1 is supported, got {n}")));
            }
        }
        // Values are checked by the pipelines, whose errors name the field.
        let mut params = self.fields.params(&state.config.generation, 0);
        if let Some(max) = self.max_completion_tokens {
            params.max_tokens = max;
        }
        params.format = self.fields.output_format()?;
        let openai = match &self.response_format {
            None | Some(ResponseFormat::Text) => None,
            Some(ResponseFormat::JsonObject) => Some(Format::JsonObject),
            Some(ResponseFormat::JsonSchema { json_schema }) => match &json_schema.schema {
                Some(schema @ Value::Object(_)) => Some(Format::JsonSchema {
                    schema: schema.clone(),
                }),
                Some(_) => {
                    return Err(invalid(
                        "response_format",
                        "response_format.json_schema.schema must be an object",
                    ))
                }
                None => Some(Format::JsonSchema { schema: json!({}) }),
            },
        };
        if let Some(format) = openai {
            if params.format.is_some() {
                return Err(invalid(
                    "response_format",
                    "give response_format or hearth's format/grammar, not both",
                ));
            }
            params.format = Some(format);
        }
        Ok(params)
    }

    fn include_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .is_some_and(|o| o.include_usage)
    }
}

/// Message content: a string, or a list of parts of which only text is
/// understood.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ContentPart {
    #[serde(rename = "type")]
    kind: String,
    text: Option<String>,
}

/// A turn: `system` (or `developer`), `user`, `assistant` (with the
/// `tool_calls` it made, when it made any) or `tool` (a call's result,
/// naming the call in `tool_call_id`).
#[derive(Debug, Deserialize, ToSchema)]
pub struct ChatMessage {
    role: String,
    content: Option<Content>,
    tool_calls: Option<Vec<ChatToolCall>>,
    tool_call_id: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ChatRequest {
    model: String,
    messages: Vec<ChatMessage>,
    /// Return each token's log-probability (`choices[].logprobs.content`).
    #[serde(default)]
    logprobs: bool,
    /// With `logprobs`: this many most likely alternatives per token (0-20).
    #[serde(default, deserialize_with = "crate::server::fields::integer::opt")]
    top_logprobs: Option<usize>,
    /// Functions the model may call: `[{"type": "function", "function":
    /// {"name", "description", "parameters"}}]`.
    tools: Option<Vec<ToolDef>>,
    /// `"auto"` (default with tools), `"none"`, `"required"`, or
    /// `{"type": "function", "function": {"name"}}`.
    #[schema(value_type = Option<serde_json::Value>)]
    tool_choice: Option<Value>,
    /// Whether one answer may hold several calls. Default false (one
    /// call), unlike OpenAI: small models allowed several repeat one call.
    parallel_tool_calls: Option<bool>,
    /// hearth's retrieval fields, for the `hearth-rag` model.
    #[serde(flatten)]
    retrieval: RetrievalFields,
    #[serde(flatten)]
    sampling: Sampling,
}

pub(super) fn to_messages(messages: Vec<ChatMessage>) -> Result<Vec<Message>, ApiError> {
    if messages.is_empty() {
        return Err(invalid("messages", "messages must not be empty"));
    }
    messages
        .into_iter()
        .map(|m| {
            let role = match m.role.as_str() {
                "system" | "developer" => "system",
                "user" => "user",
                "assistant" => "assistant",
                "tool" => "tool",
                other => {
                    return Err(invalid(
                        "messages",
                        format!(
                            "role `{other}` is not supported; use system, user, assistant or tool"
                        ),
                    ))
                }
            };
            if m.tool_calls.is_some() && role != "assistant" {
                return Err(invalid(
                    "messages",
                    "only assistant messages carry tool_calls",
                ));
            }
            if role == "tool" && m.tool_call_id.is_none() {
                return Err(invalid(
                    "messages",
                    "a tool message needs `tool_call_id`, the call it answers",
                ));
            }
            let content = match m.content {
                None => String::new(),
                Some(Content::Text(t)) => t,
                Some(Content::Parts(parts)) => {
                    let mut text = String::new();
                    for p in parts {
                        match (p.kind.as_str(), p.text) {
                            ("text", Some(t)) => text.push_str(&t),
                            (kind, _) => {
                                return Err(invalid(
                                    "messages",
                                    format!(
                                    "content parts of type `{kind}` are not supported; only text"
                                ),
                                ))
                            }
                        }
                    }
                    text
                }
            };
            let mut message = Message::new(role, content);
            message.tool_calls = m
                .tool_calls
                .unwrap_or_default()
                .into_iter()
                .map(ToolCall::from)
                .collect();
            message.tool_call_id = m.tool_call_id;
            Ok(message)
        })
        .collect()
}

/// How one completion route shapes its answers.
struct Shape {
    id: String,
    created: u64,
    model: String,
    chat: bool,
    include_usage: bool,
    prompt_tokens: usize,
    sources: Option<Vec<Passage>>,
    /// Whether the answer carries log-probabilities.
    logprobs: bool,
    /// Whether the output may hold tool calls (read back into `tool_calls`).
    tools: bool,
}

impl Shape {
    /// A choice's `logprobs`: null when not asked for; chat's
    /// `{"content": [{"token", "logprob", "bytes", "top_logprobs"}]}`, or
    /// the completions route's `{"tokens", "token_logprobs",
    /// "top_logprobs", "text_offset"}`.
    fn logprobs(&self, tokens: &[TokenLogprob], offset: usize) -> Value {
        if !self.logprobs {
            return Value::Null;
        }
        if self.chat {
            let entry =
                |t: &str, lp: f32| json!({ "token": t, "logprob": lp, "bytes": t.as_bytes() });
            let content: Vec<Value> = tokens
                .iter()
                .map(|t| {
                    let mut e = entry(&t.token, t.logprob);
                    e["top_logprobs"] = t.top.iter().map(|(s, lp)| entry(s, *lp)).collect();
                    e
                })
                .collect();
            return json!({ "content": content });
        }
        let mut at = offset;
        let offsets: Vec<usize> = tokens
            .iter()
            .map(|t| {
                let here = at;
                at += t.token.len();
                here
            })
            .collect();
        json!({
            "tokens": tokens.iter().map(|t| &t.token).collect::<Vec<_>>(),
            "token_logprobs": tokens.iter().map(|t| t.logprob).collect::<Vec<_>>(),
            "top_logprobs": tokens.iter().map(|t| t.top.iter().map(|(s, lp)| (s.clone(), json!(lp))).collect::<serde_json::Map<_, _>>()).collect::<Vec<_>>(),
            "text_offset": offsets,
        })
    }

    fn object(&self, chunk: bool) -> &'static str {
        match (self.chat, chunk) {
            (true, false) => "chat.completion",
            (true, true) => "chat.completion.chunk",
            (false, _) => "text_completion",
        }
    }

    fn envelope(&self, chunk: bool, choices: Value) -> Value {
        json!({
            "id": self.id,
            "object": self.object(chunk),
            "created": self.created,
            "model": self.model,
            "system_fingerprint": fingerprint(),
            "choices": choices,
        })
    }

    /// `finish_reason`: `tool_calls` when the model called tools and
    /// stopped by itself.
    fn finish_reason(&self, c: &Completion, called: bool) -> Value {
        if called && c.finish_reason == FinishReason::Stop {
            json!("tool_calls")
        } else {
            json!(c.finish_reason)
        }
    }

    fn whole(&self, c: &Completion) -> Value {
        let logprobs = self.logprobs(&c.logprobs, 0);
        let choice = if self.chat && self.tools {
            let (content, calls) = tool_calls::message(&c.text);
            let mut message = json!({ "role": "assistant", "content": content });
            if !calls.is_empty() {
                message["tool_calls"] = json!(calls);
            }
            json!({
                "index": 0,
                "message": message,
                "finish_reason": self.finish_reason(c, !calls.is_empty()),
                "logprobs": logprobs,
            })
        } else if self.chat {
            json!({
                "index": 0,
                "message": { "role": "assistant", "content": c.text },
                "finish_reason": c.finish_reason,
                "logprobs": logprobs,
            })
        } else {
            json!({ "index": 0, "text": c.text, "finish_reason": c.finish_reason, "logprobs": logprobs })
        };
        let mut body = self.envelope(false, json!([choice]));
        body["usage"] = json!(usage(self.prompt_tokens, c));
        if let Some(s) = &self.sources {
            body["sources"] = json!(s);
        }
        body
    }

    fn delta(
        &self,
        text: Option<&str>,
        role: bool,
        finish: Option<Value>,
        tokens: &[TokenLogprob],
    ) -> Value {
        let mut delta = json!({});
        if role {
            delta["role"] = json!("assistant");
        }
        if let Some(t) = text {
            delta["content"] = json!(t);
        }
        self.chunk(text, delta, finish, tokens)
    }

    /// A chunk with chat's `delta` (the completions route sends `text`).
    fn chunk(
        &self,
        text: Option<&str>,
        delta: Value,
        finish: Option<Value>,
        tokens: &[TokenLogprob],
    ) -> Value {
        let logprobs = match tokens {
            [] => Value::Null,
            tokens => self.logprobs(tokens, 0),
        };
        let choice = if self.chat {
            json!({ "index": 0, "delta": delta, "finish_reason": finish, "logprobs": logprobs })
        } else {
            json!({ "index": 0, "text": text.unwrap_or(""), "finish_reason": finish, "logprobs": logprobs })
        };
        self.envelope(true, json!([choice]))
    }
}

/// A refusal of the output format in OpenAI's words: the pipeline names
/// hearth's field (`format`, `grammar`), the client sent
/// `response_format`, or `tools` (a tools request's grammar is made of the
/// tools' schemas).
fn in_openai_terms(e: impl Into<ApiError>, tools: bool) -> ApiError {
    let mut e = e.into();
    match e.param.as_deref() {
        Some("format") => e.param = Some("response_format".into()),
        Some("grammar") if tools => {
            e.param = Some("tools".into());
            e.message = format!("a tool's `parameters` schema: {}", e.message);
        }
        _ => {}
    }
    e
}

fn data(value: &Value) -> SseEvent {
    SseEvent::default().data(value.to_string())
}

/// Answer whole, or as OpenAI's SSE chunks then `data: [DONE]`.
async fn respond(
    stream_it: bool,
    mut stream: GenerationStream,
    mut shape: Shape,
) -> Result<Response, ApiError> {
    let tools = shape.tools;
    shape.prompt_tokens = started(&mut stream)
        .await
        .map_err(|e| in_openai_terms(e, tools))?;
    if !stream_it {
        let completion = stream.finish().await?;
        return Ok(Json(shape.whole(&completion)).into_response());
    }
    let shape = Arc::new(shape);
    // Chat streams open with the assistant's role, as OpenAI's do.
    let opening = shape
        .chat
        .then(|| data(&shape.delta(Some(""), true, None, &[])));
    let text_shape = shape.clone();
    // With tools, the text goes through a parser that holds back what may
    // open a call, so log-probabilities wait for the next event sent.
    let parser = Arc::new(std::sync::Mutex::new(CallParser::new()));
    let text_parser = parser.clone();
    let mut held: Vec<TokenLogprob> = Vec::new();
    let events = event_stream(
        stream,
        move |text, logprobs| {
            if !text_shape.tools {
                return vec![data(&text_shape.delta(Some(&text), false, None, &logprobs))];
            }
            held.extend(logprobs);
            let pieces = text_parser.lock().expect("parser lock").push(&text);
            pieces
                .iter()
                .map(|p| {
                    let lp = std::mem::take(&mut held);
                    data(&text_shape.chunk(None, tool_calls::delta(p), None, &lp))
                })
                .collect()
        },
        move |end| {
            let mut events = Vec::new();
            match end {
                Ok(c) => {
                    let mut parser = parser.lock().expect("parser lock");
                    if shape.tools {
                        for p in parser.finish() {
                            events.push(data(&shape.chunk(None, tool_calls::delta(&p), None, &[])));
                        }
                    }
                    let called = shape.tools && !parser.calls().is_empty();
                    let finish = shape.finish_reason(&c, called);
                    let mut last = shape.delta(None, false, Some(finish), &[]);
                    if let Some(s) = &shape.sources {
                        last["sources"] = json!(s);
                    }
                    events.push(data(&last));
                    if shape.include_usage {
                        let mut u = shape.envelope(true, json!([]));
                        u["usage"] = json!(usage(shape.prompt_tokens, &c));
                        events.push(data(&u));
                    }
                }
                Err(e) => events.push(data(&e.body())),
            }
            events.push(SseEvent::default().data("[DONE]"));
            events
        },
    );
    let events =
        futures_util::StreamExt::chain(futures_util::stream::iter(opening.map(Ok)), events);
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// OpenAI chat completions; `model` picks the pipeline.
#[utoipa::path(post, path = "/v1/chat/completions", tag = "openai", request_body = ChatRequest,
    responses(
        (status = 200, description = "OpenAI's `chat.completion` object (plus `sources` for hearth-rag); with `stream`, `chat.completion.chunk` events ending with `data: [DONE]`", body = Object),
        (status = 400, description = "Invalid value (`param` names it)", body = ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 404, description = "Unknown model", body = ErrorBody),
        (status = 503, description = "Loading or overloaded", body = ErrorBody),
    ))]
pub async fn chat_completions(
    State(state): State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<super::auth::Caller>,
    ApiJson(req): ApiJson<ChatRequest>,
) -> Result<Response, ApiError> {
    let services = state.services()?;
    let mut params = req.sampling.params(&state)?;
    params.logprobs = match (req.logprobs, req.top_logprobs) {
        (true, top) => Some(top.unwrap_or(0)),
        (false, None) => None,
        (false, Some(_)) => {
            return Err(invalid("top_logprobs", "top_logprobs needs logprobs: true"));
        }
    };
    let messages = to_messages(req.messages)?;
    let offered = req.tools.as_ref().is_some_and(|t| !t.is_empty());
    let tooling = tool_calls::tooling(req.tools, req.tool_choice, req.parallel_tool_calls)?;
    tool_calls::constrain(
        tooling.as_ref(),
        offered,
        &messages,
        &mut params,
        "response_format, format or grammar",
    )?;
    let mut shape = Shape {
        id: new_id("chatcmpl-"),
        created: unix_now(),
        model: req.model.clone(),
        chat: true,
        include_usage: req.sampling.include_usage(),
        prompt_tokens: 0,
        sources: None,
        logprobs: params.logprobs.is_some(),
        tools: tooling.is_some(),
    };
    let tools = shape.tools;
    let target = target(services, &req.model).await?;
    let started = run(
        services,
        target,
        tool_calls::input(messages, tooling),
        params,
        (&caller, &req.retrieval),
        "messages",
        |e| in_openai_terms(e, tools),
    )
    .await?;
    shape.sources = started.sources;
    respond(req.sampling.stream, started.stream, shape).await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum PromptField {
    One(String),
    Many(Vec<Value>),
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct CompletionRequest {
    model: String,
    prompt: PromptField,
    /// Return each token's log-probability and this many alternatives
    /// (0-20; `choices[].logprobs` in the completions format).
    #[serde(default, deserialize_with = "crate::server::fields::integer::opt")]
    logprobs: Option<usize>,
    #[serde(default)]
    echo: bool,
    /// hearth's retrieval fields, for the `hearth-rag` model.
    #[serde(flatten)]
    retrieval: RetrievalFields,
    #[serde(flatten)]
    sampling: Sampling,
}

/// OpenAI text completions: a raw prompt, continued.
#[utoipa::path(post, path = "/v1/completions", tag = "openai", request_body = CompletionRequest,
    responses(
        (status = 200, description = "OpenAI's `text_completion` object; with `stream`, chunks ending with `data: [DONE]`", body = Object),
        (status = 400, description = "Invalid value (`param` names it)", body = ErrorBody),
        (status = 404, description = "Unknown model", body = ErrorBody),
    ))]
pub async fn completions(
    State(state): State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<super::auth::Caller>,
    ApiJson(req): ApiJson<CompletionRequest>,
) -> Result<Response, ApiError> {
    let services = state.services()?;
    let mut params = req.sampling.params(&state)?;
    params.logprobs = req.logprobs;
    if req.echo {
        return Err(invalid("echo", "echo is not supported"));
    }
    let prompt = match req.prompt {
        PromptField::One(p) => p,
        PromptField::Many(mut items) => match (items.len(), items.pop()) {
            (1, Some(Value::String(p))) => p,
            _ => {
                return Err(invalid(
                    "prompt",
                    "prompt must be a string or a list of one string (token arrays and batches are not supported)",
                ))
            }
        },
    };
    let mut shape = Shape {
        id: new_id("cmpl-"),
        created: unix_now(),
        model: req.model.clone(),
        chat: false,
        include_usage: req.sampling.include_usage(),
        prompt_tokens: 0,
        sources: None,
        logprobs: params.logprobs.is_some(),
        tools: false,
    };
    let target = target(services, &req.model).await?;
    let started = run(
        services,
        target,
        Input::Prompt(prompt),
        params,
        (&caller, &req.retrieval),
        "prompt",
        |e| in_openai_terms(e, false),
    )
    .await?;
    shape.sources = started.sources;
    respond(req.sampling.stream, started.stream, shape).await
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct EmbeddingsRequest {
    model: String,
    /// A string or a list of strings.
    #[schema(value_type = Object)]
    input: Value,
    encoding_format: Option<String>,
    /// The embedder's own dimension (others are refused). A JSON number
    /// with an integer value (`384.0` too).
    #[schema(value_type = Option<u64>, minimum = 1)]
    dimensions: Option<f64>,
}

/// OpenAI embeddings, as floats or base64.
#[utoipa::path(post, path = "/v1/embeddings", tag = "openai", request_body = EmbeddingsRequest,
    responses(
        (status = 200, description = "OpenAI's embedding list with `usage`", body = Object),
        (status = 400, description = "Invalid input (`param` names it)", body = ErrorBody),
        (status = 404, description = "Unknown model", body = ErrorBody),
    ))]
pub async fn embeddings(
    State(state): State<Arc<AppState>>,
    ApiJson(req): ApiJson<EmbeddingsRequest>,
) -> Result<Json<Value>, ApiError> {
    let services = state.services()?;
    let embedding = services.embedding()?;
    let dim = embedding.dim();
    if req.model != embedding.name() {
        return Err(ApiError::model_not_found(&req.model));
    }
    if req.dimensions.is_some_and(|d| d != dim as f64) {
        return Err(invalid(
            "dimensions",
            format!("this embedder produces {dim} dimensions only"),
        ));
    }
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(invalid(
                "encoding_format",
                format!("encoding_format must be float or base64, got `{other}`"),
            ))
        }
    };
    let texts = input_texts(req.input)?;
    let (vectors, tokens) = services.embed_counted(texts).await?;
    let data: Vec<Value> = vectors
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = if base64 {
                json!(encode_base64(v))
            } else {
                json!(v)
            };
            json!({ "object": "embedding", "index": i, "embedding": embedding })
        })
        .collect();
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "model": req.model,
        "usage": { "prompt_tokens": tokens, "total_tokens": tokens },
    })))
}

/// Little-endian f32s in standard base64, as OpenAI encodes them.
fn encode_base64(v: &[f32]) -> String {
    use base64::Engine;
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
