//! `GET /`: the web page for people (chat with both pipelines and their
//! sources, the document store, the topology's processes and figures),
//! one HTML file with its CSS and JavaScript, built into the binary: no
//! build step, no CDN, works offline. It calls the same routes as any
//! client, with the API key the user gives it.

use axum::http::header;
use axum::response::{IntoResponse, Response};

const PAGE: &str = include_str!("page.html");

/// The web page (no key needed to load it; it asks for one when the
/// server does).
#[utoipa::path(get, path = "/", tag = "health", responses(
    (status = 200, description = "The web page: chat, sources, documents, status", content_type = "text/html"),
))]
pub async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            // Only this origin: the page loads nothing from elsewhere.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; img-src 'self' data:",
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        PAGE,
    )
        .into_response()
}
