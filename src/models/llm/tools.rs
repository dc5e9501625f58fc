//! Tool calling in one format: the Hermes one (Qwen 2.5 and 3, Hermes,
//! SmolLM3 and the models trained on their data). A call is
//!
//! ```text
//! <tool_call>
//! {"name": "get_weather", "arguments": {"city": "Paris"}}
//! </tool_call>
//! ```
//!
//! with several calls one per line, and a tool's answer comes back as
//! `<tool_response>...</tool_response>` in a user turn. This module owns
//! that format from end to end: the system prompt that describes the tools
//! to a model whose chat template knows nothing of tools ([`fallback`]),
//! the Lark grammar that constrains the output to calls of the given tools
//! with arguments valid against their schemas ([`grammar`]), and the parser
//! that turns the output, whole or as it streams, back into calls
//! ([`CallParser`]).

use super::message::{Message, Tool, ToolCall};
use serde_json::{json, Value};

/// Which calls the output may hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// Text or calls, as the model likes (text may not start with `<`).
    Auto,
    /// One call or more, of any tool.
    Required,
    /// Calls of this tool only.
    Named(String),
}

const CALL_OPEN: &str = "<tool_call>\n{\"name\": \"";
const ARGUMENTS: &str = "\", \"arguments\": ";
const CALL_CLOSE: &str = "}\n</tool_call>";

/// How arguments are written: one line, `", "` and `": "` between items,
/// as Python's `json.dumps` writes them (and as Hermes-trained models saw
/// them in training).
fn arguments_schema(parameters: &Value) -> Value {
    let mut schema = parameters.clone();
    if let Some(o) = schema.as_object_mut() {
        o.insert(
            "x-guidance".into(),
            json!({ "whitespace_flexible": false, "item_separator": ", ", "key_separator": ": " }),
        );
    }
    schema
}

/// Text that does not open with `<` (so neither a call nor a tool's
/// answer): the output when tools are involved but may not be called.
/// Without it, a small model shown a tool's answer tends to echo the
/// `<tool_response>` block instead of answering.
pub const TEXT_ONLY: &str = "start: TEXT\nTEXT: /[^<](?s:.)*/\n";

/// The Lark grammar (llguidance's dialect) for an output of `tools` calls
/// as `choice` allows; `parallel`: several calls, else exactly one.
pub fn grammar(tools: &[Tool], choice: &Choice, parallel: bool) -> String {
    let allowed: Vec<(usize, &Tool)> = tools
        .iter()
        .enumerate()
        .filter(|(_, t)| match choice {
            Choice::Named(name) => &t.name == name,
            _ => true,
        })
        .collect();
    let mut g = String::new();
    g.push_str(match choice {
        Choice::Auto => "start: calls | TEXT\nTEXT: /[^<](?s:.)*/\n",
        _ => "start: calls\n",
    });
    g.push_str(if parallel {
        "calls: call (\"\\n\" call)*\n"
    } else {
        "calls: call\n"
    });
    let names: Vec<String> = allowed.iter().map(|(i, _)| format!("call_{i}")).collect();
    g.push_str(&format!("call: {}\n", names.join(" | ")));
    for (i, tool) in allowed {
        let open = serde_json::to_string(&format!("{CALL_OPEN}{}{ARGUMENTS}", tool.name))
            .expect("a string serializes");
        let close = serde_json::to_string(CALL_CLOSE).expect("a string serializes");
        g.push_str(&format!("call_{i}: {open} args_{i} {close}\n"));
        g.push_str(&format!(
            "args_{i}: %json {}\n",
            arguments_schema(&tool.parameters)
        ));
    }
    g
}

/// The system prompt that describes `tools` to a model in the Hermes
/// format (Qwen 2.5's wording).
pub fn system_prompt(tools: &[Tool]) -> String {
    let mut s = String::from(
        "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n\
         You are provided with function signatures within <tools></tools> XML tags:\n<tools>",
    );
    for t in tools {
        s.push('\n');
        s.push_str(&t.openai().to_string());
    }
    s.push_str(
        "\n</tools>\n\nFor each function call, return a json object with function name and \
         arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n\
         {\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call>",
    );
    s
}

fn call_text(call: &ToolCall) -> String {
    format!(
        "{CALL_OPEN}{}{ARGUMENTS}{}{CALL_CLOSE}",
        call.name, call.arguments
    )
}

/// A conversation with tools for a chat template that knows nothing of
/// them, in plain system/user/assistant turns: the tools described in the
/// system message (added, or appended to the first one), an assistant's
/// calls written out as `<tool_call>` blocks, and the tools' answers as a
/// user turn of `<tool_response>` blocks (consecutive ones together).
pub fn fallback(messages: &[Message], tools: &[Tool]) -> Vec<Message> {
    let mut out: Vec<Message> = Vec::with_capacity(messages.len() + 1);
    if !tools.is_empty() {
        let prompt = system_prompt(tools);
        match messages.first() {
            Some(m) if m.role == "system" => {}
            _ => out.push(Message::new("system", prompt.clone())),
        }
    }
    for (i, m) in messages.iter().enumerate() {
        match m.role.as_str() {
            "system" if i == 0 && !tools.is_empty() => out.push(Message::new(
                "system",
                format!("{}\n\n{}", m.content, system_prompt(tools)),
            )),
            "assistant" if !m.tool_calls.is_empty() => {
                let mut parts: Vec<String> = Vec::new();
                if !m.content.is_empty() {
                    parts.push(m.content.clone());
                }
                parts.extend(m.tool_calls.iter().map(call_text));
                out.push(Message::new("assistant", parts.join("\n")));
            }
            "tool" => {
                let block = format!("<tool_response>\n{}\n</tool_response>", m.content);
                match out.last_mut() {
                    Some(prev)
                        if prev.role == "user" && i > 0 && messages[i - 1].role == "tool" =>
                    {
                        prev.content.push('\n');
                        prev.content.push_str(&block);
                    }
                    _ => out.push(Message::new("user", block)),
                }
            }
            _ => out.push(Message::new(m.role.clone(), m.content.clone())),
        }
    }
    out
}

/// A new call id, `call_` and 24 hex digits.
pub fn call_id() -> String {
    use rand::Rng;
    let bytes: [u8; 12] = rand::rng().random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("call_{hex}")
}

/// What the output says, piece by piece.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Text for the user.
    Content(String),
    /// Call `index` begins: its id and the function's name.
    Call {
        index: usize,
        id: String,
        name: String,
    },
    /// More of call `index`'s arguments (JSON text).
    Arguments { index: usize, text: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing seen yet, or too little to tell text from a call.
    Undecided,
    /// Plain text: all of it is content.
    Text,
    /// Inside `<tool_call>\n{"name": "`, matched up to the buffer.
    Open,
    Name,
    /// Between the name and the arguments (`", "arguments": `).
    BeforeArguments,
    /// Inside the arguments: JSON depth, inside a string, after a `\`.
    Arguments {
        depth: usize,
        string: bool,
        escape: bool,
    },
    /// After the arguments: `}\n</tool_call>` then maybe `\n` and a call.
    Close,
    Between,
}

/// Turns generated text into [`Piece`]s as it arrives: plain text is
/// passed on as soon as it cannot be the start of a call; a call's name as
/// soon as it is complete; its arguments as they come.
#[derive(Debug)]
pub struct CallParser {
    state: State,
    /// Text not yet decided (a possible call opening, a name, a closing).
    held: String,
    calls: Vec<ToolCall>,
    content: String,
}

impl Default for CallParser {
    fn default() -> Self {
        Self::new()
    }
}

impl CallParser {
    pub fn new() -> Self {
        Self {
            state: State::Undecided,
            held: String::new(),
            calls: Vec::new(),
            content: String::new(),
        }
    }

    /// The calls seen so far (the last one's arguments may be unfinished).
    pub fn calls(&self) -> &[ToolCall] {
        &self.calls
    }

    /// The plain text seen so far; `None` when there is none.
    pub fn content(&self) -> Option<&str> {
        (!self.content.is_empty()).then_some(self.content.as_str())
    }

    /// Feed `text`; the pieces it completes.
    pub fn push(&mut self, text: &str) -> Vec<Piece> {
        let mut out = Vec::new();
        for c in text.chars() {
            self.step(c, &mut out);
        }
        // Merge adjacent pieces of the same kind.
        let mut merged: Vec<Piece> = Vec::new();
        for p in out {
            match (merged.last_mut(), p) {
                (Some(Piece::Content(a)), Piece::Content(b)) => a.push_str(&b),
                (
                    Some(Piece::Arguments { index: i, text: a }),
                    Piece::Arguments { index: j, text: b },
                ) if *i == j => a.push_str(&b),
                (_, p) => merged.push(p),
            }
        }
        merged
    }

    /// The held text becomes plain content: the output left the format.
    fn give_up(&mut self, out: &mut Vec<Piece>) {
        let held = std::mem::take(&mut self.held);
        self.state = State::Text;
        self.content.push_str(&held);
        out.push(Piece::Content(held));
    }

    /// The output ended: text still held that began like a call but never
    /// became one is content after all.
    pub fn finish(&mut self) -> Vec<Piece> {
        let mut out = Vec::new();
        if matches!(self.state, State::Undecided | State::Open) && !self.held.is_empty() {
            self.give_up(&mut out);
        }
        out
    }

    fn step(&mut self, c: char, out: &mut Vec<Piece>) {
        match self.state {
            State::Text => {
                self.content.push(c);
                out.push(Piece::Content(c.to_string()));
            }
            // After a call, a newline comes before the next one (and is
            // dropped); anything else is text.
            State::Between if c == '\n' => self.state = State::Open,
            State::Between => {
                self.held.push(c);
                self.give_up(out);
            }
            State::Undecided | State::Open => {
                self.held.push(c);
                if self.held == CALL_OPEN {
                    self.held.clear();
                    self.state = State::Name;
                } else if CALL_OPEN.starts_with(&self.held) {
                    self.state = State::Open;
                } else {
                    self.give_up(out);
                }
            }
            State::Name => {
                if c == '"' {
                    let name = std::mem::take(&mut self.held);
                    let call = ToolCall {
                        id: call_id(),
                        name: name.clone(),
                        arguments: String::new(),
                    };
                    out.push(Piece::Call {
                        index: self.calls.len(),
                        id: call.id.clone(),
                        name,
                    });
                    self.calls.push(call);
                    self.held.push('"');
                    self.state = State::BeforeArguments;
                } else {
                    self.held.push(c);
                }
            }
            State::BeforeArguments => {
                self.held.push(c);
                if self.held == ARGUMENTS {
                    self.held.clear();
                    self.state = State::Arguments {
                        depth: 0,
                        string: false,
                        escape: false,
                    };
                } else if !ARGUMENTS.starts_with(&self.held) {
                    self.give_up(out);
                }
            }
            State::Arguments {
                mut depth,
                mut string,
                mut escape,
            } => {
                if string {
                    if escape {
                        escape = false;
                    } else if c == '\\' {
                        escape = true;
                    } else if c == '"' {
                        string = false;
                    }
                } else {
                    match c {
                        '"' => string = true,
                        '{' | '[' => depth += 1,
                        '}' | ']' => depth = depth.saturating_sub(1),
                        _ => {}
                    }
                }
                let index = self.calls.len() - 1;
                self.calls[index].arguments.push(c);
                out.push(Piece::Arguments {
                    index,
                    text: c.to_string(),
                });
                self.state = if depth == 0 && !string && matches!(c, '}' | ']') {
                    State::Close
                } else {
                    State::Arguments {
                        depth,
                        string,
                        escape,
                    }
                };
            }
            State::Close => {
                self.held.push(c);
                if self.held == CALL_CLOSE {
                    self.held.clear();
                    self.state = State::Between;
                } else if !CALL_CLOSE.starts_with(&self.held) {
                    self.give_up(out);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weather() -> Tool {
        Tool {
            name: "get_weather".into(),
            description: Some("The weather in a city".into()),
            parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
        }
    }

    fn parse(text: &str, chunk: usize) -> (Vec<Piece>, CallParser) {
        let mut p = CallParser::new();
        let chars: Vec<char> = text.chars().collect();
        let mut pieces = Vec::new();
        for c in chars.chunks(chunk) {
            pieces.extend(p.push(&c.iter().collect::<String>()));
        }
        (pieces, p)
    }

    #[test]
    fn parses_calls_whole_and_streamed() {
        let text = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Pa}ris\\\"\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"now\", \"arguments\": {}}\n</tool_call>";
        for chunk in [1, 3, 7, 1000] {
            let (pieces, p) = parse(text, chunk);
            assert_eq!(p.content(), None);
            let calls = p.calls();
            assert_eq!(calls.len(), 2, "chunk {chunk}");
            assert_eq!(calls[0].name, "get_weather");
            assert_eq!(calls[0].arguments, "{\"city\": \"Pa}ris\\\"\"}");
            assert_eq!(calls[1].name, "now");
            assert_eq!(calls[1].arguments, "{}");
            let args: String = pieces
                .iter()
                .filter_map(|p| match p {
                    Piece::Arguments { index: 0, text } => Some(text.as_str()),
                    _ => None,
                })
                .collect();
            assert_eq!(args, calls[0].arguments);
            assert!(
                matches!(&pieces[0], Piece::Call { index: 0, name, .. } if name == "get_weather")
            );
            assert!(!pieces.iter().any(|p| matches!(p, Piece::Content(_))));
        }
    }

    #[test]
    fn text_passes_through_at_once() {
        let (pieces, mut p) = parse("Hello <b>", 1);
        assert!(p.finish().is_empty());
        assert_eq!(p.content(), Some("Hello <b>"));
        assert!(p.calls().is_empty());
        assert_eq!(pieces[0], Piece::Content("H".into()));
        // A `<` is held until it cannot open a call.
        let mut p = CallParser::new();
        assert!(p.push("<tool").is_empty());
        assert_eq!(p.push("s>"), vec![Piece::Content("<tools>".into())]);
        assert_eq!(p.content(), Some("<tools>"));
        let mut p = CallParser::new();
        assert!(p.push("<tool_c").is_empty());
        assert_eq!(p.finish(), vec![Piece::Content("<tool_c".into())]);
        assert_eq!(p.content(), Some("<tool_c"));
    }

    #[test]
    fn grammar_names_only_the_chosen_tools() {
        let tools = [
            weather(),
            Tool {
                name: "now".into(),
                description: None,
                parameters: json!({"type": "object", "properties": {}}),
            },
        ];
        let g = grammar(&tools, &Choice::Named("now".into()), false);
        assert!(
            g.starts_with("start: calls\ncalls: call\ncall: call_1\n"),
            "{g}"
        );
        assert!(!g.contains("get_weather"));
        let g = grammar(&tools, &Choice::Auto, true);
        assert!(g.contains("TEXT"), "{g}");
        assert!(g.contains("call: call_0 | call_1"), "{g}");
    }

    #[test]
    fn fallback_writes_tools_calls_and_answers_as_plain_turns() {
        let mut asked = Message::new("assistant", "");
        asked.tool_calls = vec![ToolCall {
            id: "call_1".into(),
            name: "get_weather".into(),
            arguments: "{\"city\": \"Paris\"}".into(),
        }];
        let mut answer = Message::new("tool", "sunny");
        answer.tool_call_id = Some("call_1".into());
        let messages = [
            Message::new("user", "Weather in Paris?"),
            asked,
            answer.clone(),
            answer,
        ];
        let out = fallback(&messages, &[weather()]);
        assert_eq!(out.len(), 4);
        assert_eq!(out[0].role, "system");
        assert!(out[0].content.contains("<tools>\n{\"type\":\"function\""));
        assert_eq!(
            out[2].content,
            "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>"
        );
        assert_eq!(out[3].role, "user");
        assert_eq!(
            out[3].content,
            "<tool_response>\nsunny\n</tool_response>\n<tool_response>\nsunny\n</tool_response>"
        );
        let with_system = fallback(
            &[
                Message::new("system", "Be brief."),
                Message::new("user", "hi"),
            ],
            &[weather()],
        );
        assert_eq!(with_system.len(), 2);
        assert!(with_system[0].content.starts_with("Be brief.\n\n# Tools"));
    }
}
