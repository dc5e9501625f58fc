//! Topologies: which `hearth serve` processes make up a deployment, and
//! `hearth up`, which starts them from one config and supervises them.
//!
//! - `unified`: one `all` process on `listen`.
//! - `separated`: a `rag` and a `fine-tuned` process, each on its own port.
//! - `per-model`: an `embed` process, one `generate` process per LLM, and a
//!   `rag` process using the embedder and its generator remotely; the
//!   fine-tuned LLM's `generate` process serves `/fine-tuned` itself.
//! - `gateway`: `separated` behind a `gateway` front door on `listen`.
//!
//! Ports: the front door (the unified process or the gateway) takes
//! `listen`'s port; the others take the next ones (`rag` +1, `fine-tuned`
//! +2, `embed` +3, the RAG generator +4). With port 0 every process gets a
//! free port, which it keeps across restarts.
//!
//! The launcher spawns children of its own binary (dependencies first),
//! waits for every `/readyz`, prints the endpoints, restarts a crashed
//! child with exponential backoff (a child that dies before the topology
//! is first ready is fatal instead), stops them gracefully (front first)
//! on SIGINT/SIGTERM, and leaves no orphans: each child also gets SIGTERM
//! from the kernel if the launcher itself dies.

pub mod nginx;

use crate::config::{Config, Role};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::{mpsc, oneshot, watch};

/// Set by `hearth up` on its children: the topology's name, and the file
/// listing its processes (read by `GET /topology`).
pub const TOPOLOGY_ENV: &str = "HEARTH_TOPOLOGY";
pub const TOPOLOGY_FILE_ENV: &str = "HEARTH_TOPOLOGY_FILE";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Topology {
    Unified,
    Separated,
    PerModel,
    Gateway,
}

impl Topology {
    pub fn name(self) -> &'static str {
        match self {
            Topology::Unified => "unified",
            Topology::Separated => "separated",
            Topology::PerModel => "per-model",
            Topology::Gateway => "gateway",
        }
    }
}

/// One process of a topology.
#[derive(Debug, Clone)]
pub struct Part {
    pub name: &'static str,
    pub role: Role,
    /// More `serve` arguments; `{NAME}` stands for that part's URL.
    pub args: Vec<String>,
    /// 0: any free port.
    pub port: u16,
}

/// The processes of `topology`, dependencies first, for a front door on
/// `port`.
pub fn plan(topology: Topology, port: u16) -> Vec<Part> {
    let at = |offset: u16| if port == 0 { 0 } else { port + offset };
    let part = |name, role, args: &[&str], port| Part {
        name,
        role,
        args: args.iter().map(|a| a.to_string()).collect(),
        port,
    };
    let separated = || {
        vec![
            part("rag", Role::Rag, &[], at(1)),
            part("fine-tuned", Role::FineTuned, &[], at(2)),
        ]
    };
    match topology {
        Topology::Unified => vec![part("unified", Role::All, &[], port)],
        Topology::Separated => separated(),
        Topology::Gateway => {
            let mut parts = separated();
            parts.push(part(
                "gateway",
                Role::Gateway,
                &["--rag-url", "{rag}", "--fine-tuned-url", "{fine-tuned}"],
                port,
            ));
            parts
        }
        Topology::PerModel => vec![
            part("embed", Role::Embed, &[], at(3)),
            part(
                "rag-generator",
                Role::Generate,
                &["--model", "rag-generator"],
                at(4),
            ),
            part(
                "fine-tuned",
                Role::Generate,
                &["--model", "fine-tuned"],
                at(2),
            ),
            part(
                "rag",
                Role::Rag,
                &[
                    "--embedder",
                    "{embed}",
                    "--rag-generator",
                    "{rag-generator}",
                ],
                at(1),
            ),
        ],
    }
}

/// One line of the topology file and of the endpoint table.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Endpoint {
    pub name: String,
    pub role: String,
    pub url: String,
}

/// Read the topology file a launcher gave this process, if any.
pub fn endpoints_from_env() -> Option<Vec<Endpoint>> {
    let path = std::env::var_os(TOPOLOGY_FILE_ENV)?;
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(&text).ok()
}

/// What a supervisor reports to the launcher.
enum Report {
    /// A child died before the topology was first ready.
    Fatal(String),
}

/// A supervised child: its part, and its pid (0 while down).
struct Supervised {
    part: Part,
    pid: Arc<AtomicU32>,
    url: String,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// Everything the supervisors share.
struct Shared {
    exe: PathBuf,
    host: String,
    config_file: PathBuf,
    topology_file: PathBuf,
    topology: Topology,
    /// Set once every process was ready: after that a crash is restarted.
    started: AtomicBool,
    reports: mpsc::UnboundedSender<Report>,
}

/// Start `topology` and supervise it until SIGINT/SIGTERM. Call from a
/// current-thread runtime on the main thread: the kernel's
/// parent-death signal is tied to the thread that spawns the children.
pub async fn up(config: &Config, topology: Topology) -> Result<()> {
    let listen: std::net::SocketAddr = config
        .listen
        .parse()
        .map_err(|_| Error::InvalidInput(format!("bad listen address {:?}", config.listen)))?;
    let workdir = std::env::temp_dir().join(format!("hearth-up-{}", std::process::id()));
    std::fs::create_dir_all(&workdir).map_err(|e| Error::io(&workdir, e))?;
    let result = run(config, topology, listen, &workdir).await;
    let _ = std::fs::remove_dir_all(&workdir);
    result
}

async fn run(
    config: &Config,
    topology: Topology,
    listen: std::net::SocketAddr,
    workdir: &Path,
) -> Result<()> {
    let began = Instant::now();
    // Children read the launcher's resolved config, so that files,
    // variables and flags given to `hearth up` reach every one of them.
    let config_file = workdir.join("hearth.toml");
    let text = toml::to_string(config)
        .map_err(|e| Error::InvalidInput(format!("writing the config for children: {e}")))?;
    std::fs::write(&config_file, text).map_err(|e| Error::io(&config_file, e))?;
    let (reports, mut reported) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        exe: std::env::current_exe().map_err(|e| Error::io("the hearth executable", e))?,
        host: listen.ip().to_string(),
        config_file,
        topology_file: workdir.join("topology.json"),
        topology,
        started: AtomicBool::new(false),
        reports,
    });
    let mut signals = Signals::new()?;
    let mut children: Vec<Supervised> = Vec::new();
    let outcome = async {
        let mut urls: HashMap<&'static str, String> = HashMap::new();
        for part in plan(topology, listen.port()) {
            let args: Vec<String> = part
                .args
                .iter()
                .map(|a| match a.strip_prefix('{').and_then(|a| a.strip_suffix('}')) {
                    Some(name) => urls.get(name).cloned().unwrap_or_default(),
                    None => a.clone(),
                })
                .collect();
            let (url_tx, url_rx) = oneshot::channel();
            let (stop, stop_rx) = watch::channel(false);
            let pid = Arc::new(AtomicU32::new(0));
            let task = tokio::spawn(supervise(
                shared.clone(),
                part.clone(),
                args,
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
                children.push(Supervised { part, pid, url: String::new(), stop, task });
                return Err(Error::Unavailable(why));
            };
            urls.insert(part.name, url.clone());
            children.push(Supervised { part, pid, url, stop, task });
            write_topology_file(&shared.topology_file, &children)?;
        }
        // Every process up: wait until each is ready.
        let client = reqwest::Client::new();
        for child in &children {
            let ready = wait_ready(&client, &child.url);
            tokio::select! {
                r = ready => r?,
                Some(Report::Fatal(why)) = reported.recv() => return Err(Error::Unavailable(why)),
                _ = signals.recv() => return Err(Error::Unavailable("interrupted while starting".into())),
            }
        }
        shared.started.store(true, Ordering::SeqCst);
        print_table(topology, &children, began.elapsed());
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

fn write_topology_file(path: &Path, children: &[Supervised]) -> Result<()> {
    let endpoints: Vec<Endpoint> = children
        .iter()
        .map(|c| Endpoint {
            name: c.part.name.into(),
            role: c.part.role.name().into(),
            url: c.url.clone(),
        })
        .collect();
    let text = serde_json::to_string_pretty(&endpoints).expect("endpoints serialise");
    let partial = path.with_extension("tmp");
    std::fs::write(&partial, text).map_err(|e| Error::io(&partial, e))?;
    std::fs::rename(&partial, path).map_err(|e| Error::io(path, e))
}

fn print_table(topology: Topology, children: &[Supervised], took: Duration) {
    println!(
        "topology {} ready in {:.1} s",
        topology.name(),
        took.as_secs_f64()
    );
    println!("  {:<14} {:<11} {:<28} PID", "NAME", "ROLE", "URL");
    for c in children {
        println!(
            "  {:<14} {:<11} {:<28} {}",
            c.part.name,
            c.part.role.name(),
            c.url,
            c.pid.load(Ordering::SeqCst)
        );
    }
    let front: Vec<&str> = match topology {
        Topology::Unified | Topology::Gateway => vec![&children.last().expect("a part").url],
        Topology::Separated => children.iter().map(|c| c.url.as_str()).collect(),
        Topology::PerModel => children
            .iter()
            .filter(|c| c.part.name == "rag" || c.part.name == "fine-tuned")
            .map(|c| c.url.as_str())
            .collect(),
    };
    println!("clients use: {}", front.join(" "));
    // A fixed last line, for scripts waiting on the launcher.
    println!("hearth up: ready");
}

async fn wait_ready(client: &reqwest::Client, url: &str) -> Result<()> {
    loop {
        let ok = client
            .get(format!("{url}/readyz"))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ok {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const MIN_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A child that stayed up this long starts its backoff afresh.
const STABLE: Duration = Duration::from_secs(60);
/// How long a child has to stop gracefully before it is killed.
const GRACE: Duration = Duration::from_secs(30);

/// Run one child until told to stop, restarting it when it dies.
async fn supervise(
    shared: Arc<Shared>,
    part: Part,
    args: Vec<String>,
    pid: Arc<AtomicU32>,
    url_tx: oneshot::Sender<String>,
    mut stop: watch::Receiver<bool>,
) {
    let mut url_tx = Some(url_tx);
    let mut port = part.port;
    let mut backoff = MIN_BACKOFF;
    loop {
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
        // Its URL (first start), and its port, kept for restarts.
        if let Ok(url) = found_rx.await {
            if let Some(p) = url.rsplit(':').next().and_then(|p| p.parse().ok()) {
                port = p;
            }
            if let Some(tx) = url_tx.take() {
                let _ = tx.send(url);
            }
        }
        let status = tokio::select! {
            status = child.wait() => status,
            _ = stop.changed() => {
                terminate(&mut child, id).await;
                pid.store(0, Ordering::SeqCst);
                return;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_put_dependencies_first_and_ports_in_order() {
        let names = |t| {
            plan(t, 8080)
                .iter()
                .map(|p| (p.name, p.port))
                .collect::<Vec<_>>()
        };
        assert_eq!(names(Topology::Unified), vec![("unified", 8080)]);
        assert_eq!(
            names(Topology::Gateway),
            vec![("rag", 8081), ("fine-tuned", 8082), ("gateway", 8080)]
        );
        let per_model = plan(Topology::PerModel, 0);
        assert_eq!(per_model.last().unwrap().name, "rag");
        assert!(per_model.iter().all(|p| p.port == 0));
        assert!(per_model
            .last()
            .unwrap()
            .args
            .contains(&"{embed}".to_string()));
    }
}
