//! Sending load and timing it: one request over HTTP with its stream timed
//! token by token, closed-loop clients, and open-loop arrivals measured
//! from their scheduled send time (so a backlog is not hidden: no
//! coordinated omission).

use super::workload::{poisson_arrivals, Pipeline, Planned};
use crate::engine::protocol::{event, SseDecoder};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Where each pipeline's requests go (one URL in unified and gateway
/// topologies, two in the separated ones).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Targets {
    pub rag: String,
    pub fine_tuned: String,
}

impl Targets {
    pub fn url(&self, pipeline: Pipeline) -> String {
        let base = match pipeline {
            Pipeline::Rag => &self.rag,
            Pipeline::FineTuned => &self.fine_tuned,
        };
        format!("{base}{}", pipeline.path())
    }
}

/// What one request did, in milliseconds from its (scheduled) send time.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sample {
    pub pipeline: Pipeline,
    /// HTTP status; 0 when the connection failed.
    pub status: u16,
    pub ok: bool,
    /// Since the start of the run.
    pub sent_at_ms: f64,
    pub ttft_ms: Option<f64>,
    pub e2e_ms: f64,
    /// Gaps between consecutive streamed pieces of text.
    pub itl_ms: Vec<f64>,
    /// Generated tokens, as the server counted them (`usage`).
    pub tokens: usize,
    /// Text pieces received (`token` events).
    pub pieces: usize,
    /// The pieces joined equal the final text.
    pub consistent: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Send one planned request and time it. `scheduled` is when it
/// should have been sent; `epoch` is the run's start.
pub async fn send(
    client: &reqwest::Client,
    targets: &Targets,
    planned: &Planned,
    scheduled: Instant,
    epoch: Instant,
) -> Sample {
    let mut sample = Sample {
        pipeline: planned.pipeline,
        status: 0,
        ok: false,
        sent_at_ms: ms(scheduled.saturating_duration_since(epoch)),
        ttft_ms: None,
        e2e_ms: 0.0,
        itl_ms: Vec::new(),
        tokens: 0,
        pieces: 0,
        consistent: false,
        error: None,
    };
    let response = client
        .post(targets.url(planned.pipeline))
        .json(&planned.body)
        .send()
        .await;
    let response = match response {
        Ok(r) => r,
        Err(e) => {
            sample.e2e_ms = ms(scheduled.elapsed());
            sample.error = Some(e.to_string());
            return sample;
        }
    };
    sample.status = response.status().as_u16();
    if !response.status().is_success() {
        let body = response.text().await.unwrap_or_default();
        sample.e2e_ms = ms(scheduled.elapsed());
        sample.error = Some(body);
        return sample;
    }
    let streamed = planned.body["stream"].as_bool().unwrap_or(false);
    let outcome = if streamed {
        read_stream(response, scheduled, &mut sample).await
    } else {
        read_whole(response, scheduled, &mut sample).await
    };
    sample.e2e_ms = ms(scheduled.elapsed());
    match outcome {
        Ok(()) => sample.ok = true,
        Err(e) => sample.error = Some(e),
    }
    sample
}

async fn read_whole(
    response: reqwest::Response,
    scheduled: Instant,
    sample: &mut Sample,
) -> Result<(), String> {
    let body: serde_json::Value = response.json().await.map_err(|e| e.to_string())?;
    sample.ttft_ms = Some(ms(scheduled.elapsed()));
    sample.tokens = body["usage"]["completion_tokens"].as_u64().unwrap_or(0) as usize;
    sample.consistent = true;
    Ok(())
}

async fn read_stream(
    response: reqwest::Response,
    scheduled: Instant,
    sample: &mut Sample,
) -> Result<(), String> {
    let mut body = response.bytes_stream();
    let mut frames = SseDecoder::new();
    let mut joined = String::new();
    let mut last_piece: Option<Instant> = None;
    while let Some(bytes) = body.next().await {
        let bytes = bytes.map_err(|e| format!("the stream broke: {e}"))?;
        let now = Instant::now();
        frames.push(&bytes);
        while let Some(frame) = frames.next_frame() {
            let Ok(value) = frame.json::<serde_json::Value>() else {
                continue; // not JSON: nothing hearth's pipelines send
            };
            match frame.event.as_str() {
                event::TOKEN => {
                    match last_piece {
                        None => sample.ttft_ms = Some(ms(now - scheduled)),
                        Some(prev) => sample.itl_ms.push(ms(now - prev)),
                    }
                    last_piece = Some(now);
                    sample.pieces += 1;
                    joined.push_str(value["text"].as_str().unwrap_or(""));
                }
                event::DONE => {
                    sample.tokens =
                        value["usage"]["completion_tokens"].as_u64().unwrap_or(0) as usize;
                    let text = value["answer"]
                        .as_str()
                        .or_else(|| value["text"].as_str())
                        .unwrap_or("");
                    sample.consistent = text == joined;
                    if sample.ttft_ms.is_none() {
                        sample.ttft_ms = Some(ms(now - scheduled));
                    }
                    return Ok(());
                }
                event::ERROR => return Err(value.to_string()),
                _ => {}
            }
        }
    }
    Err("the stream ended without a done event".into())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Send `plan` with `clients` closed-loop clients, each sending its next
/// request when its last one ends, until the plan or `limit` runs out.
pub async fn closed_loop(
    client: &reqwest::Client,
    targets: &Targets,
    plan: &[Planned],
    clients: usize,
    limit: Duration,
    progress: &indicatif::ProgressBar,
) -> (Vec<Sample>, Duration) {
    let next = Arc::new(AtomicUsize::new(0));
    let samples = Arc::new(Mutex::new(Vec::new()));
    let epoch = Instant::now();
    let plan: Arc<Vec<Planned>> = Arc::new(plan.to_vec());
    let workers: Vec<_> = (0..clients)
        .map(|_| {
            let (next, samples, plan) = (next.clone(), samples.clone(), plan.clone());
            let (client, targets, progress) = (client.clone(), targets.clone(), progress.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= plan.len() || epoch.elapsed() >= limit {
                        return;
                    }
                    let sample = send(&client, &targets, &plan[i], Instant::now(), epoch).await;
                    samples.lock().expect("not poisoned").push(sample);
                    progress.inc(1);
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.await;
    }
    let elapsed = epoch.elapsed();
    let samples = std::mem::take(&mut *samples.lock().expect("not poisoned"));
    (samples, elapsed)
}

/// Send `plan` at Poisson arrival times (`rate` per second, `seed`), each
/// timed from its scheduled time, whatever the server's pace.
pub async fn open_loop(
    client: &reqwest::Client,
    targets: &Targets,
    plan: &[Planned],
    rate: f64,
    seed: u64,
    limit: Duration,
    progress: &indicatif::ProgressBar,
) -> (Vec<Sample>, Duration) {
    let arrivals = poisson_arrivals(rate, plan.len(), seed);
    let epoch = Instant::now();
    let mut tasks = Vec::new();
    for (planned, at) in plan.iter().zip(arrivals) {
        let scheduled = epoch + Duration::from_secs_f64(at);
        if scheduled - epoch >= limit {
            break;
        }
        tokio::time::sleep_until(scheduled.into()).await;
        let (client, targets, planned, progress) = (
            client.clone(),
            targets.clone(),
            planned.clone(),
            progress.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let sample = send(&client, &targets, &planned, scheduled, epoch).await;
            progress.inc(1);
            sample
        }));
    }
    let mut samples = Vec::new();
    for t in tasks {
        if let Ok(s) = t.await {
            samples.push(s);
        }
    }
    (samples, epoch.elapsed())
}
