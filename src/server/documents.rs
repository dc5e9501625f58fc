//! `/documents` (ingest, read, list, delete) and `/search` (retrieval alone).

use super::error::{reject_unknown, ApiError, ApiJson};
use super::generate::sources;
use super::AppState;
use crate::pipelines::ingest::{blocking, DocumentInput, Ingestor};
use crate::store::chunking::TextKind;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use futures_util::{StreamExt, TryStreamExt};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// Most documents in one `POST /documents`.
pub const MAX_BATCH: usize = 1000;
/// Most documents per page of `GET /documents`.
pub const MAX_PAGE: usize = 1000;

#[derive(Debug, Deserialize)]
struct DocumentBody {
    id: Option<String>,
    text: String,
    source: Option<String>,
    #[serde(default)]
    metadata: Value,
    /// "markdown" or "text" (default): how the text may be cut.
    format: Option<String>,
    #[serde(flatten)]
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

/// `POST /documents`: one document object, an array of them, or
/// `{"documents": [...]}`. The whole batch is checked before any is written.
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
            let done = services.ingestor.ingest(doc).await?;
            return Ok((StatusCode::CREATED, Json(json!({ "documents": [done] }))));
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
    // A few documents in flight keep the embedder's batches full.
    let ingestor = &services.ingestor;
    let done: Vec<_> = futures_util::stream::iter(docs)
        .map(|d| ingestor.ingest(d))
        .buffered(4)
        .try_collect()
        .await?;
    Ok((StatusCode::CREATED, Json(json!({ "documents": done }))))
}

/// `GET /documents/{id}`: the document, its text and its chunks.
pub async fn get(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let store = state.services()?.store.clone();
    let (info, text, chunks) = blocking(move || store.get(&id)).await?;
    let mut body = serde_json::to_value(info).expect("document info serialises");
    body["text"] = json!(text);
    body["chunks"] = json!(chunks);
    Ok(Json(body))
}

/// `DELETE /documents/{id}`.
pub async fn delete(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let store = state.services()?.store.clone();
    let doc_id = id.clone();
    let chunks = blocking(move || store.delete(&doc_id)).await?;
    Ok(Json(json!({ "id": id, "deleted": true, "chunks": chunks })))
}

#[derive(Debug, Deserialize)]
pub struct Page {
    limit: Option<usize>,
    offset: Option<usize>,
}

/// `GET /documents?limit&offset`, in id order.
pub async fn list(
    State(state): State<Arc<AppState>>,
    page: Result<Query<Page>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(page) = page?;
    let limit = page.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::bad_request(format!(
            "limit must be between 1 and {MAX_PAGE}"
        )));
    }
    let offset = page.offset.unwrap_or(0);
    let store = state.services()?.store.clone();
    let (docs, total) = blocking(move || store.list(limit, offset)).await?;
    Ok(Json(
        json!({ "documents": docs, "total": total, "limit": limit, "offset": offset }),
    ))
}

#[derive(Debug, Deserialize)]
pub struct SearchRequest {
    query: String,
    top_k: Option<usize>,
    /// Compare with every chunk instead of using the index (the ground truth).
    #[serde(default)]
    exact: bool,
    #[serde(flatten)]
    unknown: Map<String, Value>,
}

/// `POST /search`: scored chunks, without generation.
pub async fn search(
    State(state): State<Arc<AppState>>,
    ApiJson(req): ApiJson<SearchRequest>,
) -> Result<Json<Value>, ApiError> {
    reject_unknown(&req.unknown)?;
    let services = state.services()?;
    let found = services
        .rag
        .retriever()
        .search(&req.query, req.top_k, req.exact)
        .await?;
    Ok(Json(json!({
        "results": sources(&found.passages),
        "timings": { "embed_ms": found.embed_ms, "search_ms": found.search_ms },
    })))
}

#[derive(Debug, Deserialize)]
pub struct EmbedRequest {
    /// A text or a list of texts.
    input: Value,
    #[serde(flatten)]
    unknown: Map<String, Value>,
}

/// `POST /embed`: vectors for texts (L2-normalised, in input order).
pub async fn embed(
    State(state): State<Arc<AppState>>,
    ApiJson(req): ApiJson<EmbedRequest>,
) -> Result<Json<Value>, ApiError> {
    reject_unknown(&req.unknown)?;
    let services = state.services()?;
    let texts = super::openai::input_texts(req.input)?;
    let (vectors, tokens) = services.embed(texts).await?;
    Ok(Json(json!({
        "embeddings": vectors,
        "model": services.info.embedder.name,
        "usage": { "prompt_tokens": tokens },
    })))
}
