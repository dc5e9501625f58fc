//! `hearth up`: start a topology's processes (children of this binary,
//! dependencies first), wait for every `/readyz`, write the
//! [`Deployment`] file and print the endpoints, restart a crashed child
//! with exponential backoff (a child that dies before the topology is
//! first ready is fatal instead; one that comes back but cannot have its
//! old port takes another, and the processes that call it are restarted
//! with its new URL and the deployment file rewritten), stop them
//! gracefully (front first) on
//! SIGINT/SIGTERM, and leave no orphans: each child also gets SIGTERM from
//! the kernel if the launcher itself dies. What to start is decided by
//! [`super::plan`].

use super::plan::{plan, Deployment, Endpoint, Part, Topology, TOPOLOGY_ENV, TOPOLOGY_FILE_ENV};
use crate::config::Config;
use crate::engine::remote::wait_until_ready;
use crate::error::{Error, Result};
use crate::roles::Role;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

/// What a supervisor reports to the launcher.
enum Report {
    /// A child died before the topology was first ready.
    Fatal(String),
}

/// A supervised child: its part, and its pid (0 while down).
struct Supervised {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// A started process, as the deployment file lists it.
struct Member {
    name: &'static str,
    role: Role,
    pid: Arc<AtomicU32>,
}

/// Everything the supervisors share.
struct Shared {
    exe: PathBuf,
    host: String,
    config_file: PathBuf,
    topology_file: PathBuf,
    topology: Topology,
    /// Compute threads for each process that runs models: the config's
    /// `threads`, else the machine's cores divided among those processes,
    /// so that their pools do not oversubscribe the cores and stall each
    /// other.
    threads: usize,
    /// Set once every process was ready: after that a crash is restarted.
    started: AtomicBool,
    reports: mpsc::UnboundedSender<Report>,
    /// Each started process's URL by name: what `{NAME}` in another's
    /// arguments stands for.
    urls: std::sync::Mutex<HashMap<&'static str, String>>,
    /// The processes started so far, in order.
    members: std::sync::Mutex<Vec<Member>>,
    /// The name of a process that came back on another URL.
    moved: broadcast::Sender<&'static str>,
}

impl Shared {
    /// The deployment as it stands: the processes started so far.
    fn deployment(&self, ready: bool) -> Deployment {
        let urls = self.urls.lock().expect("urls lock");
        let endpoints = self
            .members
            .lock()
            .expect("members lock")
            .iter()
            .map(|m| Endpoint {
                name: m.name.into(),
                role: m.role.name().into(),
                url: urls.get(m.name).cloned().unwrap_or_default(),
                pid: m.pid.load(Ordering::SeqCst),
            })
            .collect();
        Deployment::new(self.topology, endpoints, ready)
    }

    /// `args` with each `{NAME}` replaced by that process's URL.
    fn resolve(&self, args: &[String]) -> Vec<String> {
        let urls = self.urls.lock().expect("urls lock");
        args.iter()
            .map(
                |a| match a.strip_prefix('{').and_then(|a| a.strip_suffix('}')) {
                    Some(name) => urls.get(name).cloned().unwrap_or_default(),
                    None => a.clone(),
                },
            )
            .collect()
    }
}

/// Start `topology` and supervise it until SIGINT/SIGTERM, writing its
/// [`Deployment`] to `endpoints_file` (default: a file in a temporary
/// folder of the launcher's). Call from a current-thread runtime on the
/// main thread: the kernel's parent-death signal is tied to the thread
/// that spawns the children.
pub async fn up(config: &Config, topology: Topology, endpoints_file: Option<&Path>) -> Result<()> {
    let listen: std::net::SocketAddr = config.listen_addr()?;
    let workdir = std::env::temp_dir().join(format!("hearth-up-{}", std::process::id()));
    std::fs::create_dir_all(&workdir).map_err(|e| Error::io(&workdir, e))?;
    let file = match endpoints_file {
        Some(path) => std::path::absolute(path).map_err(|e| Error::io(path, e))?,
        None => workdir.join("topology.json"),
    };
    let result = run(config, topology, listen, &workdir, file).await;
    let _ = std::fs::remove_dir_all(&workdir);
    result
}

async fn run(
    config: &Config,
    topology: Topology,
    listen: std::net::SocketAddr,
    workdir: &Path,
    topology_file: PathBuf,
) -> Result<()> {
    let began = Instant::now();
    // Children read the launcher's resolved config, so that files,
    // variables and flags given to `hearth up` reach every one of them.
    let config_file = workdir.join("hearth.toml");
    let text = toml::to_string(config)
        .map_err(|e| Error::InvalidInput(format!("writing the config for children: {e}")))?;
    std::fs::write(&config_file, text).map_err(|e| Error::io(&config_file, e))?;
    let (reports, mut reported) = mpsc::unbounded_channel();
    let parts = plan(topology, listen.port());
    let shared = Arc::new(Shared {
        exe: std::env::current_exe().map_err(|e| Error::io("the hearth executable", e))?,
        host: listen.ip().to_string(),
        config_file,
        topology_file,
        topology,
        threads: threads_per_process(config, &parts),
        started: AtomicBool::new(false),
        reports,
        urls: Default::default(),
        members: Default::default(),
        moved: broadcast::channel(16).0,
    });
    let mut signals = Signals::new()?;
    let mut children: Vec<Supervised> = Vec::new();
    let outcome = async {
        let mut urls: Vec<String> = Vec::new();
        for part in parts {
            let (url_tx, url_rx) = oneshot::channel();
            let (stop, stop_rx) = watch::channel(false);
            let pid = Arc::new(AtomicU32::new(0));
            shared.members.lock().expect("members lock").push(Member {
                name: part.name,
                role: part.role,
                pid: pid.clone(),
            });
            let task = tokio::spawn(supervise(
                shared.clone(),
                part.clone(),
                pid.clone(),
                url_tx,
                stop_rx,
            ));
            let url = tokio::select! {
                url = url_rx => url.ok(),
                _ = signals.recv() => return Err(Error::Unavailable("interrupted while starting".into())),
            };
            let Some(url) = url else {
                let why = match reported.recv().await {
                    Some(Report::Fatal(why)) => why,
                    None => format!("{} did not start", part.name),
                };
                children.push(Supervised { stop, task });
                return Err(Error::Unavailable(why));
            };
            urls.push(url);
            children.push(Supervised { stop, task });
            shared.deployment(false).write(&shared.topology_file)?;
        }
        // Every process up: wait until each is ready.
        let client = reqwest::Client::new();
        for url in &urls {
            // No deadline: a child that dies is reported, and a slow
            // model load is waited for.
            let ready = wait_until_ready(&client, url, Duration::from_millis(100), None);
            tokio::select! {
                _ = ready => {}
                Some(Report::Fatal(why)) = reported.recv() => return Err(Error::Unavailable(why)),
                _ = signals.recv() => return Err(Error::Unavailable("interrupted while starting".into())),
            }
        }
        shared.started.store(true, Ordering::SeqCst);
        let ready = shared.deployment(true);
        ready.write(&shared.topology_file)?;
        print_table(&ready, began.elapsed());
        signals.recv().await;
        eprintln!("[up] stopping {} (front first)", topology.name());
        Ok(())
    }
    .await;
    // Stop the front first, then what it depends on.
    for child in children.into_iter().rev() {
        let _ = child.stop.send(true);
        let _ = child.task.await;
    }
    outcome
}

/// The endpoints for people; programs read the deployment file.
fn print_table(deployment: &Deployment, took: Duration) {
    println!(
        "topology {} ready in {:.1} s",
        deployment.topology,
        took.as_secs_f64()
    );
    println!("  {:<14} {:<11} {:<28} PID", "NAME", "ROLE", "URL");
    for e in &deployment.endpoints {
        println!("  {:<14} {:<11} {:<28} {}", e.name, e.role, e.url, e.pid);
    }
    let serves = &deployment.serves;
    println!("/rag and /documents: {}", serves.rag);
    println!("/fine-tuned:         {}", serves.fine_tuned);
    // A fixed last line, for scripts waiting on the launcher.
    println!("hearth up: ready");
}

const MIN_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A child that stayed up this long starts its backoff afresh.
const STABLE: Duration = Duration::from_secs(60);
/// How long a child has to stop gracefully before it is killed.
const GRACE: Duration = Duration::from_secs(30);

/// Until a process that `part` calls comes back on another URL: its name.
async fn moved_dependency(
    moved: &mut broadcast::Receiver<&'static str>,
    part: &Part,
) -> &'static str {
    loop {
        match moved.recv().await {
            Ok(name) if part.args.contains(&format!("{{{name}}}")) => return name,
            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
        }
    }
}

/// Run one child until told to stop, restarting it when it dies (on
/// another port when its own was taken meanwhile), and when a process it
/// calls moves.
async fn supervise(
    shared: Arc<Shared>,
    part: Part,
    pid: Arc<AtomicU32>,
    url_tx: oneshot::Sender<String>,
    mut stop: watch::Receiver<bool>,
) {
    let mut url_tx = Some(url_tx);
    let mut port = part.port;
    let mut backoff = MIN_BACKOFF;
    let mut moved = shared.moved.subscribe();
    loop {
        let args = shared.resolve(&part.args);
        let mut child = match spawn(&shared, &part, &args, port) {
            Ok(child) => child,
            Err(e) => {
                let _ = shared
                    .reports
                    .send(Report::Fatal(format!("{}: {e}", part.name)));
                return;
            }
        };
        let id = child.id().unwrap_or(0);
        pid.store(id, Ordering::SeqCst);
        let since = Instant::now();
        let (found_tx, found_rx) = oneshot::channel();
        relay_output(&mut child, part.name, found_tx);
        // Its URL, and its port, kept for restarts.
        match found_rx.await {
            Ok(url) => {
                if let Some(p) = url.rsplit(':').next().and_then(|p| p.parse().ok()) {
                    port = p;
                }
                let before = shared
                    .urls
                    .lock()
                    .expect("urls lock")
                    .insert(part.name, url.clone());
                if let Some(tx) = url_tx.take() {
                    let _ = tx.send(url);
                } else if before.as_deref() != Some(url.as_str()) {
                    // Back on another port: the deployment says so, and
                    // the processes that call this one follow.
                    eprintln!("[up] {} is now at {url}", part.name);
                    let ready = shared.started.load(Ordering::SeqCst);
                    if let Err(e) = shared.deployment(ready).write(&shared.topology_file) {
                        eprintln!("[up] could not rewrite the deployment file: {e}");
                    }
                    let _ = shared.moved.send(part.name);
                }
            }
            // It never listened: its port may have been taken meanwhile;
            // the next start takes any free one.
            Err(_) if shared.started.load(Ordering::SeqCst) => port = 0,
            Err(_) => {}
        }
        let status = tokio::select! {
            status = child.wait() => status,
            _ = stop.changed() => {
                terminate(&mut child, id).await;
                pid.store(0, Ordering::SeqCst);
                return;
            }
            name = moved_dependency(&mut moved, &part) => {
                eprintln!("[up] restarting {} to follow {name}", part.name);
                terminate(&mut child, id).await;
                pid.store(0, Ordering::SeqCst);
                continue;
            }
        };
        pid.store(0, Ordering::SeqCst);
        let status = status
            .map(|s| s.to_string())
            .unwrap_or_else(|e| e.to_string());
        if !shared.started.load(Ordering::SeqCst) {
            let _ = shared.reports.send(Report::Fatal(format!(
                "{} (role {}) exited during start-up ({status}); its log is above",
                part.name,
                part.role.name()
            )));
            return;
        }
        if since.elapsed() > STABLE {
            backoff = MIN_BACKOFF;
        }
        eprintln!(
            "[up] {} (pid {id}) exited ({status}); restarting in {:.1} s",
            part.name,
            backoff.as_secs_f64()
        );
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// The config's `threads`, else the cores shared out among the processes
/// that run models (the gateway runs none).
fn threads_per_process(config: &Config, parts: &[Part]) -> usize {
    let computing = parts
        .iter()
        .filter(|p| p.role != Role::Gateway)
        .count()
        .max(1);
    config.threads.unwrap_or_else(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        (cores / computing).max(1)
    })
}

fn spawn(
    shared: &Shared,
    part: &Part,
    args: &[String],
    port: u16,
) -> Result<tokio::process::Child> {
    let mut command = Command::new(&shared.exe);
    command
        .arg("serve")
        .arg("--role")
        .arg(part.role.name())
        .args(args)
        .arg("--config")
        .arg(&shared.config_file)
        .arg("--listen")
        .arg(format!("{}:{port}", shared.host))
        .arg("--threads")
        .arg(shared.threads.to_string())
        .env(TOPOLOGY_ENV, shared.topology.name())
        .env(TOPOLOGY_FILE_ENV, &shared.topology_file)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    #[cfg(target_os = "linux")]
    // SAFETY: prctl is async-signal-safe and touches only this process.
    unsafe {
        command.pre_exec(|| {
            // If the launcher dies (even by SIGKILL), the child is told to stop.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command.spawn().map_err(|e| Error::io(&shared.exe, e))
}

/// Pass the child's output on, each line prefixed with its name, and
/// report the URL it announces on stdout.
fn relay_output(
    child: &mut tokio::process::Child,
    name: &'static str,
    found: oneshot::Sender<String>,
) {
    if let Some(out) = child.stdout.take() {
        tokio::spawn(async move {
            let mut found = Some(found);
            let mut lines = BufReader::new(out).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                match line.strip_prefix("hearth listening on ") {
                    Some(url) if found.is_some() => {
                        let _ = found.take().expect("checked").send(url.trim().to_string());
                    }
                    _ => println!("[{name}] {line}"),
                }
            }
        });
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(async move {
            let mut lines = BufReader::new(err).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("[{name}] {line}");
            }
        });
    }
}

/// SIGTERM, then SIGKILL after the grace period.
async fn terminate(child: &mut tokio::process::Child, pid: u32) {
    if pid != 0 {
        // SAFETY: plain kill(2) on our own child's pid, which we have not reaped.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGTERM);
        }
    }
    if tokio::time::timeout(GRACE, child.wait()).await.is_err() {
        let _ = child.kill().await;
    }
}

/// SIGINT and SIGTERM as one stream.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        let io = |e| Error::io("signal handlers", e);
        Ok(Self {
            term: signal(SignalKind::terminate()).map_err(io)?,
            int: signal(SignalKind::interrupt()).map_err(io)?,
        })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}
