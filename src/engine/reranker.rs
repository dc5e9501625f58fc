//! The reranking worker: one thread owns the cross-encoder; requests (a
//! query and its candidate passages, paired and tokenized before they
//! queue, off the async runtime) wait on a bounded channel and run one
//! after another. A full queue is refused at once.

use super::offload::blocking;
use crate::error::{Error, Result};
use crate::models::reranker::Pairs;
use crate::models::Reranker;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

struct Request {
    pairs: Pairs,
    reply: oneshot::Sender<Result<Vec<f32>>>,
}

/// Handle to a reranking worker. Cheap to clone.
#[derive(Clone)]
pub struct RerankWorker {
    queue: mpsc::Sender<Request>,
    reranker: Arc<Reranker>,
}

impl RerankWorker {
    pub fn spawn(reranker: Arc<Reranker>, queue: usize) -> Self {
        let (tx, mut rx) = mpsc::channel::<Request>(queue.max(1));
        let model = reranker.clone();
        std::thread::Builder::new()
            .name("rerank".into())
            .spawn(move || {
                while let Some(r) = rx.blocking_recv() {
                    let _ = r.reply.send(model.score_pairs(&r.pairs));
                }
            })
            .expect("spawning the reranking thread");
        Self {
            queue: tx,
            reranker,
        }
    }

    pub fn reranker(&self) -> &Reranker {
        &self.reranker
    }

    /// One score per passage for `query`, in order (higher is better).
    /// The pairs are tokenized on a blocking thread first.
    pub async fn score(&self, query: String, passages: Vec<String>) -> Result<Vec<f32>> {
        let model = self.reranker.clone();
        let pairs = blocking(move || {
            let passages: Vec<&str> = passages.iter().map(String::as_str).collect();
            model.encode(&query, &passages)
        })
        .await?;
        let (reply, rx) = oneshot::channel();
        self.queue
            .try_send(Request { pairs, reply })
            .map_err(|_| Error::Unavailable("the reranking queue is full; retry shortly".into()))?;
        rx.await
            .map_err(|_| Error::Unavailable("the reranking worker stopped".into()))?
    }
}
