//! The two pipelines (RAG and fine-tuned) and ingestion, built from a
//! [`Config`] and a [`Role`]: which models to load here, which to reach in
//! another process, the store, the worker threads. Nothing here knows about
//! HTTP.

pub mod fine_tuned;
pub mod ingest;
pub mod rag;

use crate::config::{is_remote, Config, LlmSlot, Role};
use crate::engine::remote::{RemoteEmbedder, RemoteGenerator, CONNECT_WAIT};
use crate::engine::{EmbedWorker, Embedding, Generation, Generator, GeneratorLimits};
use crate::error::{Error, Result};
use crate::models::source::Wanted;
use crate::models::{device, Embedder, Llm, ModelSource};
use crate::store::chunking::Chunker;
use crate::store::DocumentStore;
use fine_tuned::FineTuned;
use ingest::Ingestor;
use rag::{Rag, Retriever};
use serde::Serialize;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

/// What one process serves, loaded and running. Which parts are present
/// depends on its role; asking for an absent one is [`Error::NotServed`],
/// naming the role that serves it.
pub struct Services {
    pub role: Role,
    /// The document store and ingestion (roles `all` and `rag`: only the
    /// process that owns the index writes the store).
    docs: Option<DocumentPipeline>,
    embedding: Option<Embedding>,
    rag: Option<Rag>,
    fine_tuned: Option<FineTuned>,
    /// The one LLM of a `generate` process.
    generator: Option<Generation>,
    pub info: ModelsInfo,
}

/// What was loaded, for `/info` and `/v1/models`.
#[derive(Debug, Clone, Serialize)]
pub struct ModelsInfo {
    pub device: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embedder: Option<ModelInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rag_generator: Option<ModelInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fine_tuned: Option<ModelInfo>,
    /// The two pipelines share one copy of the LLM weights.
    pub shared_weights: bool,
    pub load_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    pub name: String,
    /// The weights' path, or the URL of the process serving the model.
    pub path: String,
    /// Served by another process.
    pub remote: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context_length: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<usize>,
}

impl ModelInfo {
    fn generation(g: &Generation) -> Self {
        Self {
            name: g.name().to_string(),
            path: g.location(),
            remote: matches!(g, Generation::Remote(_)),
            context_length: Some(g.context_length()),
            dimensions: None,
        }
    }

    fn embedding(e: &Embedding) -> Self {
        Self {
            name: e.name().to_string(),
            path: e.location(),
            remote: matches!(e, Embedding::Remote(_)),
            context_length: Some(e.max_tokens()),
            dimensions: Some(e.dim()),
        }
    }
}

/// The document store with the embedder and the ingestor over it: what
/// every process that owns the store runs.
pub struct DocumentPipeline {
    pub store: Arc<DocumentStore>,
    pub embed: Embedding,
    pub ingestor: Ingestor,
}

impl DocumentPipeline {
    /// Open the store (loading or rebuilding its index) over `embed`.
    /// Blocking.
    pub fn open(config: &Config, embed: Embedding) -> Result<Self> {
        let store = Arc::new(DocumentStore::open(
            &config.store_path(),
            &config.index_dir(),
            embed.name(),
            embed.dim(),
        )?);
        let origin = store.origin();
        match &origin.rebuilt_because {
            None => tracing::info!(caught_up = origin.caught_up, "index loaded"),
            Some(why) => tracing::info!(reason = %why, "index rebuilt from the database"),
        }
        let chunker = Chunker::new(
            embed.tokenizer(),
            config.retrieval.chunk_tokens,
            config.retrieval.chunk_overlap,
        )?;
        Ok(Self {
            ingestor: Ingestor::new(store.clone(), embed.clone(), chunker),
            store,
            embed,
        })
    }

    /// [`open`](Self::open) with an embedder loaded in this process.
    pub fn open_local(config: &Config, embedder: Arc<Embedder>) -> Result<Self> {
        Self::open(config, local_embedding(config, embedder))
    }
}

fn local_embedding(config: &Config, embedder: Arc<Embedder>) -> Embedding {
    Embedding::Local(EmbedWorker::spawn(
        embedder,
        config.limits.embed_queue,
        config.limits.embed_batch,
    ))
}

/// Who serves what, for the error a process gives when asked for a part it
/// does not run.
fn not_served(role: Role, what: &str, by: &str) -> Error {
    Error::NotServed(format!(
        "this process (role `{}`) does not serve {what}; {by} does",
        role.name()
    ))
}

impl Services {
    /// The document store and ingestion.
    pub fn docs(&self) -> Result<&DocumentPipeline> {
        self.docs.as_ref().ok_or_else(|| {
            not_served(
                self.role,
                "the document store",
                "the `rag` process (or a unified `all` one)",
            )
        })
    }

    pub fn embedding(&self) -> Result<&Embedding> {
        self.embedding.as_ref().ok_or_else(|| {
            not_served(
                self.role,
                "embeddings",
                "an `embed` or `rag` process (or a unified `all` one)",
            )
        })
    }

    pub fn rag(&self) -> Result<&Rag> {
        self.rag.as_ref().ok_or_else(|| {
            not_served(
                self.role,
                "the RAG pipeline",
                "the `rag` process (or a unified `all` one)",
            )
        })
    }

    pub fn fine_tuned(&self) -> Result<&FineTuned> {
        self.fine_tuned.as_ref().ok_or_else(|| {
            not_served(
                self.role,
                "the fine-tuned pipeline",
                "the `fine-tuned` process (or `generate --model fine-tuned`, or a unified `all` one)",
            )
        })
    }

    /// The single LLM of a `generate` process.
    pub fn generator(&self) -> Result<&Generation> {
        self.generator
            .as_ref()
            .ok_or_else(|| not_served(self.role, "raw generation", "a `generate` process"))
    }

    /// Every generation worker this process runs, by pipeline, for `/info`.
    pub fn generators(&self) -> Vec<(&'static str, &Generation)> {
        let mut all = Vec::new();
        if let Some(r) = &self.rag {
            all.push(("rag", r.generator()));
        }
        if let Some(f) = &self.fine_tuned {
            all.push(("fine_tuned", f.generator()));
        } else if let Some(g) = &self.generator {
            all.push(("generate", g));
        }
        all
    }

    /// Embed texts and count their tokens.
    pub async fn embed(&self, texts: Vec<String>) -> Result<(Vec<Vec<f32>>, usize)> {
        let embedding = self.embedding()?.clone();
        let counter = embedding.clone();
        let counted = texts.clone();
        let tokens = crate::engine::blocking(move || {
            counted
                .iter()
                .map(|t| counter.count_tokens(t))
                .sum::<Result<usize>>()
        })
        .await?;
        Ok((embedding.embed(texts).await?, tokens))
    }

    /// Load what `role` runs: models, store, workers, remote clients
    /// (waiting for their processes to be ready). Blocking: call it from a
    /// plain thread; `runtime` runs the remote clients.
    pub fn load(
        config: &Config,
        role: Role,
        slot: LlmSlot,
        runtime: &tokio::runtime::Handle,
    ) -> Result<Self> {
        let started = Instant::now();
        let device = device::open(&config.device)?;
        let mut loader = Loader {
            config,
            device: &device,
            runtime,
            llms: Vec::new(),
        };
        let (mut docs, mut embedding, mut rag, mut fine_tuned, mut generator) =
            (None, None, None, None, None);
        match role {
            Role::All | Role::Rag => {
                let embed = loader.embedding()?;
                let pipeline = DocumentPipeline::open(config, embed.clone())?;
                let retriever = Retriever::new(
                    pipeline.store.clone(),
                    embed.clone(),
                    config.retrieval.clone(),
                    config.limits.max_query_chars,
                );
                rag = Some(Rag::new(
                    retriever,
                    loader.generation(&config.models.rag_generator)?,
                )?);
                if role == Role::All {
                    fine_tuned = Some(FineTuned::new(
                        loader.generation(&config.models.fine_tuned)?,
                    ));
                }
                embedding = Some(embed);
                docs = Some(pipeline);
            }
            Role::FineTuned => {
                fine_tuned = Some(FineTuned::new(
                    loader.generation(&config.models.fine_tuned)?,
                ));
            }
            Role::Embed => {
                if is_remote(&config.models.embedder) {
                    return Err(Error::InvalidInput(
                        "an `embed` process runs the embedder itself: models.embedder must name files, not a URL".into(),
                    ));
                }
                embedding = Some(loader.embedding()?);
            }
            Role::Generate => {
                let source = match slot {
                    LlmSlot::RagGenerator => &config.models.rag_generator,
                    LlmSlot::FineTuned => &config.models.fine_tuned,
                };
                if is_remote(source) {
                    return Err(Error::InvalidInput(format!(
                        "a `generate` process runs its LLM itself: models.{} must name a file, not a URL",
                        slot.name().replace('-', "_")
                    )));
                }
                let g = loader.generation(source)?;
                if slot == LlmSlot::FineTuned {
                    fine_tuned = Some(FineTuned::new(g.clone()));
                }
                generator = Some(g);
            }
            Role::Gateway => return Err(Error::InvalidInput("the gateway loads no models".into())),
        }
        let shared_weights = match (&rag, &fine_tuned) {
            (Some(r), Some(f)) => match (r.generator(), f.generator()) {
                (Generation::Local(a), Generation::Local(b)) => {
                    Arc::ptr_eq(&a.llm().model, &b.llm().model)
                }
                _ => false,
            },
            _ => false,
        };
        let info = ModelsInfo {
            device: device::describe(&device),
            embedder: embedding.as_ref().map(ModelInfo::embedding),
            rag_generator: rag
                .as_ref()
                .map(|r| ModelInfo::generation(r.generator()))
                .or_else(|| {
                    (slot == LlmSlot::RagGenerator)
                        .then_some(generator.as_ref())
                        .flatten()
                        .map(ModelInfo::generation)
                }),
            fine_tuned: fine_tuned
                .as_ref()
                .map(|f| ModelInfo::generation(f.generator())),
            shared_weights,
            load_ms: started.elapsed().as_secs_f64() * 1e3,
        };
        Ok(Self {
            role,
            docs,
            embedding,
            rag,
            fine_tuned,
            generator,
            info,
        })
    }
}

/// Builds the model handles of one process, loading each LLM file once.
struct Loader<'a> {
    config: &'a Config,
    device: &'a candle_core::Device,
    runtime: &'a tokio::runtime::Handle,
    /// LLMs loaded so far, so that two pipelines on one file share it.
    llms: Vec<Llm>,
}

impl Loader<'_> {
    fn embedding(&mut self) -> Result<Embedding> {
        let source = &self.config.models.embedder;
        if is_remote(source) {
            let remote = self
                .runtime
                .block_on(RemoteEmbedder::connect(source, CONNECT_WAIT))?;
            return Ok(Embedding::Remote(Arc::new(remote)));
        }
        let embedder = Arc::new(Embedder::load(&ModelSource::parse(source)?, self.device)?);
        Ok(local_embedding(self.config, embedder))
    }

    /// A generation worker of its own (its own queue) for `source`, over
    /// weights shared with an earlier one on the same file.
    fn generation(&mut self, source: &str) -> Result<Generation> {
        if is_remote(source) {
            let remote = self
                .runtime
                .block_on(RemoteGenerator::connect(source, CONNECT_WAIT))?;
            return Ok(Generation::Remote(Arc::new(remote)));
        }
        let parsed = ModelSource::parse(source)?;
        let path = parsed.resolve(&[Wanted::model_with_ext("gguf")])?[0].clone();
        let loaded = path.and_then(|p| self.llms.iter().find(|l| same_file(&p, &l.path)).cloned());
        let llm = match loaded {
            Some(llm) => llm,
            None => {
                let llm = Llm::load(&parsed, self.device)?;
                self.llms.push(llm.clone());
                llm
            }
        };
        let g = &self.config;
        let limits = GeneratorLimits {
            queue: g.limits.generation_queue,
            max_active: g.limits.max_active,
            max_prompt_tokens: g.generation.max_prompt_tokens,
            max_tokens: g.generation.max_tokens_limit,
        };
        Ok(Generation::Local(Generator::spawn(llm, limits)))
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    a.canonicalize()
        .ok()
        .zip(b.canonicalize().ok())
        .is_some_and(|(a, b)| a == b)
}
