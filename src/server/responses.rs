//! OpenAI's Responses API, stateless: `POST /v1/responses` with `input` as
//! text or items (messages, `function_call` and `function_call_output`),
//! `instructions`, `max_output_tokens`, `text.format` (a JSON schema
//! through the grammar engine), function `tools`, and streaming with the
//! Responses event types (`response.created` ... `response.completed`).
//! Nothing is stored: `store: true` and `previous_response_id` are a 400
//! (the client sends the conversation itself). The `model` field picks the
//! pipeline as on the other OpenAI routes ([`super::target`]).

use super::error::{ApiError, ApiJson};
use super::fields::{invalid, RetrievalFields, SamplingFields};
use super::state::AppState;
use super::stream::{new_id, started, unix_now};
use super::target::{run, target};
use super::tool_calls::{self, PieceEvents, ToolDef, Tooling};
use crate::engine::{Completion, FinishReason, GenerationStream};
use crate::models::llm::grammar::Format;
use crate::models::llm::message::{Message, ToolCall};
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

#[derive(Debug, Deserialize, ToSchema)]
pub struct ResponsesRequest {
    model: String,
    /// A text (one user message) or a list of items: messages (`role`
    /// and `content`, a string or `input_text` / `output_text` parts),
    /// `function_call` and `function_call_output`.
    #[schema(value_type = Object)]
    input: Value,
    /// A system message before the input.
    instructions: Option<String>,
    #[serde(default, deserialize_with = "crate::server::fields::integer::opt")]
    max_output_tokens: Option<usize>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    #[serde(default)]
    stream: bool,
    /// `{"format": {"type": "text" | "json_object" | "json_schema", "schema", "name", "strict"}}`.
    #[schema(value_type = Option<Object>)]
    text: Option<Value>,
    /// Function tools: `{"type": "function", "name", "description", "parameters"}`.
    #[schema(value_type = Option<Vec<Object>>)]
    tools: Option<Vec<Value>>,
    /// `"auto"`, `"none"`, `"required"` or `{"type": "function", "name"}`.
    #[schema(value_type = Option<Object>)]
    tool_choice: Option<Value>,
    parallel_tool_calls: Option<bool>,
    /// Refused when true: nothing is stored here.
    store: Option<bool>,
    /// Refused: nothing is stored here, send the conversation as `input`.
    previous_response_id: Option<String>,
    /// hearth's retrieval fields, for the `hearth-rag` model.
    #[serde(flatten)]
    retrieval: RetrievalFields,
}

/// A message item's text: a string, or `input_text` / `output_text` parts.
fn content_text(content: &Value, i: usize) -> Result<String, ApiError> {
    match content {
        Value::String(s) => Ok(s.clone()),
        Value::Array(parts) => {
            let mut text = String::new();
            for part in parts {
                match (part["type"].as_str(), part["text"].as_str()) {
                    (Some("input_text" | "output_text" | "text"), Some(t)) => text.push_str(t),
                    (kind, _) => {
                        return Err(invalid(
                            "input",
                            format!(
                                "input[{i}]: content parts of type {} are not supported; only input_text and output_text",
                                kind.map_or("(none)".into(), |k| format!("`{k}`"))
                            ),
                        ))
                    }
                }
            }
            Ok(text)
        }
        _ => Err(invalid(
            "input",
            format!("input[{i}]: content must be a string or a list of parts"),
        )),
    }
}

fn string_field<'a>(item: &'a Value, name: &str, i: usize) -> Result<&'a str, ApiError> {
    item[name]
        .as_str()
        .ok_or_else(|| invalid("input", format!("input[{i}]: `{name}` must be a string")))
}

/// `instructions` and `input` as hearth's conversation: consecutive
/// `function_call` items are one assistant turn's calls, each
/// `function_call_output` a `tool` turn.
fn to_messages(instructions: Option<&str>, input: &Value) -> Result<Vec<Message>, ApiError> {
    let mut out = Vec::new();
    if let Some(system) = instructions.filter(|s| !s.is_empty()) {
        out.push(Message::new("system", system));
    }
    let items = match input {
        Value::String(s) if s.is_empty() => return Err(invalid("input", "input is empty")),
        Value::String(s) => {
            out.push(Message::new("user", s.clone()));
            return Ok(out);
        }
        Value::Array(items) if items.is_empty() => return Err(invalid("input", "input is empty")),
        Value::Array(items) => items,
        _ => {
            return Err(invalid(
                "input",
                "input must be a string or a list of items",
            ))
        }
    };
    for (i, item) in items.iter().enumerate() {
        match item["type"].as_str().unwrap_or("message") {
            "message" => {
                let role = match string_field(item, "role", i)? {
                    "system" | "developer" => "system",
                    r @ ("user" | "assistant") => r,
                    other => {
                        return Err(invalid(
                            "input",
                            format!("input[{i}]: role `{other}` is not supported; use system, developer, user or assistant"),
                        ))
                    }
                };
                out.push(Message::new(role, content_text(&item["content"], i)?));
            }
            "function_call" => {
                let call = ToolCall {
                    id: string_field(item, "call_id", i)?.to_string(),
                    name: string_field(item, "name", i)?.to_string(),
                    arguments: string_field(item, "arguments", i)?.to_string(),
                };
                match out.last_mut() {
                    Some(m) if m.role == "assistant" => m.tool_calls.push(call),
                    _ => {
                        let mut m = Message::new("assistant", "");
                        m.tool_calls.push(call);
                        out.push(m);
                    }
                }
            }
            "function_call_output" => {
                let output = match &item["output"] {
                    Value::String(s) => s.clone(),
                    other => content_text(other, i)?,
                };
                let mut m = Message::new("tool", output);
                m.tool_call_id = Some(string_field(item, "call_id", i)?.to_string());
                out.push(m);
            }
            other => {
                return Err(invalid(
                    "input",
                    format!("input[{i}]: items of type `{other}` are not supported; only message, function_call and function_call_output"),
                ))
            }
        }
    }
    Ok(out)
}

/// Function tools and the choice among them, through chat's checks.
fn tooling(
    tools: Option<&[Value]>,
    choice: Option<&Value>,
    parallel: Option<bool>,
) -> Result<Option<Tooling>, ApiError> {
    let mut defs = Vec::new();
    for (i, tool) in tools.unwrap_or_default().iter().enumerate() {
        match tool["type"].as_str() {
            Some("function") => {}
            kind => {
                return Err(invalid(
                    "tools",
                    format!(
                        "tools[{i}]: tools of type {} are not supported; only function tools",
                        kind.map_or("(none)".into(), |k| format!("`{k}`"))
                    ),
                ))
            }
        }
        let def = json!({ "type": "function", "function": {
            "name": tool["name"], "description": tool["description"], "parameters": tool["parameters"],
        }});
        defs.push(
            serde_json::from_value::<ToolDef>(def)
                .map_err(|e| invalid("tools", format!("tools[{i}]: {e}")))?,
        );
    }
    // `{"type": "function", "name"}` is chat's `{"type": "function", "function": {"name"}}`.
    let choice = choice.map(|c| match c["name"].as_str() {
        Some(name) if c["type"] == "function" => {
            json!({ "type": "function", "function": { "name": name } })
        }
        _ => c.clone(),
    });
    tool_calls::tooling(Some(defs), choice, parallel).map_err(|mut e| {
        e.message = e.message.replace("function.parameters", "parameters");
        e
    })
}

/// `text.format` as an output format.
fn text_format(text: Option<&Value>) -> Result<Option<Format>, ApiError> {
    let Some(format) = text.map(|t| &t["format"]).filter(|f| !f.is_null()) else {
        return Ok(None);
    };
    match format["type"].as_str() {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(Format::JsonObject)),
        Some("json_schema") => match &format["schema"] {
            schema @ Value::Object(_) => Ok(Some(Format::JsonSchema {
                schema: schema.clone(),
            })),
            Value::Null => Ok(Some(Format::JsonSchema { schema: json!({}) })),
            _ => Err(invalid("text", "text.format.schema must be an object")),
        },
        _ => Err(invalid(
            "text",
            "text.format.type must be text, json_object or json_schema",
        )),
    }
}

impl ResponsesRequest {
    fn params(&self, state: &AppState) -> Result<SamplingParams, ApiError> {
        if self.store == Some(true) {
            return Err(invalid(
                "store",
                "responses are not stored here: send `store: false` (or leave it out) and the whole conversation as `input`",
            ));
        }
        if self.previous_response_id.is_some() {
            return Err(invalid(
                "previous_response_id",
                "responses are not stored here: send the whole conversation as `input` instead",
            ));
        }
        let fields = SamplingFields {
            max_tokens: self.max_output_tokens,
            temperature: self.temperature,
            top_p: self.top_p,
            ..SamplingFields::default()
        };
        let mut params = fields.params(&state.config.generation, 0);
        params.format = text_format(self.text.as_ref())?;
        Ok(params)
    }
}

/// What the response says of itself, whole or streamed.
struct Shape {
    id: String,
    created: u64,
    model: String,
    input_tokens: usize,
    sources: Option<Vec<Passage>>,
    tools: bool,
    /// The request's settings, echoed as the Responses API does.
    echo: Value,
}

/// A function call as an output item.
fn call_item(call: &ToolCall, status: &str) -> Value {
    json!({
        "type": "function_call", "id": format!("fc_{}", call.id), "call_id": call.id,
        "name": call.name, "arguments": call.arguments, "status": status,
    })
}

fn message_item(id: &str, text: &str, status: &str) -> Value {
    let content = if status == "in_progress" {
        json!([])
    } else {
        json!([{ "type": "output_text", "text": text, "annotations": [] }])
    };
    json!({ "type": "message", "id": id, "status": status, "role": "assistant", "content": content })
}

impl Shape {
    /// The response object; `end` absent: still in progress.
    fn response(&self, output: Vec<Value>, end: Option<&Completion>) -> Value {
        let (status, incomplete) = match end.map(|c| c.finish_reason) {
            None => ("in_progress", Value::Null),
            Some(FinishReason::Length) => ("incomplete", json!({ "reason": "max_output_tokens" })),
            Some(FinishReason::Stop) => ("completed", Value::Null),
        };
        let usage = end.map(|c| {
            json!({
                "input_tokens": self.input_tokens,
                "input_tokens_details": { "cached_tokens": 0 },
                "output_tokens": c.tokens.len(),
                "output_tokens_details": { "reasoning_tokens": 0 },
                "total_tokens": self.input_tokens + c.tokens.len(),
            })
        });
        let mut r = json!({
            "id": self.id, "object": "response", "created_at": self.created, "status": status,
            "error": null, "incomplete_details": incomplete, "model": self.model,
            "output": output, "usage": usage, "store": false,
        });
        if let (Value::Object(r), Value::Object(echo)) = (&mut r, &self.echo) {
            r.extend(echo.clone());
        }
        if let Some(s) = &self.sources {
            r["sources"] = json!(s);
        }
        r
    }

    fn whole(&self, c: &Completion) -> Value {
        let (text, calls) = if self.tools {
            let mut parser = CallParser::new();
            parser.push(&c.text);
            parser.finish();
            (
                parser.content().unwrap_or("").to_string(),
                parser.calls().to_vec(),
            )
        } else {
            (c.text.clone(), Vec::new())
        };
        let mut output = Vec::new();
        if !text.is_empty() || calls.is_empty() {
            output.push(message_item(&new_id("msg_"), &text, "completed"));
        }
        output.extend(calls.iter().map(|c| call_item(c, "completed")));
        self.response(output, Some(c))
    }
}

/// The stream's output items as they are made, and its event numbers.
struct Items {
    sequence: usize,
    /// Items done, in order (for `response.completed`).
    output: Vec<Value>,
    /// The message item open, with its text so far.
    message: Option<(String, String)>,
    /// The call open.
    call: Option<ToolCall>,
}

impl PieceEvents<SseEvent> for Items {
    fn piece(&mut self, piece: Piece) -> Vec<SseEvent> {
        let mut events = Vec::new();
        match piece {
            Piece::Content(text) if text.is_empty() => {}
            Piece::Content(text) => self.text(&text, &mut events),
            Piece::Call { id, name, .. } => {
                self.close(&mut events);
                let call = ToolCall {
                    id,
                    name,
                    arguments: String::new(),
                };
                let index = self.index();
                let item = call_item(&call, "in_progress");
                events.push(self.event(
                    "response.output_item.added",
                    json!({ "output_index": index, "item": item }),
                ));
                self.call = Some(call);
            }
            Piece::Arguments { text, .. } => {
                let index = self.index();
                if let Some(call) = self.call.as_mut() {
                    call.arguments.push_str(&text);
                    let item_id = format!("fc_{}", call.id);
                    events.push(self.event(
                        "response.function_call_arguments.delta",
                        json!({
                            "item_id": item_id, "output_index": index, "delta": text,
                        }),
                    ));
                }
            }
        }
        events
    }
}

impl Items {
    fn event(&mut self, kind: &str, mut data: Value) -> SseEvent {
        data["type"] = json!(kind);
        data["sequence_number"] = json!(self.sequence);
        self.sequence += 1;
        SseEvent::default().event(kind).data(data.to_string())
    }

    /// The index of the item open (items done come first).
    fn index(&self) -> usize {
        self.output.len()
    }

    fn close(&mut self, events: &mut Vec<SseEvent>) {
        let index = self.index();
        if let Some((id, text)) = self.message.take() {
            let part = json!({ "type": "output_text", "text": text, "annotations": [] });
            events.push(self.event("response.output_text.done", json!({
                "item_id": id, "output_index": index, "content_index": 0, "text": text, "logprobs": [],
            })));
            events.push(self.event(
                "response.content_part.done",
                json!({
                    "item_id": id, "output_index": index, "content_index": 0, "part": part,
                }),
            ));
            let item = message_item(&id, &text, "completed");
            events.push(self.event(
                "response.output_item.done",
                json!({ "output_index": index, "item": item }),
            ));
            self.output.push(item);
        } else if let Some(call) = self.call.take() {
            events.push(self.event("response.function_call_arguments.done", json!({
                "item_id": format!("fc_{}", call.id), "output_index": index, "arguments": call.arguments,
            })));
            let item = call_item(&call, "completed");
            events.push(self.event(
                "response.output_item.done",
                json!({ "output_index": index, "item": item }),
            ));
            self.output.push(item);
        }
    }

    fn text(&mut self, text: &str, events: &mut Vec<SseEvent>) {
        if self.call.is_some() {
            self.close(events);
        }
        let index = self.index();
        if self.message.is_none() {
            let id = new_id("msg_");
            events.push(self.event(
                "response.output_item.added",
                json!({
                    "output_index": index, "item": message_item(&id, "", "in_progress"),
                }),
            ));
            events.push(self.event(
                "response.content_part.added",
                json!({
                    "item_id": id, "output_index": index, "content_index": 0,
                    "part": { "type": "output_text", "text": "", "annotations": [] },
                }),
            ));
            self.message = Some((id, String::new()));
        }
        let (id, so_far) = self.message.as_mut().expect("a message is open");
        so_far.push_str(text);
        let id = id.clone();
        events.push(self.event("response.output_text.delta", json!({
            "item_id": id, "output_index": index, "content_index": 0, "delta": text, "logprobs": [],
        })));
    }
}

async fn respond(
    stream_it: bool,
    mut stream: GenerationStream,
    mut shape: Shape,
) -> Result<Response, ApiError> {
    shape.input_tokens = started(&mut stream).await?;
    if !stream_it {
        let completion = stream.finish().await?;
        return Ok(Json(shape.whole(&completion)).into_response());
    }
    let mut items = Items {
        sequence: 0,
        output: Vec::new(),
        message: None,
        call: None,
    };
    let created = shape.response(Vec::new(), None);
    let opening = vec![
        items.event("response.created", json!({ "response": created })),
        items.event("response.in_progress", json!({ "response": created })),
    ];
    let events = tool_calls::piece_stream(stream, shape.tools, items, move |items, end| {
        let mut events = Vec::new();
        match end {
            Ok(c) => {
                items.close(&mut events);
                let kind = match c.finish_reason {
                    FinishReason::Stop => "response.completed",
                    FinishReason::Length => "response.incomplete",
                };
                let response = shape.response(items.output.clone(), Some(&c));
                events.push(items.event(kind, json!({ "response": response })));
            }
            Err(e) => events.push(items.event(
                "error",
                json!({
                    "code": e.code, "message": e.message, "param": e.param,
                }),
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

/// OpenAI's Responses API, stateless; `model` picks the pipeline.
#[utoipa::path(post, path = "/v1/responses", tag = "openai", request_body = ResponsesRequest,
    responses(
        (status = 200, description = "A `response` object (`output` items: a `message` with `output_text`, `function_call`s; `usage`); with `stream`, the Responses events from `response.created` to `response.completed` (or `response.incomplete`)", body = Object),
        (status = 400, description = "Invalid value (`param` names it), or `store: true` / `previous_response_id`", body = super::error::ErrorBody),
        (status = 404, description = "Unknown model", body = super::error::ErrorBody),
    ))]
pub async fn responses(
    State(state): State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<super::auth::Caller>,
    ApiJson(req): ApiJson<ResponsesRequest>,
) -> Result<Response, ApiError> {
    let services = state.services()?;
    let mut params = req.params(&state)?;
    let messages = to_messages(req.instructions.as_deref(), &req.input)?;
    let offered = req.tools.as_ref().is_some_and(|t| !t.is_empty());
    let tooling = tooling(
        req.tools.as_deref(),
        req.tool_choice.as_ref(),
        req.parallel_tool_calls,
    )?;
    tool_calls::constrain(
        tooling.as_ref(),
        offered,
        &messages,
        &mut params,
        "text.format",
    )?;
    let mut shape = Shape {
        id: new_id("resp_"),
        created: unix_now(),
        model: req.model.clone(),
        input_tokens: 0,
        sources: None,
        tools: tooling.is_some(),
        echo: json!({
            "instructions": req.instructions,
            "max_output_tokens": req.max_output_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "parallel_tool_calls": tooling.as_ref().is_some_and(|t| t.parallel),
            "tool_choice": req.tool_choice.clone().unwrap_or(json!("auto")),
            "tools": req.tools.clone().unwrap_or_default(),
            "text": req.text.clone().unwrap_or(json!({ "format": { "type": "text" } })),
        }),
    };
    let target = target(services, &req.model).await?;
    let started = run(
        services,
        target,
        tool_calls::input(messages, tooling),
        params,
        (&caller, &req.retrieval),
        "input",
        in_responses_terms,
    )
    .await?;
    shape.sources = started.sources;
    respond(req.stream, started.stream, shape).await
}

/// A refusal in the Responses API's field names: the output's schema is
/// `text`, a tool's grammar `tools`, the length `max_output_tokens`.
fn in_responses_terms(mut e: ApiError) -> ApiError {
    let renamed = match e.param.as_deref() {
        Some("format") => "text",
        Some("grammar") => "tools",
        Some("max_tokens") => "max_output_tokens",
        _ => return e,
    };
    e.param = Some(renamed.into());
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_become_hearths_turns() {
        let m = to_messages(
            Some("Be brief."),
            &json!([
                { "role": "user", "content": "Weather in Paris?" },
                { "type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{\"city\": \"Paris\"}" },
                { "type": "function_call_output", "call_id": "call_1", "output": "18 C" },
                { "type": "message", "role": "user", "content": [{ "type": "input_text", "text": "Thanks" }] },
            ]),
        )
        .unwrap();
        let roles: Vec<&str> = m.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(roles, ["system", "user", "assistant", "tool", "user"]);
        assert_eq!(m[2].tool_calls[0].id, "call_1");
        assert_eq!(m[3].tool_call_id.as_deref(), Some("call_1"));
        assert_eq!(m[4].content, "Thanks");
        assert_eq!(to_messages(None, &json!("Hi")).unwrap()[0].role, "user");
        let bad = |v: Value| to_messages(None, &v).err().unwrap().message;
        assert!(bad(json!([])).contains("empty"));
        assert!(bad(json!([{ "type": "reasoning", "summary": [] }])).contains("`reasoning`"));
        assert!(bad(
            json!([{ "role": "user", "content": [{ "type": "input_image", "image_url": "x" }] }])
        )
        .contains("`input_image`"));
    }

    #[test]
    fn formats_and_tools() {
        assert!(text_format(None).unwrap().is_none());
        assert!(text_format(Some(&json!({ "format": { "type": "text" } })))
            .unwrap()
            .is_none());
        assert!(matches!(
            text_format(Some(
                &json!({ "format": { "type": "json_schema", "name": "p", "schema": { "type": "object" } } })
            )),
            Ok(Some(Format::JsonSchema { .. }))
        ));
        assert_eq!(
            text_format(Some(&json!({ "format": { "type": "yaml" } })))
                .err()
                .unwrap()
                .param
                .as_deref(),
            Some("text")
        );
        let tools = [
            json!({ "type": "function", "name": "get_weather", "parameters": { "type": "object", "properties": {} } }),
        ];
        let named = json!({ "type": "function", "name": "get_weather" });
        let t = tooling(Some(&tools), Some(&named), None).unwrap().unwrap();
        assert_eq!(t.tools[0].name, "get_weather");
        let search = [json!({ "type": "web_search" })];
        assert!(tooling(Some(&search), None, None)
            .err()
            .unwrap()
            .message
            .contains("`web_search`"));
    }
}
