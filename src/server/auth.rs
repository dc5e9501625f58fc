//! API keys: with `api_keys` configured, every route but the probes and
//! the API's description requires `Authorization: Bearer KEY` (or
//! Anthropic's `x-api-key: KEY`).

use super::error::ApiError;
use super::state::AppState;
use axum::http::StatusCode;
use std::sync::Arc;

/// Routes anyone may call, keys or not: probes must work without secrets,
/// and the API's description and the web page (which asks for a key
/// before it calls anything else) hold none.
const OPEN_ROUTES: &[&str] = &["/", "/healthz", "/readyz", "/openapi.json"];

/// Anthropic's header for the key, taken as well as a bearer token.
const API_KEY_HEADER: &str = "x-api-key";

/// With `api_keys` set, require `Authorization: Bearer KEY` or `x-api-key:
/// KEY` (compared in constant time) on every route but the probes.
pub(super) async fn authorize(
    axum::extract::State(state): axum::extract::State<Arc<AppState>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    use subtle::ConstantTimeEq;
    let keys = &state.config.api_keys;
    if keys.is_empty() || OPEN_ROUTES.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    // Anthropic's clients send the key as `x-api-key`. (Owned: a borrow of
    // the request held across the await below would make it not `Send`.)
    let given: String = {
        let header = |name| request.headers().get(name).and_then(|v| v.to_str().ok());
        header(axum::http::header::AUTHORIZATION.as_str())
            .and_then(|v| v.strip_prefix("Bearer "))
            .or_else(|| header(API_KEY_HEADER))
            .unwrap_or("")
            .to_string()
    };
    // Check every key, so the time taken does not say which one matched.
    let matched = keys.iter().fold(subtle::Choice::from(0), |acc, key| {
        acc | key.as_bytes().ct_eq(given.as_bytes())
    });
    if bool::from(matched) {
        next.run(request).await
    } else {
        let message = if given.is_empty() {
            "missing API key: send `Authorization: Bearer KEY` (or `x-api-key: KEY`)"
        } else {
            "invalid API key"
        };
        ApiError::new(StatusCode::UNAUTHORIZED, "invalid_api_key", message).into_response()
    }
}
