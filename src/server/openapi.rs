//! The OpenAPI document of the whole HTTP API, generated from the handlers'
//! annotations and the request and response types (utoipa), served at
//! `GET /openapi.json`.

use super::{adapters, documents, error, generate, health, openai, topology};
use axum::Json;
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "hearth",
        description = "Local inference: a RAG pipeline and a fine-tuned LLM behind one HTTP API, plus an OpenAI-compatible one."
    ),
    paths(
        generate::rag,
        generate::fine_tuned,
        adapters::get,
        adapters::load,
        adapters::unload,
        documents::create,
        documents::list,
        documents::get,
        documents::delete,
        documents::search,
        documents::embed,
        health::healthz,
        health::readyz,
        health::info,
        topology::topology,
        openai::models,
        openai::chat_completions,
        openai::completions,
        openai::embeddings,
        document,
    ),
    components(schemas(error::ErrorBody))
)]
pub struct ApiDoc;

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "health", responses((status = 200, description = "OpenAPI 3.1", body = Object)))]
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
