//! hearth: a local-inference server for two generative-AI pipelines (RAG and
//! a fine-tuned LLM), runnable in every topology from one binary.
//!
//! The CPU hot loops live in their own crate, `hearth-kernels` (`kernels/`),
//! so debug and test builds compile them optimised and the rest fast.
//!
//! Dependencies point one way, each module using only those before it:
//! `hearth_kernels`, `error`, `roles` and `telemetry` (leaves) <- `models` (loading and running
//! models) <- `config` <- `store` (documents, chunks, the vector index) and
//! `engine` (worker threads, channels, the wire protocol between hearth
//! processes) <- `pipelines` (RAG, fine-tuned, documents, what each role
//! loads) <- `topology` (the plan of each topology; the launcher) <-
//! `server` (HTTP, every role) <- `bench` (measurements) <- `cli`. The
//! module map and one request's path through it: `docs/architecture.md`.

pub mod bench;
pub mod cli;
pub mod config;
pub mod engine;
pub mod error;
pub mod models;
pub mod pipelines;
pub mod roles;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod topology;

pub use error::{Error, Result};
