//! hearth's end-to-end tests, one binary: the real models, the real
//! binary on loopback ports, real SQLite files, spoken to over HTTP. One
//! binary instead of one per file: each test binary links all of hearth
//! and its dependencies, which was most of the suite's build time.

mod common;

mod bench;
mod checkpoint;
mod deploy;
mod documents;
mod embedder;
mod families;
mod hostile;
mod llm;
mod lora;
mod openai;
mod operations;
mod retrieval;
mod server;
mod soak;
mod structured;
mod tools;
mod topologies;
mod web;
