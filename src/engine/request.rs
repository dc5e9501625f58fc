//! What one generation is, between its caller and the model's worker: the
//! [`Prompt`] a caller gives, the [`Prepared`] prompt the worker runs, the
//! queued [`Request`], the [`Event`]s it reports and the [`Completion`] it
//! ends with. Types only: the handle that submits them is `generator.rs`,
//! the loop that runs them `scheduler.rs`.

use crate::error::{Error, Result};
use crate::models::llm::grammar::Constraint;
use crate::models::llm::lora::Adapter;
use crate::models::llm::message::{Message, Tool};
use crate::models::llm::sampling::SamplingParams;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;

/// What to generate from. On the wire (`POST /generate`) it is one of the
/// fields `prompt`, `messages` (with `tools`) or `tokens`.
#[derive(Debug, Clone)]
pub enum Prompt {
    /// Raw text, tokenized as is (BOS added if the model wants one).
    Text(String),
    /// A conversation, rendered with the model's chat template, and the
    /// tools it offers the model.
    Chat {
        messages: Vec<Message>,
        tools: Vec<Tool>,
    },
    /// Token ids, fed as they are.
    Tokens(Vec<u32>),
}

impl Prompt {
    /// A conversation that offers no tools.
    pub fn chat(messages: Vec<Message>) -> Self {
        Self::Chat {
            messages,
            tools: Vec::new(),
        }
    }
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// End-of-turn token or a stop sequence.
    Stop,
    /// `max_tokens` reached.
    Length,
}

/// Wall-clock figures of one generation, in milliseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Timings {
    /// Waiting in the queue before the worker took the request.
    pub queue_ms: f64,
    /// Processing the prompt (prefill).
    pub prompt_ms: f64,
    /// Producing the generated tokens after the first.
    pub generate_ms: f64,
    /// From submission to the first generated token.
    pub ttft_ms: f64,
    pub total_ms: f64,
    pub prompt_tokens_per_s: f64,
    /// Decode speed: tokens after the first, per second of `generate_ms`.
    pub tokens_per_s: f64,
    /// Tokens drafted by prompt-lookup decoding, and how many of them were
    /// the tokens sampled (each kept one saved a step).
    #[serde(default)]
    pub draft_tokens: usize,
    #[serde(default)]
    pub draft_tokens_kept: usize,
}

/// The finished result of a generation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Completion {
    pub text: String,
    pub prompt_tokens: Vec<u32>,
    pub tokens: Vec<u32>,
    pub finish_reason: FinishReason,
    pub timings: Timings,
    /// Per generated token, when the request asked for them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub logprobs: Vec<TokenLogprob>,
    /// The request's stop sequence that ended the text, when one did
    /// (Anthropic's `stop_sequence`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_sequence: Option<String>,
}

/// A generated token's log-probability, and the most likely tokens at its
/// step (most likely first), each as its text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenLogprob {
    pub token: String,
    pub logprob: f32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub top: Vec<(String, f32)>,
}

/// What a generation reports, in order: `Started`, any number of `Text`,
/// then `Done` — or `Error` at any point.
#[derive(Debug)]
pub enum Event {
    Started {
        prompt_tokens: usize,
    },
    /// The log-probabilities of the tokens behind the next `Text` (sent
    /// only when asked for).
    Logprobs(Vec<TokenLogprob>),
    Text(String),
    Done(Completion),
    Error(Error),
}

/// A prompt made ready for the worker before it is queued: its tokens
/// (the chat template rendered, the text tokenized), checked against the
/// model's vocabulary and prompt budget, and the output format's grammar,
/// compiled. The model thread only computes (`Generator::prepare` makes
/// these off the async runtime and off the model thread).
#[derive(Default)]
pub struct Prepared {
    pub tokens: Vec<u32>,
    pub constraint: Option<Constraint>,
}

/// A queued generation, as the scheduler takes it.
pub(super) struct Request {
    /// The prompt, ready: the scheduler takes it into its sequence.
    pub prepared: Prepared,
    pub params: SamplingParams,
    /// The LoRA adapter to run with (unmerged, on the worker's base).
    pub adapter: Option<Arc<Adapter>>,
    pub events: mpsc::UnboundedSender<Event>,
    /// When the caller submitted it (before its prompt was prepared).
    pub submitted: Instant,
    /// When the generation must stop: `timeout_ms` after submission, and
    /// never later than the HTTP request's own deadline (the same instant,
    /// so a request dropped at its deadline is always counted as one).
    pub deadline: Option<Instant>,
}

impl Request {
    /// An error once the request's deadline has passed.
    pub(super) fn within_deadline(&self) -> Result<()> {
        match self.deadline {
            Some(deadline) if Instant::now() >= deadline => Err(Error::Deadline(format!(
                "the request ran past its deadline ({} ms after it was submitted); its generation was stopped",
                deadline.saturating_duration_since(self.submitted).as_millis()
            ))),
            _ => Ok(()),
        }
    }
}
