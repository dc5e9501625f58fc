//! The store's records as callers see them: a document to write
//! ([`NewDocument`]), a stored one ([`DocumentInfo`]), its pieces
//! ([`Chunk`]) and a retrieved piece with its scores ([`Passage`]). Types
//! only, shared by the database and the store above it.

use serde::Serialize;

/// A piece of a document, with its byte offsets in the document's text.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Chunk {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    pub start: usize,
    pub end: usize,
    pub text: String,
}

/// A stored document, without its text.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DocumentInfo {
    pub id: String,
    pub source: Option<String>,
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
    pub id: &'a str,
    pub source: Option<&'a str>,
    pub metadata: &'a serde_json::Value,
    pub text: &'a str,
    pub chunks: &'a [Chunk],
    pub embeddings: &'a [Vec<f32>],
}
