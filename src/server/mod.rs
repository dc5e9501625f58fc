//! The HTTP server (axum): this file only builds the router. Each route's
//! handler lives in a leaf file by concept (`generate`: `/rag` and
//! `/fine-tuned`; `openai`: `/v1/...`, with `tool_calls` for its tools; `documents`: the store; `raw`: the
//! model routes other hearth processes call; `health`, `topology`,
//! `openapi`, `observe` (`/metrics`, request ids); `page` (`GET /`, the web page); `gateway`: the front door's proxy). What handlers share:
//! `state` (what every handler can reach), `stream` (SSE and usage),
//! `error` (every error as JSON), `auth` (API keys). `lifecycle` runs the
//! process. Handlers are thin: they parse, call a pipeline, and shape the
//! answer.

mod adapters;
mod auth;
mod documents;
pub mod error;
mod gateway;
mod generate;
mod health;
mod lifecycle;
mod observe;
mod openai;
mod openapi;
mod page;
mod raw;
mod state;
mod stream;
mod tool_calls;
mod topology;

pub use lifecycle::{lock_data_dir, Server};
pub use state::{AppState, Backends, Spec};

use crate::config::Role;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use error::ApiError;
use std::sync::Arc;

/// Every route, in every role but the gateway: a route whose part this
/// role does not run answers 404 naming the role that does.
pub fn router(state: Arc<AppState>) -> Router {
    if state.spec.role == Role::Gateway {
        return layers(gateway::router(), state);
    }
    let routes = Router::new()
        .route("/", get(page::page))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/info", get(health::info))
        .route("/topology", get(topology::topology))
        .route("/openapi.json", get(openapi::document))
        .route("/metrics", get(observe::metrics))
        .route("/generate", post(raw::generate))
        .route("/tokenize", post(raw::tokenize))
        .route("/generator", get(raw::generator))
        .route("/embedder", get(raw::embedder))
        .route("/rag", post(generate::rag))
        .route("/fine-tuned", post(generate::fine_tuned))
        .route("/adapters", get(adapters::get).post(adapters::load))
        .route("/adapters/{name}", axum::routing::delete(adapters::unload))
        .route("/search", post(documents::search))
        .route("/embed", post(documents::embed))
        .route("/v1/models", get(openai::models))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/completions", post(openai::completions))
        .route("/v1/embeddings", post(openai::embeddings))
        .route("/documents", post(documents::create).get(documents::list))
        .route(
            "/documents/{id}",
            get(documents::get).delete(documents::delete),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed);
    layers(routes, state)
}

/// Authentication, body limits and tracing, around any role's routes.
fn layers(routes: Router<Arc<AppState>>, state: Arc<AppState>) -> Router {
    let max_body = state.config.limits.max_body_bytes;
    routes
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authorize,
        ))
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            observe::track,
        ))
        // Request spans at debug level; errors worth a look are logged
        // where they happen (500s in `ApiError`), not every 503 while loading.
        .layer(
            tower_http::trace::TraceLayer::new_for_http().on_failure(
                tower_http::trace::DefaultOnFailure::new().level(tracing::Level::DEBUG),
            ),
        )
        .with_state(state)
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "route_not_found",
        format!("no route {}", uri.path()),
    )
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
}
