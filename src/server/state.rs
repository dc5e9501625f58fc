//! What every handler can reach: the process's [`Spec`] (its role, its
//! LLM, the backends a gateway fronts) and its [`AppState`] (config, the
//! pipelines once loaded, the HTTP client a gateway or probe uses).

use super::error::ApiError;
use crate::config::{Config, LlmSlot, Role};
use crate::engine::replicas::Replicas;
use crate::pipelines::Services;
use crate::roles::{Backend, Capability};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

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

    /// The parts this process serves, from the roles table; a gateway
    /// passes on the parts of the backends it has.
    pub fn serves(&self) -> Vec<Capability> {
        if self.role != Role::Gateway {
            return self.role.serves(self.model);
        }
        let mut parts = Vec::new();
        for (url, role) in [
            (&self.backends.rag, Role::Rag),
            (&self.backends.fine_tuned, Role::FineTuned),
        ] {
            if url.is_some() {
                parts.extend(role.serves(LlmSlot::RagGenerator));
            }
        }
        parts
    }

    /// Whether this process owns (and so locks and writes) the store.
    pub(super) fn owns_store(&self) -> bool {
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
    pub model_routes: ModelRoutes,
    /// A gateway's backends' replicas (each URL's name may resolve to
    /// several), in [`Backend::ALL`]'s order.
    pub replicas: Vec<(Backend, Arc<Replicas>)>,
}

impl AppState {
    /// The replicas of `backend`, if this gateway has it.
    pub fn replicas_of(&self, backend: Backend) -> Option<&Arc<Replicas>> {
        self.replicas
            .iter()
            .find(|(b, _)| *b == backend)
            .map(|(_, r)| r)
    }

    /// The pipelines, or 503 while they load.
    pub fn services(&self) -> Result<&Services, ApiError> {
        self.services
            .get()
            .ok_or_else(|| ApiError::not_ready("hearth is loading its models; retry shortly"))
    }
}

/// The processes behind a gateway.
#[derive(Debug, Clone, Default)]
pub struct Backends {
    /// The `rag` process (also owns the document store).
    pub rag: Option<String>,
    pub fine_tuned: Option<String>,
}

impl Backends {
    /// The URL of `backend`'s process, if this gateway has one.
    pub fn url(&self, backend: Backend) -> Option<&str> {
        match backend {
            Backend::Rag => self.rag.as_deref(),
            Backend::FineTuned => self.fine_tuned.as_deref(),
        }
    }

    /// The processes there are, in [`Backend::ALL`]'s order.
    pub fn all(&self) -> Vec<(Backend, &str)> {
        Backend::ALL
            .into_iter()
            .filter_map(|b| Some((b, self.url(b)?)))
            .collect()
    }
}

/// Which backend serves each model id, learnt from their `/v1/models` on
/// first use (a process serves the models of its config, restart or not).
#[derive(Debug, Default)]
pub struct ModelRoutes(Mutex<HashMap<String, Backend>>);

impl ModelRoutes {
    /// The backend known to serve `model`.
    pub fn get(&self, model: &str) -> Option<Backend> {
        self.0.lock().expect("not poisoned").get(model).copied()
    }

    /// Remember which backend serves each of `ids` (the first one seen wins).
    pub fn learn<'a>(&self, backend: Backend, ids: impl Iterator<Item = &'a str>) {
        let mut known = self.0.lock().expect("not poisoned");
        for id in ids {
            known.entry(id.to_string()).or_insert(backend);
        }
    }
}
