//! The router: every route of every role, and the layers around them
//! (API keys, body limits, request ids and deadlines, tracing); a route
//! nothing serves is a JSON 404, a wrong method a JSON 405.

use super::error::ApiError;
use super::state::AppState;
use super::{
    adapters, anthropic, auth, collections, dialect, documents, gateway, health, observe, ollama,
    openai, openapi, page, pipelines, raw, rerank, responses, tokens, topology,
};
use crate::config::Role;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
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
        .route("/generator", get(raw::generator))
        .route("/embedder", get(raw::embedder))
        .route("/rag", post(pipelines::rag))
        .route("/fine-tuned", post(pipelines::fine_tuned))
        .route("/adapters", get(adapters::get).post(adapters::load))
        .route("/adapters/{name}", axum::routing::delete(adapters::unload))
        .route("/search", post(documents::search))
        .route("/embed", post(documents::embed))
        .route("/v1/models", get(openai::models))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/completions", post(openai::completions))
        .route("/v1/embeddings", post(openai::embeddings))
        .route("/v1/responses", post(responses::responses))
        .route("/v1/messages", post(anthropic::messages))
        .route("/v1/messages/count_tokens", post(anthropic::count_tokens))
        .route("/v1/rerank", post(rerank::rerank))
        .route("/rerank", post(rerank::rerank))
        .route("/tokenize", post(tokens::tokenize))
        .route("/detokenize", post(tokens::detokenize))
        .route("/apply-template", post(tokens::apply_template))
        .route("/api/chat", post(ollama::chat))
        .route("/api/generate", post(ollama::generate))
        .route("/api/embed", post(ollama::embed))
        .route("/api/embeddings", post(ollama::embeddings))
        .route("/api/tags", get(ollama::tags))
        .route("/api/ps", get(ollama::ps))
        .route("/api/show", post(ollama::show))
        .route("/api/version", get(ollama::version))
        .route(
            "/documents",
            post(documents::create)
                .layer(DefaultBodyLimit::max(
                    state.config.limits.max_upload_bytes(),
                ))
                .get(documents::list),
        )
        .route(
            "/collections",
            get(collections::list).post(collections::create),
        )
        .route(
            "/collections/{name}",
            axum::routing::delete(collections::delete),
        )
        .route(
            "/documents/{id}",
            get(documents::get).delete(documents::delete),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed);
    layers(routes, state)
}

/// Authentication, body limits, error shapes and tracing, around any
/// role's routes.
fn layers(routes: Router<Arc<AppState>>, state: Arc<AppState>) -> Router {
    let max_body = state.config.limits.max_body_bytes;
    routes
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authorize,
        ))
        .layer(DefaultBodyLimit::max(max_body))
        // Outside the key check and the body limit, so that their refusals
        // take the shape of the API asked for too.
        .layer(axum::middleware::from_fn(dialect::shape_errors))
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

#[cfg(test)]
mod tests {
    //! The router's refusals that need no model, in process
    //! (`tower::ServiceExt::oneshot`): no port, no weights, milliseconds.
    //! The same refusals with models loaded are in `tests/hostile.rs`.
    use super::*;
    use crate::config::Config;
    use crate::server::state::Spec;
    use axum::body::Body;
    use axum::http::{header, Method, Request};
    use serde_json::Value;
    use std::sync::OnceLock;
    use std::time::Instant;
    use tower::ServiceExt;

    /// A unified process's router whose models never load (every route
    /// that needs them answers 503), with `keys` as its API keys.
    fn app(keys: &[&str], max_body_bytes: usize) -> Router {
        let mut config = Config {
            api_keys: keys.iter().map(|k| k.to_string()).collect(),
            ..Config::default()
        };
        config.limits.max_body_bytes = max_body_bytes;
        router(Arc::new(AppState {
            config,
            spec: Spec::unified(),
            addr: "127.0.0.1:0".parse().expect("an address"),
            services: OnceLock::new(),
            started: Instant::now(),
            client: reqwest::Client::new(),
            model_routes: Default::default(),
            replicas: Vec::new(),
        }))
    }

    /// Send one request; the status and the JSON body.
    async fn call(
        app: Router,
        method: Method,
        path: &str,
        body: &str,
        key: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(key) = key {
            request = request.header(header::AUTHORIZATION, format!("Bearer {key}"));
        }
        let response = app
            .oneshot(
                request
                    .body(Body::from(body.to_string()))
                    .expect("a request"),
            )
            .await
            .expect("the router always answers");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("a body");
        let json = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "{status}: not JSON ({e}): {}",
                String::from_utf8_lossy(&bytes)
            )
        });
        (status, json)
    }

    /// OpenAI's error shape: `{"error": {"message", "type", "param", "code"}}`.
    fn assert_error(body: &Value, code: &str) {
        let error = &body["error"];
        assert_eq!(error["code"], code, "{body}");
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{body}"
        );
        assert!(error["type"].is_string(), "{body}");
        assert!(error.get("param").is_some(), "{body}");
    }

    #[tokio::test]
    async fn unknown_routes_and_methods_are_json_404_and_405() {
        let (status, body) = call(app(&[], 1 << 20), Method::GET, "/nope", "", None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_error(&body, "route_not_found");
        let (status, body) = call(app(&[], 1 << 20), Method::GET, "/rag", "", None).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_error(&body, "method_not_allowed");
    }

    #[tokio::test]
    async fn bad_bodies_are_4xx_before_any_model_is_needed() {
        for (path, body, status) in [
            ("/rag", "{not json", StatusCode::BAD_REQUEST),
            ("/rag", "[1, 2]", StatusCode::UNPROCESSABLE_ENTITY),
            (
                "/rag",
                r#"{"question": 3}"#,
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            ("/fine-tuned", "", StatusCode::BAD_REQUEST),
            ("/v1/chat/completions", "{", StatusCode::BAD_REQUEST),
            (
                "/search",
                r#"{"query": "q", "top_k": "five"}"#,
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
        ] {
            let (got, json) = call(app(&[], 1 << 20), Method::POST, path, body, None).await;
            assert_eq!(got, status, "{path} {body}: {json}");
            assert!(json["error"]["message"].is_string(), "{json}");
        }
        // Unknown fields on hearth's own routes: 422 naming the field.
        let (status, json) = call(
            app(&[], 1 << 20),
            Method::POST,
            "/rag",
            r#"{"question": "q", "qestion_typo": 1}"#,
            None,
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_error(&json, "invalid_field");
        assert!(json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("qestion_typo"));
    }

    #[tokio::test]
    async fn a_well_formed_request_waits_for_the_models_with_503() {
        let (status, json) = call(
            app(&[], 1 << 20),
            Method::POST,
            "/rag",
            r#"{"question": "q"}"#,
            None,
        )
        .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{json}");
        assert!(
            json["error"]["message"]
                .as_str()
                .unwrap()
                .contains("loading"),
            "{json}"
        );
        let (status, _) = call(app(&[], 1 << 20), Method::GET, "/readyz", "", None).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        let (status, json) = call(app(&[], 1 << 20), Method::GET, "/healthz", "", None).await;
        assert_eq!(status, StatusCode::OK, "{json}");
    }

    #[tokio::test]
    async fn api_keys_guard_every_route_but_the_probes() {
        let keys = ["k1", "k2"];
        let (status, json) = call(app(&keys, 1 << 20), Method::GET, "/v1/models", "", None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_error(&json, "invalid_api_key");
        let (status, json) = call(
            app(&keys, 1 << 20),
            Method::GET,
            "/documents",
            "",
            Some("k3"),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(json["error"]["message"], "invalid API key");
        // The second key is as good as the first; then the 503 of loading.
        let (status, _) = call(
            app(&keys, 1 << 20),
            Method::GET,
            "/documents",
            "",
            Some("k2"),
        )
        .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        for open in ["/healthz", "/openapi.json"] {
            let (status, _) = call(app(&keys, 1 << 20), Method::GET, open, "", None).await;
            assert_eq!(status, StatusCode::OK, "{open}");
        }
        // An unknown route is refused before it is found: no route list for strangers.
        let (status, _) = call(app(&keys, 1 << 20), Method::GET, "/nope", "", None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }

    /// Anthropic's error shape on Anthropic's routes, whoever refuses:
    /// the key check (which takes `x-api-key`), the body limit, the JSON
    /// extractor, the wait for the models.
    #[tokio::test]
    async fn anthropic_routes_answer_errors_in_anthropics_shape() {
        let anthropic = |body: &Value, kind: &str| {
            assert_eq!(body["type"], "error", "{body}");
            assert_eq!(body["error"]["type"], kind, "{body}");
            assert!(
                body["error"]["message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty()),
                "{body}"
            );
        };
        let keys = ["k1"];
        let (status, json) = call(
            app(&keys, 1 << 20),
            Method::POST,
            "/v1/messages",
            "{}",
            None,
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        anthropic(&json, "authentication_error");
        let request = |key: &str| {
            Request::builder()
                .method(Method::POST)
                .uri("/v1/messages")
                .header(header::CONTENT_TYPE, "application/json")
                .header("x-api-key", key)
                .body(Body::from(
                    r#"{"model": "m", "messages": [], "max_tokens": 4}"#,
                ))
                .expect("a request")
        };
        let response = app(&keys, 1 << 20)
            .oneshot(request("k1"))
            .await
            .expect("an answer");
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("a body");
        anthropic(
            &serde_json::from_slice(&bytes).expect("JSON"),
            "overloaded_error",
        );
        let response = app(&keys, 1 << 20)
            .oneshot(request("k2"))
            .await
            .expect("an answer");
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        for (body, status, limit) in [
            ("{", StatusCode::BAD_REQUEST, 1 << 20),
            (r#"{"model": 3}"#, StatusCode::UNPROCESSABLE_ENTITY, 1 << 20),
            (
                r#"{"model": "m", "messages": []}"#,
                StatusCode::PAYLOAD_TOO_LARGE,
                8,
            ),
        ] {
            for path in ["/v1/messages", "/v1/messages/count_tokens"] {
                let (got, json) = call(app(&[], limit), Method::POST, path, body, None).await;
                assert_eq!(got, status, "{path} {body}: {json}");
                let kind = if status == StatusCode::PAYLOAD_TOO_LARGE {
                    "request_too_large"
                } else {
                    "invalid_request_error"
                };
                anthropic(&json, kind);
            }
        }
        // OpenAI's routes keep OpenAI's shape.
        let (_, json) = call(
            app(&[], 1 << 20),
            Method::POST,
            "/v1/chat/completions",
            "{",
            None,
        )
        .await;
        assert!(json["error"]["code"].is_string(), "{json}");
    }

    #[tokio::test]
    async fn bodies_over_the_limit_are_413() {
        let big = format!(r#"{{"question": "{}"}}"#, "x".repeat(2048));
        let (status, json) = call(app(&[], 1024), Method::POST, "/rag", &big, None).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{json}");
        assert!(json["error"]["message"].is_string(), "{json}");
    }
}
