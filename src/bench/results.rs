//! The results of `hearth bench`, as written to results.json (the schema
//! the report, the charts and `bench compare` read), and how raw samples
//! become its figures ([`summarize`] one run, [`aggregate`] repeated runs).

use super::load::Sample;
use super::procs::ProcessUsage;
use super::stats::{median, Summary};
use super::workload::{Pipeline, Workload};
use crate::config::Config;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// A scenario `hearth bench` can run on each topology (see `runner`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    Steady,
    Interference,
    Routing,
    Fault,
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

impl TopologyResult {
    pub(super) fn new(
        topology: &str,
        cold_start_ms: Option<f64>,
        processes: Vec<ProcessInfo>,
    ) -> Self {
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

pub(super) fn summarize(
    samples: &[Sample],
    elapsed: Duration,
    usage: &[ProcessUsage],
) -> RunSummary {
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

pub(super) fn aggregate(runs: &[Run]) -> Aggregate {
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
