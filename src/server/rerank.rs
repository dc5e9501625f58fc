//! Reranking in the shape Cohere's and Jina's clients send (and llama.cpp's
//! and vLLM's servers answer): `POST /v1/rerank` (and `/rerank`) scores
//! each document against the query with the configured cross-encoder
//! (`models.reranker`, the one retrieval reranks with) and answers them
//! best first. Without a cross-encoder it is a 404 that says how to
//! configure one.

use super::error::{AnyJson, ApiError};
use super::fields::invalid;
use super::state::AppState;
use super::stream::new_id;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use utoipa::ToSchema;

/// Most documents in one request.
pub const MAX_DOCUMENTS: usize = 1000;

#[derive(Debug, Deserialize, ToSchema)]
pub struct RerankRequest {
    /// The cross-encoder's name, or absent (there is one).
    model: Option<String>,
    query: String,
    /// Texts, or `{"text": ...}` objects (1 to 1,000).
    #[schema(value_type = Vec<Object>)]
    documents: Vec<Value>,
    /// Answer the best this many (1 to 1,000; default: all).
    #[serde(default, deserialize_with = "crate::server::fields::integer::opt")]
    top_n: Option<usize>,
    /// Echo each document's text in its result (default false, as Cohere's).
    #[serde(default)]
    return_documents: bool,
}

fn texts(documents: Vec<Value>) -> Result<Vec<String>, ApiError> {
    if documents.is_empty() || documents.len() > MAX_DOCUMENTS {
        return Err(invalid(
            "documents",
            format!("documents must hold 1 to {MAX_DOCUMENTS} texts"),
        ));
    }
    documents
        .into_iter()
        .enumerate()
        .map(|(i, d)| match d {
            Value::String(s) => Ok(s),
            Value::Object(mut o) => match o.remove("text") {
                Some(Value::String(s)) => Ok(s),
                _ => Err(invalid(
                    "documents",
                    format!("documents[{i}] must be a string or an object with a `text` string"),
                )),
            },
            _ => Err(invalid(
                "documents",
                format!("documents[{i}] must be a string or an object with a `text` string"),
            )),
        })
        .collect()
}

/// Relevance in (0, 1): the logistic of the cross-encoder's logit, as
/// Cohere, Jina and Text Embeddings Inference report it.
fn relevance(logit: f32) -> f32 {
    1.0 / (1.0 + (-logit).exp())
}

/// Documents ordered by relevance to the query.
#[utoipa::path(post, path = "/v1/rerank", tag = "rerank", request_body = RerankRequest,
    responses(
        (status = 200, description = "`{\"id\", \"model\", \"results\": [{\"index\", \"relevance_score\", \"document\": {\"text\"}}]}`, best first", body = Object),
        (status = 400, description = "An empty query, or no documents or too many", body = super::error::ErrorBody),
        (status = 404, description = "No cross-encoder is configured, or another model is named", body = super::error::ErrorBody),
    ))]
pub async fn rerank(
    State(state): State<Arc<AppState>>,
    AnyJson(req): AnyJson<RerankRequest>,
) -> Result<Json<Value>, ApiError> {
    let rag = state.services()?.rag()?;
    let worker = rag.retriever().reranker().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "no_reranker",
            "no reranker is configured: set `models.reranker` (or `--reranker`) to a cross-encoder",
        )
        .param("model")
    })?;
    let name = worker.reranker().name.clone();
    if let Some(model) = req.model.as_deref().filter(|m| *m != name) {
        return Err(ApiError::model_not_found(model));
    }
    if req.query.trim().is_empty() {
        return Err(invalid("query", "the query is empty"));
    }
    if req.top_n.is_some_and(|n| n == 0 || n > MAX_DOCUMENTS) {
        return Err(invalid(
            "top_n",
            format!("top_n must be 1 to {MAX_DOCUMENTS}"),
        ));
    }
    let texts = texts(req.documents)?;
    let logits = worker.score(req.query, texts.clone()).await?;
    let mut order: Vec<usize> = (0..texts.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    order.truncate(req.top_n.unwrap_or(usize::MAX));
    let results: Vec<Value> = order
        .into_iter()
        .map(|i| {
            let mut r = json!({ "index": i, "relevance_score": relevance(logits[i]) });
            if req.return_documents {
                r["document"] = json!({ "text": texts[i] });
            }
            r
        })
        .collect();
    Ok(Json(
        json!({ "id": new_id("rerank-"), "model": name, "results": results }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_are_texts_or_text_objects() {
        let got = texts(vec![json!("a"), json!({ "text": "b", "title": "t" })]).unwrap();
        assert_eq!(got, ["a", "b"]);
        for bad in [vec![], vec![json!(3)], vec![json!({ "body": "x" })]] {
            assert_eq!(
                texts(bad).err().unwrap().param.as_deref(),
                Some("documents")
            );
        }
        assert!(texts(vec![json!("x"); MAX_DOCUMENTS + 1]).is_err());
        assert!((relevance(0.0) - 0.5).abs() < 1e-6);
        assert!(relevance(4.0) > relevance(1.0));
    }
}
