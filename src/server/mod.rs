//! The HTTP server (axum): this file only builds the router. Each route's
//! handler lives in a leaf file by concept (`generate`: `/rag` and
//! `/fine-tuned`; `openai`: `/v1/...`, with `tool_calls` for its tools; `documents`: the store; `raw`: the
//! model routes other hearth processes call; `health`, `topology`,
//! `openapi`, `observe` (`/metrics`, request ids); `page` (`GET /`, the web page); `gateway`: the front door's proxy). What handlers share:
//! `state` (what every handler can reach), `stream` (SSE and usage),
//! `error` (every error as JSON), `auth` (API keys). `lifecycle` runs the
//! process. Handlers are thin: they parse, call a pipeline, and shape the
//! answer.

mod adapters;
mod anthropic;
pub mod auth;
mod collections;
mod dialect;
mod documents;
pub mod error;
mod fields;
mod gateway;
mod health;
mod lifecycle;
mod observe;
mod ollama;
mod openai;
mod openapi;
mod page;
mod pipelines;
mod raw;
mod rerank;
mod responses;
mod router;
mod state;
mod stream;
mod target;
mod tokens;
mod tool_calls;
mod topology;

pub use lifecycle::Server;
pub use router::router;
pub use state::{AppState, Backends, Spec};
