//! `/healthz` (the process answers), `/readyz` (models loaded, index ready)
//! and `/info` (what this process serves).

use super::error::ApiError;
use super::AppState;
use crate::pipelines::ingest::blocking;
use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};
use std::sync::Arc;

pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

pub async fn readyz(State(state): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    state.services()?;
    Ok(Json(json!({ "status": "ready" })))
}

pub async fn info(State(state): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    let mut body = json!({
        "name": "hearth",
        "version": env!("CARGO_PKG_VERSION"),
        "role": state.role,
        "listen": state.config.listen,
        "uptime_s": state.started.elapsed().as_secs_f64(),
        "ready": state.services.get().is_some(),
    });
    if let Some(services) = state.services.get() {
        let store = services.store.clone();
        let stats = blocking(move || store.stats()).await?;
        body["models"] = json!(services.info);
        body["index"] = json!(stats);
        body["index_origin"] = json!(services.store.origin());
        body["generation"] = json!({
            "rag": services.rag.generator().stats(),
            "fine_tuned": services.fine_tuned.generator().stats(),
        });
    }
    Ok(Json(body))
}
