//! The life of one `hearth serve` process: take the data directory (one
//! writer per store), bind, load the models in the background (routes
//! answer 503 until then), save the index periodically, and on SIGINT or
//! SIGTERM finish in-flight requests and save the index before exiting.

use super::router::router;
use super::state::{AppState, Spec};
use crate::config::{Config, Role};
use crate::engine::replicas::Replicas;
use crate::error::{Error, Result};
use crate::pipelines::Services;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

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
            Some(crate::store::lock_data_dir(&config.data_dir)?)
        } else {
            None
        };
        let addr: SocketAddr = config.listen_addr()?;
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
        crate::telemetry::install();
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
            replicas: self
                .spec
                .backends
                .all()
                .into_iter()
                .map(|(backend, url)| (backend, Replicas::new(url)))
                .collect(),
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
                            crate::telemetry::models_loaded(services.info.load_ms / 1e3);
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
            docs.flush().await?;
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
        match docs.maintain().await {
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
