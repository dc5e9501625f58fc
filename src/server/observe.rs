//! What every role's HTTP layer tells its operators: `GET /metrics`
//! (Prometheus text format, from `telemetry`), and the middleware that
//! gives each request its id (`x-request-id`: the client's, or a new one;
//! echoed on the response, carried into the request's log lines and to
//! the hearth processes it calls) and counts it by route and status.

use super::error::ApiError;
use super::state::AppState;
use crate::error::Error;
use crate::telemetry::{self, DEADLINE, REQUEST_ID, REQUEST_ID_HEADER, TIMEOUT_HEADER};
use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

/// Every metric of this process, in Prometheus's text format (0.0.4).
#[utoipa::path(get, path = "/metrics", tag = "health", responses(
    (status = 200, description = "Prometheus text exposition: request counts and latencies, generation and embedding figures, the store's sizes, process memory, files and threads (docs/metrics.md)", content_type = "text/plain"),
))]
pub async fn metrics(
    State(state): State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<super::auth::Caller>,
) -> Response {
    use axum::response::IntoResponse;
    // The store's sizes are the whole store's: for keys that may see it all.
    if let Err(e) = caller.manage("read the server's metrics") {
        return e.into_response();
    }
    if let Some(docs) = state.services.get().and_then(|s| s.docs().ok()) {
        if let Ok(stats) = docs.stats().await {
            telemetry::store_sizes(
                stats.documents as u64,
                stats.chunks as u64,
                stats.index_points.saturating_sub(stats.index_deleted) as u64,
            );
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        telemetry::render(),
    )
        .into_response()
}

/// The request's time limit: its `x-request-timeout` (seconds) up to the
/// configured maximum, else the configured default.
fn time_limit(request: &Request, state: &AppState) -> Result<Duration, ApiError> {
    let limits = &state.config.limits;
    let Some(value) = request.headers().get(TIMEOUT_HEADER) else {
        return Ok(Duration::from_secs_f64(limits.request_timeout_s));
    };
    let max = limits.max_request_timeout_s;
    match value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
    {
        Some(s) if s > 0.0 && s <= max => Ok(Duration::from_secs_f64(s)),
        _ => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_header",
            format!("{TIMEOUT_HEADER} must be a number of seconds above 0 and at most {max}"),
        )
        .param(TIMEOUT_HEADER)),
    }
}

/// Give the request its id and deadline, run it inside a span that
/// carries the id (and where the remote clients find both), echo the id,
/// and count it. Past the deadline the handler is dropped (which cancels
/// its generation) and the client gets a 504; a stream already started
/// ends with an error event instead, from the generation worker.
pub async fn track(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let began = Instant::now();
    let id = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|id| telemetry::valid_request_id(id))
        .map(str::to_string)
        .unwrap_or_else(telemetry::new_request_id);
    let route = request
        .extensions()
        .get::<MatchedPath>()
        // Not a route: the fallback (the gateway's proxy, or a 404).
        .map_or("fallback", |p| p.as_str())
        .to_string();
    let method = request.method().to_string();
    let probe = matches!(route.as_str(), "/healthz" | "/readyz" | "/metrics");
    let in_flight = (!probe).then(telemetry::InFlight::start);
    let span = tracing::info_span!("request", id = %id, method = %method, route = %route);
    let mut response = match time_limit(&request, &state) {
        Err(e) => e.into_response(),
        Ok(limit) => {
            let run = DEADLINE.scope(
                began + limit,
                REQUEST_ID.scope(id.clone(), next.run(request)),
            );
            match tokio::time::timeout(limit, run.instrument(span.clone())).await {
                Ok(response) => response,
                Err(_) => ApiError::from(Error::Deadline(format!(
                    "the request took longer than its time limit of {:.3} s ({TIMEOUT_HEADER} or limits.request_timeout_s); its work was stopped",
                    limit.as_secs_f64()
                )))
                .into_response(),
            }
        }
    };
    let status = response.status().as_u16();
    if !probe {
        span.in_scope(|| {
            tracing::info!(status, ms = began.elapsed().as_secs_f64() * 1e3, "answered");
        });
    }
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    telemetry::http_request(&route, &method, status, began.elapsed().as_secs_f64());
    match in_flight {
        // Counted until the answer's last byte (a stream's too) is sent.
        Some(guard) => response.map(|inner| {
            Body::new(Counted {
                inner,
                _guard: guard,
            })
        }),
        None => response,
    }
}

/// An answer's body that holds its request's in-flight count until it is
/// sent whole or dropped; otherwise the body itself (size and all).
struct Counted {
    inner: Body,
    _guard: telemetry::InFlight,
}

impl http_body::Body for Counted {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
