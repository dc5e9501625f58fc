//! The generation worker's handle: one thread owns an LLM's compute
//! ([`scheduler`](super::scheduler) decides what it runs each step);
//! callers hold a [`Generator`], submit a [`Prompt`] with [`Checked`]
//! sampling parameters, and read [`Event`]s from a [`GenerationStream`].
//!
//! A prompt is prepared before it is queued ([`Generator::prepare`]: the
//! chat template rendered, the text tokenized, the budget checked, the
//! output format's grammar compiled), on a blocking thread of the runtime,
//! so the model's thread does only batched compute. Requests then arrive
//! through a bounded channel; a full queue is refused at once
//! ([`Error::Unavailable`]) rather than piling up. Each request gets its own
//! event channel; when its receiver is dropped (the client went away), the
//! sequence leaves at the next step and frees its cache.

use super::limits::{GeneratorLimits, GeneratorStats, PromptBudget, StatsSnapshot};
use super::request::{Completion, Event, FinishReason, Prepared, Prompt, Request, Timings};
use super::scheduler::Scheduler;
use crate::error::{Error, Result};
use crate::models::llm::lora::Adapter;
use crate::models::llm::sampling::SamplingParams;
use crate::models::Llm;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::Instant;
use tokio::sync::mpsc;

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
            draft_tokens: s.drafted.load(Ordering::Relaxed),
            draft_tokens_kept: s.draft_kept.load(Ordering::Relaxed),
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

    /// The prompt as the worker runs it: rendered with the chat template
    /// and tokenized, checked against the vocabulary and the prompt budget
    /// (with `params.max_tokens`), and the output format's grammar
    /// compiled. CPU work (a long prompt, a first grammar: milliseconds to
    /// a few hundred): call it off the async runtime, as
    /// [`start_with`](Self::start_with) does.
    pub fn prepare(&self, prompt: Prompt, params: &SamplingParams) -> Result<Prepared> {
        let tokens = match prompt {
            Prompt::Text(text) => self.llm.tokenizer.encode_prompt(&text)?,
            Prompt::Chat { messages, tools } => {
                self.llm.encode_chat_with_tools(&messages, &tools)?
            }
            Prompt::Tokens(ids) => ids,
        };
        if tokens.is_empty() {
            return Err(Error::InvalidInput("the prompt is empty".into()));
        }
        let vocab = self.llm.model.config.vocab_size as u32;
        if let Some(bad) = tokens.iter().find(|&&t| t >= vocab) {
            return Err(Error::InvalidInput(format!(
                "token id {bad} is outside the vocabulary (size {vocab})"
            )));
        }
        self.budget().check(tokens.len(), params.max_tokens)?;
        let constraint = match &params.format {
            Some(format) => Some(self.llm.grammar()?.constraint(format)?),
            None => None,
        };
        Ok(Prepared { tokens, constraint })
    }

    /// Submit a generation from a thread that may block (the CLI):
    /// parameters checked, the prompt prepared on the calling thread, then
    /// queued.
    pub fn submit_blocking(
        &self,
        prompt: Prompt,
        params: SamplingParams,
    ) -> Result<GenerationStream> {
        let params = self.check(params)?;
        let submitted = Instant::now();
        let prepared = self.prepare(prompt, params.get());
        self.enqueue(prepared, params, None, submitted)
    }

    /// Submit a generation whose parameters were checked already, with an
    /// adapter of this worker's model or none.
    pub async fn start_with(
        &self,
        prompt: Prompt,
        params: Checked,
        adapter: Option<Arc<Adapter>>,
    ) -> Result<GenerationStream> {
        let submitted = Instant::now();
        let prepared = match prompt {
            // Token ids with no format: nothing to render, tokenize or compile.
            Prompt::Tokens(ids) if params.get().format.is_none() => {
                self.prepare(Prompt::Tokens(ids), params.get())
            }
            prompt => {
                let (this, sampling) = (self.clone(), params.get().clone());
                super::offload::blocking(move || this.prepare(prompt, &sampling)).await
            }
        };
        self.enqueue(prepared, params, adapter, submitted)
    }

    /// Queue a prepared prompt (refused at once when the queue is full); a
    /// prompt that could not be prepared (too long, a format that does not
    /// compile) counts as a failed generation in the worker's stats.
    fn enqueue(
        &self,
        prepared: Result<Prepared>,
        params: Checked,
        adapter: Option<Arc<Adapter>>,
        submitted: Instant,
    ) -> Result<GenerationStream> {
        let prepared = prepared.inspect_err(|_| {
            self.stats.failed.fetch_add(1, Ordering::Relaxed);
        })?;
        let params = params.into_inner();
        let (events, rx) = mpsc::unbounded_channel();
        let own = params
            .timeout_ms
            .map(|ms| submitted + std::time::Duration::from_millis(ms));
        let deadline = match (own, crate::telemetry::deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let request = Request {
            prepared,
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
                stop_sequence: None,
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
