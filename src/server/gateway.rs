//! The front door of the `gateway` topology: one URL for clients, routing
//! each request to the process that serves it, streaming both ways.
//!
//! - By path: `/rag`, `/search`, `/embed`, `/documents...` go to the `rag`
//!   process (the one store writer); `/fine-tuned` to the `fine-tuned` one.
//! - By the body's `model`: `/v1/chat/completions`, `/v1/completions`,
//!   `/v1/embeddings` and `/v1/messages...` go to the process whose
//!   `/v1/models` lists it.
//! - Itself: `/healthz`, `/readyz` (every backend ready), `/info`,
//!   `/topology`, `/openapi.json`, `/api/version`, and `/v1/models`,
//!   `/api/tags` and `/api/ps` (the backends' union).
//!
//! A backend that does not answer gives a 502 JSON error at once, never a
//! hang; requests to the other backend are unaffected. A backend's URL may
//! name several replicas (a headless Service): each request goes to the
//! least busy one, a refused connection is retried on another, and a
//! failing replica is left out for a while (`engine::replicas`).

use super::error::ApiError;
use super::state::AppState;
use super::{health, openapi, topology};
use crate::engine::remote::is_ready;
use crate::engine::replicas::{Lease, Replicas};
use crate::roles::{Backend, MODEL_ROUTES};
use crate::telemetry::{self, REQUEST_ID_HEADER, TIMEOUT_HEADER};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::sync::Arc;

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/", get(super::page::page))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(readyz))
        .route("/info", get(info))
        .route("/topology", get(topology::topology))
        .route("/openapi.json", get(openapi::document))
        .route("/metrics", get(super::observe::metrics))
        .route("/v1/models", get(models))
        .route("/api/tags", get(tags))
        .route("/api/ps", get(ps))
        .route("/api/version", get(super::ollama::version))
        .fallback(proxy)
}

/// Ready when every backend is.
async fn readyz(State(state): State<Arc<AppState>>) -> Result<Json<health::Status>, ApiError> {
    for (backend, replicas) in &state.replicas {
        if !any_ready(&state.client, replicas).await {
            return Err(ApiError::not_ready(format!(
                "no replica of the {} process at {} is ready",
                backend.name(),
                replicas.url()
            )));
        }
    }
    Ok(Json(health::Status {
        status: "ready".into(),
    }))
}

/// Whether some replica answers `/readyz`.
async fn any_ready(client: &reqwest::Client, replicas: &Arc<Replicas>) -> bool {
    replicas.refresh(false).await;
    for replica in replicas.states() {
        if is_ready(client, &replica.url).await {
            return true;
        }
    }
    false
}

async fn info(State(state): State<Arc<AppState>>) -> Json<Value> {
    let backends: serde_json::Map<String, Value> = state
        .spec
        .backends
        .all()
        .into_iter()
        .map(|(backend, url)| (backend.name().to_string(), json!(url)))
        .collect();
    Json(json!({
        "name": "hearth",
        "version": env!("CARGO_PKG_VERSION"),
        "role": "gateway",
        "listen": state.addr.to_string(),
        "pid": std::process::id(),
        "uptime_s": state.started.elapsed().as_secs_f64(),
        "ready": true,
        "serves": super::health::serves(&state.spec),
        "backends": backends,
    }))
}

fn unreachable(backend: Backend, url: &str, e: impl std::fmt::Display) -> ApiError {
    ApiError {
        retry_after: Some(1),
        ..ApiError::new(
            StatusCode::BAD_GATEWAY,
            "backend_unavailable",
            format!(
                "the {} process at {url} is not answering: {e}",
                backend.name()
            ),
        )
    }
}

/// A model list merged from every backend that answers, without repeats.
struct List {
    /// The backends' route.
    path: &'static str,
    /// The field holding the list, and each entry's name in it.
    field: &'static str,
    key: &'static str,
}

/// OpenAI's `/v1/models`, and Ollama's `/api/tags` and `/api/ps`.
const MODELS: List = List {
    path: "/v1/models",
    field: "data",
    key: "id",
};
const TAGS: List = List {
    path: "/api/tags",
    field: "models",
    key: "name",
};
const LOADED: List = List {
    path: "/api/ps",
    field: "models",
    key: "name",
};

async fn merged(
    state: &AppState,
    headers: &HeaderMap,
    list: &List,
) -> Result<Vec<Value>, Response> {
    let mut data: Vec<Value> = Vec::new();
    let mut last_error = None;
    for (backend, replicas) in &state.replicas {
        match fetch_list(&state.client, replicas, headers, list).await {
            Ok(entries) => {
                for entry in entries {
                    if !data.iter().any(|m| m[list.key] == entry[list.key]) {
                        data.push(entry);
                    }
                }
            }
            Err(Fetch::Refused(response)) => return Err(response),
            Err(Fetch::Unreachable(e)) => {
                last_error = Some(unreachable(*backend, replicas.url(), e))
            }
        }
    }
    match (data.is_empty(), last_error) {
        (true, Some(e)) => Err(e.into_response()),
        _ => Ok(data),
    }
}

/// The models of every backend that answers, without repeats.
async fn models(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    match merged(&state, &headers, &MODELS).await {
        Ok(data) => Json(json!({ "object": "list", "data": data })).into_response(),
        Err(response) => response,
    }
}

/// Ollama's lists of every backend that answers.
async fn tags(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    match merged(&state, &headers, &TAGS).await {
        Ok(models) => Json(json!({ "models": models })).into_response(),
        Err(response) => response,
    }
}

async fn ps(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    match merged(&state, &headers, &LOADED).await {
        Ok(models) => Json(json!({ "models": models })).into_response(),
        Err(response) => response,
    }
}

enum Fetch {
    /// The backend answered with an error (401, 503): pass it on.
    Refused(Response),
    Unreachable(String),
}

async fn fetch_list(
    client: &reqwest::Client,
    replicas: &Arc<Replicas>,
    headers: &HeaderMap,
    list: &List,
) -> Result<Vec<Value>, Fetch> {
    let lease = replicas
        .pick()
        .await
        .ok_or_else(|| Fetch::Unreachable("its name resolves to no address".into()))?;
    let mut request = client.get(format!("{}{}", lease.base, list.path));
    for name in [axum::http::header::AUTHORIZATION.as_str(), "x-api-key"] {
        if let Some(key) = headers.get(name) {
            request = request.header(name, key);
        }
    }
    let response = request.send().await.map_err(|e| {
        lease.failed();
        Fetch::Unreachable(e.to_string())
    })?;
    lease.succeeded();
    if !response.status().is_success() {
        return Err(Fetch::Refused(relay(response, None)));
    }
    let body: Value = response
        .json()
        .await
        .map_err(|e| Fetch::Unreachable(e.to_string()))?;
    Ok(body[list.field].as_array().cloned().unwrap_or_default())
}

async fn proxy(State(state): State<Arc<AppState>>, request: Request) -> Response {
    match route(&state, request).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

async fn route(state: &AppState, request: Request) -> Result<Response, ApiError> {
    let path = request.uri().path().to_string();
    if let Some(backend) = Backend::of_path(&path) {
        return forward(state, backend, request, None).await;
    }
    if !MODEL_ROUTES.contains(&path.as_str()) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "route_not_found",
            format!("no route {path}"),
        ));
    }
    // Read the body to find the model; anything unreadable goes to the rag
    // process, whose answer (a JSON error) is the one a unified server gives.
    let (parts, body) = request.into_parts();
    let bytes = read_body(state, &path, body).await?;
    let model = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|v| v["model"].as_str().map(String::from));
    let request = Request::from_parts(parts, Body::empty());
    let backend = match model {
        None => Backend::Rag,
        // Ollama's clients tag names (`hearth-rag:latest`); the lists are untagged.
        Some(model) if path.starts_with("/api/") => {
            owner_of(state, super::ollama::untagged(&model), request.headers()).await?
        }
        Some(model) => owner_of(state, &model, request.headers()).await?,
    };
    forward(state, backend, request, Some(bytes)).await
}

/// Read a request's body whole (so that it can be sent again to another
/// replica), within the body limit (`max_upload_bytes` for file uploads
/// to `/documents`).
async fn read_body(
    state: &AppState,
    path: &str,
    body: Body,
) -> Result<axum::body::Bytes, ApiError> {
    let limits = &state.config.limits;
    let (limit, name) = if path == "/documents" {
        (limits.max_upload_bytes(), "max_upload_bytes")
    } else {
        (limits.max_body_bytes, "max_body_bytes")
    };
    axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request_too_large",
            format!("the request body is larger than limits.{name} ({limit} bytes)"),
        )
    })
}

fn no_backend(backend: Backend) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_served_here",
        format!("this gateway has no {} process behind it", backend.name()),
    )
}

/// The backend whose `/v1/models` lists `model`.
async fn owner_of(state: &AppState, model: &str, headers: &HeaderMap) -> Result<Backend, ApiError> {
    if let Some(backend) = state.model_routes.get(model) {
        return Ok(backend);
    }
    let mut unreachable_error = None;
    let mut lists = Vec::new();
    for (backend, replicas) in &state.replicas {
        match fetch_list(&state.client, replicas, headers, &MODELS).await {
            Ok(list) => lists.push((*backend, list)),
            Err(Fetch::Refused(_)) => {}
            Err(Fetch::Unreachable(e)) => {
                unreachable_error = Some(unreachable(*backend, replicas.url(), e))
            }
        }
    }
    let owner = lists
        .iter()
        .find(|(_, list)| list.iter().any(|m| m["id"] == model))
        .map(|(backend, _)| *backend);
    // Remember the map only once every backend answered, so that a model
    // both serve is not pinned to the one that happened to be up.
    if unreachable_error.is_none() {
        for (backend, list) in &lists {
            let ids = list.iter().filter_map(|m| m["id"].as_str());
            state.model_routes.learn(*backend, ids);
        }
    }
    if let Some(backend) = owner {
        return Ok(backend);
    }
    // A backend that is down may be the one serving it: say so rather than
    // claim the model does not exist.
    if let Some(e) = unreachable_error {
        return Err(e);
    }
    Err(ApiError::model_not_found(model))
}

/// Headers that belong to one connection, not to the request.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
];

/// Send the request on to a replica of `backend` (another one while
/// connections are refused) and stream the answer back. Dropping the answer
/// (the client went away) closes the backend connection, which cancels the
/// generation there.
async fn forward(
    state: &AppState,
    backend: Backend,
    request: Request,
    buffered: Option<axum::body::Bytes>,
) -> Result<Response, ApiError> {
    let replicas = state
        .replicas_of(backend)
        .ok_or_else(|| no_backend(backend))?;
    let (parts, body) = request.into_parts();
    let bytes = match buffered {
        Some(bytes) => bytes,
        None => read_body(state, parts.uri.path(), body).await?,
    };
    let target = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .to_string();
    let mut headers = HeaderMap::new();
    for (key, value) in &parts.headers {
        if !HOP_BY_HOP.contains(&key.as_str())
            && ![REQUEST_ID_HEADER, TIMEOUT_HEADER].contains(&key.as_str())
        {
            headers.append(key, value.clone());
        }
    }
    // The backend works under the same id and what is left of the deadline.
    if let Some(id) = telemetry::request_id().and_then(|id| id.parse().ok()) {
        headers.insert(REQUEST_ID_HEADER, id);
    }
    let began = std::time::Instant::now();
    let mut tried = Vec::new();
    let mut lease = replicas
        .pick()
        .await
        .ok_or_else(|| unreachable(backend, replicas.url(), "its name resolves to no address"))?;
    loop {
        let mut outgoing = state
            .client
            .request(parts.method.clone(), format!("{}{target}", lease.base))
            .headers(headers.clone())
            .body(bytes.clone());
        if let Some(left) = telemetry::remaining() {
            outgoing = outgoing.header(
                TIMEOUT_HEADER,
                format!("{:.3}", left.as_secs_f64().max(0.001)),
            );
        }
        match outgoing.send().await {
            Ok(response) => {
                lease.succeeded();
                telemetry::backend_request(backend.name(), true, began.elapsed().as_secs_f64());
                return Ok(relay(response, Some(lease)));
            }
            Err(e) => {
                lease.failed();
                let next = if e.is_connect() {
                    tried.push(lease.base.clone());
                    replicas.pick_other(&tried)
                } else {
                    None
                };
                match next {
                    Some(next) => lease = next,
                    None => {
                        telemetry::backend_request(
                            backend.name(),
                            false,
                            began.elapsed().as_secs_f64(),
                        );
                        return Err(unreachable(backend, &lease.base, e));
                    }
                }
            }
        }
    }
}

/// The backend's answer, streamed; the replica counts as busy (its lease
/// held) until the answer's last byte is passed on.
fn relay(response: reqwest::Response, lease: Option<Lease>) -> Response {
    let mut builder = Response::builder().status(response.status());
    for (key, value) in response.headers() {
        if !HOP_BY_HOP.contains(&key.as_str()) {
            builder = builder.header(key, value);
        }
    }
    let stream = response.bytes_stream().map(move |chunk| {
        let _busy = &lease;
        chunk
    });
    builder.body(Body::from_stream(stream)).unwrap_or_else(|e| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "bad_backend_response",
            format!("could not relay the backend's answer: {e}"),
        )
        .into_response()
    })
}
