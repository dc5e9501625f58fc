//! The scenarios beyond the steady workload, each against one running
//! deployment: `interference` (one pipeline's latency while the other is
//! saturated), `routing` (the cost of the way in, straight and through the
//! front door) and `fault` (kill the process serving `/fine-tuned` under
//! load; what the other pipeline sees, and how long until it is back).

use super::launched::Launched;
use super::load::{closed_loop, send, Sample, Targets};
use super::results::{Fault, Interference, OutageFigures, ProcessInfo, RoutingRow};
use super::stats::Summary;
use super::workload::{Pipeline, Workload};
use crate::engine::remote::wait_until_ready;
use crate::error::{Error, Result};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `/fine-tuned` alone, then with `/rag` kept busy by two looping clients.
pub(super) async fn interference(
    client: &reqwest::Client,
    w: &Workload,
    targets: &Targets,
    progress: &indicatif::ProgressBar,
) -> Result<Interference> {
    // Enough requests for a p50 that one slow request cannot move.
    let n = w.bounds.requests.clamp(12, 32);
    let ft = w.pipeline_plan(Pipeline::FineTuned, n)?;
    let rag = w.pipeline_plan(Pipeline::Rag, 1)?.remove(0);
    progress.inc_length(2 * n as u64);
    let timed = |samples: &[Sample]| {
        Summary::of(
            &samples
                .iter()
                .filter(|s| s.ok)
                .map(|s| s.e2e_ms)
                .collect::<Vec<_>>(),
        )
    };
    let (alone, _) = closed_loop(client, targets, &ft, 1, Duration::from_secs(600), progress).await;
    let rag_clients = 2;
    let stop = Arc::new(AtomicBool::new(false));
    let mut loopers = Vec::new();
    for _ in 0..rag_clients {
        let (client, targets, stop) = (client.clone(), targets.clone(), stop.clone());
        let rag = rag.clone();
        loopers.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                send(&client, &targets, &rag, Instant::now(), Instant::now()).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (loaded, _) =
        closed_loop(client, targets, &ft, 1, Duration::from_secs(600), progress).await;
    stop.store(true, Ordering::SeqCst);
    for l in loopers {
        let _ = l.await;
    }
    let (alone, loaded) = (timed(&alone), timed(&loaded));
    Ok(Interference {
        slowdown_p50: if alone.p50 > 0.0 {
            loaded.p50 / alone.p50
        } else {
            0.0
        },
        alone,
        with_rag_saturated: loaded,
        rag_clients,
    })
}

/// The cost of the way in, on requests that do almost no work: a request
/// `/fine-tuned` rejects at once (400, no model work: every hop still
/// parses and forwards it), and a 1-token generation. Sent straight to the
/// process serving `/fine-tuned` and, where there is one, through the
/// front door, interleaved so that drift hits both alike.
pub(super) async fn routing(
    client: &reqwest::Client,
    topology: &str,
    targets: &Targets,
    processes: &[ProcessInfo],
) -> Vec<RoutingRow> {
    let direct = processes
        .iter()
        .find(|p| p.name == "fine-tuned")
        .map(|p| p.url.clone());
    let paths: Vec<(String, String)> = match (topology, direct) {
        ("gateway", Some(d)) => vec![
            ("direct".into(), d),
            ("gateway".into(), targets.fine_tuned.clone()),
        ],
        ("unified", _) => vec![("unified".into(), targets.fine_tuned.clone())],
        _ => vec![("direct".into(), targets.fine_tuned.clone())],
    };
    let one_token = super::workload::Planned {
        pipeline: Pipeline::FineTuned,
        body: serde_json::json!({ "prompt": "Hello", "max_tokens": 1, "stream": false }),
    };
    let mut rejected = vec![Vec::new(); paths.len()];
    let mut generated = vec![Vec::new(); paths.len()];
    for round in 0..120 {
        for (i, (_, url)) in paths.iter().enumerate() {
            let t = Instant::now();
            let r = client
                .post(format!("{url}/fine-tuned"))
                .json(&serde_json::json!({}))
                .send()
                .await;
            if let Ok(r) = r {
                let _ = r.bytes().await;
                if round >= 20 {
                    rejected[i].push(t.elapsed().as_secs_f64() * 1e3);
                }
            }
            if round % 6 == 5 {
                let only = Targets {
                    rag: url.clone(),
                    fine_tuned: url.clone(),
                };
                let s = send(client, &only, &one_token, Instant::now(), Instant::now()).await;
                if s.ok && round >= 20 {
                    generated[i].push(s.e2e_ms);
                }
            }
        }
    }
    paths
        .into_iter()
        .enumerate()
        .map(|(i, (path, url))| RoutingRow {
            path,
            url,
            rejected: Summary::of(&rejected[i]),
            one_token: Summary::of(&generated[i]),
        })
        .collect()
}

/// Mixed load on both pipelines; SIGKILL the process serving `/fine-tuned`
/// two seconds in; keep both pipelines busy until `/fine-tuned` answers
/// again (or 120 s).
pub(super) async fn fault(
    client: &reqwest::Client,
    w: &Workload,
    targets: &Targets,
    up: &mut Launched,
    progress: &indicatif::ProgressBar,
) -> Result<Fault> {
    let victim = up
        .processes
        .iter()
        .find(|p| p.name == "fine-tuned" || p.name == "unified")
        .cloned()
        .ok_or_else(|| Error::InvalidInput("no process serves /fine-tuned".into()))?;
    let epoch = Instant::now();
    let samples = Arc::new(Mutex::new(Vec::<Sample>::new()));
    let killed_at: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    let recovered = Arc::new(AtomicBool::new(false));
    let deadline = epoch + Duration::from_secs(120);
    let mut loops = Vec::new();
    for pipeline in [Pipeline::Rag, Pipeline::FineTuned] {
        let requests = w.pipeline_plan(pipeline, 64)?;
        let (client, targets, samples, killed_at, recovered, progress) = (
            client.clone(),
            targets.clone(),
            samples.clone(),
            killed_at.clone(),
            recovered.clone(),
            progress.clone(),
        );
        loops.push(tokio::spawn(async move {
            let mut i = 0;
            loop {
                let after_recovery = recovered.load(Ordering::SeqCst);
                if Instant::now() >= deadline || (after_recovery && pipeline == Pipeline::Rag) {
                    return;
                }
                progress.inc_length(1);
                let sent = Instant::now();
                let s = send(
                    &client,
                    &targets,
                    &requests[i % requests.len()],
                    sent,
                    epoch,
                )
                .await;
                i += 1;
                progress.inc(1);
                let killed = *killed_at.lock().expect("not poisoned");
                let ok = s.ok;
                samples.lock().expect("not poisoned").push(s);
                if pipeline == Pipeline::FineTuned && ok && killed.is_some_and(|k| sent > k) {
                    recovered.store(true, Ordering::SeqCst);
                    return;
                }
                if !ok {
                    // Do not spin on instant failures.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let kill = Instant::now();
    *killed_at.lock().expect("not poisoned") = Some(kill);
    // SAFETY: kill(2) on a child of our launcher, by pid.
    unsafe {
        libc::kill(victim.pid as libc::pid_t, libc::SIGKILL);
    }
    // Ready again: the restarted process (or the gateway, which checks its
    // backends) answers /readyz.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let every = Duration::from_millis(50);
    let ready_again = wait_until_ready(client, &targets.fine_tuned, every, Some(deadline))
        .await
        .then(|| kill.elapsed());
    for l in loops {
        let _ = l.await;
    }
    let killed = killed_at.lock().expect("not poisoned").expect("set above");
    let killed_ms = (killed - epoch).as_secs_f64() * 1e3;
    let samples = std::mem::take(&mut *samples.lock().expect("not poisoned"));
    let recovery_ms = samples
        .iter()
        .filter(|s| s.pipeline == Pipeline::FineTuned && s.ok && s.sent_at_ms > killed_ms)
        .map(|s| s.sent_at_ms + s.e2e_ms)
        .fold(f64::INFINITY, f64::min);
    let first_success_s = recovery_ms
        .is_finite()
        .then(|| (recovery_ms - killed_ms) / 1e3);
    let recovery_s = ready_again.map(|d| d.as_secs_f64());
    // The outage: from the kill until the process is ready again.
    let window_end = recovery_s.map_or(f64::INFINITY, |r| killed_ms + r * 1e3);
    let during = |p: Pipeline| {
        let inside: Vec<&Sample> = samples
            .iter()
            .filter(|s| s.pipeline == p)
            .filter(|s| s.sent_at_ms + s.e2e_ms > killed_ms && s.sent_at_ms < window_end)
            .collect();
        let ok: Vec<f64> = inside.iter().filter(|s| s.ok).map(|s| s.e2e_ms).collect();
        OutageFigures {
            requests: inside.len(),
            ok: ok.len(),
            success_rate: if inside.is_empty() {
                0.0
            } else {
                ok.len() as f64 / inside.len() as f64
            },
            e2e_ok: Summary::of(&ok),
        }
    };
    // The launcher restarted it: learn the new pid for later scenarios.
    up.refresh(client).await;
    Ok(Fault {
        killed: victim.name.clone(),
        killed_pid: victim.pid,
        recovery_s,
        first_success_s,
        rag_during_outage: during(Pipeline::Rag),
        fine_tuned_during_outage: during(Pipeline::FineTuned),
        samples,
        killed_at_ms: killed_ms,
    })
}
