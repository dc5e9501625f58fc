//! The fine-tuned pipeline: generation straight from the fine-tuned LLM,
//! from a conversation (through its chat template) or a raw prompt. The
//! fine-tuned model is a model file, or a base model with a LoRA adapter
//! applied unmerged (the base's weights shared with every other use of
//! them; [`FineTuned::with_adapter`]).

use crate::engine::{Generation, GenerationStream, Prompt};
use crate::error::{Error, Result};
use crate::models::llm::lora::Adapter;
use crate::models::llm::message::Tool;
use crate::models::llm::message::{Message, ROLES};
use crate::models::llm::sampling::SamplingParams;
use std::sync::Arc;

/// What to generate from.
#[derive(Debug, Clone)]
pub enum Input {
    Messages(Vec<Message>),
    /// A conversation that offers the model tools to call.
    Tools(Vec<Message>, Vec<Tool>),
    Prompt(String),
}

#[derive(Clone)]
pub struct FineTuned {
    generator: Generation,
    adapter: Option<Arc<Adapter>>,
}

impl FineTuned {
    pub fn new(generator: Generation) -> Self {
        Self {
            generator,
            adapter: None,
        }
    }

    /// The pipeline on `generator`'s model with `adapter` applied.
    pub fn with_adapter(generator: Generation, adapter: Option<Arc<Adapter>>) -> Self {
        Self { generator, adapter }
    }

    pub fn generator(&self) -> &Generation {
        &self.generator
    }

    pub fn adapter(&self) -> Option<&Arc<Adapter>> {
        self.adapter.as_ref()
    }

    /// What answers: the adapter's name, or the model's.
    pub fn model_name(&self) -> &str {
        match &self.adapter {
            Some(a) => &a.name,
            None => self.generator.name(),
        }
    }

    /// The same pipeline with the adapter `name` of its model (an unknown
    /// name is [`Error::NotFound`]).
    pub fn select(&self, name: &str) -> Result<Self> {
        match self.generator.adapter(name) {
            Some(a) => Ok(Self::with_adapter(self.generator.clone(), Some(a))),
            None => {
                let known: Vec<String> = self
                    .generator
                    .adapters()
                    .iter()
                    .map(|a| a.name.clone())
                    .collect();
                Err(Error::NotFound(format!(
                    "no adapter named {name:?} (loaded: {})",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                )))
            }
        }
    }

    fn conversation(messages: Vec<Message>, tools: Vec<Tool>) -> Result<Prompt> {
        if messages.is_empty() {
            return Err(Error::InvalidInput("messages is empty".into()));
        }
        if let Some(bad) = messages.iter().find(|m| !ROLES.contains(&m.role.as_str())) {
            return Err(Error::InvalidInput(format!(
                "unknown message role {:?}; use system, user, assistant or tool",
                bad.role
            )));
        }
        Ok(Prompt::Chat { messages, tools })
    }

    pub async fn generate(&self, input: Input, params: SamplingParams) -> Result<GenerationStream> {
        let prompt = match input {
            Input::Prompt(p) if p.is_empty() => {
                return Err(Error::InvalidInput("the prompt is empty".into()))
            }
            Input::Prompt(p) => Prompt::Text(p),
            Input::Messages(m) => Self::conversation(m, Vec::new())?,
            Input::Tools(m, tools) => Self::conversation(m, tools)?,
        };
        let params = self.generator.check(params)?;
        self.generator
            .start_with(prompt, params, self.adapter.clone())
            .await
    }
}
