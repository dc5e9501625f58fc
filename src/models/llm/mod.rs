//! Large language models: weights, tokenizer, chat template, sampling and
//! streaming text. Loading lives here; running sequences concurrently lives
//! in `engine`.

pub mod architecture;
pub mod chat;
pub mod gguf;
pub mod grammar;
pub mod hf;
pub mod inspect;
pub mod llama;
pub mod lora;
pub mod message;
pub mod sampling;
pub mod spm;
pub mod stream;
pub mod tokenizer;
pub mod tools;

use crate::error::{Error, Result};
use crate::models::source::{ModelSource, Wanted};
use candle_core::Device;
use chat::ChatTemplate;
use llama::Llama;
use message::Message;
use std::path::PathBuf;
use std::sync::Arc;
use tokenizer::LlmTokenizer;

/// How [`Llm::load_with`] loads.
#[derive(Default)]
pub struct LoadOptions<'a> {
    /// A LoRA adapter to merge: its file or directory, name and scale.
    pub adapter: Option<(&'a std::path::Path, &'a str, f32)>,
    /// For a Hugging Face checkpoint: quantize its matrices to this type
    /// (Q8_0, Q4_K) at load.
    pub quantize: Option<candle_core::quantized::GgmlDType>,
}

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
    pub summary: Arc<inspect::Summary>,
    /// The vocabulary's token trie for constrained decoding, built on the
    /// first request that asks for a format.
    grammar: Arc<std::sync::OnceLock<std::result::Result<Arc<grammar::GrammarEnv>, String>>>,
}

impl Llm {
    /// Load a GGUF model. A `tokenizer.json` beside the file is preferred
    /// over the tokenizer rebuilt from GGUF metadata.
    pub fn load(source: &ModelSource, device: &Device) -> Result<Self> {
        Self::load_with(source, device, &LoadOptions::default())
    }

    /// [`load`](Self::load) with options: a LoRA adapter merged into the
    /// weights (its name becomes the model's), and for a Hugging Face
    /// checkpoint directory ([`hf`]), a type to quantize its matrices to.
    pub fn load_with(source: &ModelSource, device: &Device, opts: &LoadOptions) -> Result<Self> {
        if let ModelSource::Local(dir) = source {
            if hf::is_checkpoint(dir) {
                let bytes = hf::to_gguf(dir, opts.quantize)?;
                let size = bytes.len() as u64;
                let mut reader = std::io::Cursor::new(bytes);
                let content = gguf::read_content(&mut reader, &dir.display().to_string())?;
                let tokenizer = dir.join("tokenizer.json");
                if !tokenizer.is_file() {
                    return Err(Error::InvalidInput(format!(
                        "checkpoint {}: tokenizer.json is missing",
                        dir.display()
                    )));
                }
                return Self::from_content(
                    content,
                    &mut reader,
                    size,
                    dir.clone(),
                    Some(&tokenizer),
                    device,
                    opts,
                );
            }
        }
        let paths = source.resolve(&[
            Wanted::model_with_ext("gguf"),
            Wanted::optional("tokenizer.json"),
        ])?;
        let path = paths[0].clone().expect("required file resolved");
        let (mut file, content) = gguf::open(&path)?;
        let bytes = file.metadata().map_err(|e| Error::io(&path, e))?.len();
        Self::from_content(
            content,
            &mut file,
            bytes,
            path,
            paths[1].as_deref(),
            device,
            opts,
        )
    }

    fn from_content<R: std::io::Read + std::io::Seek>(
        content: candle_core::quantized::gguf_file::Content,
        file: &mut R,
        bytes: u64,
        path: PathBuf,
        tokenizer_json: Option<&std::path::Path>,
        device: &Device,
        opts: &LoadOptions,
    ) -> Result<Self> {
        let summary = Arc::new(inspect::Summary::of(&content, bytes));
        let tokenizer = LlmTokenizer::load(&content, tokenizer_json)?;
        let merged = match opts.adapter {
            Some((path, name, scale)) => {
                let config = architecture::LlamaConfig::from_gguf(&content)?;
                Some(lora::Adapter::load(path, name, scale, &config)?)
            }
            None => None,
        };
        let model = Llama::from_gguf_merged(&content, file, device, merged.as_ref())?;
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
            grammar: Arc::default(),
        })
    }

    /// The constrained-decoding environment of this model's vocabulary
    /// (built once, on first use: a few hundred milliseconds).
    pub fn grammar(&self) -> Result<Arc<grammar::GrammarEnv>> {
        self.grammar
            .get_or_init(|| {
                let eos = self.tokenizer.eos.unwrap_or(0);
                grammar::GrammarEnv::new(&self.tokenizer, self.model.config.vocab_size, eos)
                    .map(Arc::new)
                    .map_err(|e| e.to_string())
            })
            .clone()
            .map_err(Error::Model)
    }

    /// The model's context window, in tokens.
    pub fn context_length(&self) -> usize {
        self.model.config.context_length
    }

    /// Render chat messages with the model's template and tokenize them.
    pub fn encode_chat(&self, messages: &[Message]) -> Result<Vec<u32>> {
        self.encode_chat_with_tools(messages, &[])
    }

    /// [`encode_chat`](Self::encode_chat) for a conversation that offers
    /// `tools` (described in the template's own way, or hearth's).
    pub fn encode_chat_with_tools(
        &self,
        messages: &[Message],
        tools: &[message::Tool],
    ) -> Result<Vec<u32>> {
        encode_chat(&self.tokenizer, &self.chat, messages, tools)
    }
}

/// Render a conversation with `chat` and tokenize it with `tokenizer` for
/// generation (BOS first when the model wants one): what
/// [`Llm::encode_chat_with_tools`] does, for a process that holds the
/// model's tokenizer and template without its weights.
pub fn encode_chat(
    tokenizer: &LlmTokenizer,
    chat: &ChatTemplate,
    messages: &[Message],
    tools: &[message::Tool],
) -> Result<Vec<u32>> {
    let text = chat.render_with_tools(messages, tools)?;
    // A template that writes the BOS token itself (`{{ bos_token }}`)
    // must not get a second one from the tokenizer.
    let bos = tokenizer.bos.and_then(|b| tokenizer.token_text(b));
    let text = match bos {
        Some(bos) if tokenizer.add_bos && !bos.is_empty() => {
            text.strip_prefix(bos.as_str()).unwrap_or(&text)
        }
        _ => &text,
    };
    tokenizer.encode_prompt(text)
}
