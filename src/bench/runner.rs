//! `hearth bench`: bring up each topology through the launcher, ingest the
//! same corpus, run the same workload against each in turn (repeated), run
//! the scenarios asked for, tear it down, and keep every raw figure.
//!
//! Scenarios:
//! - `steady`: the workload's load shape; latency, TTFT, inter-token
//!   latency, throughput, errors, and per process RSS and CPU (the cost).
//! - `interference`: `/fine-tuned` latency alone, then while `/rag` is kept
//!   saturated.
//! - `routing`: a cheap route (`/healthz`) and a 1-token generation, sent
//!   straight to a process and through the front door.
//! - `fault`: SIGKILL the process serving `/fine-tuned` under mixed load;
//!   the other pipeline's success and latency during the outage, and the
//!   time until `/fine-tuned` answers again.

use super::load::{closed_loop, open_loop, send, Sample, Targets};
use super::procs::{ProcessUsage, Sampler};
use super::stats::{median, Summary};
use super::workload::{Load, Pipeline, Workload};
use crate::config::Config;
use crate::engine::remote::wait_until_ready;
use crate::error::{Error, Result};
use crate::topology::{Deployment, Serves, Topology};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    Steady,
    Interference,
    Routing,
    Fault,
}

/// What to run.
pub struct Plan {
    pub topologies: Vec<Topology>,
    pub workload: Workload,
    pub scenarios: Vec<Scenario>,
    pub repeat: usize,
    /// A deployment already running (rag URL, fine-tuned URL) instead of
    /// topologies brought up here.
    pub running: Option<Targets>,
    /// Ingest the corpus into a running deployment too.
    pub ingest_running: bool,
    pub out: PathBuf,
}

/// Everything measured, with what was measured and where.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Results {
    pub hearth_version: String,
    pub git_commit: String,
    pub machine: Machine,
    pub workload: Workload,
    pub config: Config,
    pub repeat: usize,
    pub scenarios: Vec<Scenario>,
    pub started_unix_s: u64,
    pub topologies: Vec<TopologyResult>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub memory_gib: f64,
    pub device: String,
    pub os: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TopologyResult {
    pub topology: String,
    /// From spawning the launcher to every process ready.
    pub cold_start_ms: Option<f64>,
    pub processes: Vec<ProcessInfo>,
    pub ingest_ms: f64,
    pub steady: Vec<Level>,
    pub interference: Option<Interference>,
    pub routing: Vec<RoutingRow>,
    pub fault: Option<Fault>,
}

/// One process of a measured topology, as its launcher listed it.
pub use crate::topology::Endpoint as ProcessInfo;

/// One load level (a client count, or an arrival rate), run `repeat` times.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Level {
    pub label: String,
    pub clients: Option<usize>,
    pub runs: Vec<Run>,
    pub aggregate: Aggregate,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Run {
    pub duration_s: f64,
    pub samples: Vec<Sample>,
    pub processes: Vec<ProcessUsage>,
    pub summary: RunSummary,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunSummary {
    pub requests: usize,
    pub ok: usize,
    /// Failed requests by HTTP status (`0`: no connection).
    pub errors: BTreeMap<String, usize>,
    pub e2e: Summary,
    pub ttft: Summary,
    pub itl: Summary,
    pub rag_e2e: Summary,
    pub fine_tuned_e2e: Summary,
    pub requests_per_s: f64,
    /// Generated tokens per second, all requests together.
    pub tokens_per_s: f64,
    pub tokens: usize,
    /// Requests whose streamed pieces joined differ from the final text.
    pub inconsistent: usize,
    pub peak_rss_mib: f64,
    pub cpu_s: f64,
    pub cpu_s_per_1000: f64,
}

/// Medians over the repeats, and the spread of the median latency.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Aggregate {
    pub e2e_p50: f64,
    pub e2e_p95: f64,
    pub e2e_p99: f64,
    pub e2e_max: f64,
    pub e2e_mean: f64,
    pub e2e_ci95: f64,
    pub ttft_p50: f64,
    pub ttft_p95: f64,
    pub itl_p50: f64,
    pub rag_p50: f64,
    pub fine_tuned_p50: f64,
    pub requests_per_s: f64,
    pub tokens_per_s: f64,
    pub errors: usize,
    /// Lowest and highest per-run median end-to-end latency.
    pub e2e_p50_min: f64,
    pub e2e_p50_max: f64,
    pub peak_rss_mib: f64,
    pub cpu_s_per_1000: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Interference {
    pub alone: Summary,
    pub with_rag_saturated: Summary,
    /// `with_rag_saturated.p50 / alone.p50`.
    pub slowdown_p50: f64,
    pub rag_clients: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoutingRow {
    /// `unified`, `direct` (to the process) or `gateway` (through it).
    pub path: String,
    pub url: String,
    /// A request rejected at once (400): parsing and forwarding only.
    pub rejected: Summary,
    pub one_token: Summary,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fault {
    /// The process killed (it served `/fine-tuned`).
    pub killed: String,
    pub killed_pid: u32,
    /// From the kill until `/fine-tuned`'s process answers `/readyz` again.
    pub recovery_s: Option<f64>,
    /// From the kill to the end of the first `/fine-tuned` success sent
    /// after it.
    pub first_success_s: Option<f64>,
    pub rag_during_outage: OutageFigures,
    pub fine_tuned_during_outage: OutageFigures,
    pub samples: Vec<Sample>,
    pub killed_at_ms: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct OutageFigures {
    pub requests: usize,
    pub ok: usize,
    pub success_rate: f64,
    pub e2e_ok: Summary,
}

/// The seed of every plan: the same requests for every topology and run.
const PLAN_SEED: u64 = 20261125;

pub async fn run(config: &Config, plan: &Plan) -> Result<Results> {
    std::fs::create_dir_all(plan.out.join("logs")).map_err(|e| Error::io(&plan.out, e))?;
    let started_unix_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut results = Results {
        hearth_version: env!("CARGO_PKG_VERSION").into(),
        git_commit: git_commit(),
        machine: machine(config),
        workload: plan.workload.clone(),
        config: config.clone(),
        repeat: plan.repeat,
        scenarios: plan.scenarios.clone(),
        started_unix_s,
        topologies: Vec::new(),
    };
    let progress = indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} requests  {msg}",
        )
        .expect("a valid template"),
    );
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()
        .map_err(|e| Error::Unavailable(format!("building the HTTP client: {e}")))?;
    if let Some(targets) = &plan.running {
        for url in [&targets.rag, &targets.fine_tuned] {
            require_loopback(url)?;
        }
        progress.set_message("running deployment");
        let processes = processes_of(&client, &targets.rag).await;
        let mut result = TopologyResult::new("running", None, processes);
        if plan.ingest_running {
            result.ingest_ms = ingest(&client, &targets.rag, &plan.workload).await?;
        }
        measure(&client, plan, targets, &mut result, None, &progress).await?;
        results.topologies.push(result);
    } else {
        let scratch = tempfile_dir(&plan.out)?;
        let config_file = scratch.join("hearth.toml");
        let text = toml::to_string(config)
            .map_err(|e| Error::InvalidInput(format!("writing the config: {e}")))?;
        std::fs::write(&config_file, text).map_err(|e| Error::io(&config_file, e))?;
        for &topology in &plan.topologies {
            progress.set_message(format!("{}: starting", topology.name()));
            let log = plan
                .out
                .join("logs")
                .join(format!("{}.log", topology.name()));
            let data = scratch.join(topology.name());
            let mut up = Launched::start(topology, &config_file, &data, &log)?;
            let targets = up.targets();
            let processes = up.processes.clone();
            let mut result =
                TopologyResult::new(topology.name(), Some(up.cold_start_ms), processes);
            progress.set_message(format!("{}: ingesting", topology.name()));
            result.ingest_ms = ingest(&client, &targets.rag, &plan.workload).await?;
            let outcome = measure(
                &client,
                plan,
                &targets,
                &mut result,
                Some(&mut up),
                &progress,
            )
            .await;
            up.stop()?;
            outcome?;
            results.topologies.push(result);
        }
        let _ = std::fs::remove_dir_all(&scratch);
    }
    progress.finish_and_clear();
    Ok(results)
}

impl TopologyResult {
    fn new(topology: &str, cold_start_ms: Option<f64>, processes: Vec<ProcessInfo>) -> Self {
        Self {
            topology: topology.into(),
            cold_start_ms,
            processes,
            ingest_ms: 0.0,
            steady: Vec::new(),
            interference: None,
            routing: Vec::new(),
            fault: None,
        }
    }
}

/// Run the scenarios against one deployment.
async fn measure(
    client: &reqwest::Client,
    plan: &Plan,
    targets: &Targets,
    result: &mut TopologyResult,
    launched: Option<&mut Launched>,
    progress: &indicatif::ProgressBar,
) -> Result<()> {
    let w = &plan.workload;
    let name = result.topology.clone();
    // Warm-up: not measured.
    progress.set_message(format!("{name}: warm-up"));
    for planned in w.plan(w.bounds.warmup, PLAN_SEED ^ 1)? {
        let s = send(client, targets, &planned, Instant::now(), Instant::now()).await;
        if !s.ok {
            return Err(Error::Unavailable(format!(
                "{name}: the warm-up request failed ({}): {}",
                s.status,
                s.error.unwrap_or_default()
            )));
        }
    }
    let procs: Vec<(String, u32)> = result
        .processes
        .iter()
        .map(|p| (p.name.clone(), p.pid))
        .collect();
    if plan.scenarios.contains(&Scenario::Steady) {
        let levels: Vec<(String, Option<usize>)> = match &w.load {
            Load::Closed { clients } => clients
                .iter()
                .map(|&c| {
                    (
                        format!("{c} client{}", if c == 1 { "" } else { "s" }),
                        Some(c),
                    )
                })
                .collect(),
            Load::Open { rate, .. } => vec![(format!("{rate} req/s"), None)],
        };
        for (label, clients) in levels {
            let mut runs = Vec::new();
            for k in 0..plan.repeat {
                progress.set_message(format!("{name}: {label}, run {}/{}", k + 1, plan.repeat));
                let requests = w.plan(w.bounds.requests, PLAN_SEED)?;
                progress.inc_length(requests.len() as u64);
                let sampler = Sampler::start(procs.clone(), Duration::from_millis(200));
                let limit = Duration::from_secs_f64(w.bounds.seconds);
                let (samples, elapsed) = match (&w.load, clients) {
                    (_, Some(c)) => {
                        closed_loop(client, targets, &requests, c, limit, progress).await
                    }
                    (Load::Open { rate, seed }, None) => {
                        open_loop(client, targets, &requests, *rate, *seed, limit, progress).await
                    }
                    (Load::Closed { .. }, None) => unreachable!("closed levels have clients"),
                };
                let usage = sampler.finish().await;
                let summary = summarize(&samples, elapsed, &usage);
                runs.push(Run {
                    duration_s: elapsed.as_secs_f64(),
                    samples,
                    processes: usage,
                    summary,
                });
            }
            let aggregate = aggregate(&runs);
            result.steady.push(Level {
                label,
                clients,
                runs,
                aggregate,
            });
        }
    }
    if plan.scenarios.contains(&Scenario::Interference) {
        progress.set_message(format!("{name}: interference"));
        result.interference = Some(interference(client, w, targets, progress).await?);
    }
    if plan.scenarios.contains(&Scenario::Routing) {
        progress.set_message(format!("{name}: routing overhead"));
        result.routing = routing(client, &name, targets, &result.processes).await;
    }
    if plan.scenarios.contains(&Scenario::Fault) {
        if let Some(up) = launched {
            progress.set_message(format!("{name}: fault isolation"));
            result.fault = Some(fault(client, w, targets, up, progress).await?);
        }
    }
    Ok(())
}

fn summarize(samples: &[Sample], elapsed: Duration, usage: &[ProcessUsage]) -> RunSummary {
    let ok: Vec<&Sample> = samples.iter().filter(|s| s.ok).collect();
    let e2e = |p: Option<Pipeline>| {
        let v: Vec<f64> = ok
            .iter()
            .filter(|s| p.is_none_or(|p| s.pipeline == p))
            .map(|s| s.e2e_ms)
            .collect();
        Summary::of(&v)
    };
    let mut errors = BTreeMap::new();
    for s in samples.iter().filter(|s| !s.ok) {
        *errors.entry(s.status.to_string()).or_insert(0) += 1;
    }
    let secs = elapsed.as_secs_f64().max(1e-9);
    let tokens: usize = ok.iter().map(|s| s.tokens).sum();
    let cpu_s: f64 = usage.iter().map(|p| p.cpu_s).sum();
    RunSummary {
        requests: samples.len(),
        ok: ok.len(),
        errors,
        e2e: e2e(None),
        ttft: Summary::of(&ok.iter().filter_map(|s| s.ttft_ms).collect::<Vec<_>>()),
        itl: Summary::of(
            &ok.iter()
                .flat_map(|s| s.itl_ms.iter().copied())
                .collect::<Vec<_>>(),
        ),
        rag_e2e: e2e(Some(Pipeline::Rag)),
        fine_tuned_e2e: e2e(Some(Pipeline::FineTuned)),
        requests_per_s: ok.len() as f64 / secs,
        tokens_per_s: tokens as f64 / secs,
        tokens,
        inconsistent: ok.iter().filter(|s| !s.consistent).count(),
        peak_rss_mib: usage.iter().map(|p| p.peak_rss_mib).sum(),
        cpu_s,
        cpu_s_per_1000: if samples.is_empty() {
            0.0
        } else {
            cpu_s * 1000.0 / samples.len() as f64
        },
    }
}

fn aggregate(runs: &[Run]) -> Aggregate {
    let of = |f: &dyn Fn(&RunSummary) -> f64| {
        median(&runs.iter().map(|r| f(&r.summary)).collect::<Vec<_>>())
    };
    let p50s: Vec<f64> = runs.iter().map(|r| r.summary.e2e.p50).collect();
    Aggregate {
        e2e_p50: of(&|s| s.e2e.p50),
        e2e_p95: of(&|s| s.e2e.p95),
        e2e_p99: of(&|s| s.e2e.p99),
        e2e_max: runs.iter().map(|r| r.summary.e2e.max).fold(0.0, f64::max),
        e2e_mean: of(&|s| s.e2e.mean),
        e2e_ci95: of(&|s| s.e2e.ci95),
        ttft_p50: of(&|s| s.ttft.p50),
        ttft_p95: of(&|s| s.ttft.p95),
        itl_p50: of(&|s| s.itl.p50),
        rag_p50: of(&|s| s.rag_e2e.p50),
        fine_tuned_p50: of(&|s| s.fine_tuned_e2e.p50),
        requests_per_s: of(&|s| s.requests_per_s),
        tokens_per_s: of(&|s| s.tokens_per_s),
        errors: runs.iter().map(|r| r.summary.requests - r.summary.ok).sum(),
        e2e_p50_min: p50s.iter().copied().fold(f64::INFINITY, f64::min),
        e2e_p50_max: p50s.iter().copied().fold(0.0, f64::max),
        peak_rss_mib: runs
            .iter()
            .map(|r| r.summary.peak_rss_mib)
            .fold(0.0, f64::max),
        cpu_s_per_1000: of(&|s| s.cpu_s_per_1000),
    }
}

/// `/fine-tuned` alone, then with `/rag` kept busy by two looping clients.
async fn interference(
    client: &reqwest::Client,
    w: &Workload,
    targets: &Targets,
    progress: &indicatif::ProgressBar,
) -> Result<Interference> {
    let n = w.bounds.requests.clamp(3, 8);
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
async fn routing(
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
async fn fault(
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
    let ready_again = wait_until_ready(client, &targets.fine_tuned, every, deadline)
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

/// Ingest the workload's corpus through the rag process; returns the time.
async fn ingest(client: &reqwest::Client, rag: &str, w: &Workload) -> Result<f64> {
    let started = Instant::now();
    for (id, text) in w.corpus()? {
        let format = if id.ends_with(".md") {
            "markdown"
        } else {
            "text"
        };
        let body = serde_json::json!({ "id": id, "text": text, "format": format });
        let r = client
            .post(format!("{rag}/documents"))
            .json(&body)
            .send()
            .await
            .map_err(|e| Error::Unavailable(format!("ingesting {id}: {e}")))?;
        if !r.status().is_success() {
            let status = r.status();
            let text = r.text().await.unwrap_or_default();
            return Err(Error::Unavailable(format!(
                "ingesting {id}: {status} {text}"
            )));
        }
    }
    Ok(started.elapsed().as_secs_f64() * 1e3)
}

/// The processes a running deployment reports at `/topology`.
async fn processes_of(client: &reqwest::Client, url: &str) -> Vec<ProcessInfo> {
    let Ok(r) = client.get(format!("{url}/topology")).send().await else {
        return Vec::new();
    };
    let body: serde_json::Value = r.json().await.unwrap_or_default();
    body["processes"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .filter_map(|p| {
                    Some(ProcessInfo {
                        name: p["name"].as_str()?.into(),
                        role: p["role"].as_str().unwrap_or("").into(),
                        url: p["url"].as_str().unwrap_or("").into(),
                        pid: p["pid"].as_u64()? as u32,
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

fn require_loopback(url: &str) -> Result<()> {
    let host = url
        .trim_start_matches("http://")
        .split(['/', ':'])
        .next()
        .unwrap_or("");
    if matches!(host, "127.0.0.1" | "localhost" | "[") || host.starts_with("127.") {
        Ok(())
    } else {
        Err(Error::InvalidInput(format!(
            "hearth bench sends load to loopback addresses only, not {url}"
        )))
    }
}

fn tempfile_dir(out: &Path) -> Result<PathBuf> {
    let dir = out.join(format!("scratch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    Ok(dir)
}

/// The checkout's commit, `-dirty` when it has uncommitted changes.
fn git_commit() -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match git(&["rev-parse", "--short=12", "HEAD"]) {
        Some(commit) => match git(&["status", "--porcelain", "--untracked-files=no"]) {
            Some(changes) if !changes.is_empty() => format!("{commit}-dirty"),
            _ => commit,
        },
        None => "unknown".into(),
    }
}

fn machine(config: &Config) -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory_gib = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|k| k.parse::<f64>().ok())
        .map(|k| k / 1024.0 / 1024.0)
        .unwrap_or(0.0);
    Machine {
        cpu,
        cores: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        memory_gib,
        device: config.device.clone(),
        os: format!("{} {}", std::env::consts::OS, std::env::consts::ARCH),
    }
}

/// A topology brought up by `hearth up`, its deployment read from the
/// endpoints file the launcher writes, its logs in a file.
struct Launched {
    child: Child,
    processes: Vec<ProcessInfo>,
    serves: Serves,
    cold_start_ms: f64,
}

impl Launched {
    fn start(topology: Topology, config: &Path, data: &Path, log: &Path) -> Result<Self> {
        let exe = std::env::current_exe().map_err(|e| Error::io("the hearth executable", e))?;
        let log_file = std::fs::File::create(log).map_err(|e| Error::io(log, e))?;
        let endpoints = log.with_extension("endpoints.json");
        let started = Instant::now();
        let child = Command::new(exe)
            .args(["up", "--topology", topology.name(), "--config"])
            .arg(config)
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data)
            .arg("--endpoints-file")
            .arg(&endpoints)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .map_err(|e| Error::io("hearth up", e))?;
        let mut launched = Self {
            child,
            processes: Vec::new(),
            serves: Serves::default(),
            cold_start_ms: 0.0,
        };
        let failed = |why: &str| {
            Error::Unavailable(format!(
                "topology {} {why}; see {}",
                topology.name(),
                log.display()
            ))
        };
        let deadline = started + Duration::from_secs(300);
        let deployment = loop {
            if let Some(d) = Deployment::read(&endpoints)?.filter(|d| d.ready) {
                break d;
            }
            if let Ok(Some(status)) = launched.child.try_wait() {
                return Err(failed(&format!("did not start ({status})")));
            }
            if Instant::now() >= deadline {
                return Err(failed("was not ready within 300 s"));
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        launched.cold_start_ms = started.elapsed().as_secs_f64() * 1e3;
        launched.processes = deployment.endpoints;
        launched.serves = deployment.serves;
        Ok(launched)
    }

    fn targets(&self) -> Targets {
        Targets {
            rag: self.serves.rag.clone(),
            fine_tuned: self.serves.fine_tuned.clone(),
        }
    }

    /// Re-read pids from `/topology` (after a restart).
    async fn refresh(&mut self, client: &reqwest::Client) {
        let fresh = processes_of(client, &self.targets().rag).await;
        for p in &mut self.processes {
            if let Some(f) = fresh.iter().find(|f| f.name == p.name) {
                p.pid = f.pid;
            }
        }
    }

    /// SIGTERM the launcher and wait for it (it stops its children).
    fn stop(mut self) -> Result<()> {
        // SAFETY: kill(2) on our own child, not yet reaped.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        self.child
            .wait()
            .map_err(|e| Error::io("waiting for hearth up", e))?;
        Ok(())
    }
}

impl Drop for Launched {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: as in `stop`.
            unsafe {
                libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
            }
            let _ = self.child.wait();
        }
    }
}
