//! hearth: a local-inference server for two generative-AI pipelines (RAG and
//! a fine-tuned LLM), runnable in every topology from one binary.
//!
//! Dependencies point one way: `config` and `models` (loading and running
//! models) <- `store` (documents, chunks, the vector index) <- `engine`
//! (worker threads and channels) <- `pipelines` (RAG, fine-tuned,
//! ingestion) <- `server` (HTTP, every role) <- `topology` (the launcher),
//! `bench` (measurements) <- `cli`. `simd` (vector arithmetic) is below them
//! all.

pub mod bench;
pub mod cli;
pub mod config;
pub mod engine;
pub mod error;
pub mod models;
pub mod pipelines;
pub mod roles;
pub mod server;
pub mod simd;
pub mod store;
pub mod topology;

pub use error::{Error, Result};
