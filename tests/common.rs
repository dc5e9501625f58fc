//! Shared helpers for the integration tests: where the real models and the
//! reference outputs are, with a clear failure when they are missing.
#![allow(dead_code)]

use std::path::PathBuf;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A default model path, or a panic that says how to fetch it.
pub fn model(rel: &str) -> PathBuf {
    let path = repo().join(rel);
    assert!(
        path.exists(),
        "{} is missing: run scripts/fetch-models.sh (scripts/test.sh does it for you)",
        path.display()
    );
    path
}

pub fn embedder_path() -> PathBuf {
    model(hearth::models::DEFAULT_EMBEDDER)
}

pub fn llm_path() -> PathBuf {
    model(hearth::models::DEFAULT_LLM)
}

/// A file of `../shared/reference/`, parsed.
pub fn reference(name: &str) -> serde_json::Value {
    let path = repo().join("../shared/reference").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "reference file {} is unreadable ({e}): the tests need the shared/ folder beside the checkout",
            path.display()
        )
    });
    serde_json::from_str(&text).expect("reference JSON")
}
