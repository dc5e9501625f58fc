//! Loading and running models: where they come from ([`source`]), which
//! device runs them ([`device`]), the embedder and the LLM. Nothing here
//! knows about HTTP, threads or the document store.

pub mod device;
pub mod embedder;
pub mod llm;
pub mod reranker;
pub mod source;

pub use embedder::Embedder;
pub use llm::Llm;
pub use reranker::Reranker;
pub use source::ModelSource;

/// Where `scripts/fetch-models.sh` puts the default models, relative to the
/// working directory (override with config, flags or `HEARTH_*` variables).
pub const DEFAULT_EMBEDDER: &str = "models/minilm-l6-v2";
pub const DEFAULT_LLM: &str = "models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf";
