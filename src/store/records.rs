//! The store's records as callers see them: a document to write
//! ([`NewDocument`]), a stored one ([`DocumentInfo`]), its pieces
//! ([`Chunk`]) and a retrieved piece with its scores ([`Passage`]). Types
//! only, shared by the database and the store above it.

use serde::Serialize;

/// A piece of a document, with its byte offsets in the document's text
/// and where in the document it sits.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Chunk {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    pub start: usize,
    pub end: usize,
    pub text: String,
    /// The page it starts on (1-based), for documents with pages (PDF).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page: Option<u32>,
    /// The heading of the section it starts in (Markdown, HTML, DOCX).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heading: Option<String>,
}

/// A collection: a set of documents searched together, with its own
/// vector index, that keys may be allowed to read or write.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CollectionInfo {
    pub name: String,
    /// Unix seconds.
    pub created_at: i64,
    pub documents: usize,
    pub chunks: usize,
}

/// A stored document, without its text.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DocumentInfo {
    pub id: String,
    pub collection: String,
    pub source: Option<String>,
    /// The document's title (from the file, or given).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// The SHA-256 of the file it was read from (hex), when it came from
    /// one: what `hearth documents sync` compares.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
    /// Unix seconds.
    pub created_at: i64,
    pub chars: usize,
    pub chunks: usize,
}

/// A retrieved chunk with its scores and its document's details.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Passage {
    pub document_id: String,
    pub chunk_id: i64,
    /// The document's title, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// The page the passage starts on (PDF).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page: Option<u32>,
    /// The heading of the section it starts in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heading: Option<String>,
    /// Byte offsets of the passage in the document's text.
    pub start: usize,
    pub end: usize,
    /// What the results are ordered by: the cosine similarity (dense
    /// search), the BM25 score (lexical), the fused score (hybrid), or the
    /// reranker's score.
    pub score: f32,
    /// Cosine similarity between the query and this chunk (when the query
    /// was embedded): comparable across queries and modes, and what
    /// `min_score` is checked against.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dense_score: Option<f32>,
    /// BM25 score of the query's words in this chunk (higher is better),
    /// when it matched any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lexical_score: Option<f32>,
    /// 1-based rank in the dense list, when it was in it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dense_rank: Option<usize>,
    /// 1-based rank in the lexical list, when it was in it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lexical_rank: Option<usize>,
    /// The cross-encoder's score (higher is better), when a reranker
    /// re-scored the candidates; `score` is then this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rerank_score: Option<f32>,
    pub text: String,
    pub source: Option<String>,
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
}

/// A document to write, already chunked, with one embedding per chunk.
pub struct NewDocument<'a> {
    pub collection: &'a str,
    pub id: &'a str,
    pub source: Option<&'a str>,
    pub title: Option<&'a str>,
    pub hash: Option<&'a str>,
    pub metadata: &'a serde_json::Value,
    pub text: &'a str,
    pub chunks: &'a [Chunk],
    pub embeddings: &'a [Vec<f32>],
}
