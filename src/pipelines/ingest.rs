//! Ingestion: validate a document, chunk it, embed the chunks on the
//! embedding worker, and write it to the store (durable when this returns).

use crate::engine::blocking;
use crate::engine::Embedding;
use crate::error::{Error, Result};
use crate::store::chunking::{Chunker, TextKind};
use crate::store::{DocumentStore, NewDocument};
use serde::Serialize;
use std::sync::Arc;

/// Longest document id accepted, in bytes.
pub const MAX_ID_CHARS: usize = 512;

/// A document as a client sends it.
#[derive(Debug, Clone)]
pub struct DocumentInput {
    /// Chosen by the client, or generated. Re-using an id replaces the document.
    pub id: Option<String>,
    pub text: String,
    pub source: Option<String>,
    pub metadata: serde_json::Value,
    pub kind: TextKind,
}

/// What ingestion did with one document.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Ingested {
    pub id: String,
    pub chunks: usize,
    /// A document with this id existed and was replaced.
    pub replaced: bool,
}

#[derive(Clone)]
pub struct Ingestor {
    store: Arc<DocumentStore>,
    embedder: Embedding,
    chunker: Arc<Chunker>,
}

impl Ingestor {
    pub fn new(store: Arc<DocumentStore>, embedder: Embedding, chunker: Chunker) -> Self {
        Self {
            store,
            embedder,
            chunker: Arc::new(chunker),
        }
    }

    /// Check a document without doing any work, so that a batch can be
    /// refused whole before any of it is written.
    pub fn validate(doc: &DocumentInput) -> Result<()> {
        if doc.text.trim().is_empty() {
            return Err(Error::InvalidInput("the document text is empty".into()));
        }
        if let Some(id) = &doc.id {
            if id.is_empty()
                || id.chars().count() > MAX_ID_CHARS
                || id.chars().any(char::is_control)
            {
                return Err(Error::InvalidInput(format!(
                    "a document id must be 1 to {MAX_ID_CHARS} characters without control characters"
                )));
            }
        }
        if !(doc.metadata.is_object() || doc.metadata.is_null()) {
            return Err(Error::InvalidInput("metadata must be a JSON object".into()));
        }
        Ok(())
    }

    pub async fn ingest(&self, doc: DocumentInput) -> Result<Ingested> {
        Self::validate(&doc)?;
        let id = doc.id.clone().unwrap_or_else(new_id);
        let chunker = self.chunker.clone();
        let (doc, chunks) = blocking(move || {
            let chunks = chunker.split(&doc.text, doc.kind);
            Ok((doc, chunks))
        })
        .await?;
        let embeddings = self
            .embedder
            .embed(chunks.iter().map(|c| c.text.clone()).collect())
            .await?;
        let store = self.store.clone();
        blocking(move || {
            let metadata = if doc.metadata.is_null() {
                serde_json::json!({})
            } else {
                doc.metadata.clone()
            };
            let replaced = store.put(&NewDocument {
                id: &id,
                source: doc.source.as_deref(),
                metadata: &metadata,
                text: &doc.text,
                chunks: &chunks,
                embeddings: &embeddings,
            })?;
            Ok(Ingested {
                id,
                chunks: chunks.len(),
                replaced,
            })
        })
        .await
    }
}

/// Documents ingested at once by [`Ingestor::ingest_all`]: enough to keep
/// the embedder's batches full.
pub const IN_FLIGHT: usize = 4;

impl Ingestor {
    /// Ingest many documents, [`IN_FLIGHT`] at a time, answering in order.
    /// `prepare` makes each item a document, or `None` to skip it (it runs
    /// as the item's turn comes, so a failure stops the rest).
    pub fn ingest_all<'a, T: 'a>(
        &'a self,
        items: impl IntoIterator<Item = T> + 'a,
        prepare: impl Fn(T) -> Result<Option<DocumentInput>> + 'a,
    ) -> impl futures_util::Stream<Item = Result<Option<Ingested>>> + 'a {
        use futures_util::StreamExt;
        futures_util::stream::iter(items)
            .map(move |item| {
                let doc = prepare(item);
                async move {
                    match doc? {
                        Some(doc) => self.ingest(doc).await.map(Some),
                        None => Ok(None),
                    }
                }
            })
            .buffered(IN_FLIGHT)
    }
}

fn new_id() -> String {
    use rand::Rng;
    let bytes: [u8; 12] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
