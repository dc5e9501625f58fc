//! The two pipelines (RAG and fine-tuned) and ingestion, built from a
//! [`Config`]: which models to load, the store, the worker threads. Nothing
//! here knows about HTTP.

pub mod fine_tuned;
pub mod ingest;
pub mod rag;

use crate::config::Config;
use crate::engine::{EmbedWorker, Generator, GeneratorLimits};
use crate::error::Result;
use crate::models::source::Wanted;
use crate::models::{device, Embedder, Llm, ModelSource};
use crate::store::chunking::Chunker;
use crate::store::DocumentStore;
use fine_tuned::FineTuned;
use ingest::Ingestor;
use rag::{Rag, Retriever};
use serde::Serialize;
use std::sync::Arc;
use std::time::Instant;

/// Everything a unified (`all`) process serves, loaded and running.
pub struct Services {
    pub store: Arc<DocumentStore>,
    pub embed: EmbedWorker,
    pub ingestor: Ingestor,
    pub rag: Rag,
    pub fine_tuned: FineTuned,
    pub info: ModelsInfo,
}

/// What was loaded, for `/info`.
#[derive(Debug, Clone, Serialize)]
pub struct ModelsInfo {
    pub device: String,
    pub embedder: ModelInfo,
    pub rag_generator: ModelInfo,
    pub fine_tuned: ModelInfo,
    /// The two pipelines share one copy of the LLM weights.
    pub shared_weights: bool,
    pub load_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    pub name: String,
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context_length: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<usize>,
}

impl ModelInfo {
    fn llm(llm: &Llm) -> Self {
        Self {
            name: llm.name.clone(),
            path: llm.path.display().to_string(),
            context_length: Some(llm.context_length()),
            dimensions: None,
        }
    }
}

/// The document store with the embedding worker and the ingestor over it:
/// what every process that owns the store runs.
pub struct DocumentPipeline {
    pub store: Arc<DocumentStore>,
    pub embed: EmbedWorker,
    pub ingestor: Ingestor,
}

impl DocumentPipeline {
    /// Open the store (loading or rebuilding its index) and start the
    /// embedding worker. Blocking.
    pub fn open(config: &Config, embedder: Arc<Embedder>) -> Result<Self> {
        let store = Arc::new(DocumentStore::open(
            &config.store_path(),
            &config.index_dir(),
            &embedder.name,
            embedder.dim,
        )?);
        let origin = store.origin();
        match &origin.rebuilt_because {
            None => tracing::info!(caught_up = origin.caught_up, "index loaded"),
            Some(why) => tracing::info!(reason = %why, "index rebuilt from the database"),
        }
        let chunker = Chunker::new(
            embedder.tokenizer(),
            config.retrieval.chunk_tokens,
            config.retrieval.chunk_overlap,
        )?;
        let embed = EmbedWorker::spawn(
            embedder,
            config.limits.embed_queue,
            config.limits.embed_batch,
        );
        Ok(Self {
            ingestor: Ingestor::new(store.clone(), embed.clone(), chunker),
            store,
            embed,
        })
    }
}

impl Services {
    /// Embed texts (on the embedding worker) and count their tokens.
    pub async fn embed(&self, texts: Vec<String>) -> Result<(Vec<Vec<f32>>, usize)> {
        let worker = self.embed.clone();
        let counted = texts.clone();
        let tokens = ingest::blocking(move || {
            counted
                .iter()
                .map(|t| worker.embedder().count_tokens(t))
                .sum::<Result<usize>>()
        })
        .await?;
        Ok((self.embed.embed(texts).await?, tokens))
    }

    /// Load the models, open the store and start the workers. Blocking:
    /// call it from a plain thread or `spawn_blocking`.
    pub fn load(config: &Config) -> Result<Self> {
        let started = Instant::now();
        let device = device::open(&config.device)?;
        let embedder = Arc::new(Embedder::load(
            &ModelSource::parse(&config.models.embedder)?,
            &device,
        )?);
        let rag_llm = Llm::load(&ModelSource::parse(&config.models.rag_generator)?, &device)?;
        let ft_source = ModelSource::parse(&config.models.fine_tuned)?;
        let ft_path = ft_source.resolve(&[Wanted::model_with_ext("gguf")])?[0].clone();
        let same = |a: &std::path::Path, b: &std::path::Path| {
            a.canonicalize()
                .ok()
                .zip(b.canonicalize().ok())
                .is_some_and(|(a, b)| a == b)
        };
        let shared_weights = ft_path.is_some_and(|p| same(&p, &rag_llm.path));
        let ft_llm = if shared_weights {
            rag_llm.clone()
        } else {
            Llm::load(&ft_source, &device)?
        };
        let docs = DocumentPipeline::open(config, embedder.clone())?;
        let limits = GeneratorLimits {
            queue: config.limits.generation_queue,
            max_active: config.limits.max_active,
            max_prompt_tokens: config.generation.max_prompt_tokens,
            max_tokens: config.generation.max_tokens_limit,
        };
        let info = ModelsInfo {
            device: device::describe(&device),
            embedder: ModelInfo {
                name: embedder.name.clone(),
                path: embedder.path.display().to_string(),
                context_length: Some(embedder.max_tokens),
                dimensions: Some(embedder.dim),
            },
            rag_generator: ModelInfo::llm(&rag_llm),
            fine_tuned: ModelInfo::llm(&ft_llm),
            shared_weights,
            load_ms: started.elapsed().as_secs_f64() * 1e3,
        };
        let retriever = Retriever::new(
            docs.store.clone(),
            docs.embed.clone(),
            config.retrieval.clone(),
            config.limits.max_query_chars,
        );
        let rag = Rag::new(retriever, Generator::spawn(rag_llm, limits.clone()))?;
        // Each pipeline has its own worker (its own queue), over shared
        // weights when the models are the same file.
        let fine_tuned = FineTuned::new(Generator::spawn(ft_llm, limits));
        Ok(Self {
            embed: docs.embed,
            ingestor: docs.ingestor,
            store: docs.store,
            rag,
            fine_tuned,
            info,
        })
    }
}
