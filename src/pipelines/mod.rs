//! The two pipelines (RAG and fine-tuned) and ingestion, built from a
//! [`Config`] and a [`Role`]: which models to load here, which to reach in
//! another process, the store, the worker threads. Nothing here knows about
//! HTTP.

pub mod fine_tuned;
pub mod ingest;
pub mod rag;

use crate::config::{is_remote, AdaptedModel, Config, LlmSlot, Role};
use crate::engine::catalog::{self, Catalog, KeepAlive};
use crate::engine::remote::{RemoteEmbedder, RemoteGenerator, CONNECT_WAIT};
use crate::engine::replicas::ReplicaState;
use crate::engine::{
    blocking, EmbedWorker, Embedding, Generation, Generator, GeneratorLimits, RerankWorker,
};
use crate::error::{Error, Result};
use crate::models::llm::LoadOptions;
use crate::models::source::Wanted;
use crate::models::{device, Embedder, Llm, ModelSource, Reranker};
use crate::roles::Capability;
use crate::store::chunking::Chunker;
use crate::store::{Chunk, CollectionInfo, DocumentInfo, DocumentStore, StoreStats};
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
    /// The LLMs served by name (`models.llms`), loaded when asked for
    /// (beside the fine-tuned pipeline).
    catalog: Option<Arc<Catalog>>,
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
    /// The cross-encoder that re-scores retrieved passages, when configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reranker: Option<ModelInfo>,
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
    /// A local LLM's file: architecture, quantization mix, tokenizer...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gguf: Option<crate::models::llm::inspect::Summary>,
}

impl ModelInfo {
    fn generation(g: &Generation) -> Self {
        Self {
            name: g.name().to_string(),
            path: g.location(),
            remote: matches!(g, Generation::Remote(_)),
            context_length: Some(g.context_length()),
            dimensions: None,
            gguf: match g {
                Generation::Local(g) => Some((*g.llm().summary).clone()),
                Generation::Remote(_) => None,
            },
        }
    }

    fn embedding(e: &Embedding) -> Self {
        Self {
            name: e.name().to_string(),
            path: e.location(),
            remote: matches!(e, Embedding::Remote(_)),
            context_length: Some(e.max_tokens()),
            dimensions: Some(e.dim()),
            gguf: None,
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

    /// A document with its text and chunks.
    pub async fn get(
        &self,
        collection: String,
        id: String,
    ) -> Result<(DocumentInfo, String, Vec<Chunk>)> {
        let store = self.store.clone();
        blocking(move || store.get(&collection, &id)).await
    }

    /// A page of a collection's documents in id order, and how many it has.
    pub async fn list(
        &self,
        collection: String,
        limit: usize,
        offset: usize,
    ) -> Result<(Vec<DocumentInfo>, usize)> {
        let store = self.store.clone();
        blocking(move || store.list(&collection, limit, offset)).await
    }

    /// Delete a document; returns how many chunks went with it.
    pub async fn delete(&self, collection: String, id: String) -> Result<usize> {
        let store = self.store.clone();
        blocking(move || store.delete(&collection, &id)).await
    }

    /// Every collection with its counts.
    pub async fn collections(&self) -> Result<Vec<CollectionInfo>> {
        let store = self.store.clone();
        blocking(move || store.collections()).await
    }

    /// Create a collection; `false` when it existed.
    pub async fn create_collection(&self, name: String) -> Result<bool> {
        let store = self.store.clone();
        blocking(move || store.create_collection(&name)).await
    }

    /// Delete a collection and everything in it; returns how many
    /// documents it held.
    pub async fn delete_collection(&self, name: String) -> Result<usize> {
        let store = self.store.clone();
        blocking(move || store.delete_collection(&name)).await
    }

    /// Counts of documents, chunks and index points.
    pub async fn stats(&self) -> Result<StoreStats> {
        let store = self.store.clone();
        blocking(move || store.stats()).await
    }

    /// Compact the index when deleted chunks crowd it, and save it when it
    /// changed: (compacted, saved).
    pub async fn maintain(&self) -> Result<(bool, bool)> {
        let store = self.store.clone();
        blocking(move || {
            let compacted = store.compact_if_needed()?;
            Ok((compacted, store.save_index()?))
        })
        .await
    }

    /// Write everything out (at shutdown).
    pub async fn flush(&self) -> Result<()> {
        let store = self.store.clone();
        blocking(move || store.flush()).await
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

/// The error a process gives when asked for a part it does not run,
/// naming the processes that do (from the roles table).
fn not_served(role: Role, part: Capability) -> Error {
    Error::NotServed(format!(
        "this process (role `{}`) does not serve {}; {} does",
        role.name(),
        part.describe(),
        part.served_by()
    ))
}

impl Services {
    /// The document store and ingestion.
    pub fn docs(&self) -> Result<&DocumentPipeline> {
        (self.docs.as_ref()).ok_or_else(|| not_served(self.role, Capability::Documents))
    }

    pub fn embedding(&self) -> Result<&Embedding> {
        (self.embedding.as_ref()).ok_or_else(|| not_served(self.role, Capability::Embeddings))
    }

    pub fn rag(&self) -> Result<&Rag> {
        (self.rag.as_ref()).ok_or_else(|| not_served(self.role, Capability::Rag))
    }

    pub fn fine_tuned(&self) -> Result<&FineTuned> {
        (self.fine_tuned.as_ref()).ok_or_else(|| not_served(self.role, Capability::FineTuned))
    }

    /// The single LLM of a `generate` process.
    /// The LLMs served by name, when `models.llms` names any.
    pub fn catalog(&self) -> Option<&Arc<Catalog>> {
        self.catalog.as_ref()
    }

    pub fn generator(&self) -> Result<&Generation> {
        (self.generator.as_ref()).ok_or_else(|| not_served(self.role, Capability::Generator))
    }

    /// Every generation worker this process runs, by pipeline, for `/info`.
    /// The remote processes this one sends model work to, by what they are
    /// to it (`embedder`, `rag-generator`, `fine-tuned-generator`), with
    /// the URL configured and the replicas it resolved to.
    pub fn remotes(&self) -> Vec<(&'static str, String, Vec<ReplicaState>)> {
        let mut found = Vec::new();
        if let Some(Embedding::Remote(r)) = &self.embedding {
            found.push(("embedder", r.url.clone(), r.replicas()));
        }
        for (name, generation) in self.generators() {
            if let Generation::Remote(r) = generation {
                let name = if name == "rag" {
                    "rag-generator"
                } else {
                    "fine-tuned-generator"
                };
                found.push((name, r.url.clone(), r.replicas()));
            }
        }
        found
    }

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
    pub async fn embed_counted(&self, texts: Vec<String>) -> Result<(Vec<Vec<f32>>, usize)> {
        self.embedding()?.embed_counted(texts).await
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
        if role == Role::Gateway {
            return Err(Error::InvalidInput("the gateway loads no models".into()));
        }
        // What to load follows the roles table.
        let serves = role.serves(slot);
        let (mut docs, mut embedding, mut rag, mut fine_tuned, mut generator) =
            (None, None, None, None, None);
        let mut reranker = None;
        if serves.contains(&Capability::Embeddings) {
            let owns_model = !serves.contains(&Capability::Documents);
            if owns_model && is_remote(&config.models.embedder) {
                return Err(Error::InvalidInput(
                    "an `embed` process runs the embedder itself: models.embedder must name files, not a URL".into(),
                ));
            }
            embedding = Some(loader.embedding()?);
        }
        if serves.contains(&Capability::Documents) {
            let embed = embedding
                .clone()
                .expect("the store's processes serve embeddings");
            let pipeline = DocumentPipeline::open(config, embed.clone())?;
            if serves.contains(&Capability::Rag) {
                let mut retriever = Retriever::new(
                    pipeline.store.clone(),
                    embed,
                    config.retrieval.clone(),
                    config.limits.max_query_chars,
                );
                if !config.models.reranker.is_empty() {
                    let source = ModelSource::parse(&config.models.reranker)?;
                    let model = Arc::new(Reranker::load(&source, &device)?);
                    reranker = Some(ModelInfo {
                        name: model.name.clone(),
                        path: model.path.display().to_string(),
                        remote: false,
                        context_length: None,
                        dimensions: None,
                        gguf: None,
                    });
                    retriever = retriever
                        .with_reranker(RerankWorker::spawn(model, config.limits.embed_queue));
                }
                rag = Some(Rag::new(
                    retriever,
                    loader.generation(&config.models.rag_generator)?,
                )?);
            }
            docs = Some(pipeline);
        }
        if serves.contains(&Capability::Generator) {
            let source = match slot {
                LlmSlot::RagGenerator => config.models.rag_generator.as_str(),
                LlmSlot::FineTuned => config.models.fine_tuned.base(),
            };
            if is_remote(source) {
                return Err(Error::InvalidInput(format!(
                    "a `generate` process runs its LLM itself: models.{} must name a file, not a URL",
                    slot.name().replace('-', "_")
                )));
            }
            let merged = config.models.fine_tuned.adapted().filter(|a| a.merge);
            generator = Some(match (slot, merged) {
                (LlmSlot::FineTuned, Some(adapted)) => loader.merged(adapted)?,
                _ => loader.generation(source)?,
            });
        }
        if serves.contains(&Capability::FineTuned) {
            // A `generate --model fine-tuned` process serves the pipeline
            // with the one LLM it runs.
            let ft = &config.models.fine_tuned;
            let g = match (&generator, ft.adapted()) {
                (Some(g), _) => g.clone(),
                (None, Some(adapted)) if adapted.merge => loader.merged(adapted)?,
                (None, _) => loader.generation(ft.base())?,
            };
            fine_tuned = Some(adapters(config, g)?);
        }
        let catalog = (fine_tuned.is_some() && !config.models.llms.is_empty())
            .then(|| loader.catalog(runtime))
            .transpose()?;
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
            reranker,
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
            catalog,
            info,
        })
    }
}

/// Builds the model handles of one process, loading each LLM file once.
struct Loader<'a> {
    config: &'a Config,
    device: &'a candle_core::Device,
    runtime: &'a tokio::runtime::Handle,
    /// LLMs loaded so far, so that two pipelines on one file share it, with
    /// the worker made for the first (shared when `limits.shared_worker`).
    llms: Vec<(Llm, Generator)>,
}

impl Loader<'_> {
    /// The key this process's calls to the others carry, when keys are set.
    fn key(&self) -> Option<&str> {
        self.config.api_keys.first().map(String::as_str)
    }

    fn embedding(&mut self) -> Result<Embedding> {
        let source = &self.config.models.embedder;
        if is_remote(source) {
            let remote =
                self.runtime
                    .block_on(RemoteEmbedder::connect(source, CONNECT_WAIT, self.key()))?;
            return Ok(Embedding::Remote(Arc::new(remote)));
        }
        let precision = crate::models::embedder::precision(&self.config.models.embedder_precision)?;
        let embedder = Arc::new(Embedder::load_with(
            &ModelSource::parse(source)?,
            self.device,
            precision,
        )?);
        Ok(local_embedding(self.config, embedder))
    }

    /// The generation worker for `source`. Two pipelines on one file share
    /// its weights, and with `limits.shared_worker` its worker too (one
    /// scheduler batching both; otherwise each has its own, and the two
    /// compete for the cores).
    fn generation(&mut self, source: &str) -> Result<Generation> {
        if is_remote(source) {
            let remote = self.runtime.block_on(RemoteGenerator::connect(
                source,
                CONNECT_WAIT,
                self.key(),
            ))?;
            return Ok(Generation::Remote(Arc::new(remote)));
        }
        let parsed = ModelSource::parse(source)?;
        let path = match &parsed {
            // A Hugging Face checkpoint is its directory.
            ModelSource::Local(dir) if crate::models::llm::hf::is_checkpoint(dir) => {
                Some(dir.clone())
            }
            _ => parsed.resolve(&[Wanted::model_with_ext("gguf")])?[0].clone(),
        };
        let loaded = path.and_then(|p| {
            self.llms
                .iter()
                .find(|(l, _)| same_file(&p, &l.path))
                .cloned()
        });
        if let Some((_, worker)) = &loaded {
            if self.config.limits.shared_worker {
                return Ok(Generation::Local(worker.clone()));
            }
        }
        let llm = match loaded {
            Some((llm, _)) => llm,
            None => {
                let opts = LoadOptions {
                    adapter: None,
                    quantize: self.quantize()?,
                };
                Llm::load_with(&parsed, self.device, &opts)?
            }
        };
        let worker = Generator::spawn(llm.clone(), self.limits());
        self.llms.push((llm, worker.clone()));
        Ok(Generation::Local(worker))
    }

    /// A worker for the base of `adapted` with the adapter merged into its
    /// own copy of the weights (never shared).
    fn merged(&mut self, adapted: &AdaptedModel) -> Result<Generation> {
        if is_remote(&adapted.base) {
            return Err(Error::InvalidInput(
                "a merged adapter needs its base model's file, not a URL".into(),
            ));
        }
        let name = adapted.name();
        let opts = LoadOptions {
            adapter: Some((Path::new(&adapted.adapter), &name, adapted.scale)),
            quantize: self.quantize()?,
        };
        let llm = Llm::load_with(&ModelSource::parse(&adapted.base)?, self.device, &opts)?;
        Ok(Generation::Local(Generator::spawn(llm, self.limits())))
    }

    /// The catalog of `models.llms`, loading each with this process's
    /// device and limits, its sweeper running on `runtime`.
    fn catalog(&self, runtime: &tokio::runtime::Handle) -> Result<Arc<Catalog>> {
        let config = self.config;
        let default =
            KeepAlive::parse(&config.generation.keep_alive).map_err(Error::InvalidInput)?;
        let entries = config
            .models
            .llms
            .iter()
            .map(|l| {
                let keep_alive = match &l.keep_alive {
                    Some(k) => KeepAlive::parse(k).map_err(Error::InvalidInput)?,
                    None => default,
                };
                Ok(catalog::Entry {
                    name: l.name.clone(),
                    path: l.path.clone(),
                    keep_alive,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let limits = catalog::Limits {
            max_loaded: config.limits.max_loaded_models,
            max_bytes: (config.limits.max_model_memory_mb as u64) << 20,
        };
        let loader = CatalogLoader {
            device: self.device.clone(),
            limits: self.limits(),
            quantize: self.quantize()?,
        };
        let catalog = Catalog::new(entries, limits, Arc::new(loader));
        catalog.spawn_sweeper(runtime);
        Ok(catalog)
    }

    /// `models.quantize`, for Hugging Face checkpoints.
    fn quantize(&self) -> Result<Option<candle_core::quantized::GgmlDType>> {
        crate::models::llm::hf::quantize_type(&self.config.models.quantize)
    }

    fn limits(&self) -> GeneratorLimits {
        let g = &self.config;
        GeneratorLimits {
            queue: g.limits.generation_queue,
            max_running: g.limits.max_running,
            max_batch_tokens: g.limits.max_batch_tokens,
            prefill_chunk: g.limits.prefill_chunk,
            prefix_cache_bytes: g.limits.prefix_cache_mb << 20,
            max_prompt_tokens: g.generation.max_prompt_tokens,
            max_tokens: g.generation.max_tokens_limit,
            draft_tokens: g.generation.draft_tokens,
            // Checked when the config was read.
            kv_cache: g.limits.kv_cache_type.parse().unwrap_or_default(),
        }
    }
}

/// Loads the catalog's models, each with its own worker.
struct CatalogLoader {
    device: candle_core::Device,
    limits: GeneratorLimits,
    quantize: Option<candle_core::quantized::GgmlDType>,
}

impl catalog::Loader for CatalogLoader {
    fn load(&self, path: &str) -> Result<Generation> {
        let opts = LoadOptions {
            adapter: None,
            quantize: self.quantize,
        };
        let llm = Llm::load_with(&ModelSource::parse(path)?, &self.device, &opts)?;
        Ok(Generation::Local(Generator::spawn(
            llm,
            self.limits.clone(),
        )))
    }

    /// The file (or a checkpoint directory's files), and for a GGUF file
    /// the KV caches of `max_running` sequences at the longest context the
    /// limits allow.
    fn bytes(&self, path: &str) -> Result<u64> {
        let parsed = ModelSource::parse(path)?;
        if let ModelSource::Local(dir) = &parsed {
            if dir.is_dir() && crate::models::llm::hf::is_checkpoint(dir) {
                let files = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
                return Ok(files
                    .filter_map(|f| f.ok()?.metadata().ok())
                    .map(|m| m.len())
                    .sum());
            }
        }
        let file = parsed.resolve(&[Wanted::model_with_ext("gguf")])?[0]
            .clone()
            .ok_or_else(|| Error::InvalidInput(format!("no .gguf file at {path}")))?;
        let s = crate::models::llm::inspect::inspect(&file)?;
        let heads = s.heads.unwrap_or(1).max(1);
        let head_dim = s.embedding_length.unwrap_or(0) / heads;
        let values_per_token = 2 * s.layers.unwrap_or(0) * s.kv_heads.unwrap_or(heads) * head_dim;
        let per_value = match self.limits.kv_cache {
            crate::models::llm::llama::KvType::F16 => 2.0,
            crate::models::llm::llama::KvType::Q8_0 => 34.0 / 32.0,
        };
        let context = s
            .context_length
            .unwrap_or(4096)
            .min((self.limits.max_prompt_tokens + self.limits.max_tokens) as u64);
        let kv =
            values_per_token as f64 * per_value * (context * self.limits.max_running as u64) as f64;
        Ok(s.file_bytes + kv as u64)
    }
}

/// The fine-tuned pipeline on `g`: its adapter (unless merged into `g`'s
/// weights already) and the other configured adapters loaded onto `g`'s
/// model, which they share.
fn adapters(config: &Config, g: Generation) -> Result<FineTuned> {
    let ft = &config.models.fine_tuned;
    let unmerged = ft.adapted().filter(|a| !a.merge);
    if unmerged.is_none() && config.models.adapters.is_empty() {
        return Ok(FineTuned::new(g));
    }
    let Generation::Local(local) = &g else {
        return Err(Error::InvalidInput(
            "adapters run in the process that holds their base model: models.fine_tuned must name a file, not a URL".into(),
        ));
    };
    for extra in &config.models.adapters {
        local.load_adapter(&extra.name, Path::new(&extra.path), extra.scale)?;
    }
    let adapter = match unmerged {
        Some(a) => Some(local.load_adapter(&a.name(), Path::new(&a.adapter), a.scale)?),
        None => None,
    };
    Ok(FineTuned::with_adapter(g, adapter))
}

fn same_file(a: &Path, b: &Path) -> bool {
    a.canonicalize()
        .ok()
        .zip(b.canonicalize().ok())
        .is_some_and(|(a, b)| a == b)
}
