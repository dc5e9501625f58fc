//! `GET /topology`: the processes of the deployment, probed live, each
//! with role, URL, port, pid, health and the parts it serves (from the
//! roles table, as each process's `/info` states them). Under `hearth up` that is every
//! process the launcher started (it tells its children where its list is);
//! for a process started by hand, itself and the processes it reaches (a
//! gateway's backends, a `rag` process's remote embedder and generator).

use super::state::AppState;
use crate::engine::replicas::ReplicaState;
use crate::topology::{Deployment, TOPOLOGY_ENV};
use axum::extract::State;
use axum::Json;
use serde::Serialize;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Process {
    /// Its name in the topology (`rag`, `fine-tuned`, `gateway`, ...), or
    /// what it is to the process answering (`self`, `embedder`,
    /// `rag-generator`).
    pub name: String,
    pub role: Option<String>,
    pub url: String,
    pub port: Option<u16>,
    pub pid: Option<u32>,
    /// It answered.
    pub healthy: bool,
    /// Its models are loaded.
    pub ready: bool,
    /// The parts it serves, from the roles table (`documents`,
    /// `embeddings`, `rag`, `fine-tuned`, `generator`); a gateway lists
    /// those it passes on. Empty when it did not answer.
    pub serves: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// For a process this one sends requests to: the replicas its URL
    /// resolved to, with the requests each has in flight and has served.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub replicas: Vec<ReplicaState>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Topology {
    /// As named by `hearth up` (`unified`, `separated`, `per-model`,
    /// `gateway`), or `standalone` for a process started by hand.
    pub topology: String,
    pub processes: Vec<Process>,
}

/// This process and the ones it depends on, probed now.
#[utoipa::path(get, path = "/topology", tag = "health", responses((status = 200, body = Topology)))]
pub async fn topology(
    State(state): State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<super::auth::Caller>,
) -> Result<Json<Topology>, super::error::ApiError> {
    caller.manage("read the topology")?;
    let topology = std::env::var(TOPOLOGY_ENV).unwrap_or_else(|_| "standalone".into());
    if let Some(deployment) = Deployment::from_env() {
        let probes = deployment
            .endpoints
            .into_iter()
            .map(|e| probe(&state, e.name, e.url, Vec::new()));
        return Ok(Json(Topology {
            topology,
            processes: futures_util::future::join_all(probes).await,
        }));
    }
    let me = Process {
        name: "self".into(),
        role: Some(state.spec.role.name().into()),
        url: format!("http://{}", state.addr),
        port: Some(state.addr.port()),
        pid: Some(std::process::id()),
        healthy: true,
        ready: ready(&state),
        serves: super::health::serves(&state.spec)
            .into_iter()
            .map(String::from)
            .collect(),
        error: None,
        replicas: Vec::new(),
    };
    let probes = dependencies(&state)
        .into_iter()
        .map(|(name, url, replicas)| probe(&state, name, url, replicas));
    let mut processes = vec![me];
    processes.extend(futures_util::future::join_all(probes).await);
    Ok(Json(Topology {
        topology,
        processes,
    }))
}

fn ready(state: &AppState) -> bool {
    state.services.get().is_some() || state.spec.role == crate::config::Role::Gateway
}

/// The other processes this one sends requests to, by name, with their
/// replicas.
fn dependencies(state: &AppState) -> Vec<(String, String, Vec<ReplicaState>)> {
    let mut found = Vec::new();
    for (backend, replicas) in &state.replicas {
        found.push((
            backend.name().to_string(),
            replicas.url().to_string(),
            replicas.states(),
        ));
    }
    if let Some(services) = state.services.get() {
        for (name, url, replicas) in services.remotes() {
            found.push((name.to_string(), url, replicas));
        }
    }
    found
}

/// Ask a process's `/info` who it is.
pub async fn probe(
    state: &AppState,
    name: String,
    url: String,
    replicas: Vec<ReplicaState>,
) -> Process {
    let mut request = state
        .client
        .get(format!("{url}/info"))
        .timeout(Duration::from_secs(2));
    // Processes of one deployment share its config, keys included.
    if let Some(key) = state.config.api_keys.first() {
        request = request.bearer_auth(key);
    }
    let answer = request.send().await;
    let port = url
        .rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok());
    let mut process = Process {
        name,
        role: None,
        url,
        port,
        pid: None,
        healthy: false,
        ready: false,
        serves: Vec::new(),
        error: None,
        replicas,
    };
    match answer {
        Ok(r) if r.status().is_success() => {
            let info: Value = r.json().await.unwrap_or_default();
            process.healthy = true;
            process.ready = info["ready"].as_bool().unwrap_or(false);
            process.role = info["role"].as_str().map(String::from);
            process.pid = info["pid"].as_u64().map(|p| p as u32);
            process.serves = info["serves"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(String::from))
                .collect();
        }
        Ok(r) => process.error = Some(format!("/info answered {}", r.status())),
        Err(e) => process.error = Some(e.to_string()),
    }
    process
}
