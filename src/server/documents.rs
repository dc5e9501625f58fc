//! `/documents` (ingest, read, list, delete) and `/search` (retrieval alone).

use super::error::{reject_unknown, ApiError, ApiJson, ErrorBody};
use super::fields::RetrievalFields;
use super::state::AppState;
use crate::pipelines::ingest::Ingested;
use crate::pipelines::ingest::{DocumentInput, Ingestor};
use crate::store::chunking::TextKind;
use crate::store::{Chunk, DocumentInfo, Passage};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::sync::Arc;
use utoipa::{IntoParams, ToSchema};

/// Most documents in one `POST /documents`.
pub const MAX_BATCH: usize = 1000;
/// Most documents per page of `GET /documents`.
pub const MAX_PAGE: usize = 1000;

/// A document to ingest. `POST /documents` takes one, an array of them, or
/// `{"documents": [...]}`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct DocumentBody {
    #[schema(min_length = 1)]
    id: Option<String>,
    #[schema(min_length = 1)]
    text: String,
    source: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    metadata: Value,
    /// "markdown" or "text" (default): how the text may be cut.
    #[schema(value_type = Option<DocumentFormat>)]
    format: Option<String>,
    #[serde(flatten)]
    #[schema(ignore)]
    unknown: Map<String, Value>,
}

impl DocumentBody {
    fn parse(value: Value, at: Option<usize>) -> Result<DocumentInput, ApiError> {
        let place = |msg: String| match at {
            Some(i) => format!("documents[{i}]: {msg}"),
            None => msg,
        };
        let body: DocumentBody = serde_json::from_value(value).map_err(|e| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_field",
                place(e.to_string()),
            )
        })?;
        reject_unknown(&body.unknown).map_err(|e| ApiError {
            message: place(e.message),
            ..e
        })?;
        let kind = match body.format.as_deref() {
            None | Some("text") => TextKind::Plain,
            Some("markdown") => TextKind::Markdown,
            Some(other) => {
                return Err(ApiError::bad_request(place(format!(
                    "format must be \"text\" or \"markdown\", got {other:?}"
                ))))
            }
        };
        let doc = DocumentInput {
            id: body.id,
            text: body.text,
            source: body.source,
            metadata: body.metadata,
            kind,
        };
        Ingestor::validate(&doc).map_err(|e| ApiError::bad_request(place(e.to_string())))?;
        Ok(doc)
    }
}

/// How a document's text may be cut (its schema; the field is read as a
/// string so that a wrong value gets a message naming the choices).
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum DocumentFormat {
    Text,
    Markdown,
}

/// What `POST /documents` stored.
#[derive(Debug, Serialize, ToSchema)]
pub struct Created {
    pub documents: Vec<Ingested>,
}

/// Ingest documents: one object, an array of them, or `{"documents": [...]}`.
/// The whole batch is checked before any is written; an existing id is replaced.
#[utoipa::path(post, path = "/documents", tag = "documents", request_body = DocumentBody,
    responses(
        (status = 201, description = "Stored, durably", body = Created),
        (status = 400, description = "Invalid document (empty text, bad id, duplicate ids in a batch)", body = ErrorBody),
        (status = 413, description = "Body over max_body_bytes", body = ErrorBody),
        (status = 422, description = "Missing field, wrong type or unknown field", body = ErrorBody),
        (status = 503, description = "Loading or overloaded", body = ErrorBody),
    ))]
pub async fn create(
    State(state): State<Arc<AppState>>,
    ApiJson(body): ApiJson<Value>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let services = state.services()?;
    let items = match body {
        Value::Array(items) => items,
        Value::Object(mut map) if map.contains_key("documents") => match map.remove("documents") {
            Some(Value::Array(items)) if map.is_empty() => items,
            _ => {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_field",
                    "`documents` must be an array, and the only field",
                ))
            }
        },
        one @ Value::Object(_) => {
            let doc = DocumentBody::parse(one, None)?;
            let done = services.docs()?.ingestor.ingest(doc).await?;
            return Ok((
                StatusCode::CREATED,
                Json(json!(Created {
                    documents: vec![done]
                })),
            ));
        }
        _ => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_field",
                "the body must be a document object or an array of them",
            ))
        }
    };
    if items.is_empty() || items.len() > MAX_BATCH {
        return Err(ApiError::bad_request(format!(
            "a batch holds 1 to {MAX_BATCH} documents, got {}",
            items.len()
        )));
    }
    let docs = items
        .into_iter()
        .enumerate()
        .map(|(i, v)| DocumentBody::parse(v, Some(i)))
        .collect::<Result<Vec<_>, _>>()?;
    let mut ids: Vec<&str> = docs.iter().filter_map(|d| d.id.as_deref()).collect();
    ids.sort_unstable();
    if let Some(w) = ids.windows(2).find(|w| w[0] == w[1]) {
        return Err(ApiError::bad_request(format!(
            "document id {:?} appears twice in the batch",
            w[0]
        )));
    }
    let ingestor = &services.docs()?.ingestor;
    let done: Vec<Option<Ingested>> = ingestor
        .ingest_all(docs, |d| Ok(Some(d)))
        .try_collect()
        .await?;
    let done: Vec<Ingested> = done.into_iter().flatten().collect();
    Ok((
        StatusCode::CREATED,
        Json(json!(Created { documents: done })),
    ))
}

/// A document with its text and chunks.
#[derive(Debug, Serialize, ToSchema)]
pub struct Document {
    #[serde(flatten)]
    pub info: DocumentInfoWithoutCount,
    pub text: String,
    pub chunks: Vec<Chunk>,
}

/// [`DocumentInfo`] less its chunk count (the chunks themselves follow).
#[derive(Debug, Serialize, ToSchema)]
pub struct DocumentInfoWithoutCount {
    pub id: String,
    pub source: Option<String>,
    #[schema(value_type = Object)]
    pub metadata: Value,
    /// Unix seconds.
    pub created_at: i64,
    pub chars: usize,
}

/// One document, its text and its chunks.
#[utoipa::path(get, path = "/documents/{id}", tag = "documents",
    params(("id" = String, Path, description = "Document id")),
    responses(
        (status = 200, body = Document),
        (status = 404, description = "No such document", body = ErrorBody),
    ))]
pub async fn get(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Document>, ApiError> {
    let (info, text, chunks) = state.services()?.docs()?.get(id).await?;
    Ok(Json(Document {
        info: DocumentInfoWithoutCount {
            id: info.id,
            source: info.source,
            metadata: info.metadata,
            created_at: info.created_at,
            chars: info.chars,
        },
        text,
        chunks,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Deleted {
    pub id: String,
    pub deleted: bool,
    /// Chunks removed with it.
    pub chunks: usize,
}

/// Delete a document; it is no longer retrieved from this moment.
#[utoipa::path(delete, path = "/documents/{id}", tag = "documents",
    params(("id" = String, Path, description = "Document id")),
    responses(
        (status = 200, body = Deleted),
        (status = 404, description = "No such document", body = ErrorBody),
    ))]
pub async fn delete(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Deleted>, ApiError> {
    let chunks = state.services()?.docs()?.delete(id.clone()).await?;
    Ok(Json(Deleted {
        id,
        deleted: true,
        chunks,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Page {
    /// Documents per page (1 to 1000; default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// Documents to skip.
    offset: Option<usize>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DocumentPage {
    pub documents: Vec<DocumentInfo>,
    pub total: usize,
    pub limit: usize,
    pub offset: usize,
}

/// Documents in id order, a page at a time.
#[utoipa::path(get, path = "/documents", tag = "documents", params(Page),
    responses(
        (status = 200, body = DocumentPage),
        (status = 400, description = "Bad limit or offset", body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    page: Result<Query<Page>, QueryRejection>,
) -> Result<Json<DocumentPage>, ApiError> {
    let Query(page) = page?;
    let limit = page.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::bad_request(format!(
            "limit must be between 1 and {MAX_PAGE}"
        )));
    }
    let offset = page.offset.unwrap_or(0);
    let (docs, total) = state.services()?.docs()?.list(limit, offset).await?;
    Ok(Json(DocumentPage {
        documents: docs,
        total,
        limit,
        offset,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct SearchRequest {
    #[schema(min_length = 1)]
    query: String,
    #[serde(default, deserialize_with = "crate::server::fields::integer::opt")]
    top_k: Option<usize>,
    /// The dense list by comparing with every chunk instead of using the
    /// index (the ground truth).
    #[serde(default)]
    exact: bool,
    #[serde(flatten)]
    retrieval: RetrievalFields,
    #[serde(flatten)]
    #[schema(ignore)]
    unknown: Map<String, Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SearchResponse {
    /// Best first, by `score`: the cosine similarity (dense), BM25
    /// (lexical) or the fused score (hybrid); `dense_score` is always the
    /// cosine similarity.
    pub results: Vec<Passage>,
    pub timings: SearchTimings,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SearchTimings {
    pub embed_ms: f64,
    pub search_ms: f64,
}

/// Retrieval alone: scored chunks, without generation.
#[utoipa::path(post, path = "/search", tag = "documents", request_body = SearchRequest,
    responses(
        (status = 200, body = SearchResponse),
        (status = 400, description = "Empty query, top_k or min_score out of range, or a filter that cannot be read", body = ErrorBody),
        (status = 422, description = "Missing field, wrong type or unknown field", body = ErrorBody),
    ))]
pub async fn search(
    State(state): State<Arc<AppState>>,
    ApiJson(req): ApiJson<SearchRequest>,
) -> Result<Json<SearchResponse>, ApiError> {
    reject_unknown(&req.unknown)?;
    let services = state.services()?;
    let found = services
        .rag()?
        .retriever()
        .search(&req.query, &req.retrieval.options(req.top_k, req.exact))
        .await?;
    Ok(Json(SearchResponse {
        results: found.passages,
        timings: SearchTimings {
            embed_ms: found.embed_ms,
            search_ms: found.search_ms,
        },
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct EmbedRequest {
    /// A text or a list of texts.
    #[schema(value_type = Object)]
    input: Value,
    #[serde(flatten)]
    #[schema(ignore)]
    unknown: Map<String, Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EmbedResponse {
    /// One L2-normalised vector per input text, in order. The f32 values
    /// are written exactly (as their f64 expansion), so they equal what
    /// `/v1/embeddings` returns, as floats or base64.
    pub embeddings: Vec<Vec<f64>>,
    pub model: String,
    pub usage: EmbedUsage,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EmbedUsage {
    pub prompt_tokens: usize,
}

/// Vectors for texts.
#[utoipa::path(post, path = "/embed", tag = "embeddings", request_body = EmbedRequest,
    responses(
        (status = 200, body = EmbedResponse),
        (status = 400, description = "Empty input or too many texts", body = ErrorBody),
    ))]
pub async fn embed(
    State(state): State<Arc<AppState>>,
    ApiJson(req): ApiJson<EmbedRequest>,
) -> Result<Json<EmbedResponse>, ApiError> {
    reject_unknown(&req.unknown)?;
    let services = state.services()?;
    let texts = super::fields::input_texts(req.input)?;
    let (vectors, tokens) = services.embed_counted(texts).await?;
    Ok(Json(EmbedResponse {
        embeddings: vectors
            .iter()
            .map(|v| v.iter().map(|&x| f64::from(x)).collect())
            .collect(),
        model: services.embedding()?.name().to_string(),
        usage: EmbedUsage {
            prompt_tokens: tokens,
        },
    }))
}
