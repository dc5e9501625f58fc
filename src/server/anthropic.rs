//! Anthropic's Messages API over hearth's pipelines, so that tools built on
//! Anthropic's SDKs run against a local model: `POST /v1/messages` (whole,
//! or streamed as Anthropic's events `message_start`,
//! `content_block_start`, `content_block_delta`, `content_block_stop`,
//! `message_delta`, `message_stop`) and `POST /v1/messages/count_tokens`.
//! The `model` field picks the pipeline as on OpenAI's routes
//! ([`super::target`]); `tools` and `tool_choice` go through the same tool
//! format and grammar as OpenAI's (`tool_use` and `tool_result` blocks are
//! its calls and answers). Errors take Anthropic's shape
//! ([`super::dialect`]). Unknown request fields are ignored, as on
//! OpenAI's routes.

use super::dialect::anthropic_body;
use super::error::{ApiError, ApiJson};
use super::fields::{invalid, RetrievalFields, SamplingFields, StopField};
use super::state::AppState;
use super::stream::{new_id, started, usage};
use super::target::{run, target, Target};
use super::tool_calls::{self, PieceEvents, ToolDef, Tooling};
use crate::engine::{Completion, FinishReason, GenerationStream};
use crate::models::llm::grammar::Format;
use crate::models::llm::message::{Message, Tool, ToolCall};
use crate::models::llm::sampling::SamplingParams;
use crate::models::llm::tools::{CallParser, Piece};
use crate::store::Passage;
use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use utoipa::ToSchema;

/// A turn: `user` (text, and `tool_result` blocks answering calls) or
/// `assistant` (text, and the `tool_use` blocks it made).
#[derive(Debug, Deserialize, ToSchema)]
pub struct InputMessage {
    role: String,
    /// A string, or a list of blocks: `{"type": "text", "text"}`,
    /// `{"type": "tool_use", "id", "name", "input"}`, `{"type":
    /// "tool_result", "tool_use_id", "content", "is_error"}`.
    #[schema(value_type = Object)]
    content: Value,
}

/// A tool the model may call: `{"name", "description", "input_schema"}`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct AnthropicTool {
    name: String,
    description: Option<String>,
    /// A JSON schema for the tool's input (an object).
    #[schema(value_type = Object)]
    input_schema: Option<Value>,
    /// `custom` or absent; Anthropic's server tools (web search, code
    /// execution, ...) are not offered.
    #[serde(rename = "type")]
    kind: Option<String>,
}

/// The conversation and tools: what `/v1/messages` and
/// `/v1/messages/count_tokens` share.
#[derive(Debug, Deserialize, ToSchema)]
pub struct Conversation {
    model: String,
    messages: Vec<InputMessage>,
    /// The system prompt: a string, or a list of `{"type": "text", "text"}`.
    #[schema(value_type = Option<Object>)]
    system: Option<Value>,
    tools: Option<Vec<AnthropicTool>>,
    /// `{"type": "auto" | "any" | "none"}` or `{"type": "tool", "name"}`;
    /// `disable_parallel_tool_use: false` allows several calls in one
    /// answer (hearth's default is one: small models given the choice
    /// repeat a call).
    #[schema(value_type = Option<Object>)]
    tool_choice: Option<Value>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct MessagesRequest {
    #[serde(flatten)]
    conversation: Conversation,
    /// Most tokens to generate (required, as in Anthropic's API).
    #[serde(default, deserialize_with = "crate::server::fields::integer::opt")]
    max_tokens: Option<usize>,
    stop_sequences: Option<Vec<String>>,
    /// 0 is greedy.
    temperature: Option<f64>,
    top_p: Option<f64>,
    #[serde(default, deserialize_with = "crate::server::fields::integer::opt")]
    top_k: Option<usize>,
    #[serde(default)]
    stream: bool,
    /// `{"format": {"type": "json_schema", "schema"}}`: the answer is
    /// constrained to the schema; `effort` is accepted and changes nothing.
    #[schema(value_type = Option<Object>)]
    output_config: Option<Value>,
    /// The older form of `output_config.format`.
    #[schema(value_type = Option<Object>)]
    output_format: Option<Value>,
    /// Extended thinking: refused when enabled (no local model here thinks
    /// in Anthropic's blocks).
    #[schema(value_type = Option<Object>)]
    thinking: Option<Value>,
    /// hearth's retrieval fields, for the `hearth-rag` model.
    #[serde(flatten)]
    retrieval: RetrievalFields,
}

/// Text of a `system` field or a `tool_result`'s `content`: a string or a
/// list of text blocks.
fn text_of(value: &Value, field: &'static str) -> Result<String, ApiError> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Array(blocks) => {
            let mut text = String::new();
            for block in blocks {
                match (block["type"].as_str(), block["text"].as_str()) {
                    (Some("text"), Some(t)) => text.push_str(t),
                    (kind, _) => {
                        return Err(invalid(
                            field,
                            format!(
                                "blocks of type {} are not supported here; only text",
                                kind.map_or("(none)".into(), |k| format!("`{k}`"))
                            ),
                        ))
                    }
                }
            }
            Ok(text)
        }
        Value::Null => Ok(String::new()),
        _ => Err(invalid(field, "must be a string or a list of text blocks")),
    }
}

/// One turn's blocks (a string is one text block).
fn blocks_of(content: &Value) -> Result<Vec<Value>, ApiError> {
    match content {
        Value::String(s) => Ok(vec![json!({ "type": "text", "text": s })]),
        Value::Array(blocks) => Ok(blocks.clone()),
        _ => Err(invalid(
            "messages",
            "a message's content must be a string or a list of blocks",
        )),
    }
}

fn str_field<'a>(block: &'a Value, name: &str, kind: &str) -> Result<&'a str, ApiError> {
    block[name].as_str().ok_or_else(|| {
        invalid(
            "messages",
            format!("a `{kind}` block needs `{name}`, a string"),
        )
    })
}

/// The system prompt and turns as hearth's conversation: `tool_result`
/// blocks become `tool` turns (before the user's text, in order), an
/// assistant's `tool_use` blocks its calls.
fn to_messages(system: Option<&Value>, turns: &[InputMessage]) -> Result<Vec<Message>, ApiError> {
    if turns.is_empty() {
        return Err(invalid("messages", "messages must not be empty"));
    }
    let mut out = Vec::with_capacity(turns.len() + 1);
    if let Some(system) = system {
        let text = text_of(system, "system")?;
        if !text.is_empty() {
            out.push(Message::new("system", text));
        }
    }
    for (i, turn) in turns.iter().enumerate() {
        let mut text = String::new();
        let mut calls = Vec::new();
        let user = match turn.role.as_str() {
            "user" => true,
            "assistant" => false,
            other => {
                return Err(invalid(
                    "messages",
                    format!("messages[{i}]: role `{other}` is not supported; use user or assistant (the system prompt is the top-level `system`)"),
                ))
            }
        };
        for block in blocks_of(&turn.content)? {
            match (block["type"].as_str().unwrap_or(""), user) {
                ("text", _) => text.push_str(str_field(&block, "text", "text")?),
                ("tool_result", true) => {
                    let id = str_field(&block, "tool_use_id", "tool_result")?;
                    let mut answer = text_of(&block["content"], "messages")?;
                    if block["is_error"] == json!(true) {
                        answer = format!("Error: {answer}");
                    }
                    let mut message = Message::new("tool", answer);
                    message.tool_call_id = Some(id.to_string());
                    out.push(message);
                }
                ("tool_use", false) => calls.push(ToolCall {
                    id: str_field(&block, "id", "tool_use")?.to_string(),
                    name: str_field(&block, "name", "tool_use")?.to_string(),
                    arguments: block.get("input").unwrap_or(&json!({})).to_string(),
                }),
                (kind @ ("tool_result" | "tool_use"), _) => {
                    return Err(invalid(
                        "messages",
                        format!(
                            "messages[{i}]: a `{kind}` block belongs in {} message",
                            if kind == "tool_use" { "an assistant" } else { "a user" }
                        ),
                    ))
                }
                (kind, _) => {
                    return Err(invalid(
                        "messages",
                        format!("messages[{i}]: content blocks of type `{kind}` are not supported; only text, tool_use and tool_result"),
                    ))
                }
            }
        }
        if user {
            if !text.is_empty() {
                out.push(Message::new("user", text));
            }
        } else {
            let mut message = Message::new("assistant", text);
            message.tool_calls = calls;
            out.push(message);
        }
    }
    if out.last().is_some_and(|m| m.role == "assistant") {
        return Err(invalid(
            "messages",
            "the last message is the assistant's: continuing a prefilled answer is not supported; end with a user message",
        ));
    }
    Ok(out)
}

/// `tools` and `tool_choice` through OpenAI's checks (the same names, the
/// same schemas), with the messages in Anthropic's words.
fn tooling(
    tools: Option<&[AnthropicTool]>,
    choice: Option<&Value>,
) -> Result<Option<Tooling>, ApiError> {
    let mut defs = Vec::new();
    for (i, tool) in tools.unwrap_or_default().iter().enumerate() {
        if let Some(kind) = tool.kind.as_deref().filter(|k| *k != "custom") {
            return Err(invalid(
                "tools",
                format!("tools[{i}]: tools of type `{kind}` (Anthropic's server tools) are not supported; give `name`, `description` and `input_schema`"),
            ));
        }
        let def = json!({ "type": "function", "function": {
            "name": tool.name, "description": tool.description, "parameters": tool.input_schema,
        }});
        defs.push(
            serde_json::from_value::<ToolDef>(def).map_err(|e| invalid("tools", e.to_string()))?,
        );
    }
    let (choice, parallel) = match choice {
        None => (None, None),
        Some(c) => {
            let parallel = c["disable_parallel_tool_use"].as_bool().map(|d| !d);
            let choice = match (c["type"].as_str(), c["name"].as_str()) {
                (Some("auto"), _) => json!("auto"),
                (Some("any"), _) => json!("required"),
                (Some("none"), _) => json!("none"),
                (Some("tool"), Some(name)) => json!({ "type": "function", "function": { "name": name } }),
                _ => {
                    return Err(invalid(
                        "tool_choice",
                        "tool_choice must be {\"type\": \"auto\"}, {\"type\": \"any\"}, {\"type\": \"none\"} or {\"type\": \"tool\", \"name\": ...}",
                    ))
                }
            };
            (Some(choice), parallel)
        }
    };
    tool_calls::tooling(Some(defs), choice, parallel).map_err(|mut e| {
        e.message = e
            .message
            .replace("function.parameters", "input_schema")
            .replace("function name", "name")
            .replace("function ", "tool ");
        e
    })
}

impl MessagesRequest {
    fn params(&self, state: &AppState) -> Result<SamplingParams, ApiError> {
        let max_tokens = self
            .max_tokens
            .ok_or_else(|| invalid("max_tokens", "max_tokens is required"))?;
        if self
            .thinking
            .as_ref()
            .is_some_and(|t| t["type"] == "enabled")
        {
            return Err(invalid("thinking", "extended thinking is not supported"));
        }
        let fields = SamplingFields {
            max_tokens: Some(max_tokens),
            temperature: self.temperature,
            top_p: self.top_p,
            stop: self.stop_sequences.clone().map(StopField::Many),
            ..SamplingFields::default()
        };
        let mut params = fields.params(&state.config.generation, self.top_k.unwrap_or(0));
        params.format = self.output_format()?;
        Ok(params)
    }

    /// `output_config.format` (or the older `output_format`) as an output
    /// format.
    fn output_format(&self) -> Result<Option<Format>, ApiError> {
        let config = self
            .output_config
            .as_ref()
            .map(|c| (&c["format"], "output_config"))
            .filter(|(f, _)| !f.is_null());
        let older = self
            .output_format
            .as_ref()
            .filter(|f| !f.is_null())
            .map(|f| (f, "output_format"));
        let (format, field) = match (config, older) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "output_format",
                    "give output_config.format or output_format, not both",
                ))
            }
            (Some(f), None) | (None, Some(f)) => f,
            (None, None) => return Ok(None),
        };
        match (format["type"].as_str(), &format["schema"]) {
            (Some("json_schema"), schema @ Value::Object(_)) => Ok(Some(Format::JsonSchema {
                schema: schema.clone(),
            })),
            _ => Err(invalid(
                field,
                "the format must be {\"type\": \"json_schema\", \"schema\": {...}}",
            )),
        }
    }
}

/// Anthropic's `stop_reason`.
fn stop_reason(c: &Completion, called: bool) -> &'static str {
    match c.finish_reason {
        FinishReason::Length => "max_tokens",
        FinishReason::Stop if called => "tool_use",
        FinishReason::Stop if c.stop_sequence.is_some() => "stop_sequence",
        FinishReason::Stop => "end_turn",
    }
}

/// How the answer is shaped: what the message says of itself.
struct Shape {
    id: String,
    model: String,
    input_tokens: usize,
    sources: Option<Vec<Passage>>,
    tools: bool,
}

impl Shape {
    /// The message object, as whole answers and `message_start` give it.
    fn message(&self, content: Vec<Value>, end: Option<&Completion>, called: bool) -> Value {
        let mut message = json!({
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": content,
            "stop_reason": end.map(|c| stop_reason(c, called)),
            "stop_sequence": end.and_then(|c| c.stop_sequence.clone()),
            "usage": {
                "input_tokens": self.input_tokens,
                "output_tokens": end.map_or(0, |c| usage(self.input_tokens, c).completion_tokens),
            },
        });
        if let Some(s) = &self.sources {
            message["sources"] = json!(s);
        }
        message
    }

    fn whole(&self, c: &Completion) -> Value {
        let mut content = Vec::new();
        let mut calls = Vec::new();
        if self.tools {
            let mut parser = CallParser::new();
            parser.push(&c.text);
            parser.finish();
            if let Some(text) = parser.content() {
                content.push(json!({ "type": "text", "text": text }));
            }
            calls = parser.calls().to_vec();
        } else if !c.text.is_empty() {
            content.push(json!({ "type": "text", "text": c.text }));
        }
        for call in &calls {
            content.push(json!({
                "type": "tool_use", "id": call.id, "name": call.name, "input": input_of(call),
            }));
        }
        self.message(content, Some(c), !calls.is_empty())
    }
}

/// A call's arguments as the JSON object they are (the grammar wrote
/// valid JSON; anything else is passed on as text).
fn input_of(call: &ToolCall) -> Value {
    serde_json::from_str(&call.arguments).unwrap_or_else(|_| json!(call.arguments))
}

fn event(name: &'static str, data: &Value) -> SseEvent {
    SseEvent::default().event(name).data(data.to_string())
}

/// Which content block a stream has open.
enum Open {
    None,
    Text,
    Tool,
}

/// The streamed answer's blocks: text and tool calls, each opened,
/// added to and closed in turn, numbered from 0.
struct Blocks {
    open: Open,
    next: usize,
    called: bool,
}

impl PieceEvents<SseEvent> for Blocks {
    fn piece(&mut self, piece: Piece) -> Vec<SseEvent> {
        let mut events = Vec::new();
        match piece {
            Piece::Content(text) if text.is_empty() => {}
            Piece::Content(text) => {
                if !matches!(self.open, Open::Text) {
                    self.start(
                        Open::Text,
                        json!({ "type": "text", "text": "" }),
                        &mut events,
                    );
                }
                events.push(self.delta(json!({ "type": "text_delta", "text": text })));
            }
            Piece::Call { id, name, .. } => {
                self.called = true;
                let block = json!({ "type": "tool_use", "id": id, "name": name, "input": {} });
                self.start(Open::Tool, block, &mut events);
            }
            Piece::Arguments { text, .. } => {
                events
                    .push(self.delta(json!({ "type": "input_json_delta", "partial_json": text })));
            }
        }
        events
    }
}

impl Blocks {
    fn close(&mut self, events: &mut Vec<SseEvent>) {
        if !matches!(self.open, Open::None) {
            let index = self.next - 1;
            events.push(event(
                "content_block_stop",
                &json!({ "type": "content_block_stop", "index": index }),
            ));
            self.open = Open::None;
        }
    }

    fn start(&mut self, open: Open, block: Value, events: &mut Vec<SseEvent>) {
        self.close(events);
        events.push(event(
            "content_block_start",
            &json!({ "type": "content_block_start", "index": self.next, "content_block": block }),
        ));
        self.next += 1;
        self.open = open;
    }

    fn delta(&self, delta: Value) -> SseEvent {
        event(
            "content_block_delta",
            &json!({ "type": "content_block_delta", "index": self.next - 1, "delta": delta }),
        )
    }
}

/// Answer whole, or as Anthropic's stream of events.
async fn respond(
    stream_it: bool,
    mut stream: GenerationStream,
    mut shape: Shape,
) -> Result<Response, ApiError> {
    shape.input_tokens = started(&mut stream).await.map_err(in_anthropic_terms)?;
    if !stream_it {
        let completion = stream.finish().await?;
        return Ok(Json(shape.whole(&completion)).into_response());
    }
    let opening = vec![
        event(
            "message_start",
            &json!({ "type": "message_start", "message": shape.message(Vec::new(), None, false) }),
        ),
        event("ping", &json!({ "type": "ping" })),
    ];
    let blocks = Blocks {
        open: Open::None,
        next: 0,
        called: false,
    };
    let events = tool_calls::piece_stream(stream, shape.tools, blocks, move |blocks, end| {
        let mut events = Vec::new();
        match end {
            Ok(c) => {
                blocks.close(&mut events);
                let output = usage(shape.input_tokens, &c).completion_tokens;
                events.push(event(
                    "message_delta",
                    &json!({
                        "type": "message_delta",
                        "delta": { "stop_reason": stop_reason(&c, blocks.called), "stop_sequence": c.stop_sequence },
                        "usage": { "output_tokens": output },
                    }),
                ));
                events.push(event("message_stop", &json!({ "type": "message_stop" })));
            }
            Err(e) => events.push(event(
                "error",
                &anthropic_body(e.status, &e.message, e.param.as_deref()),
            )),
        }
        events
    });
    let events = futures_util::StreamExt::chain(
        futures_util::stream::iter(opening.into_iter().map(Ok)),
        events,
    );
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// A refusal in Anthropic's field names: the tools' grammar is `tools`,
/// the stop strings `stop_sequences`, the output's schema `output_config`
/// (the pipeline names hearth's `grammar`, `stop` and `format`).
fn in_anthropic_terms(e: impl Into<ApiError>) -> ApiError {
    let mut e = e.into();
    match e.param.as_deref() {
        Some("grammar") => {
            e.param = Some("tools".into());
            e.message = format!("a tool's `input_schema`: {}", e.message);
        }
        Some("stop") => e.param = Some("stop_sequences".into()),
        Some("format") => e.param = Some("output_config".into()),
        _ => {}
    }
    e
}

/// The conversation and the tools it offers; `offered`: tools were given
/// (even if `tool_choice` says none may be called).
struct Prepared {
    messages: Vec<Message>,
    tooling: Option<Tooling>,
    offered: bool,
}

fn prepare(conversation: &Conversation) -> Result<Prepared, ApiError> {
    let messages = to_messages(conversation.system.as_ref(), &conversation.messages)?;
    let offered = conversation.tools.as_ref().is_some_and(|t| !t.is_empty());
    let tooling = tooling(
        conversation.tools.as_deref(),
        conversation.tool_choice.as_ref(),
    )?;
    Ok(Prepared {
        messages,
        tooling,
        offered,
    })
}

/// Anthropic's Messages API; `model` picks the pipeline.
#[utoipa::path(post, path = "/v1/messages", tag = "anthropic", request_body = MessagesRequest,
    responses(
        (status = 200, description = "Anthropic's `message` object (plus `sources` for hearth-rag); with `stream`, Anthropic's events from `message_start` to `message_stop`", body = Object),
        (status = 400, description = "Invalid value: `{\"type\": \"error\", \"error\": {\"type\": \"invalid_request_error\", \"message\"}}`", body = Object),
        (status = 401, description = "Missing or wrong API key (`x-api-key` or a bearer token)", body = Object),
        (status = 404, description = "Unknown model", body = Object),
        (status = 503, description = "Loading or overloaded (`overloaded_error`)", body = Object),
    ))]
pub async fn messages(
    State(state): State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<super::auth::Caller>,
    ApiJson(req): ApiJson<MessagesRequest>,
) -> Result<Response, ApiError> {
    let services = state.services()?;
    let mut params = req.params(&state)?;
    let Prepared {
        messages,
        tooling,
        offered,
    } = prepare(&req.conversation)?;
    tool_calls::constrain(
        tooling.as_ref(),
        offered,
        &messages,
        &mut params,
        "output_config.format",
    )?;
    let mut shape = Shape {
        id: new_id("msg_"),
        model: req.conversation.model.clone(),
        input_tokens: 0,
        sources: None,
        tools: tooling.is_some(),
    };
    let target = target(services, &req.conversation.model).await?;
    let started = run(
        services,
        target,
        tool_calls::input(messages, tooling),
        params,
        (&caller, &req.retrieval),
        "messages",
        in_anthropic_terms,
    )
    .await?;
    shape.sources = started.sources;
    respond(req.stream, started.stream, shape).await
}

/// Anthropic's token count of a conversation: the prompt tokens a
/// `/v1/messages` request with it would take on the model.
#[utoipa::path(post, path = "/v1/messages/count_tokens", tag = "anthropic", request_body = Conversation,
    responses(
        (status = 200, description = "`{\"input_tokens\": N}`", body = Object),
        (status = 400, description = "Invalid value, or `hearth-rag` (whose prompt holds the passages it retrieves)", body = Object),
        (status = 404, description = "Unknown model", body = Object),
    ))]
pub async fn count_tokens(
    State(state): State<Arc<AppState>>,
    ApiJson(req): ApiJson<Conversation>,
) -> Result<Json<Value>, ApiError> {
    let services = state.services()?;
    let pipeline = match target(services, &req.model).await? {
        Target::Rag => {
            return Err(invalid(
                "model",
                "hearth-rag's prompt holds the passages it retrieves for each question, which a count cannot know; count on its LLM's name (GET /v1/models)",
            ))
        }
        Target::Generate(pipeline) => pipeline,
    };
    let Prepared {
        messages, tooling, ..
    } = prepare(&req)?;
    let tools: Vec<Tool> = tooling.map(|t| t.tools).unwrap_or_default();
    let tokens = pipeline.generator().encode_chat(messages, tools).await?;
    Ok(Json(json!({ "input_tokens": tokens.len() })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turns(v: Value) -> Vec<InputMessage> {
        serde_json::from_value(v).unwrap()
    }

    fn message(r: Result<Vec<Message>, ApiError>) -> String {
        match r {
            Ok(_) => "ok".into(),
            Err(e) => format!("{}: {}", e.param.unwrap_or_default(), e.message),
        }
    }

    #[test]
    fn blocks_become_hearths_turns() {
        let system = json!([{ "type": "text", "text": "Be brief." }]);
        let m = to_messages(
            Some(&system),
            &turns(json!([
                { "role": "user", "content": "Weather in Paris?" },
                { "role": "assistant", "content": [
                    { "type": "text", "text": "Checking." },
                    { "type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": { "city": "Paris" } },
                ]},
                { "role": "user", "content": [
                    { "type": "tool_result", "tool_use_id": "toolu_1", "content": "18 C" },
                    { "type": "text", "text": "Thanks" },
                ]},
            ])),
        )
        .unwrap();
        let roles: Vec<&str> = m.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(roles, ["system", "user", "assistant", "tool", "user"]);
        assert_eq!(m[0].content, "Be brief.");
        assert_eq!(m[2].content, "Checking.");
        assert_eq!(m[2].tool_calls[0].name, "get_weather");
        assert_eq!(m[2].tool_calls[0].arguments, r#"{"city":"Paris"}"#);
        assert_eq!(m[3].tool_call_id.as_deref(), Some("toolu_1"));
        assert_eq!(m[3].content, "18 C");
        assert_eq!(m[4].content, "Thanks");
    }

    #[test]
    fn refusals_name_the_field() {
        let bad = |v: Value| message(to_messages(None, &turns(v)));
        assert!(bad(json!([])).starts_with("messages: "));
        assert!(bad(json!([{ "role": "system", "content": "x" }])).contains("role `system`"));
        assert!(
            bad(json!([{ "role": "user", "content": [{ "type": "image", "source": {} }] }]))
                .contains("`image`")
        );
        assert!(bad(json!([{ "role": "user", "content": [{ "type": "tool_use", "id": "a", "name": "f", "input": {} }] }]))
            .contains("assistant message"));
        assert!(bad(
            json!([{ "role": "user", "content": "hi" }, { "role": "assistant", "content": "Sure" }])
        )
        .contains("prefilled"));
        assert_eq!(bad(json!([{ "role": "user", "content": "hi" }])), "ok");
    }

    #[test]
    fn tools_and_choices() {
        let tools: Vec<AnthropicTool> = serde_json::from_value(json!([{
            "name": "get_weather", "description": "Weather",
            "input_schema": { "type": "object", "properties": { "city": { "type": "string" } } },
        }]))
        .unwrap();
        let t = tooling(Some(&tools), None).unwrap().unwrap();
        assert_eq!(t.tools[0].name, "get_weather");
        assert!(!t.parallel);
        let any = json!({ "type": "any", "disable_parallel_tool_use": false });
        assert!(tooling(Some(&tools), Some(&any)).unwrap().unwrap().parallel);
        assert!(tooling(Some(&tools), Some(&json!({ "type": "none" })))
            .unwrap()
            .is_none());
        let named = json!({ "type": "tool", "name": "nope" });
        assert_eq!(
            tooling(Some(&tools), Some(&named))
                .err()
                .unwrap()
                .param
                .as_deref(),
            Some("tool_choice")
        );
        let server: Vec<AnthropicTool> = serde_json::from_value(
            json!([{ "type": "web_search_20250305", "name": "web_search" }]),
        )
        .unwrap();
        assert!(tooling(Some(&server), None)
            .err()
            .unwrap()
            .message
            .contains("server tools"));
        let array: Vec<AnthropicTool> =
            serde_json::from_value(json!([{ "name": "f", "input_schema": { "type": "array" } }]))
                .unwrap();
        assert!(tooling(Some(&array), None)
            .err()
            .unwrap()
            .message
            .contains("input_schema"));
    }
}
