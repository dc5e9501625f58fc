//! A topology brought up for a benchmark: `hearth up` as a child process,
//! its deployment read from the endpoints file the launcher writes, its
//! logs in a file, stopped (SIGTERM) when done or dropped. The runner and
//! the scenarios both drive it.

use super::load::Targets;
use super::results::ProcessInfo;
use crate::error::{Error, Result};
use crate::topology::{Deployment, Serves, Topology};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A topology brought up by `hearth up`, its deployment read from the
/// endpoints file the launcher writes, its logs in a file.
pub(super) struct Launched {
    child: Child,
    pub(super) processes: Vec<ProcessInfo>,
    serves: Serves,
    pub(super) cold_start_ms: f64,
}

impl Launched {
    pub(super) fn start(
        topology: Topology,
        config: &Path,
        data: &Path,
        log: &Path,
    ) -> Result<Self> {
        let exe = std::env::current_exe().map_err(|e| Error::io("the hearth executable", e))?;
        let log_file = std::fs::File::create(log).map_err(|e| Error::io(log, e))?;
        let endpoints = log.with_extension("endpoints.json");
        // A previous run's file (same --out) names processes long gone, and
        // reads as ready: only this run's may be waited for.
        match std::fs::remove_file(&endpoints) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::io(&endpoints, e));
            }
            _ => {}
        }
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

    pub(super) fn targets(&self) -> Targets {
        Targets {
            rag: self.serves.rag.clone(),
            fine_tuned: self.serves.fine_tuned.clone(),
        }
    }

    /// Re-read pids from `/topology` (after a restart).
    pub(super) async fn refresh(&mut self, client: &reqwest::Client) {
        let fresh = processes_of(client, &self.targets().rag).await;
        for p in &mut self.processes {
            if let Some(f) = fresh.iter().find(|f| f.name == p.name) {
                p.pid = f.pid;
            }
        }
    }

    /// SIGTERM the launcher and wait for it (it stops its children).
    pub(super) fn stop(mut self) -> Result<()> {
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

/// The processes a running deployment reports at `/topology`.
pub(super) async fn processes_of(client: &reqwest::Client, url: &str) -> Vec<ProcessInfo> {
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
