//! What hearth tells the people who run it: Prometheus metrics and the
//! request id that ties a request's log lines together.
//!
//! Every metric hearth records is named and recorded here (through the
//! `metrics` facade), so that the list in `docs/metrics.md` has one source.
//! A serving process installs the Prometheus recorder once ([`install`]);
//! in any other process (the CLI, tests) recording costs nothing and goes
//! nowhere. `GET /metrics` renders them ([`render`]) after refreshing the
//! gauges that are read rather than counted (process memory, open files,
//! threads; the server adds the store's sizes).
//!
//! Names follow Prometheus's conventions: a `hearth_` prefix, the unit in
//! the name (`_seconds`, `_bytes`), `_total` on counters.

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Latency buckets, in seconds: 1 ms to 2 minutes.
const SECONDS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// Batch sizes (sequences or texts).
const SIZES: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];

/// Install the Prometheus recorder for this process (once; later calls
/// return the same handle). `None` when another recorder was installed
/// first.
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_size".into()), SIZES))
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            describe();
            Some(handle)
        })
        .as_ref()
}

/// The text exposition of every metric, the process gauges read now.
pub fn render() -> String {
    let Some(handle) = install() else {
        return String::new();
    };
    process_gauges();
    handle.render()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        "hearth_http_requests_total",
        "HTTP requests answered, by route, method and status"
    );
    describe_histogram!(
        "hearth_http_request_duration_seconds",
        Unit::Seconds,
        "From a request's arrival to its response's head (for a stream: its start), by route"
    );
    describe_histogram!(
        "hearth_generation_duration_seconds",
        Unit::Seconds,
        "A generation from submission to its last token"
    );
    describe_histogram!(
        "hearth_time_to_first_token_seconds",
        Unit::Seconds,
        "From submission to the first generated token"
    );
    describe_histogram!(
        "hearth_inter_token_seconds",
        Unit::Seconds,
        "Mean time between generated tokens, one observation per generation"
    );
    describe_counter!("hearth_prompt_tokens_total", "Prompt tokens processed");
    describe_counter!("hearth_completion_tokens_total", "Tokens generated");
    describe_counter!(
        "hearth_generations_total",
        "Generations ended, by outcome (completed, cancelled, failed, deadline)"
    );
    describe_counter!(
        "hearth_prefix_cache_tokens_total",
        "Prompt tokens whose keys and values came from the prefix cache"
    );
    describe_gauge!(
        "hearth_queue_depth",
        "Generation requests waiting for the worker"
    );
    describe_gauge!("hearth_running_sequences", "Sequences being generated");
    describe_gauge!(
        "hearth_requests_in_flight",
        "HTTP requests this process is serving now (health, readiness and metrics requests aside); not capped by any slot count, so an autoscaler can scale on it"
    );
    describe_histogram!(
        "hearth_batch_size",
        "Sequences in one forward pass of the generation worker"
    );
    describe_counter!("hearth_embedding_batches_total", "Embedder forward passes");
    describe_histogram!("hearth_embedding_batch_size", "Texts in one embedder pass");
    describe_counter!("hearth_embedded_texts_total", "Texts embedded");
    describe_gauge!("hearth_documents", "Documents in the store");
    describe_gauge!("hearth_chunks", "Chunks in the store");
    describe_gauge!("hearth_index_vectors", "Vectors in the HNSW index");
    describe_gauge!(
        "hearth_model_load_seconds",
        Unit::Seconds,
        "How long this process took to load its models"
    );
    describe_gauge!(
        "hearth_backend_up",
        "Whether the gateway's last request to a backend reached it (1) or not (0)"
    );
    describe_histogram!(
        "hearth_backend_request_duration_seconds",
        Unit::Seconds,
        "The gateway's requests to a backend, to the response's head"
    );
    describe_gauge!(
        "process_resident_memory_bytes",
        Unit::Bytes,
        "Resident memory"
    );
    describe_gauge!("process_open_fds", "Open file descriptors");
    describe_gauge!("process_threads", "Threads of this process");
}

/// An HTTP request being served: counted in `hearth_requests_in_flight`
/// until dropped (answered, timed out, or the client went away).
pub struct InFlight(());

impl InFlight {
    pub fn start() -> Self {
        gauge!("hearth_requests_in_flight").increment(1.0);
        InFlight(())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        gauge!("hearth_requests_in_flight").decrement(1.0);
    }
}

/// One HTTP request answered. `route` is the matched route's pattern
/// (`/documents/{id}`), never the raw path, so ids do not multiply series.
pub fn http_request(route: &str, method: &str, status: u16, seconds: f64) {
    let labels = [
        ("route", route.to_string()),
        ("method", method.to_string()),
        ("status", status.to_string()),
    ];
    counter!("hearth_http_requests_total", &labels).increment(1);
    histogram!("hearth_http_request_duration_seconds", "route" => route.to_string())
        .record(seconds);
}

/// A generation that completed: its token counts and latencies.
pub fn generation(prompt_tokens: usize, tokens: usize, ttft_s: f64, total_s: f64) {
    counter!("hearth_prompt_tokens_total").increment(prompt_tokens as u64);
    counter!("hearth_completion_tokens_total").increment(tokens as u64);
    counter!("hearth_generations_total", "outcome" => "completed").increment(1);
    histogram!("hearth_time_to_first_token_seconds").record(ttft_s);
    histogram!("hearth_generation_duration_seconds").record(total_s);
    if tokens > 1 {
        histogram!("hearth_inter_token_seconds").record((total_s - ttft_s) / (tokens - 1) as f64);
    }
}

/// A generation that did not complete: `cancelled`, `failed` or `deadline`.
pub fn generation_ended(outcome: &'static str) {
    counter!("hearth_generations_total", "outcome" => outcome).increment(1);
}

/// Prompt tokens taken from the prefix cache.
pub fn prefix_reused(tokens: usize) {
    counter!("hearth_prefix_cache_tokens_total").increment(tokens as u64);
}

/// One verification of prompt-lookup drafts: `drafted` tokens fed, `kept`
/// of them the tokens sampled.
pub fn drafted(drafted: usize, kept: usize) {
    counter!("hearth_draft_tokens_total", "outcome" => "kept").increment(kept as u64);
    counter!("hearth_draft_tokens_total", "outcome" => "missed").increment((drafted - kept) as u64);
}

/// One step of the generation worker of `model`: the batch it ran, what
/// is running and what waits (a gauge per worker: a unified process with
/// two LLMs has two).
pub fn scheduler_step(model: &str, batch: usize, running: usize, queued: usize) {
    if batch > 0 {
        histogram!("hearth_batch_size").record(batch as f64);
    }
    let model = model.to_string();
    gauge!("hearth_running_sequences", "model" => model.clone()).set(running as f64);
    gauge!("hearth_queue_depth", "model" => model).set(queued as f64);
}

/// One embedder pass over `texts` texts.
pub fn embedding_batch(texts: usize) {
    counter!("hearth_embedding_batches_total").increment(1);
    counter!("hearth_embedded_texts_total").increment(texts as u64);
    histogram!("hearth_embedding_batch_size").record(texts as f64);
}

/// The store's sizes, as the server reads them when rendering.
pub fn store_sizes(documents: u64, chunks: u64, vectors: u64) {
    gauge!("hearth_documents").set(documents as f64);
    gauge!("hearth_chunks").set(chunks as f64);
    gauge!("hearth_index_vectors").set(vectors as f64);
}

/// How long this process took to load its models.
pub fn models_loaded(seconds: f64) {
    gauge!("hearth_model_load_seconds").set(seconds);
}

/// The gateway's request to `backend`: whether it was reached, and how
/// long the response's head took.
pub fn backend_request(backend: &str, reached: bool, seconds: f64) {
    gauge!("hearth_backend_up", "backend" => backend.to_string()).set(f64::from(u8::from(reached)));
    if reached {
        histogram!("hearth_backend_request_duration_seconds", "backend" => backend.to_string())
            .record(seconds);
    }
}

/// Resident memory in bytes (from `/proc/self/statm`; 0 where there is none).
pub fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(0) as u64;
    pages * page
}

fn count_dir(path: &str) -> usize {
    std::fs::read_dir(path).map(|d| d.count()).unwrap_or(0)
}

fn process_gauges() {
    gauge!("process_resident_memory_bytes").set(rss_bytes() as f64);
    gauge!("process_open_fds").set(count_dir("/proc/self/fd") as f64);
    gauge!("process_threads").set(count_dir("/proc/self/task") as f64);
}

tokio::task_local! {
    /// The id of the HTTP request this task serves (`x-request-id`).
    pub static REQUEST_ID: String;
    /// When the HTTP request this task serves must be answered by.
    pub static DEADLINE: std::time::Instant;
}

/// The header that sets a request's time limit, in seconds.
pub const TIMEOUT_HEADER: &str = "x-request-timeout";

/// Time left before the current request's deadline (zero once past it);
/// `None` outside a request.
pub fn remaining() -> Option<std::time::Duration> {
    deadline().map(|d| d.saturating_duration_since(std::time::Instant::now()))
}

/// The current request's deadline; `None` outside a request.
pub fn deadline() -> Option<std::time::Instant> {
    DEADLINE.try_with(|d| *d).ok()
}

/// The header that carries a request's id, in and out.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The id of the request the current task serves, if any.
pub fn request_id() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

/// A new request id: 16 hex digits.
pub fn new_request_id() -> String {
    use rand::Rng;
    format!("{:016x}", rand::rng().random::<u64>())
}

/// Whether a client's `x-request-id` can be used as is: 1 to 128
/// printable ASCII characters without spaces.
pub fn valid_request_id(id: &str) -> bool {
    (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic())
}
