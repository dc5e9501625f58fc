//! One [`Config`] for every command and role: read from `hearth.toml`, then
//! overridden by `HEARTH_*` environment variables, then by flags (clap reads
//! a flag's variable when the flag is absent, so the order holds), and
//! validated once. Everything tunable lives here rather than as literals.

use crate::error::{Error, Result};
use crate::models::{DEFAULT_EMBEDDER, DEFAULT_LLM};
pub use crate::roles::{LlmSlot, Role};
use clap::Args;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The file read when `--config` is not given, if it exists.
pub const DEFAULT_CONFIG_FILE: &str = "hearth.toml";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the server listens on.
    pub listen: String,
    /// Holds the document store (SQLite) and the index derived from it.
    pub data_dir: PathBuf,
    /// cpu, cuda[:N] or metal[:N].
    pub device: String,
    /// Threads for model compute; unset means one per core.
    pub threads: Option<usize>,
    /// Bearer keys; when any are set, every route but `/healthz` and
    /// `/readyz` requires one. They are admin keys: they may do anything.
    pub api_keys: Vec<String>,
    /// Keys with scopes (`hearth keys add`): stored as their SHA-256, they
    /// may read and write only the collections they name.
    pub keys: Vec<KeyConfig>,
    /// Allow listening on a non-loopback address with no `api_keys`.
    pub allow_unauthenticated: bool,
    pub models: ModelsConfig,
    pub retrieval: RetrievalConfig,
    pub generation: GenerationConfig,
    pub limits: LimitsConfig,
}

/// A key with scopes, as `[[keys]]` holds it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// What logs and `hearth keys list` call it; never the key itself.
    pub name: String,
    /// The key's SHA-256, in hex (the key is random: 128 bits).
    pub sha256: String,
    /// Collections it may search, ask about and list (`"*"`: all).
    #[serde(default)]
    pub read: Vec<String>,
    /// Collections it may add documents to and delete them from (`"*"`: all).
    #[serde(default)]
    pub write: Vec<String>,
    /// Whether it may create and delete collections, load and unload
    /// adapters, and read the server's own state (`/info`, `/metrics`,
    /// `/topology`).
    #[serde(default)]
    pub manage: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ModelsConfig {
    /// Embedding model: a directory, `hf:owner/name`, or the URL of a
    /// hearth `embed` process (`http://127.0.0.1:8103`).
    pub embedder: String,
    /// The LLM that answers RAG questions: a .gguf file, a directory,
    /// `hf:owner/name/file.gguf`, or the URL of a hearth `generate` process.
    pub rag_generator: String,
    /// The fine-tuned LLM served by `/fine-tuned`: a model (same forms;
    /// when it names the same file as `rag_generator`, the weights are
    /// loaded once and shared), or a base model with a LoRA adapter:
    /// `{ base = "...", adapter = "...", scale = 1.0, merge = false }`.
    pub fine_tuned: FineTunedModel,
    /// More LoRA adapters on the fine-tuned pipeline's model (its base,
    /// when it has an adapter), each served as a model id and selected by
    /// `model` or `/fine-tuned`'s `adapter` field; applied unmerged, so
    /// they share one copy of the base. `[[models.adapters]]` tables with
    /// `name`, `path` and optional `scale`.
    pub adapters: Vec<AdapterConfig>,
    /// Quantize a Hugging Face checkpoint's matrices at load: "q8_0" or
    /// "q4_k" (the fast CPU path), or "" to keep them as they are (F16 and
    /// BF16 run on the fast path too; F32 on candle's).
    pub quantize: String,
    /// A cross-encoder that re-scores the retrieved candidates (a
    /// directory or `hf:owner/name` holding a BERT
    /// `ForSequenceClassification` model with one label, e.g.
    /// `hf:cross-encoder/ms-marco-MiniLM-L-6-v2`); empty: no reranking.
    pub reranker: String,
    /// More LLMs served by name (`[[models.llms]]` tables with `name`,
    /// `path` and an optional `keep_alive`): each is loaded by the first
    /// request that names it, and unloaded when idle past its keep-alive or
    /// when `limits.max_loaded_models` needs room.
    pub llms: Vec<LlmConfig>,
    /// The embedder's matrix products on the CPU: "auto" (bf16, with f32
    /// sums, where the CPU has AVX512-BF16: about 1.5x the speed, the
    /// default embedder's vectors within a cosine of 0.99997 of
    /// sentence-transformers') or "f32".
    pub embedder_precision: String,
}

/// `models.fine_tuned`: a model, or a base model with a LoRA adapter.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum FineTunedModel {
    Model(String),
    Adapted(AdaptedModel),
}

impl FineTunedModel {
    /// The model file (or URL) whose weights run the pipeline.
    pub fn base(&self) -> &str {
        match self {
            FineTunedModel::Model(m) => m,
            FineTunedModel::Adapted(a) => &a.base,
        }
    }

    /// The adapter, when there is one.
    pub fn adapted(&self) -> Option<&AdaptedModel> {
        match self {
            FineTunedModel::Model(_) => None,
            FineTunedModel::Adapted(a) => Some(a),
        }
    }
}

impl From<&str> for FineTunedModel {
    fn from(model: &str) -> Self {
        FineTunedModel::Model(model.to_string())
    }
}

fn one() -> f32 {
    1.0
}

/// A base model with a LoRA adapter.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AdaptedModel {
    /// The base model (the forms of `rag_generator`, a local file or `hf:`).
    pub base: String,
    /// A GGUF LoRA adapter (`convert_lora_to_gguf.py`) or a Hugging Face
    /// PEFT directory (`adapter_config.json`, `adapter_model.safetensors`).
    pub adapter: String,
    /// Its model id; default: the adapter's file stem or directory name.
    #[serde(default)]
    pub name: Option<String>,
    /// Multiplies the adapter's update (1 = as trained).
    #[serde(default = "one")]
    pub scale: f32,
    /// Merge the adapter into a copy of the base at load (fastest per
    /// token, but one more copy of the weights, re-quantized to the base's
    /// type) instead of adding it per request to the shared base.
    #[serde(default)]
    pub merge: bool,
}

impl AdaptedModel {
    /// The adapter's model id.
    pub fn name(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| adapter_stem(&self.adapter))
    }
}

/// A default model id for an adapter path: the file stem, or the
/// directory's name.
pub fn adapter_stem(path: &str) -> String {
    let p = Path::new(path.trim_end_matches('/'));
    let stem = if p.extension().is_some_and(|e| e == "gguf") {
        p.file_stem()
    } else {
        p.file_name()
    };
    stem.map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "adapter".into())
}

/// One more adapter on the fine-tuned pipeline's model.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AdapterConfig {
    /// Its model id.
    pub name: String,
    /// A GGUF LoRA adapter or a PEFT directory.
    pub path: String,
    #[serde(default = "one")]
    pub scale: f32,
}

/// An LLM served by name, loaded when a request asks for it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LlmConfig {
    /// Its model id (letters, digits, `.`, `_`, `-`; not `hearth-rag` or
    /// `hearth-fine-tuned`).
    pub name: String,
    /// A .gguf file, a directory, `hf:owner/name/file.gguf` or a Hugging
    /// Face checkpoint.
    pub path: String,
    /// How long it stays loaded after its last request (`generation.keep_alive`
    /// when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_alive: Option<String>,
}

/// The fusion rules `retrieval.fusion` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum FusionRule {
    Rrf,
    Weighted,
}

/// Which lists a search reads.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum SearchMode {
    /// Embedding similarity (HNSW, or exact).
    Dense,
    /// Word matches ranked by BM25.
    Lexical,
    /// Both, fused.
    #[default]
    Hybrid,
}

impl SearchMode {
    pub fn name(self) -> &'static str {
        match self {
            SearchMode::Dense => "dense",
            SearchMode::Lexical => "lexical",
            SearchMode::Hybrid => "hybrid",
        }
    }
}

/// Whether a model setting names another hearth process rather than files.
pub fn is_remote(model: &str) -> bool {
    model.starts_with("http://") || model.starts_with("https://")
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RetrievalConfig {
    /// Passages retrieved per question when the request does not say.
    pub top_k: usize,
    /// Largest `top_k` a request may ask for.
    pub max_top_k: usize,
    /// HNSW search breadth; higher is more exact and slower.
    pub ef_search: usize,
    /// How searches find passages when a request does not say: `dense`
    /// (embeddings), `lexical` (BM25 over words) or `hybrid` (both, fused).
    pub mode: SearchMode,
    /// How hybrid search fuses its lists: `rrf` (reciprocal rank fusion,
    /// constant `rrf_k`) or `weighted` (`dense_weight` times the dense
    /// score plus the rest times the lexical score, each min-max
    /// normalised).
    pub fusion: FusionRule,
    pub rrf_k: f32,
    pub dense_weight: f32,
    /// Candidates each list brings to a hybrid search.
    pub hybrid_candidates: usize,
    /// Passages the reranker (when `models.reranker` is set) re-scores; the
    /// best `top_k` of them are kept.
    pub rerank_candidates: usize,
    /// Passages whose cosine similarity to the question is below this are
    /// dropped (unset: none are); a RAG question with none left is answered
    /// with "the documents do not cover it" rather than a guess.
    pub min_score: Option<f32>,
    /// Chunk size in embedder tokens (the embedder reads at most 256,
    /// including its two special tokens).
    pub chunk_tokens: usize,
    /// Tokens shared by consecutive chunks.
    pub chunk_overlap: usize,
    /// System message of the RAG prompt.
    pub system_prompt: String,
    /// The user message of the RAG prompt: a minijinja template over
    /// `question` and `passages` (each with `text`, `document_id`, `score`,
    /// `metadata`). Lowest-scoring passages are dropped until it fits.
    pub prompt_template: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct GenerationConfig {
    /// `max_tokens` when a request does not say.
    pub max_tokens: usize,
    /// `temperature` when a request does not say (0 is greedy).
    pub temperature: f32,
    /// Largest `max_tokens` a request may ask for.
    pub max_tokens_limit: usize,
    /// Longest prompt accepted, in LLM tokens (also capped by the model's context).
    pub max_prompt_tokens: usize,
    /// Prompt-lookup decoding: at most this many tokens per step drafted
    /// from earlier text of the same sequence (its RAG passages, say) and
    /// verified in one pass, while the sequence runs alone; the output is
    /// the same as without. 0 turns it off.
    pub draft_tokens: usize,
    /// How long a model of `models.llms` stays loaded after its last
    /// request: "5m", "30s", "1h", "0" (unload once idle) or "-1" (never
    /// unload), Ollama's `keep_alive`; a request's own `keep_alive` wins.
    pub keep_alive: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Generation requests waiting per model beyond the running ones; more get 503.
    pub generation_queue: usize,
    /// Sequences one model worker runs at once (decoding or with a prompt
    /// under way), batched into one forward pass per step.
    #[serde(alias = "max_active")]
    pub max_running: usize,
    /// Tokens in one step's forward pass: one per decoding sequence, the
    /// rest for prompt chunks (at least `max_running`).
    pub max_batch_tokens: usize,
    /// Longest piece of one prompt fed in a step, so that a long prompt does
    /// not stall the sequences already decoding.
    pub prefill_chunk: usize,
    /// MiB of recent prompts' keys and values kept per model worker, for
    /// prompts that begin the same way (0 turns the prefix cache off).
    pub prefix_cache_mb: usize,
    /// How sequences' keys and values are held: "f16", or "q8_0" (47%
    /// less memory per token of context; the CPU's buffer path only).
    pub kv_cache_type: String,
    /// Pipelines of one process that name the same model file share one
    /// generation worker, whose scheduler batches both (false: a worker per
    /// pipeline, the two competing for the cores).
    pub shared_worker: bool,
    /// Embedding requests waiting; more get 503.
    pub embed_queue: usize,
    /// Texts embedded together in one batch.
    pub embed_batch: usize,
    /// Largest request body accepted, in bytes (413 beyond).
    pub max_body_bytes: usize,
    /// Largest upload of files to `POST /documents` (multipart/form-data),
    /// in bytes, all files together (413 beyond); never less than
    /// `max_body_bytes`.
    pub max_upload_bytes: usize,
    /// Longest question or query, in characters.
    pub max_query_chars: usize,
    /// A request's time limit, in seconds, when it names none: past it a
    /// generation stops and frees its slot, and the client gets a 504 (or,
    /// streaming, a final error event).
    pub request_timeout_s: f64,
    /// The longest time limit a request may ask for (`x-request-timeout`).
    pub max_request_timeout_s: f64,
    /// Seconds between background saves of the index (it is rebuilt from
    /// SQLite if lost, so this bounds restart work, not durability).
    pub index_save_secs: u64,
    /// Models of `models.llms` loaded at once; a request for another
    /// unloads the least recently used idle one first (0: no limit).
    pub max_loaded_models: usize,
    /// Memory the loaded models of `models.llms` may take, counted as
    /// their files plus their KV caches at full context; a load past it is
    /// refused after idle ones are unloaded (0: no limit).
    pub max_model_memory_mb: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            data_dir: "data".into(),
            device: "cpu".into(),
            threads: None,
            api_keys: Vec::new(),
            keys: Vec::new(),
            allow_unauthenticated: false,
            models: ModelsConfig::default(),
            retrieval: RetrievalConfig::default(),
            generation: GenerationConfig::default(),
            limits: LimitsConfig::default(),
        }
    }
}

impl Default for ModelsConfig {
    fn default() -> Self {
        Self {
            embedder: DEFAULT_EMBEDDER.into(),
            rag_generator: DEFAULT_LLM.into(),
            fine_tuned: DEFAULT_LLM.into(),
            adapters: Vec::new(),
            llms: Vec::new(),
            quantize: String::new(),
            reranker: String::new(),
            embedder_precision: "auto".into(),
        }
    }
}

/// Drafted tokens per step by default (`generation.draft_tokens`).
pub const DEFAULT_DRAFT_TOKENS: usize = 8;

pub const DEFAULT_SYSTEM_PROMPT: &str =
    "You are a helpful assistant. Answer the question in one sentence, using only the context.";

pub const DEFAULT_PROMPT_TEMPLATE: &str = "Context:
{% for p in passages %}{{ p.text }}
{% endfor %}
Question: {{ question }}";

impl Default for RetrievalConfig {
    fn default() -> Self {
        Self {
            top_k: 4,
            max_top_k: 50,
            ef_search: 64,
            mode: SearchMode::Hybrid,
            fusion: FusionRule::Weighted,
            rrf_k: 60.0,
            dense_weight: 0.5,
            hybrid_candidates: 50,
            rerank_candidates: 20,
            min_score: None,
            chunk_tokens: 200,
            chunk_overlap: 32,
            system_prompt: DEFAULT_SYSTEM_PROMPT.into(),
            prompt_template: DEFAULT_PROMPT_TEMPLATE.into(),
        }
    }
}

impl Default for GenerationConfig {
    fn default() -> Self {
        Self {
            max_tokens: 256,
            temperature: 0.0,
            max_tokens_limit: 2048,
            max_prompt_tokens: 4096,
            draft_tokens: DEFAULT_DRAFT_TOKENS,
            keep_alive: "5m".into(),
        }
    }
}

impl LimitsConfig {
    /// The body limit of file uploads: `max_upload_bytes`, and never
    /// below `max_body_bytes`.
    pub fn max_upload_bytes(&self) -> usize {
        self.max_upload_bytes.max(self.max_body_bytes)
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            generation_queue: 32,
            max_running: 8,
            max_batch_tokens: 512,
            prefill_chunk: 256,
            prefix_cache_mb: 256,
            kv_cache_type: "f16".into(),
            shared_worker: true,
            embed_queue: 64,
            embed_batch: 32,
            max_body_bytes: 8 << 20,
            max_upload_bytes: 64 << 20,
            request_timeout_s: 300.0,
            max_request_timeout_s: 3600.0,
            max_query_chars: 4000,
            index_save_secs: 30,
            max_loaded_models: 2,
            max_model_memory_mb: 0,
        }
    }
}

/// Flags (each also read from its `HEARTH_*` variable) that override the file.
#[derive(Args, Debug, Clone, Default)]
pub struct ConfigArgs {
    /// Config file [default: ./hearth.toml when it exists].
    #[arg(long, env = "HEARTH_CONFIG")]
    pub config: Option<PathBuf>,
    #[arg(long, env = "HEARTH_LISTEN")]
    pub listen: Option<String>,
    /// An accepted bearer key (repeatable; the variable takes a comma-separated list).
    #[arg(long = "api-key", env = "HEARTH_API_KEYS", value_delimiter = ',')]
    pub api_keys: Vec<String>,
    /// Listen on a non-loopback address even with no API keys.
    #[arg(long, env = "HEARTH_ALLOW_UNAUTHENTICATED")]
    pub allow_unauthenticated: bool,
    #[arg(long, env = "HEARTH_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    #[arg(long, env = "HEARTH_EMBEDDER")]
    pub embedder: Option<String>,
    #[arg(long, env = "HEARTH_RAG_GENERATOR")]
    pub rag_generator: Option<String>,
    #[arg(long, env = "HEARTH_FINE_TUNED")]
    pub fine_tuned: Option<String>,
    /// A LoRA adapter for the fine-tuned model (a GGUF adapter or a PEFT
    /// directory): `--fine-tuned` becomes its base.
    #[arg(long, env = "HEARTH_FINE_TUNED_ADAPTER")]
    pub fine_tuned_adapter: Option<String>,
    /// The adapter's scale (1 = as trained).
    #[arg(long, env = "HEARTH_ADAPTER_SCALE")]
    pub adapter_scale: Option<f32>,
    /// Merge the adapter into a copy of the base at load.
    #[arg(long, env = "HEARTH_MERGE_ADAPTER")]
    pub merge_adapter: bool,
    /// Quantize a Hugging Face checkpoint at load: q8_0 or q4_k.
    #[arg(long, env = "HEARTH_QUANTIZE")]
    pub quantize: Option<String>,
    /// A cross-encoder reranker; "" for none.
    #[arg(long, env = "HEARTH_RERANKER")]
    pub reranker: Option<String>,
    /// The embedder's CPU products: auto (bf16 where the CPU has
    /// AVX512-BF16) or f32.
    #[arg(long, env = "HEARTH_EMBEDDER_PRECISION")]
    pub embedder_precision: Option<String>,
    #[arg(long, env = "HEARTH_TOP_K")]
    pub top_k: Option<usize>,
    #[arg(long, env = "HEARTH_MAX_TOP_K")]
    pub max_top_k: Option<usize>,
    #[arg(long, env = "HEARTH_EF_SEARCH")]
    pub ef_search: Option<usize>,
    /// dense, lexical or hybrid.
    #[arg(long = "search-mode", env = "HEARTH_SEARCH_MODE")]
    pub search_mode: Option<SearchMode>,
    #[arg(long, env = "HEARTH_FUSION")]
    pub fusion: Option<FusionRule>,
    #[arg(long, env = "HEARTH_RRF_K")]
    pub rrf_k: Option<f32>,
    #[arg(long, env = "HEARTH_DENSE_WEIGHT")]
    pub dense_weight: Option<f32>,
    #[arg(long, env = "HEARTH_HYBRID_CANDIDATES")]
    pub hybrid_candidates: Option<usize>,
    #[arg(long, env = "HEARTH_RERANK_CANDIDATES")]
    pub rerank_candidates: Option<usize>,
    #[arg(long, env = "HEARTH_MIN_SCORE")]
    pub min_score: Option<f32>,
    #[arg(long, env = "HEARTH_CHUNK_TOKENS")]
    pub chunk_tokens: Option<usize>,
    #[arg(long, env = "HEARTH_CHUNK_OVERLAP")]
    pub chunk_overlap: Option<usize>,
    #[arg(long, env = "HEARTH_SYSTEM_PROMPT")]
    pub system_prompt: Option<String>,
    #[arg(long, env = "HEARTH_PROMPT_TEMPLATE")]
    pub prompt_template: Option<String>,
    #[arg(long, env = "HEARTH_MAX_TOKENS")]
    pub max_tokens: Option<usize>,
    #[arg(long, env = "HEARTH_TEMPERATURE")]
    pub temperature: Option<f32>,
    #[arg(long, env = "HEARTH_MAX_TOKENS_LIMIT")]
    pub max_tokens_limit: Option<usize>,
    #[arg(long, env = "HEARTH_MAX_PROMPT_TOKENS")]
    pub max_prompt_tokens: Option<usize>,
    #[arg(long, env = "HEARTH_DRAFT_TOKENS")]
    pub draft_tokens: Option<usize>,
    #[arg(long, env = "HEARTH_KEEP_ALIVE", allow_hyphen_values = true)]
    pub keep_alive: Option<String>,
    #[arg(long, env = "HEARTH_GENERATION_QUEUE")]
    pub generation_queue: Option<usize>,
    #[arg(long, env = "HEARTH_MAX_RUNNING", alias = "max-active")]
    pub max_running: Option<usize>,
    #[arg(long, env = "HEARTH_MAX_BATCH_TOKENS")]
    pub max_batch_tokens: Option<usize>,
    #[arg(long, env = "HEARTH_PREFILL_CHUNK")]
    pub prefill_chunk: Option<usize>,
    #[arg(long, env = "HEARTH_PREFIX_CACHE_MB")]
    pub prefix_cache_mb: Option<usize>,
    #[arg(long, env = "HEARTH_KV_CACHE_TYPE")]
    pub kv_cache_type: Option<String>,
    #[arg(long, env = "HEARTH_SHARED_WORKER")]
    pub shared_worker: Option<bool>,
    #[arg(long, env = "HEARTH_EMBED_QUEUE")]
    pub embed_queue: Option<usize>,
    #[arg(long, env = "HEARTH_EMBED_BATCH")]
    pub embed_batch: Option<usize>,
    #[arg(long, env = "HEARTH_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    #[arg(long, env = "HEARTH_MAX_UPLOAD_BYTES")]
    pub max_upload_bytes: Option<usize>,
    #[arg(long, env = "HEARTH_MAX_QUERY_CHARS")]
    pub max_query_chars: Option<usize>,
    #[arg(long, env = "HEARTH_INDEX_SAVE_SECS")]
    pub index_save_secs: Option<u64>,
    #[arg(long, env = "HEARTH_MAX_LOADED_MODELS")]
    pub max_loaded_models: Option<usize>,
    #[arg(long, env = "HEARTH_MAX_MODEL_MEMORY_MB")]
    pub max_model_memory_mb: Option<usize>,
}

impl Config {
    /// Parse a TOML document; unknown keys are errors (a typo must not be
    /// silently ignored).
    pub fn from_toml(text: &str, origin: &Path) -> Result<Self> {
        toml::from_str(text)
            .map_err(|e| Error::InvalidInput(format!("config {}: {e}", origin.display())))
    }

    /// The file (explicit, or `hearth.toml` when present, or defaults), then
    /// the overrides, then validation. `device` and `threads` are the global
    /// flags, which override the file too.
    pub fn load(args: &ConfigArgs, device: Option<&str>, threads: Option<usize>) -> Result<Self> {
        let mut config = match &args.config {
            Some(path) => Self::read(path)?,
            None if Path::new(DEFAULT_CONFIG_FILE).exists() => {
                Self::read(Path::new(DEFAULT_CONFIG_FILE))?
            }
            None => Self::default(),
        };
        config.apply(args, device, threads);
        config.validate()?;
        Ok(config)
    }

    fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_toml(&text, path)
    }

    fn apply(&mut self, a: &ConfigArgs, device: Option<&str>, threads: Option<usize>) {
        fn set<T: Clone>(slot: &mut T, value: &Option<T>) {
            if let Some(v) = value {
                *slot = v.clone();
            }
        }
        if let Some(d) = device {
            self.device = d.to_string();
        }
        if threads.is_some() {
            self.threads = threads;
        }
        set(&mut self.listen, &a.listen);
        if !a.api_keys.is_empty() {
            self.api_keys = a.api_keys.clone();
        }
        if a.allow_unauthenticated {
            self.allow_unauthenticated = true;
        }
        set(&mut self.data_dir, &a.data_dir);
        set(&mut self.models.embedder, &a.embedder);
        set(&mut self.models.rag_generator, &a.rag_generator);
        if let Some(model) = &a.fine_tuned {
            match &mut self.models.fine_tuned {
                FineTunedModel::Adapted(adapted) => adapted.base = model.clone(),
                plain => *plain = model.as_str().into(),
            }
        }
        if let Some(adapter) = &a.fine_tuned_adapter {
            let base = self.models.fine_tuned.base().to_string();
            self.models.fine_tuned = FineTunedModel::Adapted(AdaptedModel {
                base,
                adapter: adapter.clone(),
                name: None,
                scale: 1.0,
                merge: false,
            });
        }
        set(&mut self.models.quantize, &a.quantize);
        if let FineTunedModel::Adapted(adapted) = &mut self.models.fine_tuned {
            set(&mut adapted.scale, &a.adapter_scale);
            adapted.merge |= a.merge_adapter;
        }
        set(&mut self.models.reranker, &a.reranker);
        set(&mut self.models.embedder_precision, &a.embedder_precision);
        let r = &mut self.retrieval;
        set(&mut r.top_k, &a.top_k);
        set(&mut r.max_top_k, &a.max_top_k);
        set(&mut r.ef_search, &a.ef_search);
        set(&mut r.mode, &a.search_mode);
        set(&mut r.fusion, &a.fusion);
        set(&mut r.rrf_k, &a.rrf_k);
        set(&mut r.dense_weight, &a.dense_weight);
        set(&mut r.hybrid_candidates, &a.hybrid_candidates);
        set(&mut r.rerank_candidates, &a.rerank_candidates);
        if a.min_score.is_some() {
            r.min_score = a.min_score;
        }
        set(&mut r.chunk_tokens, &a.chunk_tokens);
        set(&mut r.chunk_overlap, &a.chunk_overlap);
        set(&mut r.system_prompt, &a.system_prompt);
        set(&mut r.prompt_template, &a.prompt_template);
        let g = &mut self.generation;
        set(&mut g.max_tokens, &a.max_tokens);
        set(&mut g.temperature, &a.temperature);
        set(&mut g.max_tokens_limit, &a.max_tokens_limit);
        set(&mut g.max_prompt_tokens, &a.max_prompt_tokens);
        set(&mut g.draft_tokens, &a.draft_tokens);
        set(&mut g.keep_alive, &a.keep_alive);
        let l = &mut self.limits;
        set(&mut l.generation_queue, &a.generation_queue);
        set(&mut l.max_running, &a.max_running);
        set(&mut l.max_batch_tokens, &a.max_batch_tokens);
        set(&mut l.prefill_chunk, &a.prefill_chunk);
        set(&mut l.prefix_cache_mb, &a.prefix_cache_mb);
        set(&mut l.kv_cache_type, &a.kv_cache_type);
        set(&mut l.shared_worker, &a.shared_worker);
        set(&mut l.embed_queue, &a.embed_queue);
        set(&mut l.embed_batch, &a.embed_batch);
        set(&mut l.max_body_bytes, &a.max_body_bytes);
        set(&mut l.max_upload_bytes, &a.max_upload_bytes);
        set(&mut l.max_query_chars, &a.max_query_chars);
        set(&mut l.index_save_secs, &a.index_save_secs);
        set(&mut l.max_loaded_models, &a.max_loaded_models);
        set(&mut l.max_model_memory_mb, &a.max_model_memory_mb);
    }

    /// `listen` as a socket address.
    pub fn listen_addr(&self) -> Result<std::net::SocketAddr> {
        self.listen.parse().map_err(|_| {
            Error::InvalidInput(format!(
                "config: listen must be an address such as 127.0.0.1:8080, got {:?}",
                self.listen
            ))
        })
    }

    /// Reject values that cannot work, naming the key.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: &str| Err(Error::InvalidInput(format!("config: {msg}")));
        let addr = self.listen_addr()?;
        if !addr.ip().is_loopback()
            && self.api_keys.is_empty()
            && self.keys.is_empty()
            && !self.allow_unauthenticated
        {
            return bad(&format!(
                "listen {addr} is reachable from other machines but no api_keys are set; \
                 set api_keys (HEARTH_API_KEYS), listen on 127.0.0.1, or set allow_unauthenticated = true"
            ));
        }
        if self.api_keys.iter().any(|k| k.len() < 8) {
            return bad("api_keys must be at least 8 characters each");
        }
        for (i, key) in self.keys.iter().enumerate() {
            if key.name.is_empty() || self.keys[..i].iter().any(|k| k.name == key.name) {
                return bad(&format!(
                    "keys[{i}]: every key needs a name of its own, got {:?}",
                    key.name
                ));
            }
            if key.sha256.len() != 64 || !key.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return bad(&format!(
                    "keys[{i}] ({}): sha256 must be 64 hex digits (`hearth keys add` writes it)",
                    key.name
                ));
            }
            for c in key.read.iter().chain(&key.write) {
                if c != "*" {
                    crate::store::check_collection_name(c).map_err(|e| {
                        Error::InvalidInput(format!("config: keys[{i}] ({}): {e}", key.name))
                    })?;
                }
            }
        }
        let mut names: Vec<String> = self
            .models
            .adapters
            .iter()
            .map(|a| a.name.clone())
            .collect();
        if let Some(adapted) = self.models.fine_tuned.adapted() {
            names.push(adapted.name());
        }
        for (i, name) in names.iter().enumerate() {
            crate::models::llm::lora::check_name(name)
                .map_err(|e| Error::InvalidInput(format!("config: models: {e}")))?;
            if names[..i].contains(name) {
                return bad(&format!("two adapters are named {name:?}"));
            }
        }
        crate::models::llm::hf::quantize_type(&self.models.quantize)
            .map_err(|e| Error::InvalidInput(format!("config: models.{e}")))?;
        crate::models::embedder::precision(&self.models.embedder_precision)
            .map_err(|e| Error::InvalidInput(format!("config: models.{e}")))?;
        self.limits
            .kv_cache_type
            .parse::<crate::models::llm::llama::KvType>()
            .map_err(|e| Error::InvalidInput(format!("config: limits.{e}")))?;
        for (i, llm) in self.models.llms.iter().enumerate() {
            let name = &llm.name;
            let valid = !name.is_empty()
                && name.len() <= 128
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
            if !valid {
                return bad(&format!(
                    "models.llms: name {name:?} must be 1 to 128 letters, digits, `.`, `_` or `-`"
                ));
            }
            if [crate::roles::RAG_MODEL, crate::roles::FINE_TUNED_MODEL].contains(&name.as_str())
                || names.contains(name)
                || self.models.llms[..i].iter().any(|l| &l.name == name)
            {
                return bad(&format!("models.llms: the name {name:?} is taken"));
            }
            if let Some(k) = &llm.keep_alive {
                crate::engine::catalog::KeepAlive::parse(k).map_err(|e| {
                    Error::InvalidInput(format!("config: models.llms {name:?}: keep_alive: {e}"))
                })?;
            }
        }
        crate::engine::catalog::KeepAlive::parse(&self.generation.keep_alive)
            .map_err(|e| Error::InvalidInput(format!("config: generation.keep_alive: {e}")))?;
        let scales = self.models.adapters.iter().map(|a| a.scale);
        let scales = scales.chain(self.models.fine_tuned.adapted().map(|a| a.scale));
        if scales.into_iter().any(|s| !s.is_finite()) {
            return bad("an adapter's scale must be a finite number");
        }
        let r = &self.retrieval;
        if r.top_k == 0 || r.top_k > r.max_top_k {
            return bad("retrieval.top_k must be between 1 and retrieval.max_top_k");
        }
        if r.ef_search == 0 {
            return bad("retrieval.ef_search must be at least 1");
        }
        if !(r.rrf_k.is_finite() && r.rrf_k > 0.0) {
            return bad("retrieval.rrf_k must be a positive number");
        }
        if !(0.0..=1.0).contains(&r.dense_weight) {
            return bad("retrieval.dense_weight must be between 0 and 1");
        }
        if r.rerank_candidates == 0 || r.rerank_candidates > 200 {
            return bad("retrieval.rerank_candidates must be between 1 and 200");
        }
        if r.hybrid_candidates == 0 || r.hybrid_candidates > 1000 {
            return bad("retrieval.hybrid_candidates must be between 1 and 1000");
        }
        if r.min_score.is_some_and(|m| !(-1.0..=1.0).contains(&m)) {
            return bad("retrieval.min_score is a cosine similarity, between -1 and 1");
        }
        if r.chunk_tokens < 16 {
            return bad("retrieval.chunk_tokens must be at least 16");
        }
        if r.chunk_overlap >= r.chunk_tokens {
            return bad("retrieval.chunk_overlap must be smaller than retrieval.chunk_tokens");
        }
        let g = &self.generation;
        if g.max_tokens == 0 || g.max_tokens > g.max_tokens_limit {
            return bad("generation.max_tokens must be between 1 and generation.max_tokens_limit");
        }
        if !(0.0..=2.0).contains(&g.temperature) {
            return bad("generation.temperature must be between 0 and 2");
        }
        if g.max_prompt_tokens == 0 {
            return bad("generation.max_prompt_tokens must be at least 1");
        }
        let l = &self.limits;
        if l.generation_queue == 0 || l.max_running == 0 || l.embed_queue == 0 {
            return bad("limits: queues and max_running must be at least 1");
        }
        if l.prefill_chunk == 0 || l.max_batch_tokens < l.max_running {
            return bad("limits: prefill_chunk must be at least 1 and max_batch_tokens at least max_running");
        }
        if !(l.request_timeout_s > 0.0 && l.request_timeout_s <= l.max_request_timeout_s) {
            return bad(
                "limits: request_timeout_s must be positive and at most max_request_timeout_s",
            );
        }
        if l.embed_batch == 0 || l.max_body_bytes < 1024 || l.max_query_chars == 0 {
            return bad("limits: embed_batch, max_body_bytes (>= 1024) and max_query_chars must be positive");
        }
        minijinja::Environment::new()
            .template_from_str(&r.prompt_template)
            .map(|_| ())
            .or_else(|e| bad(&format!("retrieval.prompt_template: {e}")))
    }

    /// The store's SQLite file.
    pub fn store_path(&self) -> PathBuf {
        self.data_dir.join("hearth.sqlite")
    }

    /// The directory holding the persisted index.
    pub fn index_dir(&self) -> PathBuf {
        self.data_dir.join("index")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_example_is_the_defaults() {
        let text = include_str!("../hearth.toml");
        let parsed = Config::from_toml(text, Path::new("hearth.toml")).unwrap();
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn flags_override_the_file_and_bad_values_are_named() {
        let mut c = Config::from_toml(
            "listen = \"0.0.0.0:9000\"\n[retrieval]\ntop_k = 3\n",
            Path::new("t.toml"),
        )
        .unwrap();
        assert_eq!(c.retrieval.top_k, 3);
        let args = ConfigArgs {
            top_k: Some(7),
            ..Default::default()
        };
        c.apply(&args, Some("cuda:1"), Some(2));
        assert_eq!(
            (c.retrieval.top_k, c.device.as_str(), c.threads),
            (7, "cuda:1", Some(2))
        );
        assert_eq!(c.listen, "0.0.0.0:9000");
        // Reachable from other machines without keys: refused unless allowed.
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("api_keys"), "{err}");
        c.apply(
            &ConfigArgs {
                api_keys: vec!["a-long-enough-key".into()],
                ..Default::default()
            },
            None,
            None,
        );
        c.validate().unwrap();
        c.limits.kv_cache_type = "q4".into();
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.contains("limits.kv_cache_type") && err.contains("q8_0"),
            "{err}"
        );
        c.limits.kv_cache_type = "q8_0".into();
        c.validate().unwrap();
        c.retrieval.chunk_overlap = 500;
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("chunk_overlap"), "{err}");
        let err = Config::from_toml("[retrieval]\ntopk = 3\n", Path::new("t.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("topk"), "{err}");
    }
}
