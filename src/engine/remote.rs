//! Clients for models served by another hearth process (roles `embed` and
//! `generate`), so that a `rag` process can use them exactly as it uses its
//! own workers: the same calls, the same [`Event`]s, the same errors (a
//! remote refusal keeps its status and code; an unreachable process is
//! [`Error::Unavailable`]).
//!
//! The wire protocol is hearth's own HTTP API: `GET /embedder` and
//! `POST /embed`; `GET /generator`, `POST /tokenize` and `POST /generate`
//! (SSE events `started`, `text`, `done`, `error`).

use super::generator::{Completion, Event, GenerationStream, Prompt};
use crate::error::{Error, Result};
use crate::models::llm::chat::Message;
use crate::models::llm::sampling::SamplingParams;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::str::FromStr;
use std::time::{Duration, Instant};
use tokenizers::Tokenizer;
use tokio::sync::mpsc;

/// What an embedding process serves at `GET /embedder`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EmbedderInfo {
    pub name: String,
    pub dimensions: usize,
    pub max_tokens: usize,
    /// The tokenizer (`tokenizer.json`), so that the client chunks and
    /// counts tokens exactly as the embedder does.
    pub tokenizer: serde_json::Value,
}

/// What a generation process serves at `GET /generator`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GeneratorInfo {
    pub name: String,
    pub context_length: usize,
    pub max_prompt_tokens: usize,
    pub max_tokens_limit: usize,
}

/// The body of `POST /generate`.
#[derive(Debug, Serialize, Deserialize)]
pub struct GenerateRequest {
    #[serde(flatten)]
    pub prompt: Prompt,
    #[serde(flatten)]
    pub params: SamplingParams,
    #[serde(default)]
    pub stream: bool,
}

/// `POST /tokenize`'s body and answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct TokenizeRequest {
    pub messages: Vec<Message>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Tokenized {
    pub tokens: Vec<u32>,
}

/// How long a client waits for its remote process to become ready at start.
pub const CONNECT_WAIT: Duration = Duration::from_secs(300);

/// Texts per `POST /embed` call.
const EMBED_CHUNK: usize = 256;

fn client() -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
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
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    let error = &body["error"];
    let text = |k: &str| error[k].as_str().map(String::from);
    Error::Remote {
        status,
        code: text("code").unwrap_or_else(|| "remote_error".into()),
        param: text("param"),
        message: text("message").unwrap_or_else(|| format!("the remote process answered {status}")),
    }
}

/// GET `url` until it answers 200 (the process is up and its models are
/// loaded), for at most `wait`.
async fn fetch_when_ready<T: serde::de::DeserializeOwned>(
    client: &reqwest::Client,
    what: &str,
    url: &str,
    wait: Duration,
) -> Result<T> {
    let deadline = Instant::now() + wait;
    let mut logged = false;
    loop {
        let last = match client.get(url).send().await {
            Ok(r) if r.status().is_success() => {
                return r
                    .json()
                    .await
                    .map_err(|e| unreachable(what, url, format!("unreadable answer: {e}")))
            }
            Ok(r) => format!("it answered {}", r.status()),
            Err(e) => e.to_string(),
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

/// POST JSON to `base` + `path` and read the JSON answer; a refusal keeps
/// its status and code.
async fn post_json<T: serde::de::DeserializeOwned>(
    client: &reqwest::Client,
    what: &str,
    base: &str,
    path: &str,
    body: &impl Serialize,
) -> Result<T> {
    let response = client
        .post(format!("{base}{path}"))
        .json(body)
        .send()
        .await
        .map_err(|e| unreachable(what, base, e))?;
    if !response.status().is_success() {
        return Err(refusal(response).await);
    }
    response
        .json()
        .await
        .map_err(|e| unreachable(what, base, e))
}

fn base(url: &str) -> String {
    url.trim_end_matches('/').to_string()
}

/// An embedding model served by another process.
pub struct RemoteEmbedder {
    client: reqwest::Client,
    pub url: String,
    pub info: EmbedderInfo,
    tokenizer: Tokenizer,
}

impl RemoteEmbedder {
    /// Wait for the process at `url` to be ready and learn its model.
    pub async fn connect(url: &str, wait: Duration) -> Result<Self> {
        let url = base(url);
        let client = client()?;
        let info: EmbedderInfo =
            fetch_when_ready(&client, "embedder", &format!("{url}/embedder"), wait).await?;
        let tokenizer = Tokenizer::from_str(&info.tokenizer.to_string())
            .map_err(|e| Error::tokenizer(format!("the tokenizer from {url}: {e}")))?;
        Ok(Self {
            client,
            url,
            info,
            tokenizer,
        })
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Embed `texts`, in order.
    pub async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>> {
        #[derive(Deserialize)]
        struct Embedded {
            embeddings: Vec<Vec<f64>>,
        }
        let mut vectors = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(EMBED_CHUNK) {
            let body: Embedded = post_json(
                &self.client,
                "embedder",
                &self.url,
                "/embed",
                &serde_json::json!({ "input": chunk }),
            )
            .await?;
            // The values are f32s written exactly, so this loses nothing.
            vectors.extend(
                body.embeddings
                    .into_iter()
                    .map(|v| v.into_iter().map(|x| x as f32).collect()),
            );
        }
        Ok(vectors)
    }
}

/// An LLM served by another process.
pub struct RemoteGenerator {
    client: reqwest::Client,
    pub url: String,
    pub info: GeneratorInfo,
}

impl RemoteGenerator {
    /// Wait for the process at `url` to be ready and learn its model.
    pub async fn connect(url: &str, wait: Duration) -> Result<Self> {
        let url = base(url);
        let client = client()?;
        let info =
            fetch_when_ready(&client, "generator", &format!("{url}/generator"), wait).await?;
        Ok(Self { client, url, info })
    }

    /// Render and tokenize a conversation with the remote model's template.
    pub async fn encode_chat(&self, messages: &[Message]) -> Result<Vec<u32>> {
        let request = TokenizeRequest {
            messages: messages.to_vec(),
        };
        let body: Tokenized =
            post_json(&self.client, "generator", &self.url, "/tokenize", &request).await?;
        Ok(body.tokens)
    }

    /// Start a generation on the remote process. The events arrive as a
    /// local worker's would; dropping the stream closes the connection,
    /// which cancels the remote generation.
    pub fn submit(&self, prompt: Prompt, params: SamplingParams) -> GenerationStream {
        let (events, rx) = mpsc::unbounded_channel();
        let request = self
            .client
            .post(format!("{}/generate", self.url))
            .json(&GenerateRequest {
                prompt,
                params,
                stream: true,
            });
        let url = self.url.clone();
        tokio::spawn(async move {
            let outcome = tokio::select! {
                outcome = relay(request, &url, &events) => outcome,
                _ = events.closed() => Ok(()),
            };
            if let Err(e) = outcome {
                let _ = events.send(Event::Error(e));
            }
        });
        GenerationStream::from_channel(rx)
    }
}

/// Send the request and pass its SSE events on until `done` or `error`.
async fn relay(
    request: reqwest::RequestBuilder,
    url: &str,
    events: &mpsc::UnboundedSender<Event>,
) -> Result<()> {
    let response = request
        .send()
        .await
        .map_err(|e| unreachable("generator", url, e))?;
    if !response.status().is_success() {
        return Err(refusal(response).await);
    }
    let mut body = response.bytes_stream();
    let mut buffer: Vec<u8> = Vec::new();
    while let Some(bytes) = body.next().await {
        let bytes =
            bytes.map_err(|e| unreachable("generator", url, format!("lost mid-answer: {e}")))?;
        buffer.extend_from_slice(&bytes);
        while let Some(end) = buffer.windows(2).position(|w| w == b"\n\n") {
            let frame: Vec<u8> = buffer.drain(..end + 2).collect();
            let Some((name, data)) = parse_frame(&String::from_utf8_lossy(&frame)) else {
                continue; // a keep-alive comment
            };
            let bad = |e: serde_json::Error| {
                Error::Unavailable(format!(
                    "the generator at {url} sent a bad {name} event: {e}"
                ))
            };
            let event = match name.as_str() {
                "started" => {
                    #[derive(Deserialize)]
                    struct Started {
                        prompt_tokens: usize,
                    }
                    let s: Started = serde_json::from_str(&data).map_err(bad)?;
                    Event::Started {
                        prompt_tokens: s.prompt_tokens,
                    }
                }
                "text" => {
                    #[derive(Deserialize)]
                    struct Text {
                        text: String,
                    }
                    Event::Text(serde_json::from_str::<Text>(&data).map_err(bad)?.text)
                }
                "done" => {
                    let c: Completion = serde_json::from_str(&data).map_err(bad)?;
                    let _ = events.send(Event::Done(c));
                    return Ok(());
                }
                "error" => {
                    let body: serde_json::Value = serde_json::from_str(&data).map_err(bad)?;
                    let error = &body["error"];
                    let text = |k: &str| error[k].as_str().map(String::from);
                    return Err(Error::Remote {
                        status: 500,
                        code: text("code").unwrap_or_else(|| "remote_error".into()),
                        param: text("param"),
                        message: text("message").unwrap_or_default(),
                    });
                }
                _ => continue,
            };
            if events.send(event).is_err() {
                return Ok(()); // the caller went away
            }
        }
    }
    Err(unreachable(
        "generator",
        url,
        "it closed the stream before finishing",
    ))
}

/// One SSE frame's event name and data.
fn parse_frame(frame: &str) -> Option<(String, String)> {
    let mut name = None;
    let mut data = Vec::new();
    for line in frame.lines() {
        if let Some(v) = line.strip_prefix("event:") {
            name = Some(v.trim().to_string());
        } else if let Some(v) = line.strip_prefix("data:") {
            data.push(v.strip_prefix(' ').unwrap_or(v));
        }
    }
    Some((name?, data.join("\n")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_parse() {
        assert_eq!(
            parse_frame("event: text\ndata: {\"text\":\"a\"}\n\n"),
            Some(("text".into(), "{\"text\":\"a\"}".into()))
        );
        assert_eq!(parse_frame(":\n\n"), None);
    }

    #[test]
    fn generate_request_round_trips() {
        let req = GenerateRequest {
            prompt: Prompt::Tokens(vec![1, 2, 3]),
            params: SamplingParams {
                max_tokens: 7,
                ..SamplingParams::default()
            },
            stream: true,
        };
        let json = serde_json::to_value(&req).unwrap();
        assert_eq!(json["tokens"], serde_json::json!([1, 2, 3]));
        assert_eq!(json["max_tokens"], 7);
        let back: GenerateRequest = serde_json::from_value(json).unwrap();
        assert!(matches!(back.prompt, Prompt::Tokens(t) if t == vec![1, 2, 3]));
        assert_eq!(back.params.max_tokens, 7);
        let chat: GenerateRequest =
            serde_json::from_str(r#"{"messages":[{"role":"user","content":"hi"}]}"#).unwrap();
        assert!(matches!(chat.prompt, Prompt::Chat(m) if m[0].content == "hi"));
    }
}
