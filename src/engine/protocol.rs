//! hearth's wire protocol, written once: what one hearth process says to
//! another (a `rag` process to its `embed` and `generate` processes), and
//! the Server-Sent Events every streaming route sends.
//!
//! - Model routes: `GET /embedder` ([`EmbedderInfo`]), `GET /generator`
//!   ([`GeneratorDescription`], with the tokenizer and chat template, so that
//!   clients fit prompts without a round trip), `POST /generate`
//!   ([`GenerateRequest`]; streamed as
//!   [`event::STARTED`], [`event::TEXT`]..., then [`event::DONE`] or
//!   [`event::ERROR`]).
//! - Client streams (`/rag`, `/fine-tuned`): [`event::TOKEN`]..., then
//!   [`event::DONE`] or [`event::ERROR`].
//! - Every error body: [`ErrorBody`].
//!
//! The server encodes events (`server::stream`); the remote clients, the
//! benchmark and the tests decode them with [`SseDecoder`]. Nothing here
//! knows HTTP frameworks.

use crate::error::Error;
use crate::models::llm::chat::TemplateWire;
use crate::models::llm::message::Message;
use crate::models::llm::message::Tool;
use crate::models::llm::sampling::SamplingParams;
use crate::models::llm::tokenizer::TokenizerWire;
use serde::{Deserialize, Serialize};

use super::request::Prompt;

/// SSE event names.
pub mod event {
    /// `/generate`: the prompt was accepted; `{"prompt_tokens"}`.
    pub const STARTED: &str = "started";
    /// `/generate`: a piece of text; `{"text"}`.
    pub const TEXT: &str = "text";
    /// `/rag` and `/fine-tuned`: a piece of text; `{"text"}`.
    pub const TOKEN: &str = "token";
    /// Every stream's last event on success: the whole answer.
    pub const DONE: &str = "done";
    /// Every stream's last event on failure: an `ErrorBody`.
    pub const ERROR: &str = "error";
}

/// What an embedding process serves at `GET /embedder`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EmbedderInfo {
    pub name: String,
    pub dimensions: usize,
    pub max_tokens: usize,
    /// The tokenizer (`tokenizer.json`), so that the client chunks and
    /// counts tokens exactly as the embedder does.
    pub tokenizer: serde_json::Value,
}

/// The LLM a generation process serves and its limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GeneratorInfo {
    pub name: String,
    pub context_length: usize,
    pub max_prompt_tokens: usize,
    pub max_tokens_limit: usize,
}

/// What a generation process answers at `GET /generator`: its
/// [`GeneratorInfo`], and the model's tokenizer and chat template, so that
/// a client renders and counts a prompt exactly as the model's process
/// would (the RAG pipeline fitting its passages) without asking it.
#[derive(Debug, Serialize, Deserialize)]
pub struct GeneratorDescription {
    #[serde(flatten)]
    pub info: GeneratorInfo,
    pub tokenizer: TokenizerWire,
    pub chat_template: TemplateWire,
}

/// The body of `POST /generate`: one of `prompt`, `messages` (with
/// `tools`, when the conversation offers any) or `tokens`, then the
/// sampling fields.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "GenerateWire", into = "GenerateWire")]
pub struct GenerateRequest {
    pub prompt: Prompt,
    pub params: SamplingParams,
    pub stream: bool,
}

#[derive(Serialize, Deserialize)]
struct GenerateWire {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    prompt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    messages: Option<Vec<Message>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    tools: Vec<Tool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tokens: Option<Vec<u32>>,
    #[serde(flatten)]
    params: SamplingParams,
    #[serde(default)]
    stream: bool,
}

impl TryFrom<GenerateWire> for GenerateRequest {
    type Error = String;

    fn try_from(w: GenerateWire) -> std::result::Result<Self, String> {
        let prompt = match (w.prompt, w.messages, w.tokens) {
            (Some(p), None, None) => Prompt::Text(p),
            (None, Some(messages), None) => Prompt::Chat {
                messages,
                tools: w.tools,
            },
            (None, None, Some(t)) => Prompt::Tokens(t),
            _ => return Err("give exactly one of `prompt`, `messages` and `tokens`".into()),
        };
        Ok(Self {
            prompt,
            params: w.params,
            stream: w.stream,
        })
    }
}

impl From<GenerateRequest> for GenerateWire {
    fn from(r: GenerateRequest) -> Self {
        let mut w = GenerateWire {
            prompt: None,
            messages: None,
            tools: Vec::new(),
            tokens: None,
            params: r.params,
            stream: r.stream,
        };
        match r.prompt {
            Prompt::Text(p) => w.prompt = Some(p),
            Prompt::Chat { messages, tools } => {
                w.messages = Some(messages);
                w.tools = tools;
            }
            Prompt::Tokens(t) => w.tokens = Some(t),
        }
        w
    }
}

/// `/generate`'s `started` event.
#[derive(Debug, Serialize, Deserialize)]
pub struct Started {
    pub prompt_tokens: usize,
}

/// A `text` (or `token`) event: one piece of text.
#[derive(Debug, Serialize, Deserialize)]
pub struct Text {
    pub text: String,
    /// `/generate` with log-probabilities asked for: those of the tokens
    /// behind this text.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub logprobs: Vec<super::request::TokenLogprob>,
}

/// Every error's body: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    #[serde(default)]
    pub message: String,
    /// `invalid_request_error`, `not_found_error`, `authentication_error`,
    /// `unavailable_error` or `server_error`.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// The request field at fault, if any.
    #[serde(default)]
    pub param: Option<String>,
    /// A stable machine-readable code, e.g. `invalid_field`, `overloaded`.
    #[serde(default)]
    pub code: String,
}

impl ErrorBody {
    /// Read another process's error body (a refusal, or a stream's `error`
    /// event) as the error to pass on, keeping its code and field; a body
    /// that is not hearth's shape still gives an error with `status`.
    pub fn parse(status: u16, body: &[u8]) -> Error {
        let detail = serde_json::from_slice::<ErrorBody>(body)
            .ok()
            .map(|b| b.error);
        let detail = detail.unwrap_or_default();
        Error::Remote {
            status,
            code: if detail.code.is_empty() {
                "remote_error".into()
            } else {
                detail.code
            },
            param: detail.param,
            message: if detail.message.is_empty() {
                format!("the remote process answered {status}")
            } else {
                detail.message
            },
        }
    }
}

/// One Server-Sent Event: its name (`message` when unnamed) and its data
/// lines joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseFrame {
    pub event: String,
    pub data: String,
}

impl SseFrame {
    /// The data as JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> serde_json::Result<T> {
        serde_json::from_str(&self.data)
    }
}

/// Splits a byte stream into SSE frames as the bytes arrive. Comments
/// (keep-alives) and frames without data are skipped.
#[derive(Debug, Default)]
pub struct SseDecoder {
    buffer: Vec<u8>,
}

impl SseDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add bytes as they arrived.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next complete frame, if one has arrived.
    pub fn next_frame(&mut self) -> Option<SseFrame> {
        loop {
            let end = self.buffer.windows(2).position(|w| w == b"\n\n")?;
            let raw: Vec<u8> = self.buffer.drain(..end + 2).collect();
            if let Some(frame) = parse_frame(&String::from_utf8_lossy(&raw)) {
                return Some(frame);
            }
        }
    }

    /// Every frame of a whole body.
    pub fn decode_all(body: &str) -> Vec<SseFrame> {
        let mut decoder = Self::new();
        decoder.push(body.as_bytes());
        decoder.push(b"\n\n"); // a last frame without its blank line
        std::iter::from_fn(|| decoder.next_frame()).collect()
    }
}

/// One frame's event name and data; `None` for a comment or an empty frame.
fn parse_frame(frame: &str) -> Option<SseFrame> {
    let mut event = None;
    let mut data: Vec<&str> = Vec::new();
    for line in frame.lines() {
        if let Some(v) = line.strip_prefix("event:") {
            event = Some(v.trim().to_string());
        } else if let Some(v) = line.strip_prefix("data:") {
            data.push(v.strip_prefix(' ').unwrap_or(v));
        }
    }
    if data.is_empty() {
        return None;
    }
    Some(SseFrame {
        event: event.unwrap_or_else(|| "message".into()),
        data: data.join("\n"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_decode_across_chunk_boundaries_and_skip_keep_alives() {
        let mut d = SseDecoder::new();
        d.push(b"event: text\nda");
        assert_eq!(d.next_frame(), None);
        d.push(b"ta: {\"text\":\"a\"}\n\n:\n\nevent: done\ndata: {}\n\n");
        assert_eq!(
            d.next_frame(),
            Some(SseFrame {
                event: "text".into(),
                data: "{\"text\":\"a\"}".into()
            })
        );
        assert_eq!(d.next_frame().unwrap().event, "done");
        assert_eq!(d.next_frame(), None);
        let all = SseDecoder::decode_all("data: 1\ndata: 2\n\nevent: x\ndata: 3");
        assert_eq!(all.len(), 2);
        assert_eq!(
            (all[0].event.as_str(), all[0].data.as_str()),
            ("message", "1\n2")
        );
        assert_eq!(all[1].data, "3");
    }

    #[test]
    fn error_bodies_keep_code_and_field_or_fall_back() {
        let body = br#"{"error":{"message":"m","type":"invalid_request_error","param":"max_tokens","code":"invalid_request"}}"#;
        match ErrorBody::parse(400, body) {
            Error::Remote {
                status,
                code,
                param,
                message,
            } => {
                assert_eq!(
                    (status, code.as_str(), message.as_str()),
                    (400, "invalid_request", "m")
                );
                assert_eq!(param.as_deref(), Some("max_tokens"));
            }
            other => panic!("{other}"),
        }
        match ErrorBody::parse(502, b"<html>bad gateway</html>") {
            Error::Remote { code, message, .. } => {
                assert_eq!(code, "remote_error");
                assert!(message.contains("502"), "{message}");
            }
            other => panic!("{other}"),
        }
    }

    #[test]
    fn generate_request_round_trips() {
        let req = GenerateRequest {
            prompt: Prompt::Tokens(vec![1, 2, 3]),
            params: SamplingParams {
                max_tokens: 7,
                ..SamplingParams::default()
            },
            stream: true,
        };
        let json = serde_json::to_value(&req).unwrap();
        assert_eq!(json["tokens"], serde_json::json!([1, 2, 3]));
        assert_eq!(json["max_tokens"], 7);
        let back: GenerateRequest = serde_json::from_value(json).unwrap();
        assert!(matches!(back.prompt, Prompt::Tokens(t) if t == vec![1, 2, 3]));
        assert_eq!(back.params.max_tokens, 7);
        let chat: GenerateRequest =
            serde_json::from_str(r#"{"messages":[{"role":"user","content":"hi"}]}"#).unwrap();
        assert!(
            matches!(chat.prompt, Prompt::Chat { messages, tools } if messages[0].content == "hi" && tools.is_empty())
        );
        let tool = Tool {
            name: "now".into(),
            description: None,
            parameters: serde_json::json!({"type": "object"}),
        };
        let req = GenerateRequest {
            prompt: Prompt::Chat {
                messages: vec![Message::new("user", "hi")],
                tools: vec![tool.clone()],
            },
            params: SamplingParams::default(),
            stream: false,
        };
        let json = serde_json::to_value(&req).unwrap();
        assert_eq!(json["tools"][0]["name"], "now");
        let back: GenerateRequest = serde_json::from_value(json).unwrap();
        assert!(matches!(back.prompt, Prompt::Chat { tools, .. } if tools == vec![tool]));
        assert!(serde_json::from_str::<GenerateRequest>(r#"{"prompt":"a","tokens":[1]}"#).is_err());
    }
}
