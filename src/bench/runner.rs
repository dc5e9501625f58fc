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

use super::launched::{processes_of, Launched};
use super::load::{closed_loop, open_loop, send, Targets};
use super::machine::{git_commit, machine};
use super::procs::Sampler;
use super::results::{aggregate, summarize, Level, Results, Run, Scenario, TopologyResult};
use super::scenarios::{fault, interference, routing};
use super::workload::{Load, Workload};
use crate::config::{AdaptedModel, Config, FineTunedModel};
use crate::error::{Error, Result};
use crate::topology::Topology;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

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

/// The seed of every plan: the same requests for every topology and run.
const PLAN_SEED: u64 = 20261125;

pub async fn run(config: &Config, plan: &Plan) -> Result<Results> {
    if let Some(a) = &plan.workload.adapter {
        if !a.path.exists() {
            return Err(Error::InvalidInput(format!(
                "workload {}: adapter.path {} does not exist (write a random one with \
                 `hearth bench random-adapter --out {}`)",
                plan.workload.name,
                a.path.display(),
                a.path.display()
            )));
        }
    }
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
        for (name, topology, config) in variants(config, plan) {
            let config_file = scratch.join(format!("{name}.toml"));
            let text = toml::to_string(&config)
                .map_err(|e| Error::InvalidInput(format!("writing the config: {e}")))?;
            std::fs::write(&config_file, text).map_err(|e| Error::io(&config_file, e))?;
            progress.set_message(format!("{name}: starting"));
            let log = plan.out.join("logs").join(format!("{name}.log"));
            let data = scratch.join(&name);
            let mut up = Launched::start(topology, &config_file, &data, &log)?;
            let targets = up.targets();
            let processes = up.processes.clone();
            let mut result = TopologyResult::new(&name, Some(up.cold_start_ms), processes);
            progress.set_message(format!("{name}: ingesting"));
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

/// The deployments to measure: each topology with `config`, its
/// fine-tuned pipeline the base plus the workload's adapter when it has
/// one (applied per request, on the weights the RAG pipeline uses too when
/// they share a process), and then, if asked, `unified-merged`: the
/// unified topology with the adapter merged into its own copy.
fn variants(config: &Config, plan: &Plan) -> Vec<(String, Topology, Config)> {
    let with_adapter = |merge: bool| {
        let mut c = config.clone();
        if let Some(a) = &plan.workload.adapter {
            c.models.fine_tuned = FineTunedModel::Adapted(AdaptedModel {
                base: c.models.rag_generator.clone(),
                adapter: a.path.display().to_string(),
                name: None,
                scale: a.scale,
                merge,
            });
        }
        c
    };
    let mut out: Vec<(String, Topology, Config)> = plan
        .topologies
        .iter()
        .map(|&t| (t.name().to_string(), t, with_adapter(false)))
        .collect();
    let merged = plan.workload.adapter.as_ref().is_some_and(|a| a.merged);
    if merged && plan.topologies.contains(&Topology::Unified) {
        out.push((
            "unified-merged".into(),
            Topology::Unified,
            with_adapter(true),
        ));
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_adapter_workload_runs_shared_merged_and_separated() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/workloads");
        let plan = Plan {
            topologies: vec![Topology::Unified, Topology::Separated],
            workload: Workload::load(&dir.join("adapters.toml")).unwrap(),
            scenarios: Vec::new(),
            repeat: 1,
            running: None,
            ingest_running: false,
            out: PathBuf::new(),
        };
        let config = Config::default();
        let runs = variants(&config, &plan);
        let names: Vec<&str> = runs.iter().map(|(n, _, _)| n.as_str()).collect();
        assert_eq!(names, ["unified", "separated", "unified-merged"]);
        for (name, _, c) in &runs {
            let adapted = c
                .models
                .fine_tuned
                .adapted()
                .expect("the adapter is configured");
            assert_eq!(
                adapted.base, config.models.rag_generator,
                "{name}: the RAG model is the base"
            );
            assert_eq!(adapted.merge, name == "unified-merged");
        }
        // Without an adapter: the topologies as they are.
        let plain = Plan {
            workload: Workload::load(&dir.join("light.toml")).unwrap(),
            ..plan
        };
        let runs = variants(&config, &plain);
        assert_eq!(runs.len(), 2);
        assert_eq!(runs[0].2, config);
    }
}
