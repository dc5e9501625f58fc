//! The HTTP server (axum): routes, request limits, errors as JSON, and the
//! process lifecycle (bind, load models in the background, answer 503 until
//! ready, save the index periodically, stop gracefully on SIGINT/SIGTERM).
//! Handlers are thin: they parse, call a pipeline, and shape the answer.

mod documents;
pub mod error;
mod gateway;
mod generate;
mod health;
mod openai;
mod openapi;
mod raw;
mod topology;

pub use gateway::Backends;

use crate::config::{Config, LlmSlot, Role};
use crate::engine::blocking;
use crate::error::{Error, Result};
use crate::pipelines::Services;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use error::ApiError;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

/// What one `hearth serve` process is: its role, which LLM a `generate`
/// process serves, and the processes a gateway fronts.
#[derive(Debug, Clone)]
pub struct Spec {
    pub role: Role,
    pub model: LlmSlot,
    pub backends: Backends,
}

impl Spec {
    pub fn unified() -> Self {
        Self {
            role: Role::All,
            model: LlmSlot::RagGenerator,
            backends: Backends::default(),
        }
    }

    /// Whether this process owns (and so locks and writes) the store.
    fn owns_store(&self) -> bool {
        matches!(self.role, Role::All | Role::Rag)
    }
}

/// What every handler can reach.
pub struct AppState {
    pub config: Config,
    pub spec: Spec,
    /// The address actually bound (the config may say port 0).
    pub addr: SocketAddr,
    /// Set once the models are loaded and the index is ready.
    pub services: OnceLock<Services>,
    pub started: Instant,
    /// For gateways and remote probes.
    pub client: reqwest::Client,
    /// A gateway's map from model id to backend.
    pub model_routes: gateway::ModelRoutes,
}

impl AppState {
    /// The pipelines, or 503 while they load.
    pub fn services(&self) -> Result<&Services, ApiError> {
        self.services
            .get()
            .ok_or_else(|| ApiError::not_ready("hearth is loading its models; retry shortly"))
    }
}

/// Every route, in every role but the gateway: a route whose part this
/// role does not run answers 404 naming the role that does.
pub fn router(state: Arc<AppState>) -> Router {
    if state.spec.role == Role::Gateway {
        return layers(gateway::router(), state);
    }
    let routes = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/info", get(health::info))
        .route("/topology", get(topology::topology))
        .route("/openapi.json", get(openapi::document))
        .route("/generate", post(raw::generate))
        .route("/tokenize", post(raw::tokenize))
        .route("/generator", get(raw::generator))
        .route("/embedder", get(raw::embedder))
        .route("/rag", post(generate::rag))
        .route("/fine-tuned", post(generate::fine_tuned))
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
            authorize,
        ))
        .layer(DefaultBodyLimit::max(max_body))
        // Request spans at debug level; errors worth a look are logged
        // where they happen (500s in `ApiError`), not every 503 while loading.
        .layer(
            tower_http::trace::TraceLayer::new_for_http().on_failure(
                tower_http::trace::DefaultOnFailure::new().level(tracing::Level::DEBUG),
            ),
        )
        .with_state(state)
}

/// Routes anyone may call, keys or not: probes must work without secrets,
/// and the API's description holds none.
const OPEN_ROUTES: &[&str] = &["/healthz", "/readyz", "/openapi.json"];

/// With `api_keys` set, require `Authorization: Bearer KEY` (compared in
/// constant time) on every route but the probes.
async fn authorize(
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
    let given = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    // Check every key, so the time taken does not say which one matched.
    let matched = keys.iter().fold(subtle::Choice::from(0), |acc, key| {
        acc | key.as_bytes().ct_eq(given.as_bytes())
    });
    if bool::from(matched) {
        next.run(request).await
    } else {
        let message = if given.is_empty() {
            "missing API key: send `Authorization: Bearer KEY`"
        } else {
            "invalid API key"
        };
        ApiError::new(StatusCode::UNAUTHORIZED, "invalid_api_key", message).into_response()
    }
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

/// A bound, not yet running server.
pub struct Server {
    listener: TcpListener,
    config: Config,
    spec: Spec,
    /// Held for the process's life by the process that owns the store: one
    /// writer per data directory.
    _lock: Option<std::fs::File>,
}

impl Server {
    /// Take the data directory (if this role owns the store) and bind the
    /// listening socket.
    pub async fn bind(config: Config, spec: Spec) -> Result<Self> {
        let lock = if spec.owns_store() {
            Some(lock_data_dir(&config.data_dir)?)
        } else {
            None
        };
        let addr: SocketAddr = config
            .listen
            .parse()
            .map_err(|_| Error::InvalidInput(format!("bad listen address {:?}", config.listen)))?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| Error::io(format!("listen address {addr}"), e))?;
        Ok(Self {
            listener,
            config,
            spec,
            _lock: lock,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound socket has an address")
    }

    /// Serve until SIGINT/SIGTERM, then finish in-flight requests and save
    /// the index. Models load in the background meanwhile; if they fail to
    /// load, the server stops with that error.
    pub async fn run(self) -> Result<()> {
        let state = Arc::new(AppState {
            config: self.config.clone(),
            spec: self.spec.clone(),
            addr: self.local_addr(),
            services: OnceLock::new(),
            started: Instant::now(),
            client: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .build()
                .map_err(|e| Error::Unavailable(format!("building the HTTP client: {e}")))?,
            model_routes: Default::default(),
        });
        let (failed_tx, failed_rx) = tokio::sync::oneshot::channel::<Error>();
        if self.spec.role != Role::Gateway {
            let loader = state.clone();
            let runtime = tokio::runtime::Handle::current();
            std::thread::Builder::new()
                .name("load".into())
                .spawn(move || {
                    let spec = &loader.spec;
                    match Services::load(&loader.config, spec.role, spec.model, &runtime) {
                        Ok(services) => {
                            tracing::info!(
                                role = spec.role.name(),
                                load_ms = services.info.load_ms as u64,
                                "models loaded; ready"
                            );
                            let _ = loader.services.set(services);
                        }
                        Err(e) => {
                            let _ = failed_tx.send(e);
                        }
                    }
                })
                .expect("spawning the loader thread");
        } else {
            drop(failed_tx);
        }
        if self.config.api_keys.is_empty() {
            tracing::info!(
                "no api_keys configured: requests are not authenticated (listening on {})",
                self.config.listen
            );
        }
        let saver = tokio::spawn(save_periodically(state.clone()));
        let app = router(state.clone());
        let failed = Arc::new(tokio::sync::Mutex::new(None));
        let failed_slot = failed.clone();
        let shutdown = async move {
            tokio::select! {
                _ = shutdown_signal() => tracing::info!("shutting down: finishing in-flight requests"),
                Ok(e) = failed_rx => {
                    *failed_slot.lock().await = Some(e);
                }
            }
        };
        axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(|e| Error::io("the listening socket", e))?;
        saver.abort();
        if let Some(e) = failed.lock().await.take() {
            return Err(e);
        }
        if let Some(docs) = state.services.get().and_then(|s| s.docs().ok()) {
            let store = docs.store.clone();
            blocking(move || store.flush()).await?;
            tracing::info!("index saved; bye");
        }
        Ok(())
    }
}

/// Save the index every `index_save_secs` when it changed, compacting it
/// first when deleted chunks crowd it.
async fn save_periodically(state: Arc<AppState>) {
    let every = Duration::from_secs(state.config.limits.index_save_secs.max(1));
    let mut ticks = tokio::time::interval(every);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let Some(docs) = state.services.get().and_then(|s| s.docs().ok()) else {
            continue;
        };
        let store = docs.store.clone();
        let done = blocking(move || {
            let compacted = store.compact_if_needed()?;
            Ok((compacted, store.save_index()?))
        })
        .await;
        match done {
            Ok((compacted, saved)) => {
                if compacted || saved {
                    tracing::debug!(compacted, saved, "index maintenance");
                }
            }
            Err(e) => tracing::warn!(error = %e, "saving the index failed; will retry"),
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// Lock `dir/lock` so that no two processes write one store.
pub fn lock_data_dir(dir: &std::path::Path) -> Result<std::fs::File> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let path = dir.join("lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::Unavailable(format!(
            "{} is in use by another hearth process (a running server?); \
             stop it, use another data_dir, or ingest through its POST /documents",
            dir.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::io(&path, e)),
    }
}
