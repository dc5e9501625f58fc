//! Which API's shape an error takes. Every error is made once, in hearth's
//! (OpenAI's) shape, by [`super::error`]; a response to a request on
//! Anthropic's routes (`/v1/messages...`) has it rewritten here into
//! Anthropic's, `{"type": "error", "error": {"type", "message"}}`, and on
//! Ollama's (`/api/...`) into Ollama's, `{"error": "..."}`, whoever refused
//! the request: the API key check, the body limit, the JSON extractor or
//! the handler. Errors inside a stream that already said 200 are shaped by
//! the route that streams.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use serde_json::{json, Value};

/// The API a route belongs to, for the shape of its errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// hearth's own routes and OpenAI's: `{"error": {"message", "type", "param", "code"}}`.
    OpenAi,
    /// Anthropic's Messages API.
    Anthropic,
    /// Ollama's API.
    Ollama,
}

impl Dialect {
    pub fn of_path(path: &str) -> Self {
        if path == "/v1/messages" || path.starts_with("/v1/messages/") {
            Dialect::Anthropic
        } else if path.starts_with("/api/") {
            Dialect::Ollama
        } else {
            Dialect::OpenAi
        }
    }
}

/// Anthropic's error `type` for an HTTP status.
pub fn anthropic_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        504 => "timeout_error",
        s if s >= 500 => "api_error",
        _ => "invalid_request_error",
    }
}

/// The field at fault, when there is one, leads the message
/// (`max_tokens: ...`), as Anthropic's own messages do.
fn led_by_param(message: &str, param: Option<&str>) -> String {
    match param {
        Some(p) if !message.starts_with(p) => format!("{p}: {message}"),
        _ => message.to_string(),
    }
}

/// An error in Anthropic's shape.
pub fn anthropic_body(status: StatusCode, message: &str, param: Option<&str>) -> Value {
    let message = led_by_param(message, param);
    json!({ "type": "error", "error": { "type": anthropic_type(status), "message": message } })
}

/// An error in Ollama's shape.
pub fn ollama_body(message: &str, param: Option<&str>) -> Value {
    json!({ "error": led_by_param(message, param) })
}

/// Error bodies this large or larger are passed on as they are.
const MAX_ERROR_BODY: usize = 1 << 20;

/// Rewrite an error response's body into the dialect of the route asked for.
pub(super) async fn shape_errors(request: Request, next: Next) -> Response {
    let dialect = Dialect::of_path(request.uri().path());
    let response = next.run(request).await;
    let status = response.status();
    if dialect == Dialect::OpenAi || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let shape = |message: &str, param: Option<&str>| match dialect {
        Dialect::Anthropic => anthropic_body(status, message, param),
        _ => ollama_body(message, param),
    };
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_ERROR_BODY).await else {
        let body = shape("the error could not be read", None);
        return Response::from_parts(parts, Body::from(body.to_string()));
    };
    // hearth's shape has an `error` object; anything else is already the
    // dialect's (a backend's answer, relayed by a gateway).
    let error = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .filter(|v| v["error"].is_object());
    let Some(message) = error.as_ref().and_then(|v| v["error"]["message"].as_str()) else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    let param = error.as_ref().and_then(|v| v["error"]["param"].as_str());
    let body = shape(message, param).to_string();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, Body::from(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anthropic_routes_and_error_types() {
        assert_eq!(Dialect::of_path("/v1/messages"), Dialect::Anthropic);
        assert_eq!(
            Dialect::of_path("/v1/messages/count_tokens"),
            Dialect::Anthropic
        );
        assert_eq!(Dialect::of_path("/v1/messagesx"), Dialect::OpenAi);
        assert_eq!(Dialect::of_path("/v1/chat/completions"), Dialect::OpenAi);
        assert_eq!(Dialect::of_path("/api/chat"), Dialect::Ollama);
        assert_eq!(
            ollama_body("must be x", Some("format")),
            json!({ "error": "format: must be x" })
        );
        assert_eq!(
            anthropic_type(StatusCode::BAD_REQUEST),
            "invalid_request_error"
        );
        assert_eq!(
            anthropic_type(StatusCode::UNPROCESSABLE_ENTITY),
            "invalid_request_error"
        );
        assert_eq!(
            anthropic_type(StatusCode::UNAUTHORIZED),
            "authentication_error"
        );
        assert_eq!(anthropic_type(StatusCode::NOT_FOUND), "not_found_error");
        assert_eq!(
            anthropic_type(StatusCode::PAYLOAD_TOO_LARGE),
            "request_too_large"
        );
        assert_eq!(
            anthropic_type(StatusCode::SERVICE_UNAVAILABLE),
            "overloaded_error"
        );
        assert_eq!(anthropic_type(StatusCode::BAD_GATEWAY), "api_error");
        let body = anthropic_body(StatusCode::BAD_REQUEST, "is required", Some("max_tokens"));
        assert_eq!(body["type"], "error");
        assert_eq!(body["error"]["message"], "max_tokens: is required");
    }
}
