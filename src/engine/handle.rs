//! A model worker in this process or in another one, behind one type each:
//! [`Embedding`] and [`Generation`]. Pipelines hold these, so the same
//! pipeline code runs whether a role loads a model itself or uses a remote
//! `embed` / `generate` process.

use super::embedder::EmbedWorker;
use super::generator::{Checked, GenerationStream, Generator};
use super::limits::{PromptBudget, StatsSnapshot};
use super::offload::blocking;
use super::remote::{RemoteEmbedder, RemoteGenerator};
use super::request::Prompt;
use crate::error::{Error, Result};
use crate::models::llm::chat::ChatTemplate;
use crate::models::llm::lora::Adapter;
use crate::models::llm::message::{Message, Tool};
use crate::models::llm::sampling::SamplingParams;
use crate::models::llm::tokenizer::LlmTokenizer;
use std::sync::Arc;
use tokenizers::Tokenizer;

/// The embedding model: a local worker or a remote `embed` process.
#[derive(Clone)]
pub enum Embedding {
    Local(EmbedWorker),
    Remote(Arc<RemoteEmbedder>),
}

impl Embedding {
    /// Embed `texts`, in order.
    pub async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>> {
        Ok(self.embed_counted(texts).await?.0)
    }

    /// Embed `texts`, in order, and count the tokens the model saw of them
    /// (tokenizing each text once for both).
    pub async fn embed_counted(&self, texts: Vec<String>) -> Result<(Vec<Vec<f32>>, usize)> {
        match self {
            Embedding::Local(w) => w.embed_counted(texts).await,
            Embedding::Remote(r) => r.embed_counted(texts).await,
        }
    }

    /// Embed a document's chunks, in order, behind any query: a local
    /// worker runs them one batch at a time between queries' batches (a
    /// remote embed process runs them as it gets them).
    pub async fn embed_bulk(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>> {
        match self {
            Embedding::Local(w) => Ok(w.embed_bulk(texts).await?.0),
            Embedding::Remote(r) => Ok(r.embed_counted(texts).await?.0),
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Embedding::Local(w) => &w.embedder().name,
            Embedding::Remote(r) => &r.info.name,
        }
    }

    pub fn dim(&self) -> usize {
        match self {
            Embedding::Local(w) => w.embedder().dim,
            Embedding::Remote(r) => r.info.dimensions,
        }
    }

    pub fn max_tokens(&self) -> usize {
        match self {
            Embedding::Local(w) => w.embedder().max_tokens,
            Embedding::Remote(r) => r.info.max_tokens,
        }
    }

    /// The weights' path, or the remote process's URL.
    pub fn location(&self) -> String {
        match self {
            Embedding::Local(w) => w.embedder().path.display().to_string(),
            Embedding::Remote(r) => r.url.clone(),
        }
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        match self {
            Embedding::Local(w) => w.embedder().tokenizer(),
            Embedding::Remote(r) => r.tokenizer(),
        }
    }
}

/// An LLM: a local generation worker or a remote `generate` process.
#[derive(Clone)]
pub enum Generation {
    Local(Generator),
    Remote(Arc<RemoteGenerator>),
}

impl Generation {
    pub fn name(&self) -> &str {
        match self {
            Generation::Local(g) => &g.llm().name,
            Generation::Remote(r) => &r.info.name,
        }
    }

    /// The weights' path, or the remote process's URL.
    pub fn location(&self) -> String {
        match self {
            Generation::Local(g) => g.llm().path.display().to_string(),
            Generation::Remote(r) => r.url.clone(),
        }
    }

    pub fn context_length(&self) -> usize {
        match self {
            Generation::Local(g) => g.llm().context_length(),
            Generation::Remote(r) => r.info.context_length,
        }
    }

    pub fn max_prompt_tokens(&self) -> usize {
        match self {
            Generation::Local(g) => g.limits().max_prompt_tokens,
            Generation::Remote(r) => r.info.max_prompt_tokens,
        }
    }

    /// How long a prompt may be on this model.
    pub fn budget(&self) -> PromptBudget {
        PromptBudget {
            context: self.context_length(),
            max_prompt_tokens: self.max_prompt_tokens(),
        }
    }

    /// Check sampling parameters against this model's limits, once.
    pub fn check(&self, params: SamplingParams) -> Result<Checked> {
        match self {
            Generation::Local(g) => g.check(params),
            Generation::Remote(r) => Checked::new(params, r.info.max_tokens_limit),
        }
    }

    /// The model's tokenizer (a remote model's is held here too).
    pub fn tokenizer(&self) -> &LlmTokenizer {
        match self {
            Generation::Local(g) => &g.llm().tokenizer,
            Generation::Remote(r) => r.tokenizer(),
        }
    }

    /// The model's chat template (a remote model's is held here too).
    pub fn chat_template(&self) -> &ChatTemplate {
        match self {
            Generation::Local(g) => &g.llm().chat,
            Generation::Remote(r) => r.chat(),
        }
    }

    /// Render a conversation (offering `tools`, when there are any) with
    /// the model's chat template and tokenize it, as a generation would.
    pub async fn encode_chat(&self, messages: Vec<Message>, tools: Vec<Tool>) -> Result<Vec<u32>> {
        match self {
            Generation::Local(g) => {
                let llm = g.llm().clone();
                blocking(move || llm.encode_chat_with_tools(&messages, &tools)).await
            }
            Generation::Remote(r) => {
                let r = r.clone();
                blocking(move || r.encode_chat(&messages, &tools)).await
            }
        }
    }

    /// Start a generation. Parameters are checked here, and a local model's
    /// prompt is prepared (tokenized, checked, its grammar compiled) before
    /// it is queued: a prompt that does not fit is an error here.
    pub async fn submit(&self, prompt: Prompt, params: SamplingParams) -> Result<GenerationStream> {
        self.start(prompt, self.check(params)?).await
    }

    /// Start a generation whose parameters were checked already.
    pub async fn start(&self, prompt: Prompt, params: Checked) -> Result<GenerationStream> {
        self.start_with(prompt, params, None).await
    }

    /// [`start`](Self::start) with an adapter of the local model.
    pub async fn start_with(
        &self,
        prompt: Prompt,
        params: Checked,
        adapter: Option<Arc<Adapter>>,
    ) -> Result<GenerationStream> {
        let params = params.within_request_deadline();
        match self {
            Generation::Local(g) => g.start_with(prompt, params, adapter).await,
            Generation::Remote(_) if adapter.is_some() => Err(Error::InvalidInput(
                "adapters run on the process that holds their base model".into(),
            )),
            Generation::Remote(r) => Ok(r.submit(prompt, params.into_inner())),
        }
    }

    /// The adapter `name` of the local model (None for a remote model or
    /// an unknown name).
    pub fn adapter(&self, name: &str) -> Option<Arc<Adapter>> {
        match self {
            Generation::Local(g) => g.adapter(name),
            Generation::Remote(_) => None,
        }
    }

    /// The local model's adapters.
    pub fn adapters(&self) -> Vec<Arc<Adapter>> {
        match self {
            Generation::Local(g) => g.adapters(),
            Generation::Remote(_) => Vec::new(),
        }
    }

    /// Queue counters, for a local worker.
    pub fn stats(&self) -> Option<StatsSnapshot> {
        match self {
            Generation::Local(g) => Some(g.stats()),
            Generation::Remote(_) => None,
        }
    }
}
