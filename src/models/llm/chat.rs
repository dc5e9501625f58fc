//! Chat messages to prompt text, with the model's own chat template.
//!
//! The template comes from the GGUF metadata (`tokenizer.chat_template`) and
//! is rendered with minijinja (plus Python-style string methods, which
//! Hugging Face templates use); a model without one gets its family's
//! (Gemma, Llama 3, Phi-3, `[INST]`, known by their turn tokens), else
//! ChatML.

#[cfg(test)]
use super::message::ToolCall;
use super::message::{Message, Tool, ROLES};
use super::tools;
use crate::error::{Error, Result};
use minijinja::{context, Environment, ErrorKind};

/// ChatML, for models that carry no template of their own.
pub const CHATML: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// Gemma's turns (`<start_of_turn>user` / `model`), a system message
/// folded into the first user turn, as Gemma 3's own template does.
pub const GEMMA: &str = "{{ bos_token }}{%- if messages[0]['role'] == 'system' -%}{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}{%- set loop_messages = messages[1:] -%}{%- else -%}{%- set first_user_prefix = '' -%}{%- set loop_messages = messages -%}{%- endif -%}{%- for message in loop_messages -%}{%- if message['role'] == 'assistant' -%}{%- set role = 'model' -%}{%- else -%}{%- set role = message['role'] -%}{%- endif -%}{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') + message['content'] | trim + '<end_of_turn>\n' }}{%- endfor -%}{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}";

/// Llama 3's header-delimited turns.
pub const LLAMA3: &str = "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";

/// Phi-3's `<|role|>` turns.
pub const PHI3: &str = "{% for message in messages %}{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}";

/// Mistral's and Llama 2's `[INST]` turns, a system message folded into
/// the first user turn.
pub const INST: &str = "{{ bos_token }}{%- if messages[0]['role'] == 'system' -%}{%- set prefix = messages[0]['content'] + '\n\n' -%}{%- set loop_messages = messages[1:] -%}{%- else -%}{%- set prefix = '' -%}{%- set loop_messages = messages -%}{%- endif -%}{%- for message in loop_messages -%}{%- if message['role'] == 'user' -%}{{ '[INST] ' + (prefix if loop.first else '') + message['content'] + ' [/INST]' }}{%- else -%}{{ message['content'] + eos_token }}{%- endif -%}{%- endfor -%}";

/// The template for a model file that carries none, chosen by the turn
/// markers its vocabulary has (`has_token`); ChatML when none matches.
pub fn default_template(has_token: impl Fn(&str) -> bool) -> &'static str {
    if has_token("<start_of_turn>") {
        GEMMA
    } else if has_token("<|start_header_id|>") {
        LLAMA3
    } else if has_token("<|assistant|>") && has_token("<|end|>") {
        PHI3
    } else if has_token("[INST]") {
        INST
    } else {
        CHATML
    }
}

/// A chat template as one process hands it to another (with the tokenizer,
/// at `GET /generator`): its source and the tokens it may write.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct TemplateWire {
    pub source: String,
    pub bos_token: String,
    pub eos_token: String,
}

/// A compiled chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    bos_token: String,
    eos_token: String,
    /// Whether the template renders tools itself, in the Hermes format
    /// hearth constrains calls to (it reads `tools` and writes
    /// `<tool_call>`); other templates get [`tools::fallback`].
    hermes_tools: bool,
}

impl ChatTemplate {
    /// Compile `source` (or ChatML when `None`).
    pub fn new(source: Option<&str>, bos_token: &str, eos_token: &str) -> Result<Self> {
        let mut env = Environment::new();
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<String, minijinja::Error> {
                Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
            },
        );
        // Templates often trim or strip; keep whitespace exactly as written.
        env.set_trim_blocks(false);
        env.set_lstrip_blocks(false);
        let source = source.unwrap_or(CHATML);
        let hermes_tools = source.contains("tools") && source.contains("<tool_call>");
        env.add_template_owned("chat", source.to_string())
            .map_err(|e| {
                Error::Model(format!("the model's chat template does not compile: {e}"))
            })?;
        Ok(Self {
            env,
            source: source.to_string(),
            bos_token: bos_token.into(),
            eos_token: eos_token.into(),
            hermes_tools,
        })
    }

    /// The template in its wire form ([`from_wire`](Self::from_wire)).
    pub fn to_wire(&self) -> TemplateWire {
        TemplateWire {
            source: self.source.clone(),
            bos_token: self.bos_token.clone(),
            eos_token: self.eos_token.clone(),
        }
    }

    /// The template another process sent.
    pub fn from_wire(wire: &TemplateWire) -> Result<Self> {
        Self::new(Some(&wire.source), &wire.bos_token, &wire.eos_token)
    }

    /// Whether the template renders tools itself.
    /// The template's Jinja source (the file's, or hearth's default).
    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn renders_tools(&self) -> bool {
        self.hermes_tools
    }

    /// Render a conversation, ending with the assistant's turn opened.
    pub fn render(&self, messages: &[Message]) -> Result<String> {
        self.render_with_tools(messages, &[])
    }

    /// Render a conversation that may offer `tools` and hold calls and
    /// their answers: with the template's own tool format when it has the
    /// Hermes one, else in plain turns ([`tools::fallback`]).
    pub fn render_with_tools(&self, messages: &[Message], tools: &[Tool]) -> Result<String> {
        if messages.is_empty() {
            return Err(Error::InvalidInput("messages must not be empty".into()));
        }
        for m in messages {
            if !ROLES.contains(&m.role.as_str()) {
                return Err(Error::InvalidInput(format!(
                    "unknown message role {:?}: expected system, user, assistant or tool",
                    m.role
                )));
            }
        }
        let tool_turns = messages.iter().any(Message::is_tool_turn);
        let plain;
        let (messages, tools): (&[Message], Vec<serde_json::Value>) =
            if self.hermes_tools || (tools.is_empty() && !tool_turns) {
                (messages, tools.iter().map(Tool::openai).collect())
            } else {
                plain = tools::fallback(messages, tools);
                (&plain, Vec::new())
            };
        let view: Vec<serde_json::Value> = messages.iter().map(template_view).collect();
        let tmpl = self
            .env
            .get_template("chat")
            .expect("template added in new");
        let tools = (!tools.is_empty()).then_some(tools);
        tmpl.render(context! {
            messages => view,
            tools => tools,
            add_generation_prompt => true,
            bos_token => self.bos_token,
            eos_token => self.eos_token,
        })
        .map_err(|e| Error::InvalidInput(format!("chat template rejected the messages: {e}")))
    }
}

/// The message as chat templates read it: OpenAI's shape, a call's
/// arguments as an object (templates write them with `tojson`).
fn template_view(message: &Message) -> serde_json::Value {
    let mut v = serde_json::json!({ "role": message.role, "content": message.content });
    if !message.tool_calls.is_empty() {
        v["tool_calls"] = message
            .tool_calls
            .iter()
            .map(|c| {
                let arguments: serde_json::Value = serde_json::from_str(&c.arguments)
                    .unwrap_or_else(|_| serde_json::Value::String(c.arguments.clone()));
                serde_json::json!({ "id": c.id, "type": "function",
                    "function": { "name": c.name, "arguments": arguments } })
            })
            .collect();
    }
    if let Some(id) = &message.tool_call_id {
        v["tool_call_id"] = id.clone().into();
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SmolLM2's template, as its GGUF carries it.
    const SMOLLM: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn renders_the_model_template_with_its_default_system_message() {
        let t = ChatTemplate::new(Some(SMOLLM), "<|im_start|>", "<|im_end|>").unwrap();
        let out = t.render(&[Message::new("user", "hi")]).unwrap();
        assert_eq!(
            out,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
        );
        let out = t
            .render(&[
                Message::new("system", "Be brief."),
                Message::new("user", "hi"),
            ])
            .unwrap();
        assert!(out.starts_with("<|im_start|>system\nBe brief.<|im_end|>\n"));
    }

    #[test]
    fn family_defaults_render_their_turns() {
        let gemma = ChatTemplate::new(
            Some(default_template(|t| t == "<start_of_turn>")),
            "<bos>",
            "<eos>",
        )
        .unwrap();
        let out = gemma
            .render(&[
                Message::new("system", "Be brief."),
                Message::new("user", " hi "),
                Message::new("assistant", "hello"),
                Message::new("user", "bye"),
            ])
            .unwrap();
        assert_eq!(
            out,
            "<bos><start_of_turn>user\nBe brief.\n\nhi<end_of_turn>\n<start_of_turn>model\nhello<end_of_turn>\n<start_of_turn>user\nbye<end_of_turn>\n<start_of_turn>model\n"
        );
        let llama3 = ChatTemplate::new(
            Some(default_template(|t| t == "<|start_header_id|>")),
            "<|begin_of_text|>",
            "",
        )
        .unwrap();
        assert_eq!(
            llama3.render(&[Message::new("user", "hi")]).unwrap(),
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
        );
        let phi3 = ChatTemplate::new(
            Some(default_template(|t| {
                matches!(t, "<|assistant|>" | "<|end|>")
            })),
            "",
            "",
        )
        .unwrap();
        assert_eq!(
            phi3.render(&[Message::new("user", "hi")]).unwrap(),
            "<|user|>\nhi<|end|>\n<|assistant|>\n"
        );
        let inst =
            ChatTemplate::new(Some(default_template(|t| t == "[INST]")), "<s>", "</s>").unwrap();
        assert_eq!(
            inst.render(&[
                Message::new("system", "S"),
                Message::new("user", "hi"),
                Message::new("assistant", "yo"),
                Message::new("user", "ok")
            ])
            .unwrap(),
            "<s>[INST] S\n\nhi [/INST]yo</s>[INST] ok [/INST]"
        );
        assert_eq!(default_template(|_| false), CHATML);
    }

    /// A template with the Hermes tool format (as Qwen 2.5's) is given the
    /// tools and the calls as they are; others get the fallback.
    #[test]
    fn tools_go_to_a_template_that_renders_them() {
        const HERMES: &str = "{%- if tools %}<tools>{% for t in tools %}{{ t.function.name }};{% endfor %}</tools>{% endif %}{% for m in messages %}[{{ m.role }}]{% if m.tool_calls %}{% for c in m.tool_calls %}<tool_call>{{ c.function.name }} {{ c.function.arguments | tojson }}</tool_call>{% endfor %}{% else %}{{ m.content }}{% endif %}{% endfor %}";
        let t = ChatTemplate::new(Some(HERMES), "", "").unwrap();
        assert!(t.renders_tools());
        let tool = Tool {
            name: "add".into(),
            description: None,
            parameters: serde_json::json!({"type": "object"}),
        };
        let mut call = Message::new("assistant", "");
        call.tool_calls = vec![ToolCall {
            id: "c1".into(),
            name: "add".into(),
            arguments: "{\"a\": 1}".into(),
        }];
        let out = t
            .render_with_tools(
                &[
                    Message::new("user", "1+2?"),
                    call,
                    Message::new("tool", "3"),
                ],
                std::slice::from_ref(&tool),
            )
            .unwrap();
        assert_eq!(
            out,
            "<tools>add;</tools>[user]1+2?[assistant]<tool_call>add {\"a\":1}</tool_call>[tool]3"
        );
        let plain = ChatTemplate::new(None, "", "").unwrap();
        assert!(!plain.renders_tools());
        let out = plain
            .render_with_tools(&[Message::new("user", "1+2?")], &[tool])
            .unwrap();
        assert!(out.starts_with("<|im_start|>system\n# Tools"), "{out}");
    }

    #[test]
    fn chatml_fallback_and_bad_input() {
        let t = ChatTemplate::new(None, "", "").unwrap();
        let out = t
            .render(&[Message::new("user", "a"), Message::new("assistant", "b")])
            .unwrap();
        assert_eq!(
            out,
            "<|im_start|>user\na<|im_end|>\n<|im_start|>assistant\nb<|im_end|>\n<|im_start|>assistant\n"
        );
        assert!(t.render(&[]).is_err());
        assert!(t.render(&[Message::new("robot", "x")]).is_err());
        // A tool's answer, for a template that knows no tools: a user turn.
        let out = t
            .render(&[Message::new("user", "a"), Message::new("tool", "42")])
            .unwrap();
        assert!(
            out.contains("<|im_start|>user\n<tool_response>\n42\n</tool_response><|im_end|>"),
            "{out}"
        );
        let strict = ChatTemplate::new(
            Some("{% if messages[0].role != 'user' %}{{ raise_exception('first must be user') }}{% endif %}{{ messages[0].content.strip() }}"),
            "",
            "",
        )
        .unwrap();
        assert_eq!(strict.render(&[Message::new("user", "  x ")]).unwrap(), "x");
        let err = strict.render(&[Message::new("system", "x")]).unwrap_err();
        assert!(err.to_string().contains("first must be user"), "{err}");
        assert!(ChatTemplate::new(Some("{% if %}"), "", "").is_err());
    }
}
