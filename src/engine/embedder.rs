//! The embedding worker: one thread owns the embedder; requests queue in
//! two lanes and are merged into batches of up to `max_batch` texts.
//!
//! - The **query** lane (a search's question, `/v1/embeddings`) always
//!   goes first.
//! - The **bulk** lane (documents being ingested) is sent in pieces of at
//!   most one batch, and a batch of bulk texts is only formed when no
//!   query waits.
//!
//! So a query waits behind at most the one batch already running, however
//! many documents a sync has queued. A full lane is refused at once.

use crate::error::{Error, Result};
use crate::models::Embedder;
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use tokio::sync::oneshot;

struct Request {
    texts: Vec<String>,
    /// The vectors, and the tokens the model saw of the texts.
    reply: oneshot::Sender<Result<(Vec<Vec<f32>>, usize)>>,
}

/// The two lanes, under one lock; `closed` once every handle is gone.
#[derive(Default)]
struct Lanes {
    query: VecDeque<Request>,
    bulk: VecDeque<Request>,
    closed: bool,
}

struct Shared {
    lanes: Mutex<Lanes>,
    ready: Condvar,
    /// Most requests waiting in each lane.
    capacity: usize,
}

/// Closes the lanes when the last handle goes, so the thread ends.
struct Closer(Arc<Shared>);

impl Drop for Closer {
    fn drop(&mut self) {
        self.0
            .lanes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .closed = true;
        self.0.ready.notify_all();
    }
}

/// Handle to an embedding worker. Cheap to clone.
#[derive(Clone)]
pub struct EmbedWorker {
    shared: Arc<Shared>,
    _closer: Arc<Closer>,
    embedder: Arc<Embedder>,
    max_batch: usize,
}

impl EmbedWorker {
    pub fn spawn(embedder: Arc<Embedder>, queue: usize, max_batch: usize) -> Self {
        let shared = Arc::new(Shared {
            lanes: Mutex::new(Lanes::default()),
            ready: Condvar::new(),
            capacity: queue.max(1),
        });
        let model = embedder.clone();
        let max_batch = max_batch.max(1);
        let worker = shared.clone();
        std::thread::Builder::new()
            .name("embed".into())
            .spawn(move || {
                while let Some(batch) = next_batch(&worker, max_batch) {
                    run_batch(&model, batch, max_batch);
                }
            })
            .expect("spawning the embedding thread");
        Self {
            _closer: Arc::new(Closer(shared.clone())),
            shared,
            embedder,
            max_batch,
        }
    }

    pub fn embedder(&self) -> &Embedder {
        &self.embedder
    }

    /// Embed `texts`, in order, ahead of any bulk work, and count the
    /// tokens the model saw of them.
    pub async fn embed_counted(&self, texts: Vec<String>) -> Result<(Vec<Vec<f32>>, usize)> {
        self.submit(texts, false).await
    }

    /// Embed a document's chunks: in pieces of one batch each, every piece
    /// behind any query waiting.
    pub async fn embed_bulk(&self, texts: Vec<String>) -> Result<(Vec<Vec<f32>>, usize)> {
        let mut vectors = Vec::with_capacity(texts.len());
        let mut tokens = 0;
        for piece in texts.chunks(self.max_batch) {
            let (v, n) = self.submit(piece.to_vec(), true).await?;
            vectors.extend(v);
            tokens += n;
        }
        Ok((vectors, tokens))
    }

    async fn submit(&self, texts: Vec<String>, bulk: bool) -> Result<(Vec<Vec<f32>>, usize)> {
        let (reply, rx) = oneshot::channel();
        {
            let mut lanes = self.shared.lanes.lock().unwrap_or_else(|p| p.into_inner());
            let lane = if bulk {
                &mut lanes.bulk
            } else {
                &mut lanes.query
            };
            if lane.len() >= self.shared.capacity {
                return Err(Error::Unavailable(
                    "the embedding queue is full; retry shortly".into(),
                ));
            }
            lane.push_back(Request { texts, reply });
        }
        self.shared.ready.notify_one();
        rx.await
            .map_err(|_| Error::Unavailable("the embedding worker stopped".into()))?
    }
}

/// The next batch: queries first, up to `max_batch` texts; bulk pieces
/// only when no query waits. `None` once closed and drained.
fn next_batch(shared: &Shared, max_batch: usize) -> Option<Vec<Request>> {
    let mut lanes = shared.lanes.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        let lane = if !lanes.query.is_empty() {
            &mut lanes.query
        } else if !lanes.bulk.is_empty() {
            &mut lanes.bulk
        } else if lanes.closed {
            return None;
        } else {
            lanes = shared.ready.wait(lanes).unwrap_or_else(|p| p.into_inner());
            continue;
        };
        let first = lane.pop_front().expect("the lane is not empty");
        let mut n = first.texts.len();
        let mut batch = vec![first];
        while let Some(next) = lane.front() {
            if n + next.texts.len() > max_batch {
                break;
            }
            n += next.texts.len();
            batch.push(lane.pop_front().expect("front exists"));
        }
        return Some(batch);
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
