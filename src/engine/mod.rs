//! Worker threads and the channels that feed them. Model compute happens
//! here, never on the async runtime: callers submit through bounded queues
//! and receive answers on channels.

pub mod catalog;
pub mod draft;
pub mod embedder;
pub mod generator;
pub mod handle;
pub mod limits;
pub mod offload;
pub mod prefix;
pub mod protocol;
pub mod remote;
pub mod replicas;
pub mod request;
pub mod reranker;
pub mod scheduler;

pub use embedder::EmbedWorker;
pub use generator::{Checked, GenerationStream, Generator};
pub use handle::{Embedding, Generation};
pub use limits::{GeneratorLimits, PromptBudget, StatsSnapshot};
pub use offload::blocking;
pub use request::{Completion, Event, FinishReason, Prompt, Timings, TokenLogprob};
pub use reranker::RerankWorker;
