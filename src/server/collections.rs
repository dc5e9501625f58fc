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
    #[schema(min_length = 1, max_length = 64, pattern = "^[a-z0-9][a-z0-9_-]*$")]
    name: String,
    #[serde(flatten)]
    #[schema(ignore)]
    unknown: Map<String, Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CollectionCreated {
    pub name: String,
    /// `false` when it already existed (creating is idempotent).
    pub created: bool,
}

/// Create an empty collection (201), or find it there already (200).
#[utoipa::path(post, path = "/collections", tag = "documents", request_body = NewCollection,
    responses(
        (status = 201, description = "Created", body = CollectionCreated),
        (status = 200, description = "It already existed", body = CollectionCreated),
        (status = 400, description = "Invalid name", body = ErrorBody),
    ))]
pub async fn create(
    State(state): State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<Caller>,
    ApiJson(req): ApiJson<NewCollection>,
) -> Result<(StatusCode, Json<CollectionCreated>), ApiError> {
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
        Json(CollectionCreated {
            name: req.name,
            created,
        }),
    ))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CollectionDeleted {
    pub name: String,
    pub deleted: bool,
    /// Documents deleted with it.
    pub documents: usize,
}

/// Delete a collection with its documents, their chunks and index entries
/// (one transaction: a crash leaves all of it or none). `default` cannot
/// be deleted.
#[utoipa::path(delete, path = "/collections/{name}", tag = "documents",
    params(("name" = String, Path, description = "Collection name", pattern = "^[a-z0-9][a-z0-9_-]{0,63}$")),
    responses(
        (status = 200, body = CollectionDeleted),
        (status = 409, description = "The default collection, which cannot be deleted", body = ErrorBody),
        (status = 404, description = "No such collection", body = ErrorBody),
    ))]
pub async fn delete(
    State(state): State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Json<CollectionDeleted>, ApiError> {
    // A collection the key cannot see is missing to it, before anything else.
    caller.read(&name)?;
    caller.manage("delete collections")?;
    if name == crate::store::DEFAULT_COLLECTION {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            "the default collection cannot be deleted; delete its documents instead",
        ));
    }
    let documents = state
        .services()?
        .docs()?
        .delete_collection(name.clone())
        .await?;
    Ok(Json(CollectionDeleted {
        name,
        deleted: true,
        documents,
    }))
}
