//! `/documents` (ingest as JSON or as uploaded files, read, list,
//! delete) and `/search` (retrieval alone), each within one collection.

use super::error::{reject_unknown, ApiError, ApiJson, ErrorBody};
use super::fields::RetrievalFields;
use super::state::AppState;
use crate::pipelines::ingest::Ingested;
use crate::pipelines::ingest::{DocumentInput, Ingestor};
use crate::store::chunking::TextKind;
use crate::store::extract::{self, Extracted, Format};
use crate::store::{Chunk, DocumentInfo, Passage, DEFAULT_COLLECTION};
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequest, Path, Query, Request, State};
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
    /// The collection it goes to (default `default`); it must exist.
    collection: Option<String>,
    source: Option<String>,
    /// The title sources cite (default: the first Markdown heading, or an
    /// HTML document's `<title>`).
    title: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    metadata: Value,
    /// "text" (default), "markdown" or "html": how the text is read and
    /// may be cut.
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
        let content = match body.format.as_deref() {
            None | Some("text") => Extracted::from_text(body.text, TextKind::Plain),
            Some("markdown") => Extracted::from_text(body.text, TextKind::Markdown),
            Some("html") => extract::extract(body.text.as_bytes(), None, Some(Format::Html))
                .map_err(|e| ApiError::from(e).with_message(place))?,
            Some(other) => {
                return Err(ApiError::bad_request(place(format!(
                    "format must be \"text\", \"markdown\" or \"html\", got {other:?} \
                     (upload other files as multipart/form-data)"
                ))))
            }
        };
        let doc = DocumentInput {
            collection: body
                .collection
                .unwrap_or_else(|| DEFAULT_COLLECTION.to_string()),
            id: body.id,
            source: body.source,
            metadata: body.metadata,
            title: body.title,
            hash: None,
            content,
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
    Html,
}

/// What `POST /documents` stored.
#[derive(Debug, Serialize, ToSchema)]
pub struct Created {
    pub documents: Vec<Ingested>,
}

/// Files sent as `multipart/form-data` (what a browser's file input or
/// `curl -F file=@report.pdf` sends): one or more `file` parts, and
/// optional `collection`, `id` (one file only), `source`, `title` and
/// `metadata` (a JSON object) fields.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct Upload {
    /// A PDF (text layer), DOCX, PPTX, HTML, Markdown or text file; the
    /// format is read from the content.
    #[schema(value_type = Vec<String>, format = Binary)]
    file: Vec<u8>,
    collection: Option<String>,
    id: Option<String>,
    source: Option<String>,
    title: Option<String>,
    metadata: Option<String>,
}

/// Ingest documents: as JSON (one object, an array of them, or
/// `{"documents": [...]}`) or as uploaded files (`multipart/form-data`).
/// The whole batch is checked before any is written; an existing id in
/// the collection is replaced.
#[utoipa::path(post, path = "/documents", tag = "documents",
    request_body(content(
        (DocumentBody = "application/json"),
        (Upload = "multipart/form-data"),
    )),
    responses(
        (status = 201, description = "Stored, durably", body = Created),
        (status = 400, description = "Invalid document (empty text, bad id, duplicate ids in a batch)", body = ErrorBody),
        (status = 404, description = "No such collection", body = ErrorBody),
        (status = 413, description = "Body over max_body_bytes (JSON) or max_upload_bytes (files)", body = ErrorBody),
        (status = 422, description = "Missing field, wrong type or unknown field; a file that cannot be read or holds no text (a PDF without a text layer)", body = ErrorBody),
        (status = 503, description = "Loading or overloaded", body = ErrorBody),
    ))]
pub async fn create(
    State(state): State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<super::auth::Caller>,
    request: Request,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let multipart = request
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    if multipart {
        let form = axum::extract::Multipart::from_request(request, &state)
            .await
            .map_err(|r| ApiError::new(r.status(), "invalid_body", r.body_text()))?;
        return upload(state, &caller, form).await;
    }
    let ApiJson(body) = ApiJson::<Value>::from_request(request, &state).await?;
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
            caller.write(&doc.collection)?;
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
    store_all(services, &caller, docs, |id| {
        format!("document id {id:?} appears twice in the batch")
    })
    .await
}

/// Ingest checked documents after refusing a batch that names one id
/// twice (`twice` says so); 201 with what was stored.
async fn store_all(
    services: &crate::pipelines::Services,
    caller: &super::auth::Caller,
    docs: Vec<DocumentInput>,
    twice: impl Fn(&str) -> String,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    for doc in &docs {
        caller.write(&doc.collection)?;
    }
    let mut ids: Vec<(&str, &str)> = docs
        .iter()
        .filter_map(|d| Some((d.collection.as_str(), d.id.as_deref()?)))
        .collect();
    ids.sort_unstable();
    if let Some(w) = ids.windows(2).find(|w| w[0] == w[1]) {
        return Err(ApiError::bad_request(twice(w[0].1)));
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

/// Ingest uploaded files: every part is read and every file extracted
/// before any is written, so a bad file refuses the whole upload.
async fn upload(
    state: Arc<AppState>,
    caller: &super::auth::Caller,
    mut form: axum::extract::Multipart,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let services = state.services()?;
    let too_large = |e: axum::extract::multipart::MultipartError| {
        let status = e.status();
        let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
            format!(
                "the upload is larger than limits.max_upload_bytes ({} bytes)",
                state.config.limits.max_upload_bytes
            )
        } else {
            e.body_text()
        };
        ApiError::new(status, "invalid_body", message)
    };
    let mut files: Vec<(Option<String>, axum::body::Bytes)> = Vec::new();
    let mut fields: Map<String, Value> = Map::new();
    while let Some(field) = form.next_field().await.map_err(too_large)? {
        let name = field.name().unwrap_or_default().to_string();
        match name.as_str() {
            "file" | "files" | "file[]" => {
                let file_name = field.file_name().map(str::to_string);
                files.push((file_name, field.bytes().await.map_err(too_large)?));
            }
            "collection" | "id" | "source" | "title" | "metadata" => {
                let text = field.text().await.map_err(too_large)?;
                fields.insert(name, Value::String(text));
            }
            other => {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_field",
                    format!(
                        "unknown form field {other:?}: send `file` parts, and optionally \
                         `collection`, `id`, `source`, `title` and `metadata`"
                    ),
                ))
            }
        }
    }
    if files.is_empty() || files.len() > MAX_BATCH {
        return Err(ApiError::bad_request(format!(
            "an upload holds 1 to {MAX_BATCH} `file` parts, got {}",
            files.len()
        )));
    }
    let text = |name: &str| fields.get(name).and_then(Value::as_str).map(str::to_string);
    if text("id").is_some() && files.len() > 1 {
        return Err(ApiError::bad_request(
            "`id` names one document: upload one file with it, or let each file's name be its id",
        )
        .param("id"));
    }
    let metadata = match text("metadata") {
        None => Value::Null,
        Some(m) => serde_json::from_str::<Value>(&m)
            .ok()
            .filter(Value::is_object)
            .ok_or_else(|| {
                ApiError::bad_request("`metadata` must be a JSON object").param("metadata")
            })?,
    };
    let collection = text("collection").unwrap_or_else(|| DEFAULT_COLLECTION.to_string());
    // Before any file is read: a key learns nothing from a refused upload.
    caller.write(&collection)?;
    let mut docs = Vec::with_capacity(files.len());
    for (i, (file_name, bytes)) in files.into_iter().enumerate() {
        let place = |m: String| match &file_name {
            Some(n) => format!("{n}: {m}"),
            None => format!("file {i}: {m}"),
        };
        let name = file_name.clone();
        let (content, hash) =
            crate::engine::blocking(move || extract::read_bytes(&bytes, name.as_deref()))
                .await
                .map_err(|e| ApiError::from(e).with_message(place))?;
        let doc = DocumentInput {
            collection: collection.clone(),
            id: text("id").or_else(|| file_name.clone()),
            source: text("source").or_else(|| file_name.clone()),
            metadata: metadata.clone(),
            title: text("title"),
            hash: Some(hash),
            content,
        };
        Ingestor::validate(&doc).map_err(|e| ApiError::bad_request(place(e.to_string())))?;
        docs.push(doc);
    }
    store_all(services, caller, docs, |id| {
        format!("two files are named {id:?}; upload them separately with an `id` each")
    })
    .await
}

/// Which collection a document route reads (`?collection=`, default
/// `default`).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct InCollection {
    /// The collection (default `default`).
    collection: Option<String>,
}

impl InCollection {
    fn name(&self) -> String {
        self.collection
            .clone()
            .unwrap_or_else(|| DEFAULT_COLLECTION.to_string())
    }
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
    pub collection: String,
    pub source: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    #[schema(value_type = Object)]
    pub metadata: Value,
    /// Unix seconds.
    pub created_at: i64,
    pub chars: usize,
}

/// One document, its text and its chunks.
#[utoipa::path(get, path = "/documents/{id}", tag = "documents",
    params(("id" = String, Path, description = "Document id"), InCollection),
    responses(
        (status = 200, body = Document),
        (status = 404, description = "No such document or collection", body = ErrorBody),
    ))]
pub async fn get(
    State(state): State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<super::auth::Caller>,
    Path(id): Path<String>,
    within: Result<Query<InCollection>, QueryRejection>,
) -> Result<Json<Document>, ApiError> {
    let Query(within) = within?;
    caller.read(&within.name())?;
    let (info, text, chunks) = state.services()?.docs()?.get(within.name(), id).await?;
    Ok(Json(Document {
        info: DocumentInfoWithoutCount {
            id: info.id,
            collection: info.collection,
            title: info.title,
            hash: info.hash,
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
    params(("id" = String, Path, description = "Document id"), InCollection),
    responses(
        (status = 200, body = Deleted),
        (status = 404, description = "No such document or collection", body = ErrorBody),
    ))]
pub async fn delete(
    State(state): State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<super::auth::Caller>,
    Path(id): Path<String>,
    within: Result<Query<InCollection>, QueryRejection>,
) -> Result<Json<Deleted>, ApiError> {
    let Query(within) = within?;
    caller.write(&within.name())?;
    let chunks = state
        .services()?
        .docs()?
        .delete(within.name(), id.clone())
        .await?;
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
    /// The collection (default `default`).
    collection: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DocumentPage {
    pub documents: Vec<DocumentInfo>,
    pub total: usize,
    pub limit: usize,
    pub offset: usize,
}

/// A collection's documents in id order, a page at a time.
#[utoipa::path(get, path = "/documents", tag = "documents", params(Page),
    responses(
        (status = 200, body = DocumentPage),
        (status = 400, description = "Bad limit or offset", body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<super::auth::Caller>,
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
    let collection = page
        .collection
        .unwrap_or_else(|| DEFAULT_COLLECTION.to_string());
    caller.read(&collection)?;
    let (docs, total) = state
        .services()?
        .docs()?
        .list(collection, limit, offset)
        .await?;
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
    axum::Extension(caller): axum::Extension<super::auth::Caller>,
    ApiJson(req): ApiJson<SearchRequest>,
) -> Result<Json<SearchResponse>, ApiError> {
    reject_unknown(&req.unknown)?;
    let services = state.services()?;
    let found = services
        .rag()?
        .retriever()
        .search(
            &req.query,
            &req.retrieval.options(&caller, req.top_k, req.exact)?,
        )
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
