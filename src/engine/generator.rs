//! The generation worker: one thread owns an LLM's compute and runs every
//! sequence submitted to it, interleaving them token by token (round robin),
//! each with its own KV cache over the shared weights.
//!
//! Requests arrive through a bounded channel; a full queue is refused at once
//! ([`Error::Unavailable`]) rather than piling up. Each request gets its own
//! event channel; when its receiver is dropped (the client went away), the
//! sequence is dropped at its next token.

use crate::error::{Error, Result};
use crate::models::llm::chat::Message;
use crate::models::llm::llama::KvCache;
use crate::models::llm::sampling::{Sampler, SamplingParams};
use crate::models::llm::stream::{StopCheck, StopMatcher, TextDecoder};
use crate::models::Llm;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;

/// What to generate from. On the wire (`POST /generate`) it is one of the
/// fields `prompt`, `messages` or `tokens`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Prompt {
    /// Raw text, tokenized as is (BOS added if the model wants one).
    #[serde(rename = "prompt")]
    Text(String),
    /// A conversation, rendered with the model's chat template.
    #[serde(rename = "messages")]
    Chat(Vec<Message>),
    /// Token ids, fed as they are.
    #[serde(rename = "tokens")]
    Tokens(Vec<u32>),
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
}

/// What a generation reports, in order: `Started`, any number of `Text`,
/// then `Done` — or `Error` at any point.
#[derive(Debug)]
pub enum Event {
    Started { prompt_tokens: usize },
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

/// Limits the worker enforces on every request.
#[derive(Debug, Clone)]
pub struct GeneratorLimits {
    /// Requests waiting beyond the ones running; more are refused.
    pub queue: usize,
    /// Sequences interleaved at once.
    pub max_active: usize,
    /// Longest prompt accepted (also capped by the context window).
    pub max_prompt_tokens: usize,
    /// Largest `max_tokens` accepted.
    pub max_tokens: usize,
}

impl Default for GeneratorLimits {
    fn default() -> Self {
        Self {
            queue: 64,
            max_active: 8,
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
}

struct Request {
    prompt: Prompt,
    params: SamplingParams,
    events: mpsc::UnboundedSender<Event>,
    submitted: Instant,
}

/// Handle to a generation worker. Cheap to clone; the worker stops when the
/// last handle is dropped.
#[derive(Clone)]
pub struct Generator {
    queue: mpsc::Sender<Request>,
    llm: Llm,
    limits: GeneratorLimits,
    stats: Arc<GeneratorStats>,
}

impl Generator {
    /// Start a worker thread for `llm`.
    pub fn spawn(llm: Llm, limits: GeneratorLimits) -> Self {
        let (tx, rx) = mpsc::channel(limits.queue.max(1));
        let stats = Arc::new(GeneratorStats::default());
        let worker = Worker {
            llm: llm.clone(),
            limits: limits.clone(),
            requests: rx,
            active: Vec::new(),
            stats: stats.clone(),
        };
        std::thread::Builder::new()
            .name(format!("generate-{}", llm.name))
            .spawn(move || worker.run())
            .expect("spawning the generation thread");
        Self {
            queue: tx,
            llm,
            limits,
            stats,
        }
    }

    pub fn stats(&self) -> StatsSnapshot {
        let s = &self.stats;
        StatsSnapshot {
            active: s.active.load(Ordering::Relaxed),
            queued: self.queue.max_capacity() - self.queue.capacity(),
            completed: s.completed.load(Ordering::Relaxed),
            cancelled: s.cancelled.load(Ordering::Relaxed),
            failed: s.failed.load(Ordering::Relaxed),
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
        PromptBudget {
            context: self.llm.context_length(),
            max_prompt_tokens: self.limits.max_prompt_tokens,
        }
    }

    /// Submit a generation. Parameters are checked here; prompt-length
    /// errors arrive as the first event.
    pub fn submit(&self, prompt: Prompt, params: SamplingParams) -> Result<GenerationStream> {
        self.start(prompt, self.check(params)?)
    }

    /// Submit a generation whose parameters were checked already.
    pub fn start(&self, prompt: Prompt, params: Checked) -> Result<GenerationStream> {
        let params = params.into_inner();
        let (events, rx) = mpsc::unbounded_channel();
        let request = Request {
            prompt,
            params,
            events,
            submitted: Instant::now(),
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
                Event::Started { .. } | Event::Text(_) => {}
            }
        }
        Err(worker_gone())
    }
}

fn worker_gone() -> Error {
    Error::Unavailable("the generation worker stopped before finishing".into())
}

struct Worker {
    llm: Llm,
    limits: GeneratorLimits,
    requests: mpsc::Receiver<Request>,
    active: Vec<Sequence>,
    stats: Arc<GeneratorStats>,
}

impl Worker {
    fn run(mut self) {
        loop {
            if self.active.is_empty() {
                match self.requests.blocking_recv() {
                    Some(r) => self.admit(r),
                    None => return,
                }
            }
            while self.active.len() < self.limits.max_active.max(1) {
                match self.requests.try_recv() {
                    Ok(r) => self.admit(r),
                    Err(_) => break,
                }
            }
            let llm = &self.llm;
            let stats = &self.stats;
            self.active.retain_mut(|seq| match seq.step(llm) {
                Step::Continue => true,
                Step::Completed => {
                    stats.completed.fetch_add(1, Ordering::Relaxed);
                    false
                }
                Step::Cancelled => {
                    stats.cancelled.fetch_add(1, Ordering::Relaxed);
                    false
                }
                Step::Failed => {
                    stats.failed.fetch_add(1, Ordering::Relaxed);
                    false
                }
            });
            stats.active.store(self.active.len(), Ordering::Relaxed);
        }
    }

    fn admit(&mut self, request: Request) {
        let taken = Instant::now();
        match self.prepare(&request) {
            Ok(prompt) => {
                if request
                    .events
                    .send(Event::Started {
                        prompt_tokens: prompt.len(),
                    })
                    .is_ok()
                {
                    self.active
                        .push(Sequence::new(&self.llm, request, prompt, taken));
                    self.stats
                        .active
                        .store(self.active.len(), Ordering::Relaxed);
                } else {
                    self.stats.cancelled.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(e) => {
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
                let _ = request.events.send(Event::Error(e));
            }
        }
    }

    fn prepare(&self, request: &Request) -> Result<Vec<u32>> {
        let tokenizer = &self.llm.tokenizer;
        let prompt = match &request.prompt {
            Prompt::Text(text) => tokenizer.encode_prompt(text)?,
            Prompt::Chat(messages) => self.llm.encode_chat(messages)?,
            Prompt::Tokens(ids) => ids.clone(),
        };
        if prompt.is_empty() {
            return Err(Error::InvalidInput("the prompt is empty".into()));
        }
        let vocab = self.llm.model.config.vocab_size as u32;
        if let Some(bad) = prompt.iter().find(|&&t| t >= vocab) {
            return Err(Error::InvalidInput(format!(
                "token id {bad} is outside the vocabulary (size {vocab})"
            )));
        }
        let budget = PromptBudget {
            context: self.llm.context_length(),
            max_prompt_tokens: self.limits.max_prompt_tokens,
        };
        budget.check(prompt.len(), request.params.max_tokens)?;
        Ok(prompt)
    }
}

/// One generation in progress.
struct Sequence {
    request: Request,
    prompt_len: usize,
    /// Prompt then generated tokens.
    tokens: Vec<u32>,
    cache: KvCache,
    sampler: Sampler,
    decoder: TextDecoder,
    stops: StopMatcher,
    text: String,
    taken: Instant,
    first_token: Option<Instant>,
}

impl Sequence {
    fn new(llm: &Llm, request: Request, prompt: Vec<u32>, taken: Instant) -> Self {
        let cache = llm
            .model
            .new_cache(prompt.len() + request.params.max_tokens);
        Self {
            sampler: Sampler::new(&request.params),
            stops: StopMatcher::new(&request.params.stop),
            prompt_len: prompt.len(),
            tokens: prompt,
            cache,
            decoder: TextDecoder::default(),
            text: String::new(),
            request,
            taken,
            first_token: None,
        }
    }

    /// Produce one token.
    fn step(&mut self, llm: &Llm) -> Step {
        match self.try_step(llm) {
            Ok(Some(reason)) => match self.finish(reason) {
                true => Step::Completed,
                false => Step::Cancelled,
            },
            Ok(None) => Step::Continue,
            Err(StepEnd::Cancelled) => Step::Cancelled,
            Err(StepEnd::Failed(e)) => {
                let _ = self.request.events.send(Event::Error(e));
                Step::Failed
            }
        }
    }

    fn try_step(&mut self, llm: &Llm) -> Result<Option<FinishReason>, StepEnd> {
        if self.request.events.is_closed() {
            return Err(StepEnd::Cancelled);
        }
        let input = &self.tokens[self.cache.len()..];
        let logits = llm.model.forward(input, &mut self.cache)?;
        let mut logits: Vec<f32> = logits.to_vec1().map_err(Error::from)?;
        let token = self.sampler.sample(&mut logits, &self.tokens);
        self.first_token.get_or_insert_with(Instant::now);
        self.tokens.push(token);
        let generated = self.tokens.len() - self.prompt_len;

        if llm.tokenizer.is_end_of_turn(token) {
            self.tokens.pop(); // the end-of-turn marker is not part of the answer
            return Ok(Some(FinishReason::Stop));
        }
        if let Some(chunk) = self.decoder.push(&llm.tokenizer, token)? {
            match self.stops.push(&chunk) {
                StopCheck::Continue(text) => self.emit(text)?,
                StopCheck::Stopped(text) => {
                    self.emit(text)?;
                    return Ok(Some(FinishReason::Stop));
                }
            }
        }
        if generated >= self.request.params.max_tokens {
            return Ok(Some(FinishReason::Length));
        }
        Ok(None)
    }

    fn emit(&mut self, text: String) -> Result<(), StepEnd> {
        if text.is_empty() {
            return Ok(());
        }
        self.text.push_str(&text);
        self.request
            .events
            .send(Event::Text(text))
            .map_err(|_| StepEnd::Cancelled)
    }

    /// Send the completion; false if the client is gone.
    fn finish(&mut self, reason: FinishReason) -> bool {
        let rest = self.stops.flush();
        if self.emit(rest).is_err() {
            return false;
        }
        let now = Instant::now();
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
        let first = self.first_token.unwrap_or(now);
        let generated = self.tokens.len() - self.prompt_len;
        let prompt_ms = ms(first - self.taken);
        let generate_ms = ms(now - first);
        let per_s = |n: usize, ms: f64| if ms > 0.0 { n as f64 * 1e3 / ms } else { 0.0 };
        let timings = Timings {
            queue_ms: ms(self.taken - self.request.submitted),
            prompt_ms,
            generate_ms,
            ttft_ms: ms(first - self.request.submitted),
            total_ms: ms(now - self.request.submitted),
            prompt_tokens_per_s: per_s(self.prompt_len, prompt_ms),
            tokens_per_s: per_s(generated.saturating_sub(1), generate_ms),
        };
        let completion = Completion {
            text: std::mem::take(&mut self.text),
            prompt_tokens: self.tokens[..self.prompt_len].to_vec(),
            tokens: self.tokens[self.prompt_len..].to_vec(),
            finish_reason: reason,
            timings,
        };
        self.request.events.send(Event::Done(completion)).is_ok()
    }
}

/// What one step left a sequence as.
enum Step {
    Continue,
    Completed,
    Cancelled,
    Failed,
}

enum StepEnd {
    Cancelled,
    Failed(Error),
}

impl From<Error> for StepEnd {
    fn from(e: Error) -> Self {
        StepEnd::Failed(e)
    }
}
