//! Worker threads and the channels that feed them. Model compute happens
//! here, never on the async runtime: callers submit through bounded queues
//! and receive answers on channels.

pub mod embedder;
pub mod generator;
pub mod handle;
pub mod prefix;
pub mod protocol;
pub mod remote;
pub mod reranker;
pub mod scheduler;

pub use embedder::EmbedWorker;
pub use generator::{
    Checked, Completion, Event, FinishReason, GenerationStream, Generator, GeneratorLimits, Prompt,
    PromptBudget, StatsSnapshot, Timings, TokenLogprob,
};
pub use handle::{Embedding, Generation};
pub use reranker::RerankWorker;

use crate::error::{Error, Result};

/// Run blocking work (disk, tokenizing) off the async runtime.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Store(format!("a background task failed: {e}")))?
}
