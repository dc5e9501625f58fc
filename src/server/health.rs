//! `/healthz` (the process answers), `/readyz` (models loaded, index ready)
//! and `/info` (what this process serves).

use super::error::{ApiError, ErrorBody};
use super::state::AppState;
use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};
use std::sync::Arc;

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Status {
    /// `ok` (alive) or `ready`.
    pub status: String,
}

/// The process is alive (models may still be loading).
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, body = Status)))]
pub async fn healthz() -> Json<Status> {
    Json(Status {
        status: "ok".into(),
    })
}

/// Models loaded and index ready.
#[utoipa::path(get, path = "/readyz", tag = "health", responses(
    (status = 200, body = Status),
    (status = 503, description = "Still loading; see Retry-After", body = ErrorBody),
))]
pub async fn readyz(State(state): State<Arc<AppState>>) -> Result<Json<Status>, ApiError> {
    state.services()?;
    Ok(Json(Status {
        status: "ready".into(),
    }))
}

/// What this process serves: version, role, models and device, index size,
/// queue counters per generation worker.
#[utoipa::path(get, path = "/info", tag = "health", responses(
    (status = 200, description = "`name`, `version`, `role`, `listen`, `pid`, `uptime_s`, `ready`; once ready also `models`, `index`, `index_origin`, `generation`", body = Object),
))]
pub async fn info(
    State(state): State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<super::auth::Caller>,
) -> Result<Json<Value>, ApiError> {
    // Counts of the whole store: for keys that may see all of it.
    caller.manage("read the server's state (/info)")?;
    let mut body = json!({
        "name": "hearth",
        "version": env!("CARGO_PKG_VERSION"),
        "role": state.spec.role.name(),
        "listen": state.addr.to_string(),
        "pid": std::process::id(),
        "uptime_s": state.started.elapsed().as_secs_f64(),
        "ready": state.services.get().is_some(),
        "serves": serves(&state.spec),
    });
    if let Some(services) = state.services.get() {
        body["models"] = json!(services.info);
        if let Ok(docs) = services.docs() {
            body["index"] = json!(docs.stats().await?);
            body["index_origin"] = json!(docs.store.origin());
        }
        let generation: serde_json::Map<String, Value> = services
            .generators()
            .into_iter()
            .filter_map(|(name, g)| Some((name.to_string(), json!(g.stats()?))))
            .collect();
        body["generation"] = Value::Object(generation);
        if let Ok(pipeline) = services.fine_tuned() {
            let mut adapters: Vec<_> = pipeline.generator().adapters();
            adapters.extend(pipeline.adapter().cloned());
            adapters.sort_by(|a, b| a.name.cmp(&b.name));
            adapters.dedup_by(|a, b| a.name == b.name);
            body["adapters"] = json!(adapters.iter().map(|a| a.info()).collect::<Vec<_>>());
        }
        // The LLMs served by name: which are loaded, how often each was.
        if let Some(catalog) = services.catalog() {
            let llms: Vec<Value> = catalog
                .list()
                .into_iter()
                .map(|s| {
                    json!({
                        "name": s.name,
                        "path": s.path,
                        "loaded": s.generation.is_some(),
                        "loads": s.loads,
                        "bytes": s.bytes,
                        "expires_in_s": s.expires_at.map(|t| {
                            t.duration_since(std::time::SystemTime::now())
                                .map_or(0.0, |d| d.as_secs_f64())
                        }),
                        "queue": s.generation.as_ref().and_then(|g| g.stats()),
                    })
                })
                .collect();
            body["llms"] = json!(llms);
        }
    }
    Ok(Json(body))
}

/// The names of the parts a process serves (the roles table).
pub(super) fn serves(spec: &super::state::Spec) -> Vec<&'static str> {
    spec.serves().into_iter().map(|part| part.name()).collect()
}
