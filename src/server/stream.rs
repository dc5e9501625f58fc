//! What the model routes share when they answer: the wait for a prompt to
//! be accepted, a generation as a stream of events (Server-Sent Events, or
//! newline-delimited JSON), token usage, and a response's id and time. SSE
//! events are encoded here only, with the names of
//! [`crate::engine::protocol::event`].

use super::error::ApiError;
use crate::engine::{Completion, Event, GenerationStream, TokenLogprob};
use crate::error::Error;
use axum::response::sse::Event as SseEvent;
use futures_util::stream::{self, Stream};
use serde::Serialize;
use serde_json::Value;
use std::collections::VecDeque;
use std::convert::Infallible;
use utoipa::ToSchema;

/// Seconds since the Unix epoch (a response's `created`).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A response's id: `prefix` and 24 random hex digits (`chatcmpl-...`,
/// `msg_...`).
pub fn new_id(prefix: &str) -> String {
    use rand::Rng;
    let bytes: [u8; 12] = rand::rng().random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}{hex}")
}

/// Token counts of one generation.
#[derive(Debug, Serialize, ToSchema)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
}

/// Wait until the worker accepts the prompt, so that a prompt it refuses is
/// an HTTP error rather than an event in a stream that already said 200.
pub async fn started(stream: &mut GenerationStream) -> Result<usize, ApiError> {
    match stream.next().await {
        Some(Event::Started { prompt_tokens }) => Ok(prompt_tokens),
        Some(Event::Error(e)) => Err(e.into()),
        Some(_) | None => Err(Error::Unavailable("the generation worker stopped".into()).into()),
    }
}

enum Progress<E, T, D> {
    Running(GenerationStream, T, D, VecDeque<E>),
    Draining(VecDeque<E>),
}

/// A generation as a stream of events (SSE events, or the lines of
/// Ollama's newline-delimited JSON): `text` shapes each piece of text (with
/// the log-probabilities of its tokens, when asked for) into events (none,
/// when it holds the piece back for later), `end` the events that close
/// the stream (after the completion or an error). Dropping the stream (the
/// client went away) drops the generation, which the worker then cancels.
pub fn event_stream<E, T, D>(
    stream: GenerationStream,
    text: T,
    end: D,
) -> impl Stream<Item = Result<E, Infallible>> + Send
where
    E: Send + 'static,
    T: FnMut(String, Vec<TokenLogprob>) -> Vec<E> + Send + 'static,
    D: FnOnce(Result<Completion, ApiError>) -> Vec<E> + Send + 'static,
{
    stream::unfold(
        Progress::Running(stream, text, end, VecDeque::new()),
        |progress| async move {
            match progress {
                Progress::Draining(mut rest) => {
                    let next = rest.pop_front()?;
                    Some((Ok(next), Progress::Draining(rest)))
                }
                Progress::Running(mut stream, mut text, end, mut queue) => {
                    let mut logprobs = Vec::new();
                    loop {
                        if let Some(event) = queue.pop_front() {
                            return Some((Ok(event), Progress::Running(stream, text, end, queue)));
                        }
                        let outcome = match stream.next().await {
                            Some(Event::Started { .. }) => continue,
                            Some(Event::Logprobs(l)) => {
                                logprobs.extend(l);
                                continue;
                            }
                            Some(Event::Text(piece)) => {
                                queue.extend(text(piece, std::mem::take(&mut logprobs)));
                                continue;
                            }
                            Some(Event::Done(c)) => Ok(c),
                            Some(Event::Error(e)) => Err(ApiError::from(e)),
                            None => Err(ApiError::from(Error::Unavailable(
                                "the generation worker stopped".into(),
                            ))),
                        };
                        let mut rest: VecDeque<E> = end(outcome).into();
                        let first = rest.pop_front()?;
                        return Some((Ok(first), Progress::Draining(rest)));
                    }
                }
            }
        },
    )
}

/// One SSE event with JSON data.
pub fn json_event(name: &str, value: &Value) -> SseEvent {
    SseEvent::default().event(name).data(value.to_string())
}

pub fn usage(prompt_tokens: usize, c: &Completion) -> Usage {
    Usage {
        prompt_tokens,
        completion_tokens: c.tokens.len(),
        total_tokens: prompt_tokens + c.tokens.len(),
    }
}
