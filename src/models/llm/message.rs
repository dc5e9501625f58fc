//! The words of a conversation, shared by the chat template (`chat.rs`)
//! and the tool-call format (`tools.rs`): a turn ([`Message`]), a
//! function offered to the model ([`Tool`]) and a call it made
//! ([`ToolCall`]). Types only; rendering and parsing live in those modules.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// One turn of a conversation: `system`, `user`, `assistant` (which may
/// carry tool calls) or `tool` (a tool's answer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Message {
    pub role: String,
    #[serde(default)]
    pub content: String,
    /// An assistant's calls of tools.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// A tool's answer: the call it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl Message {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }

    /// Whether the message is a call of tools or a tool's answer.
    pub fn is_tool_turn(&self) -> bool {
        self.role == "tool" || !self.tool_calls.is_empty()
    }
}

/// The roles a conversation may hold.
pub const ROLES: &[&str] = &["system", "user", "assistant", "tool"];

/// A function the model may call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tool {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A JSON schema for the arguments object.
    pub parameters: Value,
}

impl Tool {
    /// OpenAI's shape, which chat templates expect:
    /// `{"type": "function", "function": {"name", "description", "parameters"}}`.
    pub fn openai(&self) -> Value {
        json!({ "type": "function", "function": self })
    }
}

/// A call the model made: `arguments` is the JSON text of its arguments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
}
