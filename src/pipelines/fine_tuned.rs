//! The fine-tuned pipeline: generation straight from the fine-tuned LLM,
//! from a conversation (through its chat template) or a raw prompt.

use crate::engine::{Generation, GenerationStream, Prompt};
use crate::error::{Error, Result};
use crate::models::llm::chat::Message;
use crate::models::llm::sampling::SamplingParams;

/// What to generate from.
#[derive(Debug, Clone)]
pub enum Input {
    Messages(Vec<Message>),
    Prompt(String),
}

#[derive(Clone)]
pub struct FineTuned {
    generator: Generation,
}

const ROLES: &[&str] = &["system", "user", "assistant"];

impl FineTuned {
    pub fn new(generator: Generation) -> Self {
        Self { generator }
    }

    pub fn generator(&self) -> &Generation {
        &self.generator
    }

    pub fn generate(&self, input: Input, params: SamplingParams) -> Result<GenerationStream> {
        let prompt = match input {
            Input::Prompt(p) if p.is_empty() => {
                return Err(Error::InvalidInput("the prompt is empty".into()))
            }
            Input::Prompt(p) => Prompt::Text(p),
            Input::Messages(m) if m.is_empty() => {
                return Err(Error::InvalidInput("messages is empty".into()))
            }
            Input::Messages(m) => {
                if let Some(bad) = m.iter().find(|m| !ROLES.contains(&m.role.as_str())) {
                    return Err(Error::InvalidInput(format!(
                        "unknown message role {:?}; use system, user or assistant",
                        bad.role
                    )));
                }
                Prompt::Chat(m)
            }
        };
        self.generator.submit(prompt, params)
    }
}
