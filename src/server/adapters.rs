//! `/adapters`: the LoRA adapters on the fine-tuned pipeline's model,
//! listed, loaded and unloaded at run time (each a model id of `/v1/models`
//! and a value of `/fine-tuned`'s `adapter` field). Loading reads the files
//! off the async runtime and changes nothing when it fails.

use super::error::{reject_unknown, ApiError, ApiJson, ErrorBody};
use super::state::AppState;
use crate::engine::Generator;
use crate::models::llm::lora::AdapterInfo;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::sync::Arc;
use utoipa::ToSchema;

/// An adapter to load.
#[derive(Debug, Deserialize, ToSchema)]
pub struct LoadAdapter {
    /// Its model id: 1-64 letters, digits, `-`, `_` or `.` (a loaded
    /// adapter of that name is replaced).
    #[schema(pattern = r"^[A-Za-z0-9._-]{1,64}$")]
    pub name: String,
    /// On the server's disk: a GGUF LoRA adapter or a PEFT directory.
    #[schema(min_length = 1)]
    pub path: String,
    /// Multiplies the adapter's update (1 = as trained).
    pub scale: Option<f32>,
    #[serde(flatten)]
    #[schema(ignore)]
    pub unknown: Map<String, Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AdapterList {
    /// The model they apply to.
    pub base: String,
    pub adapters: Vec<AdapterInfo>,
}

/// The local worker of the fine-tuned pipeline, which adapters attach to.
fn worker(state: &AppState) -> Result<Generator, ApiError> {
    match state.services()?.fine_tuned()?.generator() {
        crate::engine::Generation::Local(g) => Ok(g.clone()),
        crate::engine::Generation::Remote(_) => Err(ApiError::bad_request(
            "this process's fine-tuned model runs in another process: manage its adapters there",
        )),
    }
}

fn list(g: &Generator) -> AdapterList {
    AdapterList {
        base: g.llm().name.clone(),
        adapters: g.adapters().iter().map(|a| a.info()).collect(),
    }
}

/// The adapters loaded on the fine-tuned pipeline's model.
#[utoipa::path(get, path = "/adapters", tag = "adapters",
    responses((status = 200, body = AdapterList), (status = 404, description = "This process runs no fine-tuned pipeline", body = ErrorBody)))]
pub async fn get(State(state): State<Arc<AppState>>) -> Result<Json<AdapterList>, ApiError> {
    Ok(Json(list(&worker(&state)?)))
}

/// Load a LoRA adapter onto the fine-tuned pipeline's model, without a
/// restart. Requests name it by `model` or `adapter` once this returns.
#[utoipa::path(post, path = "/adapters", tag = "adapters", request_body = LoadAdapter,
    responses(
        (status = 201, description = "Loaded", body = AdapterInfo),
        (status = 400, description = "Missing files, not an adapter, or one for another base (wrong shapes or targets, rank 0)", body = ErrorBody),
        (status = 422, description = "Missing field, wrong type or unknown field", body = ErrorBody),
    ))]
pub async fn load(
    State(state): State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<super::auth::Caller>,
    ApiJson(req): ApiJson<LoadAdapter>,
) -> Result<(StatusCode, Json<AdapterInfo>), ApiError> {
    reject_unknown(&req.unknown)?;
    caller.manage("load adapters")?;
    let g = worker(&state)?;
    let scale = req.scale.unwrap_or(1.0);
    let adapter = crate::engine::blocking(move || {
        g.load_adapter(&req.name, std::path::Path::new(&req.path), scale)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(adapter.info())))
}

/// Unload an adapter; generations already running with it finish with it.
#[utoipa::path(delete, path = "/adapters/{name}", tag = "adapters",
    params(("name" = String, Path, description = "The adapter's model id")),
    responses(
        (status = 200, description = "The adapters left", body = AdapterList),
        (status = 404, description = "No such adapter", body = ErrorBody),
    ))]
pub async fn unload(
    State(state): State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<super::auth::Caller>,
    Path(name): Path<String>,
) -> Result<Json<AdapterList>, ApiError> {
    caller.manage("unload adapters")?;
    let g = worker(&state)?;
    let configured = state
        .services()?
        .fine_tuned()?
        .adapter()
        .map(|a| a.name.clone());
    if configured.as_deref() == Some(name.as_str()) {
        return Err(ApiError::bad_request(format!(
            "{name} is the fine-tuned pipeline's configured adapter (models.fine_tuned); it stays until the config changes"
        )));
    }
    g.remove_adapter(&name)?;
    Ok(Json(list(&g)))
}
