//! Large language models: weights, tokenizer, chat template, sampling and
//! streaming text. Loading lives here; running sequences concurrently lives
//! in `engine`.

pub mod chat;
pub mod gguf;
pub mod llama;
pub mod lora;
pub mod sampling;
pub mod spm;
pub mod stream;
pub mod tokenizer;

use crate::error::{Error, Result};
use crate::models::source::{ModelSource, Wanted};
use candle_core::Device;
use chat::{ChatTemplate, Message};
use llama::Llama;
use std::path::PathBuf;
use std::sync::Arc;
use tokenizer::LlmTokenizer;

/// A loaded LLM: shared weights plus everything needed to talk to it.
/// Cloning is cheap and never copies the weights.
#[derive(Clone)]
pub struct Llm {
    pub model: Arc<Llama>,
    pub tokenizer: Arc<LlmTokenizer>,
    pub chat: Arc<ChatTemplate>,
    /// The GGUF file the weights came from.
    pub path: PathBuf,
    /// A short name for logs and APIs (the file stem).
    pub name: String,
    /// What the file holds (`hearth models inspect`), for `/info`.
    pub summary: Arc<gguf::Summary>,
}

impl Llm {
    /// Load a GGUF model. A `tokenizer.json` beside the file is preferred
    /// over the tokenizer rebuilt from GGUF metadata.
    pub fn load(source: &ModelSource, device: &Device) -> Result<Self> {
        Self::load_merged(source, device, None)
    }

    /// [`load`](Self::load) with a LoRA adapter merged into the weights
    /// (`adapter`: its file or directory, its name, its scale). The name
    /// becomes the model's.
    pub fn load_merged(
        source: &ModelSource,
        device: &Device,
        adapter: Option<(&std::path::Path, &str, f32)>,
    ) -> Result<Self> {
        let paths = source.resolve(&[
            Wanted::model_with_ext("gguf"),
            Wanted::optional("tokenizer.json"),
        ])?;
        let path = paths[0].clone().expect("required file resolved");
        let (mut file, content) = gguf::open(&path)?;
        let bytes = file.metadata().map_err(|e| Error::io(&path, e))?.len();
        let summary = Arc::new(gguf::Summary::of(&content, bytes));
        let tokenizer = LlmTokenizer::load(&content, paths[1].as_deref())?;
        let merged = match adapter {
            Some((path, name, scale)) => {
                let config = llama::LlamaConfig::from_gguf(&content)?;
                Some(lora::Adapter::load(path, name, scale, &config)?)
            }
            None => None,
        };
        let model = Llama::from_gguf_merged(&content, &mut file, device, merged.as_ref())?;
        if tokenizer.vocab_size() > model.config.vocab_size {
            return Err(Error::Model(format!(
                "tokenizer has {} tokens but the model only {}",
                tokenizer.vocab_size(),
                model.config.vocab_size
            )));
        }
        let template = content
            .metadata
            .get("tokenizer.chat_template")
            .and_then(|v| v.to_string().ok())
            .map(String::as_str)
            .unwrap_or_else(|| {
                chat::default_template(|t| {
                    tokenizer.encode(t).ok().is_some_and(|ids| {
                        ids.len() == 1 && tokenizer.token_text(ids[0]).as_deref() == Some(t)
                    })
                })
            });
        let token = |id: Option<u32>| id.and_then(|i| tokenizer.token_text(i)).unwrap_or_default();
        let chat = ChatTemplate::new(Some(template), &token(tokenizer.bos), &token(tokenizer.eos))?;
        let name = match &merged {
            Some(adapter) => adapter.name.clone(),
            None => path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "llm".into()),
        };
        Ok(Self {
            model: Arc::new(model),
            tokenizer: Arc::new(tokenizer),
            chat: Arc::new(chat),
            path,
            name,
            summary,
        })
    }

    /// The model's context window, in tokens.
    pub fn context_length(&self) -> usize {
        self.model.config.context_length
    }

    /// Render chat messages with the model's template and tokenize them.
    pub fn encode_chat(&self, messages: &[Message]) -> Result<Vec<u32>> {
        let text = self.chat.render(messages)?;
        // A template that writes the BOS token itself (`{{ bos_token }}`)
        // must not get a second one from the tokenizer.
        let bos = self
            .tokenizer
            .bos
            .and_then(|b| self.tokenizer.token_text(b));
        let text = match bos {
            Some(bos) if self.tokenizer.add_bos && !bos.is_empty() => {
                text.strip_prefix(bos.as_str()).unwrap_or(&text)
            }
            _ => &text,
        };
        self.tokenizer.encode_prompt(text)
    }
}
