//! `/collections`: list, create and delete the sets of documents that
//! searches, RAG answers and keys' scopes are confined to.

use super::auth::Caller;
use super::error::{reject_unknown, ApiError, ApiJson, ErrorBody};
use super::state::AppState;
use crate::store::CollectionInfo;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::sync::Arc;
use utoipa::ToSchema;

#[derive(Debug, Serialize, ToSchema)]
pub struct Collections {
    pub collections: Vec<CollectionInfo>,
}

/// The collections the key may read, with their document and chunk counts.
#[utoipa::path(get, path = "/collections", tag = "documents",
    responses((status = 200, body = Collections)))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<Caller>,
) -> Result<Json<Collections>, ApiError> {
    let collections = caller.visible(state.services()?.docs()?.collections().await?);
    Ok(Json(Collections { collections }))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct NewCollection {
    /// 1 to 64 of a-z, 0-9, `-` and `_`, starting with a letter or digit.
    #[schema(min_length = 1, max_length = 64)]
    name: String,
    #[serde(flatten)]
    #[schema(ignore)]
    unknown: Map<String, Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Created {
    pub name: String,
    /// `false` when it already existed (creating is idempotent).
    pub created: bool,
}

/// Create an empty collection (201), or find it there already (200).
#[utoipa::path(post, path = "/collections", tag = "documents", request_body = NewCollection,
    responses(
        (status = 201, description = "Created", body = Created),
        (status = 200, description = "It already existed", body = Created),
        (status = 400, description = "Invalid name", body = ErrorBody),
    ))]
pub async fn create(
    State(state): State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<Caller>,
    ApiJson(req): ApiJson<NewCollection>,
) -> Result<(StatusCode, Json<Created>), ApiError> {
    reject_unknown(&req.unknown)?;
    caller.manage("create collections")?;
    let created = state
        .services()?
        .docs()?
        .create_collection(req.name.clone())
        .await
        .map_err(|e| ApiError::from(e).param("name"))?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(Created {
            name: req.name,
            created,
        }),
    ))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Deleted {
    pub name: String,
    pub deleted: bool,
    /// Documents deleted with it.
    pub documents: usize,
}

/// Delete a collection with its documents, their chunks and index entries
/// (one transaction: a crash leaves all of it or none). `default` cannot
/// be deleted.
#[utoipa::path(delete, path = "/collections/{name}", tag = "documents",
    params(("name" = String, Path, description = "Collection name")),
    responses(
        (status = 200, body = Deleted),
        (status = 400, description = "The default collection", body = ErrorBody),
        (status = 404, description = "No such collection", body = ErrorBody),
    ))]
pub async fn delete(
    State(state): State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Json<Deleted>, ApiError> {
    // A collection the key cannot see is missing to it, before anything else.
    caller.read(&name)?;
    caller.manage("delete collections")?;
    let documents = state
        .services()?
        .docs()?
        .delete_collection(name.clone())
        .await?;
    Ok(Json(Deleted {
        name,
        deleted: true,
        documents,
    }))
}
