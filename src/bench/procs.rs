//! Memory and CPU of the processes under test, sampled from `/proc` while a
//! run goes: resident set size (peak and mean) and CPU time used.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// One process's figures over a run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProcessUsage {
    pub name: String,
    pub pid: u32,
    pub peak_rss_mib: f64,
    pub mean_rss_mib: f64,
    /// User plus system CPU time during the run.
    pub cpu_s: f64,
}

/// Resident set size in MiB, from `/proc/PID/status`.
pub fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// User plus system CPU seconds so far, from `/proc/PID/stat`.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at state.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let per_s = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(ticks / per_s.max(1.0))
}

/// Samples some processes every `every` until stopped.
pub struct Sampler {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<Vec<ProcessUsage>>,
}

impl Sampler {
    pub fn start(processes: Vec<(String, u32)>, every: Duration) -> Self {
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let start: Vec<f64> = processes
                .iter()
                .map(|(_, pid)| cpu_seconds(*pid).unwrap_or(0.0))
                .collect();
            // Per process: peak, sum and count of RSS samples.
            let mut sums = vec![(0.0f64, 0.0f64, 0usize); processes.len()];
            loop {
                for (i, (_, pid)) in processes.iter().enumerate() {
                    if let Some(rss) = rss_mib(*pid) {
                        let (peak, total, n) = &mut sums[i];
                        *peak = peak.max(rss);
                        *total += rss;
                        *n += 1;
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = stopped.changed() => break,
                }
            }
            processes
                .iter()
                .enumerate()
                .map(|(i, (name, pid))| {
                    let (peak, total, n) = sums[i];
                    ProcessUsage {
                        name: name.clone(),
                        pid: *pid,
                        peak_rss_mib: peak,
                        mean_rss_mib: if n > 0 { total / n as f64 } else { 0.0 },
                        cpu_s: (cpu_seconds(*pid).unwrap_or(start[i]) - start[i]).max(0.0),
                    }
                })
                .collect()
        });
        Self { stop, task }
    }

    pub async fn finish(self) -> Vec<ProcessUsage> {
        let _ = self.stop.send(true);
        self.task.await.unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(rss_mib(me).unwrap() > 1.0);
        // Spin (opaque to the optimiser) until the kernel has counted a tick,
        // which at 100 Hz takes 10 ms of CPU; give up after 5 s of wall time.
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while cpu_seconds(me).unwrap() == 0.0 && start.elapsed() < Duration::from_secs(5) {
            for i in 0..1_000_000u64 {
                x = std::hint::black_box(x.wrapping_add(i * i));
            }
        }
        assert!(x > 0);
        assert!(cpu_seconds(me).unwrap() > 0.0);
    }
}
