//! Blocking work (disk, tokenizing, compiling grammars) run off the async
//! runtime, on tokio's blocking threads, never on a model's worker thread.

use crate::error::{Error, Result};

/// Run `f` on a blocking thread and wait for it.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Store(format!("a background task failed: {e}")))?
}
