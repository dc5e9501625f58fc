//! OpenAI's tool calling over hearth's: the `tools`, `tool_choice` and
//! `parallel_tool_calls` request fields checked and turned into
//! [`Tooling`] (the tools, and the grammar that constrains the output to
//! their calls), and the output turned back into `tool_calls`, whole or as
//! streamed deltas. The format itself lives in `models::llm::tools`.

use super::error::ApiError;
use super::fields::invalid;
use super::stream::event_stream;
use crate::engine::{Completion, GenerationStream};
use crate::models::llm::grammar::Format;
use crate::models::llm::message::{Message, Tool, ToolCall};
use crate::models::llm::sampling::SamplingParams;
use crate::models::llm::tools::{self, CallParser, Choice, Piece};
use crate::pipelines::fine_tuned::Input;
use futures_util::Stream;
use serde::Deserialize;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use utoipa::ToSchema;

/// One entry of `tools`: `{"type": "function", "function": {...}}`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ToolDef {
    #[serde(rename = "type")]
    kind: String,
    function: Option<FunctionDef>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct FunctionDef {
    /// Letters, digits, `_` and `-`, at most 64.
    name: String,
    description: Option<String>,
    /// A JSON schema for the arguments (an object); absent: no arguments.
    #[schema(value_type = Option<Object>)]
    parameters: Option<Value>,
    /// Accepted: calls always follow the schema, as `strict: true` asks.
    #[allow(dead_code)]
    strict: Option<bool>,
}

/// A call in an assistant message sent back:
/// `{"id", "type": "function", "function": {"name", "arguments"}}`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ChatToolCall {
    id: String,
    function: FunctionCall,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct FunctionCall {
    name: String,
    /// The arguments as JSON text.
    arguments: String,
}

impl From<ChatToolCall> for ToolCall {
    fn from(c: ChatToolCall) -> Self {
        ToolCall {
            id: c.id,
            name: c.function.name,
            arguments: c.function.arguments,
        }
    }
}

/// The tools a request offers and which calls it allows.
pub struct Tooling {
    pub tools: Vec<Tool>,
    pub choice: Choice,
    pub parallel: bool,
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Check `tools`, `tool_choice` and `parallel_tool_calls`. `None`: no
/// tools, or `tool_choice: "none"` (the model answers in text, and is not
/// shown the tools). Without `parallel_tool_calls`, an answer holds one
/// call: OpenAI's default is several, but small models given the choice
/// repeat the same call until `max_tokens`; `true` allows several.
pub fn tooling(
    defs: Option<Vec<ToolDef>>,
    choice: Option<Value>,
    parallel: Option<bool>,
) -> Result<Option<Tooling>, ApiError> {
    let defs = defs.unwrap_or_default();
    let mut tools: Vec<Tool> = Vec::with_capacity(defs.len());
    for (i, def) in defs.into_iter().enumerate() {
        let bad = |m: String| invalid("tools", format!("tools[{i}]: {m}"));
        if def.kind != "function" {
            return Err(bad(format!(
                "type must be \"function\", got {:?}",
                def.kind
            )));
        }
        let f = def
            .function
            .ok_or_else(|| bad("missing `function`".into()))?;
        if !valid_name(&f.name) {
            return Err(bad(format!(
                "function name {:?} must be 1 to 64 letters, digits, `_` or `-`",
                f.name
            )));
        }
        if tools.iter().any(|t| t.name == f.name) {
            return Err(bad(format!("function {:?} is given twice", f.name)));
        }
        let parameters = match f.parameters {
            None => json!({ "type": "object", "properties": {} }),
            Some(p @ Value::Object(_)) => {
                match p.get("type") {
                    None => {}
                    Some(Value::String(t)) if t == "object" => {}
                    Some(other) => {
                        return Err(bad(format!(
                            "function.parameters must be an object schema (`\"type\": \"object\"`), got type {other}"
                        )))
                    }
                }
                p
            }
            Some(other) => {
                return Err(bad(format!(
                    "function.parameters must be a JSON schema object, got {other}"
                )))
            }
        };
        tools.push(Tool {
            name: f.name,
            description: f.description,
            parameters,
        });
    }
    let choice = match choice {
        None => Choice::Auto,
        Some(Value::String(s)) => match s.as_str() {
            "none" => return Ok(None),
            "auto" => Choice::Auto,
            "required" => Choice::Required,
            other => {
                return Err(invalid(
                    "tool_choice",
                    format!("tool_choice must be none, auto, required or {{\"type\": \"function\", \"function\": {{\"name\": ...}}}}, got {other:?}"),
                ))
            }
        },
        Some(v) => {
            let name = v
                .pointer("/function/name")
                .and_then(Value::as_str)
                .filter(|_| v.get("type").and_then(Value::as_str) == Some("function"))
                .ok_or_else(|| {
                    invalid(
                        "tool_choice",
                        "tool_choice must be none, auto, required or {\"type\": \"function\", \"function\": {\"name\": ...}}",
                    )
                })?;
            if !tools.iter().any(|t| t.name == name) {
                let known: Vec<&str> = tools.iter().map(|t| t.name.as_str()).collect();
                return Err(invalid(
                    "tool_choice",
                    format!(
                        "tool_choice names {name:?}, which is not among the tools ({})",
                        if known.is_empty() {
                            "none given".to_string()
                        } else {
                            known.join(", ")
                        }
                    ),
                ));
            }
            Choice::Named(name.to_string())
        }
    };
    if tools.is_empty() {
        if choice == Choice::Auto {
            return Ok(None);
        }
        return Err(invalid("tool_choice", "tool_choice needs `tools`"));
    }
    Ok(Some(Tooling {
        tools,
        choice,
        parallel: parallel.unwrap_or(false),
    }))
}

impl Tooling {
    /// The output format: calls of the allowed tools (or text, for `auto`).
    pub fn format(&self) -> Format {
        Format::Lark {
            grammar: tools::grammar(&self.tools, &self.choice, self.parallel),
        }
    }
}

/// Constrain a conversation's output for its tools: calls of them when
/// they may be called (a format asked for as well is a 400: `other` names
/// its field), text that opens no call when tools were offered or answered
/// but may not be called now (a small model shown a tool's answer echoes
/// its block otherwise), else the format asked for, unchanged.
pub fn constrain(
    tooling: Option<&Tooling>,
    offered: bool,
    messages: &[Message],
    params: &mut SamplingParams,
    other: &str,
) -> Result<(), ApiError> {
    match tooling {
        Some(_) if params.format.is_some() => Err(invalid(
            "tools",
            format!("tools cannot be combined with {other} (tool_choice \"none\" allows it)"),
        )),
        Some(t) => {
            params.format = Some(t.format());
            Ok(())
        }
        None if params.format.is_none()
            && (offered || messages.iter().any(Message::is_tool_turn)) =>
        {
            params.format = Some(Format::Lark {
                grammar: tools::TEXT_ONLY.into(),
            });
            Ok(())
        }
        None => Ok(()),
    }
}

/// A conversation as the pipeline's input, offering the tools when they
/// may be called.
pub fn input(messages: Vec<Message>, tooling: Option<Tooling>) -> Input {
    match tooling {
        Some(t) => Input::Tools(messages, t.tools),
        None => Input::Messages(messages),
    }
}

/// Shapes a generation's pieces (text, calls beginning, their arguments)
/// into one API's streamed events.
pub trait PieceEvents<E> {
    fn piece(&mut self, piece: Piece) -> Vec<E>;
}

/// A generation's events when its text may hold tool calls: each piece of
/// text, read for calls when `tools` (else all of it content), becomes
/// `sink`'s events; when the generation ends well, so does what the
/// parser still held; then `end` closes the stream with the sink's final
/// state.
pub fn piece_stream<E, S, D>(
    stream: GenerationStream,
    tools: bool,
    sink: S,
    end: D,
) -> impl Stream<Item = Result<E, Infallible>> + Send
where
    E: Send + 'static,
    S: PieceEvents<E> + Send + 'static,
    D: FnOnce(&mut S, Result<Completion, ApiError>) -> Vec<E> + Send + 'static,
{
    let state = Arc::new(Mutex::new((sink, CallParser::new())));
    let text_state = state.clone();
    event_stream(
        stream,
        move |text, _| {
            let mut guard = text_state.lock().expect("pieces lock");
            let (sink, parser) = &mut *guard;
            let pieces = if tools {
                parser.push(&text)
            } else {
                vec![Piece::Content(text)]
            };
            pieces.into_iter().flat_map(|p| sink.piece(p)).collect()
        },
        move |outcome| {
            let mut guard = state.lock().expect("pieces lock");
            let (sink, parser) = &mut *guard;
            let mut events = Vec::new();
            if tools && outcome.is_ok() {
                for p in parser.finish() {
                    events.extend(sink.piece(p));
                }
            }
            events.extend(end(sink, outcome));
            events
        },
    )
}

fn call_json(index: usize, call: &ToolCall) -> Value {
    json!({
        "index": index,
        "id": call.id,
        "type": "function",
        "function": { "name": call.name, "arguments": call.arguments },
    })
}

/// The whole output as a chat message's `content` and `tool_calls`.
pub fn message(text: &str) -> (Value, Vec<Value>) {
    let mut parser = CallParser::new();
    parser.push(text);
    parser.finish();
    let content = parser.content().map_or(Value::Null, |c| json!(c));
    let calls = parser
        .calls()
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut v = call_json(i, c);
            v.as_object_mut().expect("an object").remove("index");
            v
        })
        .collect();
    (content, calls)
}

/// A streamed piece as the `delta` of a `chat.completion.chunk`.
pub fn delta(piece: &Piece) -> Value {
    match piece {
        Piece::Content(text) => json!({ "content": text }),
        Piece::Call { index, id, name } => json!({ "tool_calls": [{
            "index": index, "id": id, "type": "function",
            "function": { "name": name, "arguments": "" },
        }]}),
        Piece::Arguments { index, text } => {
            json!({ "tool_calls": [{ "index": index, "function": { "arguments": text } }] })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defs(v: Value) -> Option<Vec<ToolDef>> {
        Some(serde_json::from_value(v).unwrap())
    }

    fn weather() -> Value {
        json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}])
    }

    fn param(r: Result<Option<Tooling>, ApiError>) -> String {
        match r {
            Err(e) => format!("{}: {}", e.param.unwrap_or_default(), e.message),
            Ok(_) => "ok".into(),
        }
    }

    #[test]
    fn choices_and_their_errors() {
        let t = tooling(defs(weather()), None, None).unwrap().unwrap();
        assert_eq!(t.choice, Choice::Auto);
        assert!(!t.parallel);
        let t = tooling(defs(weather()), None, Some(true)).unwrap().unwrap();
        assert!(t.parallel);
        assert!(tooling(defs(weather()), Some(json!("none")), None)
            .unwrap()
            .is_none());
        let named = json!({"type": "function", "function": {"name": "get_weather"}});
        let t = tooling(defs(weather()), Some(named), Some(false))
            .unwrap()
            .unwrap();
        assert_eq!(t.choice, Choice::Named("get_weather".into()));
        let unknown = json!({"type": "function", "function": {"name": "nope"}});
        assert!(param(tooling(defs(weather()), Some(unknown), None)).starts_with("tool_choice: "));
        assert!(
            param(tooling(defs(weather()), Some(json!("always")), None)).starts_with("tool_choice")
        );
        assert!(param(tooling(None, Some(json!("required")), None)).starts_with("tool_choice"));
        assert!(tooling(None, None, None).unwrap().is_none());
        let bad_schema =
            json!([{"type": "function", "function": {"name": "f", "parameters": "x"}}]);
        assert!(param(tooling(defs(bad_schema), None, None)).starts_with("tools: tools[0]"));
        let array = json!([{"type": "function", "function": {"name": "f", "parameters": {"type": "array"}}}]);
        assert!(param(tooling(defs(array), None, None)).starts_with("tools: "));
        let twice = json!([{"type": "function", "function": {"name": "f"}}, {"type": "function", "function": {"name": "f"}}]);
        assert!(param(tooling(defs(twice), None, None)).contains("tools[1]"));
        let name = json!([{"type": "function", "function": {"name": "a b"}}]);
        assert!(param(tooling(defs(name), None, None)).starts_with("tools: "));
        let kind = json!([{"type": "retrieval"}]);
        assert!(param(tooling(defs(kind), None, None)).starts_with("tools: "));
    }

    #[test]
    fn output_to_message() {
        let (content, calls) = message(
            "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>",
        );
        assert_eq!(content, Value::Null);
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0]["function"]["name"], "get_weather");
        assert_eq!(calls[0]["function"]["arguments"], "{\"city\": \"Paris\"}");
        assert!(calls[0]["id"].as_str().unwrap().starts_with("call_"));
        let (content, calls) = message("It is sunny.");
        assert_eq!(content, "It is sunny.");
        assert!(calls.is_empty());
    }
}
