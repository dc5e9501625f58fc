//! The reranking worker: one thread owns the cross-encoder; requests (a
//! query and its candidate passages) queue on a bounded channel and run one
//! after another. A full queue is refused at once.

use crate::error::{Error, Result};
use crate::models::Reranker;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

struct Request {
    query: String,
    passages: Vec<String>,
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
                    let passages: Vec<&str> = r.passages.iter().map(String::as_str).collect();
                    let _ = r.reply.send(model.score(&r.query, &passages));
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
    pub async fn score(&self, query: String, passages: Vec<String>) -> Result<Vec<f32>> {
        let (reply, rx) = oneshot::channel();
        self.queue
            .try_send(Request {
                query,
                passages,
                reply,
            })
            .map_err(|_| Error::Unavailable("the reranking queue is full; retry shortly".into()))?;
        rx.await
            .map_err(|_| Error::Unavailable("the reranking worker stopped".into()))?
    }
}
