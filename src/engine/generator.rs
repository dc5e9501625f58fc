//! The generation worker's handle and its vocabulary: one thread owns an
//! LLM's compute ([`scheduler`](super::scheduler) decides what it runs each
//! step); callers hold a [`Generator`], submit a [`Prompt`] with checked
//! [`SamplingParams`], and read [`Event`]s.
//!
//! Requests arrive through a bounded channel; a full queue is refused at once
//! ([`Error::Unavailable`]) rather than piling up. Each request gets its own
//! event channel; when its receiver is dropped (the client went away), the
//! sequence leaves at the next step and frees its cache.

use super::scheduler::Scheduler;
use crate::error::{Error, Result};
use crate::models::llm::chat::Message;
use crate::models::llm::lora::Adapter;
use crate::models::llm::sampling::SamplingParams;
use crate::models::llm::tools::Tool;
use crate::models::Llm;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
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

/// Sampling parameters checked once against a generator's limits: what
/// [`Generator::start`] (and `Generation::start`) take, so a request's
/// parameters are validated once however many steps it passes.
#[derive(Debug, Clone)]
pub struct Checked(SamplingParams);

impl Checked {
    /// Validate `params` and hold `max_tokens` to `limit`.
    pub fn new(params: SamplingParams, limit: usize) -> Result<Self> {
        params.validate()?;
        if params.max_tokens > limit {
            return Err(Error::InvalidField {
                field: "max_tokens",
                message: format!(
                    "max_tokens must be at most {limit}, got {}",
                    params.max_tokens
                ),
            });
        }
        Ok(Self(params))
    }

    pub fn get(&self) -> &SamplingParams {
        &self.0
    }

    pub fn into_inner(self) -> SamplingParams {
        self.0
    }

    /// Bound the generation by the deadline of the HTTP request being
    /// served, if there is one and no tighter one is set.
    pub fn within_request_deadline(mut self) -> Self {
        if let Some(left) = crate::telemetry::remaining() {
            let left = left.as_millis() as u64;
            self.0.timeout_ms = Some(self.0.timeout_ms.map_or(left, |t| t.min(left)));
        }
        self
    }
}

/// How long a prompt may be: the one rule the worker enforces and the RAG
/// pipeline fits its passages to.
#[derive(Debug, Clone, Copy)]
pub struct PromptBudget {
    /// The model's context window.
    pub context: usize,
    /// The configured longest prompt (`generation.max_prompt_tokens`).
    pub max_prompt_tokens: usize,
}

impl PromptBudget {
    /// The longest prompt accepted, whatever `max_tokens`.
    pub fn max_prompt(&self) -> usize {
        self.max_prompt_tokens.min(self.context - 1)
    }

    /// The longest prompt that also leaves room for `max_tokens`.
    pub fn limit(&self, max_tokens: usize) -> usize {
        self.max_prompt()
            .min(self.context.saturating_sub(max_tokens))
    }

    /// Whether a prompt of `len` tokens fits with `max_tokens` to generate,
    /// as an error that says which bound it passes.
    pub fn check(&self, len: usize, max_tokens: usize) -> Result<()> {
        let (context, max_prompt) = (self.context, self.max_prompt());
        if len > max_prompt {
            return Err(Error::TooLarge(format!(
                "the prompt has {len} tokens; at most {max_prompt} are accepted (context window {context})"
            )));
        }
        if len + max_tokens > context {
            return Err(Error::TooLarge(format!(
                "prompt ({len} tokens) plus max_tokens ({max_tokens}) exceeds the context window of {context} tokens"
            )));
        }
        Ok(())
    }
}

/// Limits the worker enforces on every request, and the size of its steps.
#[derive(Debug, Clone)]
pub struct GeneratorLimits {
    /// Requests waiting beyond the ones running; more are refused.
    pub queue: usize,
    /// Sequences running at once (decoding, or with a prompt under way).
    pub max_running: usize,
    /// Tokens in one step's forward pass: one per decoding sequence, the
    /// rest for prompt chunks.
    pub max_batch_tokens: usize,
    /// Longest piece of one prompt fed in a step, so that a long prompt
    /// does not stall the sequences already decoding.
    pub prefill_chunk: usize,
    /// Bytes of recent prompts' keys and values kept for prompts that
    /// begin the same way (0 keeps none).
    pub prefix_cache_bytes: usize,
    /// Longest prompt accepted (also capped by the context window).
    pub max_prompt_tokens: usize,
    /// Largest `max_tokens` accepted.
    pub max_tokens: usize,
}

impl GeneratorLimits {
    /// The prompt-length rule for `llm` under these limits.
    pub fn budget(&self, llm: &Llm) -> PromptBudget {
        PromptBudget {
            context: llm.context_length(),
            max_prompt_tokens: self.max_prompt_tokens,
        }
    }
}

impl Default for GeneratorLimits {
    fn default() -> Self {
        Self {
            queue: 64,
            max_running: 8,
            max_batch_tokens: 512,
            prefill_chunk: 256,
            prefix_cache_bytes: 256 << 20,
            max_prompt_tokens: 7168,
            max_tokens: 2048,
        }
    }
}

/// Live counters of one worker, for `/info` and metrics.
#[derive(Debug, Default)]
pub struct GeneratorStats {
    /// Sequences being generated now.
    pub active: AtomicUsize,
    pub completed: AtomicU64,
    /// Dropped because the client went away.
    pub cancelled: AtomicU64,
    /// Ended by an error (a refused prompt included).
    pub failed: AtomicU64,
    /// Prompt tokens whose keys and values came from the prefix cache.
    pub prefix_tokens: AtomicU64,
}

/// A copy of [`GeneratorStats`] at one moment.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct StatsSnapshot {
    pub active: usize,
    /// Waiting in the queue.
    pub queued: usize,
    pub completed: u64,
    pub cancelled: u64,
    pub failed: u64,
    /// Prompt tokens not recomputed thanks to the prefix cache.
    pub prefix_tokens_reused: u64,
}

pub(super) struct Request {
    pub prompt: Prompt,
    pub params: SamplingParams,
    /// The LoRA adapter to run with (unmerged, on the worker's base).
    pub adapter: Option<Arc<Adapter>>,
    pub events: mpsc::UnboundedSender<Event>,
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

/// Handle to a generation worker. Cheap to clone; the worker stops when the
/// last handle is dropped.
#[derive(Clone)]
pub struct Generator {
    queue: mpsc::Sender<Request>,
    llm: Llm,
    limits: GeneratorLimits,
    stats: Arc<GeneratorStats>,
    /// LoRA adapters for this worker's model, by name: requests name one
    /// to run with it, unmerged, beside requests for the bare model.
    adapters: Arc<RwLock<BTreeMap<String, Arc<Adapter>>>>,
}

impl Generator {
    /// Start a worker thread for `llm`.
    pub fn spawn(llm: Llm, limits: GeneratorLimits) -> Self {
        let (tx, rx) = mpsc::channel(limits.queue.max(1));
        let stats = Arc::new(GeneratorStats::default());
        let worker = Scheduler::new(llm.clone(), limits.clone(), rx, stats.clone());
        std::thread::Builder::new()
            .name(format!("generate-{}", llm.name))
            .spawn(move || worker.run())
            .expect("spawning the generation thread");
        Self {
            queue: tx,
            llm,
            limits,
            stats,
            adapters: Arc::default(),
        }
    }

    /// Load the adapter at `path` for this worker's model as `name`
    /// (replacing one of that name). Reads files: call it off the async
    /// runtime.
    pub fn load_adapter(&self, name: &str, path: &Path, scale: f32) -> Result<Arc<Adapter>> {
        crate::models::llm::lora::check_name(name)?;
        if name == self.llm.name {
            return Err(Error::InvalidInput(format!(
                "adapter name {name:?} is the base model's"
            )));
        }
        let adapter = Arc::new(Adapter::load(path, name, scale, &self.llm.model.config)?);
        self.adapters
            .write()
            .expect("adapter registry")
            .insert(name.to_string(), adapter.clone());
        Ok(adapter)
    }

    /// Forget an adapter; sequences already running with it finish with it.
    pub fn remove_adapter(&self, name: &str) -> Result<()> {
        match self
            .adapters
            .write()
            .expect("adapter registry")
            .remove(name)
        {
            Some(_) => Ok(()),
            None => Err(Error::NotFound(format!("no adapter named {name:?}"))),
        }
    }

    pub fn adapter(&self, name: &str) -> Option<Arc<Adapter>> {
        self.adapters
            .read()
            .expect("adapter registry")
            .get(name)
            .cloned()
    }

    /// The adapters loaded, by name.
    pub fn adapters(&self) -> Vec<Arc<Adapter>> {
        self.adapters
            .read()
            .expect("adapter registry")
            .values()
            .cloned()
            .collect()
    }

    pub fn stats(&self) -> StatsSnapshot {
        let s = &self.stats;
        StatsSnapshot {
            active: s.active.load(Ordering::Relaxed),
            queued: self.queue.max_capacity() - self.queue.capacity(),
            completed: s.completed.load(Ordering::Relaxed),
            cancelled: s.cancelled.load(Ordering::Relaxed),
            failed: s.failed.load(Ordering::Relaxed),
            prefix_tokens_reused: s.prefix_tokens.load(Ordering::Relaxed),
        }
    }

    /// Check parameters against the limits, without submitting anything.
    pub fn check(&self, params: SamplingParams) -> Result<Checked> {
        Checked::new(params, self.limits.max_tokens)
    }

    pub fn llm(&self) -> &Llm {
        &self.llm
    }

    pub fn limits(&self) -> &GeneratorLimits {
        &self.limits
    }

    pub fn budget(&self) -> PromptBudget {
        self.limits.budget(&self.llm)
    }

    /// Submit a generation. Parameters are checked here; prompt-length
    /// errors arrive as the first event.
    pub fn submit(&self, prompt: Prompt, params: SamplingParams) -> Result<GenerationStream> {
        self.start(prompt, self.check(params)?)
    }

    /// Submit a generation whose parameters were checked already.
    pub fn start(&self, prompt: Prompt, params: Checked) -> Result<GenerationStream> {
        self.start_with(prompt, params, None)
    }

    /// [`start`](Self::start) with an adapter of this worker's model.
    pub fn start_with(
        &self,
        prompt: Prompt,
        params: Checked,
        adapter: Option<Arc<Adapter>>,
    ) -> Result<GenerationStream> {
        let params = params.into_inner();
        let (events, rx) = mpsc::unbounded_channel();
        let submitted = Instant::now();
        let own = params
            .timeout_ms
            .map(|ms| submitted + std::time::Duration::from_millis(ms));
        let deadline = match (own, crate::telemetry::deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let request = Request {
            prompt,
            params,
            adapter,
            events,
            submitted,
            deadline,
        };
        self.queue.try_send(request).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                Error::Unavailable("the generation queue is full; retry shortly".into())
            }
            mpsc::error::TrySendError::Closed(_) => {
                Error::Unavailable("the generation worker has stopped".into())
            }
        })?;
        Ok(GenerationStream { events: rx })
    }
}

/// The events of one generation. Dropping it cancels the generation.
pub struct GenerationStream {
    events: mpsc::UnboundedReceiver<Event>,
}

impl GenerationStream {
    /// A stream fed by someone else (a remote generator's client).
    pub(crate) fn from_channel(events: mpsc::UnboundedReceiver<Event>) -> Self {
        Self { events }
    }

    /// A finished stream that says `text` without running a model (a RAG
    /// question no passage covers).
    pub fn fixed(text: &str) -> Self {
        let (tx, events) = mpsc::unbounded_channel();
        for event in [
            Event::Started { prompt_tokens: 0 },
            Event::Text(text.to_string()),
            Event::Done(Completion {
                text: text.to_string(),
                prompt_tokens: Vec::new(),
                tokens: Vec::new(),
                finish_reason: FinishReason::Stop,
                timings: Timings::default(),
                logprobs: Vec::new(),
            }),
        ] {
            let _ = tx.send(event);
        }
        Self { events }
    }

    pub async fn next(&mut self) -> Option<Event> {
        self.events.recv().await
    }

    /// For synchronous callers (the CLI); never call on the async runtime.
    pub fn blocking_next(&mut self) -> Option<Event> {
        self.events.blocking_recv()
    }

    /// Wait for the whole completion.
    pub async fn finish(mut self) -> Result<Completion> {
        while let Some(event) = self.next().await {
            match event {
                Event::Done(c) => return Ok(c),
                Event::Error(e) => return Err(e),
                Event::Started { .. } | Event::Logprobs(_) | Event::Text(_) => {}
            }
        }
        Err(worker_gone())
    }
}

fn worker_gone() -> Error {
    Error::Unavailable("the generation worker stopped before finishing".into())
}
