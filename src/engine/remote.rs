//! Clients for models served by another hearth process (roles `embed` and
//! `generate`), so that a `rag` process can use them exactly as it uses its
//! own workers: the same calls, the same [`Event`]s, the same errors (a
//! remote refusal keeps its status and code; an unreachable process is
//! [`Error::Unavailable`]).
//!
//! The wire protocol (`GET /embedder` and `POST /embed`; `GET /generator`
//! and `POST /generate` with its SSE events) is written once, in
//! [`super::protocol`]. Both models' tokenizers (and the generator's chat
//! template) come with their `GET`, so a client tokenizes locally.
//!
//! A URL may name several replicas (a headless Service's name resolves to
//! every pod): each request goes to one of them ([`super::replicas`]), a
//! request that could not connect is sent to another, and a replica that
//! fails is left out for a while.

use super::generator::GenerationStream;
use super::protocol::{
    event, EmbedderInfo, ErrorBody, GenerateRequest, GeneratorDescription, GeneratorInfo,
    SseDecoder, Started, Text,
};
use super::replicas::{Lease, ReplicaState, Replicas};
use super::request::{Completion, Event, Prompt};
use crate::error::{Error, Result};
use crate::models::llm::chat::ChatTemplate;
use crate::models::llm::message::{Message, Tool};
use crate::models::llm::sampling::SamplingParams;
use crate::models::llm::tokenizer::LlmTokenizer;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokenizers::Tokenizer;
use tokio::sync::mpsc;

/// How long a client waits for its remote process to become ready at start.
pub const CONNECT_WAIT: Duration = Duration::from_secs(300);

/// Texts per `POST /embed` call.
const EMBED_CHUNK: usize = 256;

/// The client for one remote process; with `key` (this process's first
/// API key, which every process of a topology shares) on every request,
/// so that processes behind API keys accept each other's calls.
fn client(key: Option<&str>) -> Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(key) = key {
        let mut value =
            reqwest::header::HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| {
                Error::InvalidInput("an API key holds characters a header cannot".into())
            })?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .default_headers(headers)
        .build()
        .map_err(|e| Error::Unavailable(format!("building the HTTP client: {e}")))
}

/// The remote process did not answer: a 502, as a proxy would say.
fn unreachable(what: &str, url: &str, e: impl std::fmt::Display) -> Error {
    Error::Remote {
        status: 502,
        code: "backend_unavailable".into(),
        param: None,
        message: format!("the {what} at {url} is unreachable: {e}"),
    }
}

/// A refusal from the remote process, passed on with its status and code.
async fn refusal(response: reqwest::Response) -> Error {
    let status = response.status().as_u16();
    let body = response.bytes().await.unwrap_or_default();
    ErrorBody::parse(status, &body)
}

/// Whether the hearth process at `base` answers `GET /readyz` with 200
/// (up, models loaded) within 2 s.
pub async fn is_ready(client: &reqwest::Client, base: &str) -> bool {
    client
        .get(format!("{}/readyz", base.trim_end_matches('/')))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

/// Poll [`is_ready`] every `every` until it says yes (true) or the
/// deadline, if any, passes (false).
pub async fn wait_until_ready(
    client: &reqwest::Client,
    base: &str,
    every: Duration,
    deadline: Option<Instant>,
) -> bool {
    loop {
        if is_ready(client, base).await {
            return true;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return false;
        }
        tokio::time::sleep(every).await;
    }
}

/// GET `path` from a replica until one answers 200 (the process is up and
/// its models are loaded), for at most `wait`.
async fn fetch_when_ready<T: serde::de::DeserializeOwned>(
    client: &reqwest::Client,
    what: &str,
    replicas: &Arc<Replicas>,
    path: &str,
    wait: Duration,
) -> Result<T> {
    let deadline = Instant::now() + wait;
    let mut logged = false;
    let url = replicas.url();
    loop {
        replicas.refresh(true).await;
        let last = match replicas.pick().await {
            None => format!("{url} resolves to no address"),
            Some(lease) => match client.get(format!("{}{path}", lease.base)).send().await {
                Ok(r) if r.status().is_success() => {
                    lease.succeeded();
                    return r
                        .json()
                        .await
                        .map_err(|e| unreachable(what, url, format!("unreadable answer: {e}")));
                }
                Ok(r) => format!("it answered {}", r.status()),
                Err(e) => e.to_string(),
            },
        };
        if Instant::now() >= deadline {
            return Err(unreachable(what, url, last));
        }
        if !logged {
            tracing::info!(%url, "waiting for the remote {what}: {last}");
            logged = true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Send a request to one replica, and to another while connections are
/// refused (nothing reached the first, so nothing is done twice). The
/// lease keeps the replica counted busy until dropped.
async fn send(
    replicas: &Arc<Replicas>,
    what: &str,
    build: impl Fn(&str) -> reqwest::RequestBuilder,
) -> Result<(reqwest::Response, Lease)> {
    let url = replicas.url();
    let mut tried = Vec::new();
    let mut lease = replicas
        .pick()
        .await
        .ok_or_else(|| unreachable(what, url, "its name resolves to no address"))?;
    loop {
        match with_request_id(build(&lease.base)).send().await {
            Ok(response) => {
                lease.succeeded();
                return Ok((response, lease));
            }
            Err(e) => {
                lease.failed();
                if !e.is_connect() {
                    return Err(unreachable(what, &lease.base, e));
                }
                tried.push(lease.base.clone());
                lease = match replicas.pick_other(&tried) {
                    Some(next) => next,
                    None => return Err(unreachable(what, url, e)),
                };
            }
        }
    }
}

/// The id of the HTTP request being served (if any) on a call to another
/// hearth process, so that its log lines carry the same id.
fn with_request_id(request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    match crate::telemetry::request_id() {
        Some(id) => request.header(crate::telemetry::REQUEST_ID_HEADER, id),
        None => request,
    }
}

/// POST JSON to a replica's `path` and read the JSON answer; a refusal
/// keeps its status and code.
async fn post_json<T: serde::de::DeserializeOwned>(
    client: &reqwest::Client,
    what: &str,
    replicas: &Arc<Replicas>,
    path: &str,
    body: &impl Serialize,
) -> Result<T> {
    let (response, lease) = send(replicas, what, |base| {
        client.post(format!("{base}{path}")).json(body)
    })
    .await?;
    if !response.status().is_success() {
        return Err(refusal(response).await);
    }
    response.json().await.map_err(|e| {
        lease.failed();
        unreachable(what, &lease.base, e)
    })
}

/// An embedding model served by another process.
pub struct RemoteEmbedder {
    client: reqwest::Client,
    replicas: Arc<Replicas>,
    pub url: String,
    pub info: EmbedderInfo,
    tokenizer: Tokenizer,
}

impl RemoteEmbedder {
    /// Wait for the process at `url` to be ready and learn its model;
    /// `key` authenticates this process's calls.
    pub async fn connect(url: &str, wait: Duration, key: Option<&str>) -> Result<Self> {
        let replicas = Replicas::new(url);
        let url = replicas.url().to_string();
        let client = client(key)?;
        let info: EmbedderInfo =
            fetch_when_ready(&client, "embedder", &replicas, "/embedder", wait).await?;
        let tokenizer = Tokenizer::from_str(&info.tokenizer.to_string())
            .map_err(|e| Error::tokenizer(format!("the tokenizer from {url}: {e}")))?;
        Ok(Self {
            client,
            replicas,
            url,
            info,
            tokenizer,
        })
    }

    /// Its replicas, as they stand.
    pub fn replicas(&self) -> Vec<ReplicaState> {
        self.replicas.states()
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Embed `texts`, in order, and count the tokens the model saw of them.
    pub async fn embed_counted(&self, texts: Vec<String>) -> Result<(Vec<Vec<f32>>, usize)> {
        #[derive(Deserialize)]
        struct Embedded {
            embeddings: Vec<Vec<f64>>,
            usage: Usage,
        }
        #[derive(Deserialize)]
        struct Usage {
            prompt_tokens: usize,
        }
        let mut vectors = Vec::with_capacity(texts.len());
        let mut tokens = 0;
        for chunk in texts.chunks(EMBED_CHUNK) {
            let body: Embedded = post_json(
                &self.client,
                "embedder",
                &self.replicas,
                "/embed",
                &serde_json::json!({ "input": chunk }),
            )
            .await?;
            tokens += body.usage.prompt_tokens;
            // The values are f32s written exactly, so this loses nothing.
            vectors.extend(
                body.embeddings
                    .into_iter()
                    .map(|v| v.into_iter().map(|x| x as f32).collect()),
            );
        }
        Ok((vectors, tokens))
    }
}

/// An LLM served by another process, with its tokenizer and chat template.
pub struct RemoteGenerator {
    client: reqwest::Client,
    replicas: Arc<Replicas>,
    pub url: String,
    pub info: GeneratorInfo,
    tokenizer: LlmTokenizer,
    chat: ChatTemplate,
}

impl RemoteGenerator {
    /// Wait for the process at `url` to be ready and learn its model;
    /// `key` authenticates this process's calls.
    pub async fn connect(url: &str, wait: Duration, key: Option<&str>) -> Result<Self> {
        let replicas = Replicas::new(url);
        let url = replicas.url().to_string();
        let client = client(key)?;
        let GeneratorDescription {
            info,
            tokenizer,
            chat_template,
        } = fetch_when_ready(&client, "generator", &replicas, "/generator", wait).await?;
        let bad = |e: Error| Error::Unavailable(format!("the generator at {url}: {e}"));
        let tokenizer = LlmTokenizer::from_wire(tokenizer).map_err(bad)?;
        let chat = ChatTemplate::from_wire(&chat_template).map_err(bad)?;
        Ok(Self {
            client,
            replicas,
            url,
            info,
            tokenizer,
            chat,
        })
    }

    /// Its replicas, as they stand.
    pub fn replicas(&self) -> Vec<ReplicaState> {
        self.replicas.states()
    }

    /// The remote model's tokenizer, fetched when this process connected.
    pub fn tokenizer(&self) -> &LlmTokenizer {
        &self.tokenizer
    }

    /// The remote model's chat template, likewise.
    pub fn chat(&self) -> &ChatTemplate {
        &self.chat
    }

    /// Render and tokenize a conversation with the remote model's template
    /// and tokenizer, here (CPU work: call it off the async runtime).
    pub fn encode_chat(&self, messages: &[Message], tools: &[Tool]) -> Result<Vec<u32>> {
        crate::models::llm::encode_chat(&self.tokenizer, &self.chat, messages, tools)
    }

    /// Start a generation on the remote process. The events arrive as a
    /// local worker's would; dropping the stream closes the connection,
    /// which cancels the remote generation.
    pub fn submit(&self, prompt: Prompt, params: SamplingParams) -> GenerationStream {
        let (events, rx) = mpsc::unbounded_channel();
        let body = GenerateRequest {
            prompt,
            params,
            stream: true,
        };
        let client = self.client.clone();
        let replicas = self.replicas.clone();
        // Read here: the request's id does not follow into the task.
        let id = crate::telemetry::request_id();
        tokio::spawn(async move {
            let request = send(&replicas, "generator", |base| {
                let request = client.post(format!("{base}/generate")).json(&body);
                match &id {
                    Some(id) => request.header(crate::telemetry::REQUEST_ID_HEADER, id),
                    None => request,
                }
            });
            let outcome = tokio::select! {
                outcome = async {
                    let (response, lease) = request.await?;
                    relay(response, lease, &events).await
                } => outcome,
                _ = events.closed() => Ok(()),
            };
            if let Err(e) = outcome {
                let _ = events.send(Event::Error(e));
            }
        });
        GenerationStream::from_channel(rx)
    }
}

/// Pass the answer's SSE events on until `done` or `error`; a replica that
/// loses the stream is left out for a while.
async fn relay(
    response: reqwest::Response,
    lease: Lease,
    events: &mpsc::UnboundedSender<Event>,
) -> Result<()> {
    let url = lease.base.as_str();
    if !response.status().is_success() {
        return Err(refusal(response).await);
    }
    let mut body = response.bytes_stream();
    let mut frames = SseDecoder::new();
    while let Some(bytes) = body.next().await {
        let bytes = bytes.map_err(|e| {
            lease.failed();
            unreachable("generator", url, format!("lost mid-answer: {e}"))
        })?;
        frames.push(&bytes);
        while let Some(frame) = frames.next_frame() {
            let bad = |e: serde_json::Error| {
                Error::Unavailable(format!(
                    "the generator at {url} sent a bad {} event: {e}",
                    frame.event
                ))
            };
            let event = match frame.event.as_str() {
                event::STARTED => {
                    let s: Started = frame.json().map_err(bad)?;
                    Event::Started {
                        prompt_tokens: s.prompt_tokens,
                    }
                }
                event::TEXT => {
                    let t: Text = frame.json().map_err(bad)?;
                    if !t.logprobs.is_empty() && events.send(Event::Logprobs(t.logprobs)).is_err() {
                        return Ok(()); // the caller went away
                    }
                    Event::Text(t.text)
                }
                event::DONE => {
                    let c: Completion = frame.json().map_err(bad)?;
                    let _ = events.send(Event::Done(c));
                    return Ok(());
                }
                event::ERROR => return Err(ErrorBody::parse(500, frame.data.as_bytes())),
                _ => continue,
            };
            if events.send(event).is_err() {
                return Ok(()); // the caller went away
            }
        }
    }
    lease.failed();
    Err(unreachable(
        "generator",
        url,
        "it closed the stream before finishing",
    ))
}
