//! Worker threads and the channels that feed them. Model compute happens
//! here, never on the async runtime: callers submit through bounded queues
//! and receive answers on channels.

pub mod embedder;
pub mod generator;

pub use embedder::EmbedWorker;
pub use generator::{
    Completion, Event, FinishReason, GenerationStream, Generator, GeneratorLimits, Prompt,
    StatsSnapshot, Timings,
};
