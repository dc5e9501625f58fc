//! Ollama's API on hearth's port, for the editors and UIs that speak it
//! (Open WebUI, Continue, ...): `/api/chat`, `/api/generate`, `/api/embed`
//! and the older `/api/embeddings`, `/api/tags`, `/api/show`, `/api/ps` and
//! `/api/version`. Answers stream as newline-delimited JSON unless
//! `"stream": false` (Ollama's default is to stream); `format` (`"json"`
//! or a JSON schema) constrains the output through the grammar engine;
//! `options` carries the sampling fields. A model is named as on the
//! OpenAI routes ([`super::target`]), with or without Ollama's `:latest`
//! tag; `hearth-rag` answers from the documents. Errors take Ollama's
//! shape, `{"error": "..."}` ([`super::dialect`]).

use super::error::{AnyJson, ApiError};
use super::fields::{input_texts, invalid, RetrievalFields, SamplingFields, StopField};
use super::state::AppState;
use super::stream::{event_stream, started};
use super::target::{run, target, target_kept, Target};
use super::tool_calls::{self, ToolDef};
use crate::engine::catalog::KeepAlive;
use crate::engine::{Completion, FinishReason, Generation, GenerationStream};
use crate::models::llm::message::{Message, ToolCall};
use crate::models::llm::sampling::SamplingParams;
use crate::models::llm::tools::CallParser;
use crate::pipelines::fine_tuned::Input;
use crate::pipelines::Services;
use crate::roles::{FINE_TUNED_MODEL, RAG_MODEL};
use crate::store::Passage;
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use utoipa::ToSchema;

/// The tag Ollama's clients put on a name (`smollm2:latest`).
const TAG: &str = ":latest";

/// A model's name without Ollama's `:latest` tag.
pub fn untagged(model: &str) -> &str {
    model.strip_suffix(TAG).unwrap_or(model)
}

fn now() -> String {
    humantime::format_rfc3339_nanos(SystemTime::now()).to_string()
}

/// Ollama's sampling `options`; others (`num_ctx`, `num_thread`, ...) are
/// ignored, as hearth sets them in its config.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct OllamaOptions {
    temperature: Option<f64>,
    top_p: Option<f64>,
    #[serde(default, deserialize_with = "crate::server::fields::integer::opt")]
    top_k: Option<usize>,
    #[serde(default, deserialize_with = "crate::server::fields::integer::opt")]
    seed: Option<u64>,
    /// Most tokens to generate; -1 (or -2): up to the config's limit.
    #[serde(
        default,
        deserialize_with = "crate::server::fields::integer::opt_signed"
    )]
    num_predict: Option<i64>,
    stop: Option<Vec<String>>,
    repeat_penalty: Option<f64>,
}

/// What `/api/chat` and `/api/generate` share.
#[derive(Debug, Deserialize, ToSchema)]
pub struct OllamaCommon {
    model: String,
    /// `"json"` or a JSON schema.
    #[schema(value_type = Option<Object>)]
    format: Option<Value>,
    options: Option<OllamaOptions>,
    /// Ollama's default is true.
    stream: Option<bool>,
    /// How long a model of `models.llms` stays loaded after this request
    /// ("5m", "0", "-1", or seconds); the pipelines' models stay loaded.
    keep_alive: Option<Value>,
    /// Thinking: refused unless false (no model here thinks in Ollama's field).
    think: Option<Value>,
    /// hearth's retrieval fields, for the `hearth-rag` model.
    #[serde(flatten)]
    retrieval: RetrievalFields,
}

impl OllamaCommon {
    fn params(&self, state: &AppState) -> Result<SamplingParams, ApiError> {
        if self
            .think
            .as_ref()
            .is_some_and(|t| t != &json!(false) && !t.is_null())
        {
            return Err(invalid(
                "think",
                format!("\"{}\" does not support thinking", self.model),
            ));
        }
        let o = self.options.as_ref();
        let limit = state.config.generation.max_tokens_limit;
        let max_tokens = match o.and_then(|o| o.num_predict) {
            None => None,
            Some(n) if n < 0 => Some(limit),
            Some(0) => {
                return Err(invalid(
                    "num_predict",
                    "options.num_predict must be at least 1",
                ))
            }
            Some(n) => Some(usize::try_from(n).unwrap_or(usize::MAX)),
        };
        let format = match &self.format {
            None => None,
            Some(Value::String(s)) if s.is_empty() => None,
            Some(Value::String(s)) if s == "json" => Some(json!("json")),
            Some(schema @ Value::Object(_)) => Some(schema.clone()),
            Some(_) => {
                return Err(invalid(
                    "format",
                    "format must be \"json\" or a JSON schema (an object)",
                ))
            }
        };
        let fields = SamplingFields {
            max_tokens,
            temperature: o.and_then(|o| o.temperature),
            top_p: o.and_then(|o| o.top_p),
            repetition_penalty: o.and_then(|o| o.repeat_penalty),
            seed: o.and_then(|o| o.seed),
            stop: o.and_then(|o| o.stop.clone()).map(StopField::Many),
            format,
            ..SamplingFields::default()
        };
        let mut params = fields.params(
            &state.config.generation,
            o.and_then(|o| o.top_k).unwrap_or(0),
        );
        params.format = fields.output_format()?;
        Ok(params)
    }

    fn keep_alive(&self) -> Result<Option<KeepAlive>, ApiError> {
        self.keep_alive
            .as_ref()
            .filter(|k| !k.is_null())
            .map(KeepAlive::from_json)
            .transpose()
            .map_err(|e| invalid("keep_alive", e))
    }

    fn streams(&self) -> bool {
        self.stream.unwrap_or(true)
    }
}

/// A refusal in Ollama's field names: the sampling fields are
/// `options.*`, a tool schema's grammar is `tools`.
fn in_ollama_terms(e: impl Into<ApiError>) -> ApiError {
    let mut e = e.into();
    let renamed = match e.param.as_deref() {
        Some("stop") => "options.stop",
        Some("temperature") => "options.temperature",
        Some("top_p") => "options.top_p",
        Some("repetition_penalty") => "options.repeat_penalty",
        Some("max_tokens") => "options.num_predict",
        Some("grammar") => "tools",
        _ => return e,
    };
    e.param = Some(renamed.into());
    e
}

/// An Ollama call: `{"function": {"name", "arguments": {...}}}`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct OllamaToolCall {
    function: OllamaFunction,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct OllamaFunction {
    name: String,
    #[schema(value_type = Object)]
    #[serde(default)]
    arguments: Value,
}

/// A turn: `system`, `user`, `assistant` (with the `tool_calls` it made)
/// or `tool` (a call's result).
#[derive(Debug, Deserialize, ToSchema)]
pub struct OllamaMessage {
    role: String,
    #[serde(default)]
    content: String,
    /// Refused: no model here reads images.
    #[schema(value_type = Option<Vec<String>>)]
    images: Option<Value>,
    tool_calls: Option<Vec<OllamaToolCall>>,
}

/// Ollama's turns as hearth's: a `tool` turn answers the oldest call not
/// yet answered (Ollama's calls carry no ids; hearth gives them some).
fn to_messages(turns: Vec<OllamaMessage>) -> Result<Vec<Message>, ApiError> {
    if turns.is_empty() {
        return Err(invalid("messages", "messages must not be empty"));
    }
    let mut open: std::collections::VecDeque<String> = Default::default();
    let mut next_id = 0;
    turns
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            if t.images.as_ref().is_some_and(|v| !v.is_null()) {
                return Err(invalid("messages", format!("messages[{i}]: images are not supported")));
            }
            let role = match t.role.as_str() {
                r @ ("system" | "user" | "assistant" | "tool") => r,
                other => {
                    return Err(invalid(
                        "messages",
                        format!("messages[{i}]: role `{other}` is not supported; use system, user, assistant or tool"),
                    ))
                }
            };
            let mut message = Message::new(role, t.content);
            if let Some(calls) = t.tool_calls {
                if role != "assistant" {
                    return Err(invalid("messages", format!("messages[{i}]: only assistant messages carry tool_calls")));
                }
                for c in calls {
                    let id = format!("call_{next_id}");
                    next_id += 1;
                    open.push_back(id.clone());
                    message.tool_calls.push(ToolCall {
                        id,
                        name: c.function.name,
                        arguments: c.function.arguments.to_string(),
                    });
                }
            }
            if role == "tool" {
                let id = open.pop_front().unwrap_or_else(|| {
                    next_id += 1;
                    format!("call_{}", next_id - 1)
                });
                message.tool_call_id = Some(id);
            }
            Ok(message)
        })
        .collect()
}

/// Ollama's timings, in nanoseconds, and token counts.
fn metrics(c: &Completion, prompt_tokens: usize) -> Value {
    let ns = |ms: f64| (ms * 1e6) as u64;
    json!({
        "total_duration": ns(c.timings.total_ms),
        "load_duration": 0,
        "prompt_eval_count": prompt_tokens,
        "prompt_eval_duration": ns(c.timings.prompt_ms),
        "eval_count": c.tokens.len(),
        "eval_duration": ns(c.timings.generate_ms),
    })
}

fn done_reason(c: &Completion) -> &'static str {
    match c.finish_reason {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
    }
}

/// How one answer is shaped: a chat `message` or a generate `response`.
struct Shape {
    model: String,
    chat: bool,
    tools: bool,
    prompt_tokens: usize,
    sources: Option<Vec<Passage>>,
}

impl Shape {
    fn line(&self, text: &str, calls: &[ToolCall], end: Option<&Completion>) -> Value {
        let mut line = json!({ "model": self.model, "created_at": now() });
        if self.chat {
            let mut message = json!({ "role": "assistant", "content": text });
            if !calls.is_empty() {
                message["tool_calls"] = calls
                    .iter()
                    .map(|c| {
                        let arguments: Value =
                            serde_json::from_str(&c.arguments).unwrap_or(json!(c.arguments));
                        json!({ "function": { "name": c.name, "arguments": arguments } })
                    })
                    .collect();
            }
            line["message"] = message;
        } else {
            line["response"] = json!(text);
        }
        line["done"] = json!(end.is_some());
        if let Some(c) = end {
            line["done_reason"] = json!(done_reason(c));
            if let Value::Object(m) = metrics(c, self.prompt_tokens) {
                line.as_object_mut().expect("an object").extend(m);
            }
            if let Some(s) = &self.sources {
                line["sources"] = json!(s);
            }
        }
        line
    }

    fn whole(&self, c: &Completion) -> Value {
        if !self.tools {
            return self.line(&c.text, &[], Some(c));
        }
        let mut parser = CallParser::new();
        parser.push(&c.text);
        parser.finish();
        self.line(parser.content().unwrap_or(""), parser.calls(), Some(c))
    }
}

/// One NDJSON line.
fn ndjson(value: &Value) -> axum::body::Bytes {
    let mut line = value.to_string();
    line.push('\n');
    line.into()
}

/// Answer whole, or as Ollama's newline-delimited JSON stream.
async fn respond(
    stream_it: bool,
    mut stream: GenerationStream,
    mut shape: Shape,
) -> Result<Response, ApiError> {
    shape.prompt_tokens = started(&mut stream).await.map_err(in_ollama_terms)?;
    if !stream_it {
        let completion = stream.finish().await?;
        return Ok(Json(shape.whole(&completion)).into_response());
    }
    let shape = Arc::new(shape);
    let text_shape = shape.clone();
    // With tools, calls go out whole when the answer ends (as Ollama sends
    // them); the text around them streams.
    let parser = Arc::new(Mutex::new(CallParser::new()));
    let text_parser = parser.clone();
    let lines = event_stream(
        stream,
        move |text, _| {
            let content = if text_shape.tools {
                let mut parser = text_parser.lock().expect("parser lock");
                let before = parser.content().map_or(0, str::len);
                parser.push(&text);
                parser
                    .content()
                    .map_or(String::new(), |c| c[before..].to_string())
            } else {
                text
            };
            if content.is_empty() {
                return Vec::new();
            }
            vec![ndjson(&text_shape.line(&content, &[], None))]
        },
        move |end| match end {
            Ok(c) => {
                let mut lines = Vec::new();
                if shape.tools {
                    let mut parser = parser.lock().expect("parser lock");
                    let before = parser.content().map_or(0, str::len);
                    parser.finish();
                    let rest = parser
                        .content()
                        .map_or(String::new(), |t| t[before..].to_string());
                    if !rest.is_empty() || !parser.calls().is_empty() {
                        lines.push(ndjson(&shape.line(&rest, parser.calls(), None)));
                    }
                }
                lines.push(ndjson(&shape.line("", &[], Some(&c))));
                lines
            }
            Err(e) => vec![ndjson(&json!({ "error": e.message }))],
        },
    );
    let mut response = Body::from_stream(lines).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(response)
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct OllamaChatRequest {
    #[serde(flatten)]
    common: OllamaCommon,
    messages: Vec<OllamaMessage>,
    /// Functions the model may call, in OpenAI's shape (as Ollama takes them).
    tools: Option<Vec<ToolDef>>,
    /// hearth's addition (Ollama has none): `"auto"` (the default),
    /// `"none"`, `"required"` or `{"type": "function", "function": {"name"}}`,
    /// as on `/v1/chat/completions`.
    #[schema(value_type = Option<Object>)]
    tool_choice: Option<Value>,
}

/// A chat turn; `model` picks the pipeline.
#[utoipa::path(post, path = "/api/chat", tag = "ollama", request_body = OllamaChatRequest,
    responses(
        (status = 200, description = "`{\"model\", \"created_at\", \"message\": {\"role\", \"content\", \"tool_calls\"}, \"done\", \"done_reason\", \"total_duration\", \"prompt_eval_count\", \"eval_count\", ...}`; streamed (the default) as newline-delimited JSON, one line per piece, the last with `done: true`", body = Object),
        (status = 400, description = "Invalid value: `{\"error\": \"...\"}`", body = Object),
        (status = 404, description = "Unknown model", body = Object),
    ))]
pub async fn chat(
    State(state): State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<super::auth::Caller>,
    AnyJson(req): AnyJson<OllamaChatRequest>,
) -> Result<Response, ApiError> {
    let services = state.services()?;
    let model = untagged(&req.common.model).to_string();
    let mut params = req.common.params(&state)?;
    let messages = to_messages(req.messages)?;
    let offered = req.tools.as_ref().is_some_and(|t| !t.is_empty());
    let tooling = tool_calls::tooling(req.tools, req.tool_choice, None)?;
    tool_calls::constrain(tooling.as_ref(), offered, &messages, &mut params, "format")?;
    let mut shape = Shape {
        model: req.common.model.clone(),
        chat: true,
        tools: tooling.is_some(),
        prompt_tokens: 0,
        sources: None,
    };
    let target = target_kept(services, &model, req.common.keep_alive()?).await?;
    let started = run(
        services,
        target,
        tool_calls::input(messages, tooling),
        params,
        (&caller, &req.common.retrieval),
        "messages",
        in_ollama_terms,
    )
    .await?;
    shape.sources = started.sources;
    respond(req.common.streams(), started.stream, shape).await
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct OllamaGenerateRequest {
    #[serde(flatten)]
    common: OllamaCommon,
    /// The prompt (empty: the model is loaded, nothing is generated).
    #[serde(default)]
    prompt: String,
    /// A system message before the prompt (not with `raw`).
    system: Option<String>,
    /// The prompt as it is, without the chat template.
    #[serde(default)]
    raw: bool,
    /// Refused: fill-in-the-middle is not supported.
    suffix: Option<String>,
    /// Refused: the template is the model's own.
    template: Option<String>,
    /// Refused: conversations go through `/api/chat` (or `messages`).
    #[schema(value_type = Option<Vec<u32>>)]
    context: Option<Value>,
    /// Refused: no model here reads images.
    #[schema(value_type = Option<Vec<String>>)]
    images: Option<Value>,
}

/// A completion of one prompt (through the chat template unless `raw`).
#[utoipa::path(post, path = "/api/generate", tag = "ollama", request_body = OllamaGenerateRequest,
    responses(
        (status = 200, description = "`{\"model\", \"created_at\", \"response\", \"done\", \"done_reason\", ...}`; streamed (the default) as newline-delimited JSON", body = Object),
        (status = 400, description = "Invalid value: `{\"error\": \"...\"}`", body = Object),
        (status = 404, description = "Unknown model", body = Object),
    ))]
pub async fn generate(
    State(state): State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<super::auth::Caller>,
    AnyJson(req): AnyJson<OllamaGenerateRequest>,
) -> Result<Response, ApiError> {
    let services = state.services()?;
    let model = untagged(&req.common.model).to_string();
    for (field, given) in [
        ("suffix", req.suffix.as_ref().is_some_and(|s| !s.is_empty())),
        (
            "template",
            req.template.as_ref().is_some_and(|s| !s.is_empty()),
        ),
        (
            "context",
            req.context.as_ref().is_some_and(|c| !c.is_null()),
        ),
        ("images", req.images.as_ref().is_some_and(|c| !c.is_null())),
    ] {
        if given {
            return Err(invalid(field, format!("`{field}` is not supported")));
        }
    }
    let params = req.common.params(&state)?;
    // Resolved (and a model of `models.llms` loaded) once the request is
    // known to be valid.
    let target = target_kept(services, &model, req.common.keep_alive()?).await?;
    // Ollama's way to load a model: an empty prompt, answered once the
    // target is loaded.
    if req.prompt.is_empty() {
        return Ok(Json(json!({
            "model": req.common.model, "created_at": now(), "response": "",
            "done": true, "done_reason": "load",
        }))
        .into_response());
    }
    let input = if req.raw {
        if req.system.is_some() {
            return Err(invalid(
                "system",
                "`system` needs the chat template: not with `raw`",
            ));
        }
        Input::Prompt(req.prompt)
    } else {
        let mut messages: Vec<Message> = req
            .system
            .into_iter()
            .map(|s| Message::new("system", s))
            .collect();
        messages.push(Message::new("user", req.prompt));
        Input::Messages(messages)
    };
    let started = run(
        services,
        target,
        input,
        params,
        (&caller, &req.common.retrieval),
        "prompt",
        in_ollama_terms,
    )
    .await?;
    let shape = Shape {
        model: req.common.model.clone(),
        chat: false,
        tools: false,
        prompt_tokens: 0,
        sources: started.sources,
    };
    respond(req.common.streams(), started.stream, shape).await
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct OllamaEmbedRequest {
    model: String,
    /// A text or a list of texts.
    #[schema(value_type = Object)]
    input: Value,
    /// Accepted: texts longer than the embedder's window are always cut.
    #[allow(dead_code)]
    truncate: Option<bool>,
    #[allow(dead_code)]
    keep_alive: Option<Value>,
    #[allow(dead_code)]
    options: Option<Value>,
}

async fn embed_texts(
    state: &AppState,
    model: &str,
    texts: Vec<String>,
) -> Result<(Vec<Vec<f32>>, usize), ApiError> {
    let services = state.services()?;
    let embedding = services.embedding()?;
    if untagged(model) != embedding.name() {
        return Err(ApiError::model_not_found(model));
    }
    Ok(services.embed_counted(texts).await?)
}

/// Embeddings of one text or several.
#[utoipa::path(post, path = "/api/embed", tag = "ollama", request_body = OllamaEmbedRequest,
    responses(
        (status = 200, description = "`{\"model\", \"embeddings\": [[...]], \"prompt_eval_count\", \"total_duration\"}`", body = Object),
        (status = 400, description = "Invalid input: `{\"error\": \"...\"}`", body = Object),
        (status = 404, description = "Not the embedder", body = Object),
    ))]
pub async fn embed(
    State(state): State<Arc<AppState>>,
    AnyJson(req): AnyJson<OllamaEmbedRequest>,
) -> Result<Json<Value>, ApiError> {
    let began = std::time::Instant::now();
    let texts = input_texts(req.input)?;
    let (vectors, tokens) = embed_texts(&state, &req.model, texts).await?;
    Ok(Json(json!({
        "model": req.model,
        "embeddings": vectors,
        "total_duration": began.elapsed().as_nanos() as u64,
        "load_duration": 0,
        "prompt_eval_count": tokens,
    })))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct OllamaLegacyEmbedRequest {
    model: String,
    prompt: String,
}

/// One text's embedding (Ollama's older route).
#[utoipa::path(post, path = "/api/embeddings", tag = "ollama", request_body = OllamaLegacyEmbedRequest,
    responses(
        (status = 200, description = "`{\"embedding\": [...]}`", body = Object),
        (status = 400, description = "Invalid input: `{\"error\": \"...\"}`", body = Object),
        (status = 404, description = "Not the embedder", body = Object),
    ))]
pub async fn embeddings(
    State(state): State<Arc<AppState>>,
    AnyJson(req): AnyJson<OllamaLegacyEmbedRequest>,
) -> Result<Json<Value>, ApiError> {
    let texts = input_texts(json!(req.prompt))?;
    let (mut vectors, _) = embed_texts(&state, &req.model, texts).await?;
    Ok(Json(
        json!({ "embedding": vectors.pop().unwrap_or_default() }),
    ))
}

/// What Ollama's lists say of a model: its name, size and `details`.
fn entry(name: &str, details: Value, size: u64, modified: &str) -> Value {
    json!({
        "name": format!("{name}{TAG}"),
        "model": format!("{name}{TAG}"),
        "modified_at": modified,
        "size": size,
        "details": details,
    })
}

/// `1234567890` parameters as Ollama writes them: `1.2B`, `135M`.
fn parameter_size(n: u64) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.1}B", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{}M", n / 1_000_000),
        n => format!("{}K", n / 1_000),
    }
}

/// A local LLM's `details` and file size.
fn llm_details(g: &Generation) -> (Value, u64) {
    match g {
        Generation::Local(local) => {
            let s = &local.llm().summary;
            // The type holding most parameters names the quantization.
            let level = s
                .tensor_types
                .iter()
                .max_by_key(|(_, (_, params))| *params)
                .map(|(t, _)| t.clone())
                .unwrap_or_default();
            let details = json!({
                "format": "gguf",
                "family": s.architecture,
                "families": [s.architecture],
                "parameter_size": parameter_size(s.parameters),
                "quantization_level": level,
            });
            (details, s.file_bytes)
        }
        Generation::Remote(_) => (json!({ "format": "gguf" }), 0),
    }
}

/// A model as Ollama's lists show it.
struct Listed {
    entry: Value,
    capabilities: Vec<&'static str>,
    /// Whether its weights are in memory (the catalog's models come and go;
    /// the pipelines' stay).
    loaded: bool,
    /// When an idle catalog model will be unloaded.
    expires_at: Option<String>,
}

/// Every model this process serves, as Ollama lists them, with what each
/// can do (Ollama's `capabilities`): the pipelines' models, then those of
/// `models.llms`, loaded or not.
fn listed(services: &Services, modified: &str) -> Vec<Listed> {
    let mut out: Vec<Listed> = Vec::new();
    let mut add = |name: &str, (details, size): (Value, u64), caps: Vec<&'static str>| {
        if !out
            .iter()
            .any(|l| l.entry["name"] == format!("{name}{TAG}"))
        {
            out.push(Listed {
                entry: entry(name, details, size, modified),
                capabilities: caps,
                loaded: true,
                expires_at: None,
            });
        }
    };
    if let Ok(rag) = services.rag() {
        add(RAG_MODEL, llm_details(rag.generator()), vec!["completion"]);
    }
    if let Ok(pipeline) = services.fine_tuned() {
        add(
            FINE_TUNED_MODEL,
            llm_details(pipeline.generator()),
            vec!["completion", "tools"],
        );
        for a in pipeline
            .adapter()
            .into_iter()
            .cloned()
            .chain(pipeline.generator().adapters())
        {
            add(
                &a.name,
                llm_details(pipeline.generator()),
                vec!["completion", "tools"],
            );
        }
    }
    for (_, g) in services.generators() {
        add(g.name(), llm_details(g), vec!["completion", "tools"]);
    }
    if let Ok(e) = services.embedding() {
        add(
            e.name(),
            (json!({ "format": "safetensors", "family": "bert" }), 0),
            vec!["embedding"],
        );
    }
    for status in services.catalog().map(|c| c.list()).unwrap_or_default() {
        if out
            .iter()
            .any(|l| l.entry["name"] == format!("{}{TAG}", status.name))
        {
            continue;
        }
        let (details, size) = match &status.generation {
            Some(g) => (llm_details(g).0, status.bytes.unwrap_or(0)),
            None => (json!({ "format": "gguf" }), 0),
        };
        out.push(Listed {
            entry: entry(&status.name, details, size, modified),
            capabilities: vec!["completion", "tools"],
            loaded: status.generation.is_some(),
            expires_at: status
                .expires_at
                .map(|t| humantime::format_rfc3339_seconds(t).to_string()),
        });
    }
    out
}

fn started_at(state: &AppState) -> String {
    let since = SystemTime::now()
        .checked_sub(state.started.elapsed())
        .unwrap_or(SystemTime::UNIX_EPOCH);
    humantime::format_rfc3339_seconds(since).to_string()
}

/// The models served here.
#[utoipa::path(get, path = "/api/tags", tag = "ollama", responses(
    (status = 200, description = "`{\"models\": [{\"name\", \"model\", \"modified_at\", \"size\", \"details\"}]}`", body = Object),
))]
pub async fn tags(State(state): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    let services = state.services()?;
    let models: Vec<Value> = listed(services, &started_at(&state))
        .into_iter()
        .map(|l| l.entry)
        .collect();
    Ok(Json(json!({ "models": models })))
}

/// The models loaded: the pipelines' (for as long as hearth runs) and
/// those of `models.llms` loaded now, with when each will be unloaded.
#[utoipa::path(get, path = "/api/ps", tag = "ollama", responses(
    (status = 200, description = "`{\"models\": [{\"name\", \"model\", \"size\", \"details\", \"size_vram\"}]}`", body = Object),
))]
pub async fn ps(State(state): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    let services = state.services()?;
    let models: Vec<Value> = listed(services, &started_at(&state))
        .into_iter()
        .filter(|l| l.loaded)
        .map(|l| {
            let mut m = l.entry;
            m["size_vram"] = json!(0);
            if let Some(at) = l.expires_at {
                m["expires_at"] = json!(at);
            }
            m
        })
        .collect();
    Ok(Json(json!({ "models": models })))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct OllamaShowRequest {
    /// The model (Ollama's older clients send `name`).
    #[serde(alias = "name")]
    model: String,
}

/// One model's details, template and capabilities.
#[utoipa::path(post, path = "/api/show", tag = "ollama", request_body = OllamaShowRequest, responses(
    (status = 200, description = "`{\"details\", \"model_info\", \"template\", \"capabilities\", \"modified_at\"}`", body = Object),
    (status = 404, description = "Unknown model: `{\"error\": \"...\"}`", body = Object),
))]
pub async fn show(
    State(state): State<Arc<AppState>>,
    AnyJson(req): AnyJson<OllamaShowRequest>,
) -> Result<Json<Value>, ApiError> {
    let services = state.services()?;
    let name = untagged(&req.model);
    let modified = started_at(&state);
    let Listed {
        entry,
        capabilities,
        loaded,
        ..
    } = listed(services, &modified)
        .into_iter()
        .find(|l| l.entry["name"] == format!("{name}{TAG}"))
        .ok_or_else(|| ApiError::model_not_found(&req.model))?;
    let mut info = json!({});
    let mut template = String::new();
    // A model of `models.llms` not loaded is not loaded to be shown.
    if loaded && !capabilities.contains(&"embedding") {
        let g = match target(services, name).await? {
            Target::Rag => services.rag()?.generator().clone(),
            Target::Generate(p) => p.generator().clone(),
        };
        template = g.chat_template().source().to_string();
        if let Generation::Local(local) = &g {
            let s = &local.llm().summary;
            let arch = &s.architecture;
            info = json!({
                "general.architecture": arch,
                "general.parameter_count": s.parameters,
                format!("{arch}.context_length"): g.context_length(),
                format!("{arch}.block_count"): s.layers,
                format!("{arch}.embedding_length"): s.embedding_length,
            });
        }
    }
    Ok(Json(json!({
        "modelfile": "",
        "parameters": "",
        "template": template,
        "details": entry["details"],
        "model_info": info,
        "capabilities": capabilities,
        "modified_at": modified,
    })))
}

/// hearth's version (Ollama's clients ask before anything else).
#[utoipa::path(get, path = "/api/version", tag = "ollama", responses(
    (status = 200, description = "`{\"version\"}`: hearth's", body = Object),
))]
pub async fn version() -> Json<Value> {
    Json(json!({ "version": env!("CARGO_PKG_VERSION") }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turns(v: Value) -> Vec<OllamaMessage> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn tool_answers_pair_with_the_calls_in_order() {
        let m = to_messages(turns(json!([
            { "role": "user", "content": "Weather in Paris and Rome?" },
            { "role": "assistant", "content": "", "tool_calls": [
                { "function": { "name": "get_weather", "arguments": { "city": "Paris" } } },
                { "function": { "name": "get_weather", "arguments": { "city": "Rome" } } },
            ]},
            { "role": "tool", "content": "18 C" },
            { "role": "tool", "content": "24 C" },
        ])))
        .unwrap();
        assert_eq!(m[1].tool_calls[0].arguments, r#"{"city":"Paris"}"#);
        assert_eq!(
            m[2].tool_call_id.as_deref(),
            Some(m[1].tool_calls[0].id.as_str())
        );
        assert_eq!(
            m[3].tool_call_id.as_deref(),
            Some(m[1].tool_calls[1].id.as_str())
        );
        let bad = |v: Value| to_messages(turns(v)).err().unwrap().message;
        assert!(
            bad(json!([{ "role": "user", "content": "x", "images": ["AA=="] }])).contains("images")
        );
        assert!(bad(json!([{ "role": "robot", "content": "x" }])).contains("robot"));
        assert!(bad(json!([])).contains("empty"));
    }

    #[test]
    fn names_and_sizes() {
        assert_eq!(untagged("hearth-rag:latest"), "hearth-rag");
        assert_eq!(untagged("hearth-rag"), "hearth-rag");
        assert_eq!(parameter_size(134_515_008), "134M");
        assert_eq!(parameter_size(1_235_814_400), "1.2B");
    }
}
