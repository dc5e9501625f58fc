//! The embedding worker: one thread owns the embedder; requests queue on a
//! bounded channel and are merged into batches of up to `max_batch` texts.
//! A full queue is refused at once.

use crate::error::{Error, Result};
use crate::models::Embedder;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

struct Request {
    texts: Vec<String>,
    /// The vectors, and the tokens the model saw of the texts.
    reply: oneshot::Sender<Result<(Vec<Vec<f32>>, usize)>>,
}

/// Handle to an embedding worker. Cheap to clone.
#[derive(Clone)]
pub struct EmbedWorker {
    queue: mpsc::Sender<Request>,
    embedder: Arc<Embedder>,
}

impl EmbedWorker {
    pub fn spawn(embedder: Arc<Embedder>, queue: usize, max_batch: usize) -> Self {
        let (tx, mut rx) = mpsc::channel::<Request>(queue.max(1));
        let model = embedder.clone();
        let max_batch = max_batch.max(1);
        std::thread::Builder::new()
            .name("embed".into())
            .spawn(move || {
                while let Some(first) = rx.blocking_recv() {
                    let mut batch = vec![first];
                    let mut n = batch[0].texts.len();
                    while n < max_batch {
                        match rx.try_recv() {
                            Ok(r) => {
                                n += r.texts.len();
                                batch.push(r);
                            }
                            Err(_) => break,
                        }
                    }
                    run_batch(&model, batch, max_batch);
                }
            })
            .expect("spawning the embedding thread");
        Self {
            queue: tx,
            embedder,
        }
    }

    pub fn embedder(&self) -> &Embedder {
        &self.embedder
    }

    /// Embed `texts`, in order, and count the tokens the model saw of them.
    pub async fn embed_counted(&self, texts: Vec<String>) -> Result<(Vec<Vec<f32>>, usize)> {
        let (reply, rx) = oneshot::channel();
        self.queue
            .try_send(Request { texts, reply })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => {
                    Error::Unavailable("the embedding queue is full; retry shortly".into())
                }
                mpsc::error::TrySendError::Closed(_) => {
                    Error::Unavailable("the embedding worker has stopped".into())
                }
            })?;
        rx.await
            .map_err(|_| Error::Unavailable("the embedding worker stopped".into()))?
    }
}

fn run_batch(model: &Embedder, batch: Vec<Request>, max_batch: usize) {
    let texts: Vec<&str> = batch
        .iter()
        .flat_map(|r| r.texts.iter().map(String::as_str))
        .collect();
    let mut vectors = Vec::with_capacity(texts.len());
    let mut counts = Vec::with_capacity(texts.len());
    for chunk in texts.chunks(max_batch) {
        crate::telemetry::embedding_batch(chunk.len());
        match model.embed_counted(chunk) {
            Ok((v, n)) => {
                vectors.extend(v);
                counts.extend(n);
            }
            Err(e) => {
                let msg = e.to_string();
                for r in batch {
                    let _ = r
                        .reply
                        .send(Err(Error::Unavailable(format!("embedding failed: {msg}"))));
                }
                return;
            }
        }
    }
    let (mut vectors, mut counts) = (vectors.into_iter(), counts.into_iter());
    for r in batch {
        let mine: Vec<Vec<f32>> = vectors.by_ref().take(r.texts.len()).collect();
        let tokens = counts.by_ref().take(r.texts.len()).sum();
        let _ = r.reply.send(Ok((mine, tokens)));
    }
}
