//! Ingestion: validate a document, chunk it, place each chunk (its page
//! and heading), embed the chunks on the embedding worker, and write it to
//! the store (durable when this returns).

use crate::engine::blocking;
use crate::engine::Embedding;
use crate::error::{Error, Result};
use crate::store::chunking::Chunker;
use crate::store::extract::Extracted;
use crate::store::{DocumentStore, NewDocument};
use serde::Serialize;
use std::sync::Arc;

/// Longest document id accepted, in bytes.
pub const MAX_ID_CHARS: usize = 512;

/// A document as a client sends it, its text already extracted.
#[derive(Debug, Clone)]
pub struct DocumentInput {
    /// The collection it goes to.
    pub collection: String,
    /// Chosen by the client, or generated. Re-using an id replaces the document.
    pub id: Option<String>,
    pub source: Option<String>,
    pub metadata: serde_json::Value,
    /// A title given by the client; otherwise the file's own.
    pub title: Option<String>,
    /// The SHA-256 of the file it came from (hex).
    pub hash: Option<String>,
    pub content: Extracted,
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
        if doc.content.text.trim().is_empty() {
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
            let mut chunks = split_by_section(&chunker, &doc.content);
            for chunk in &mut chunks {
                (chunk.page, chunk.heading) = doc.content.place(chunk.start);
            }
            Ok((doc, chunks))
        })
        .await?;
        // Behind any query: a large folder being ingested delays a search
        // by one batch at most.
        let embeddings = self
            .embedder
            .embed_bulk(chunks.iter().map(|c| c.text.clone()).collect())
            .await?;
        let store = self.store.clone();
        blocking(move || {
            let metadata = if doc.metadata.is_null() {
                serde_json::json!({})
            } else {
                doc.metadata.clone()
            };
            let replaced = store.put(&NewDocument {
                collection: &doc.collection,
                id: &id,
                source: doc.source.as_deref(),
                title: doc.title.as_deref().or(doc.content.title.as_deref()),
                hash: doc.hash.as_deref(),
                metadata: &metadata,
                text: &doc.content.text,
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

/// Cut a document into chunks that never cross a heading, so that each
/// chunk's heading is the section it is from, not one it merely starts in.
/// Each section is cut on its own; text before the first heading is a
/// section too.
fn split_by_section(chunker: &Chunker, content: &Extracted) -> Vec<crate::store::Chunk> {
    let text = &content.text;
    let mut bounds: Vec<usize> = content.headings.iter().map(|(at, _)| *at).collect();
    bounds.insert(0, 0);
    bounds.push(text.len());
    bounds.dedup();
    let mut chunks = Vec::new();
    for pair in bounds.windows(2) {
        let (start, end) = (pair[0], pair[1]);
        for mut chunk in chunker.split(&text[start..end], content.kind) {
            chunk.start += start;
            chunk.end += start;
            chunks.push(chunk);
        }
    }
    chunks
}

fn new_id() -> String {
    use rand::Rng;
    let bytes: [u8; 12] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
