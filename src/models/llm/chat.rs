//! Chat messages to prompt text, with the model's own chat template.
//!
//! The template comes from the GGUF metadata (`tokenizer.chat_template`) and
//! is rendered with minijinja (plus Python-style string methods, which
//! Hugging Face templates use); a model without one gets ChatML.

use crate::error::{Error, Result};
use minijinja::{context, Environment, ErrorKind};
use serde::{Deserialize, Serialize};

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// ChatML, for models that carry no template of their own.
pub const CHATML: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// A compiled chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
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
        env.add_template_owned("chat", source.unwrap_or(CHATML).to_string())
            .map_err(|e| {
                Error::Model(format!("the model's chat template does not compile: {e}"))
            })?;
        Ok(Self {
            env,
            bos_token: bos_token.into(),
            eos_token: eos_token.into(),
        })
    }

    /// Render a conversation, ending with the assistant's turn opened.
    pub fn render(&self, messages: &[Message]) -> Result<String> {
        if messages.is_empty() {
            return Err(Error::InvalidInput("messages must not be empty".into()));
        }
        for m in messages {
            if !matches!(m.role.as_str(), "system" | "user" | "assistant") {
                return Err(Error::InvalidInput(format!(
                    "unknown message role {:?}: expected system, user or assistant",
                    m.role
                )));
            }
        }
        let tmpl = self
            .env
            .get_template("chat")
            .expect("template added in new");
        tmpl.render(context! {
            messages => messages,
            add_generation_prompt => true,
            bos_token => self.bos_token,
            eos_token => self.eos_token,
        })
        .map_err(|e| Error::InvalidInput(format!("chat template rejected the messages: {e}")))
    }
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
