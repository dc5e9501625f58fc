//! hearth: a local-inference server for two generative-AI pipelines (RAG and
//! a fine-tuned LLM), runnable in every topology from one binary.
//!
//! Dependencies point down: `models` (loading and running models) <-
//! `engine` (worker threads and channels) <- the CLI and, later, the server.

pub mod cli;
pub mod engine;
pub mod error;
pub mod models;

pub use error::{Error, Result};
