//! Shared helpers for the integration tests: where the real models and the
//! reference outputs are, with a clear failure when they are missing.
#![allow(dead_code)]

use std::path::PathBuf;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A default model path, or a panic that says how to fetch it.
pub fn model(rel: &str) -> PathBuf {
    let path = repo().join(rel);
    assert!(
        path.exists(),
        "{} is missing: run scripts/fetch-models.sh (scripts/test.sh does it for you)",
        path.display()
    );
    path
}

pub fn embedder_path() -> PathBuf {
    model(hearth::models::DEFAULT_EMBEDDER)
}

pub fn llm_path() -> PathBuf {
    model(hearth::models::DEFAULT_LLM)
}

/// The device the model tests run on: `HEARTH_TEST_DEVICE` (e.g. `cuda`,
/// with a build that has the feature), else the CPU.
pub fn device() -> candle_core::Device {
    let name = std::env::var("HEARTH_TEST_DEVICE").unwrap_or_else(|_| "cpu".into());
    hearth::models::device::open(&name).unwrap_or_else(|e| panic!("HEARTH_TEST_DEVICE={name}: {e}"))
}

/// A file of `../shared/reference/`, parsed.
pub fn reference(name: &str) -> serde_json::Value {
    let path = repo().join("../shared/reference").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "reference file {} is unreadable ({e}): the tests need the shared/ folder beside the checkout",
            path.display()
        )
    });
    serde_json::from_str(&text).expect("reference JSON")
}

/// A real `hearth serve` process on a loopback port, over a data directory.
pub struct TestServer {
    child: Option<std::process::Child>,
    pub url: String,
}

impl TestServer {
    /// Start the server (models must be fetched) and wait until `/readyz`.
    pub async fn start(data_dir: &std::path::Path, extra: &[&str]) -> Self {
        embedder_path();
        llm_path();
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_hearth"))
            .current_dir(repo())
            .env("RUST_LOG", "hearth=warn")
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("starting hearth serve");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(url) = line.strip_prefix("hearth listening on ") {
                    let _ = tx.send(url.to_string());
                }
            }
        });
        let url = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("hearth serve did not print its address");
        let server = Self {
            child: Some(child),
            url,
        };
        let client = reqwest::Client::new();
        for _ in 0..600 {
            if let Ok(r) = client.get(server.at("/readyz")).send().await {
                if r.status() == 200 {
                    return server;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("hearth did not become ready within 60 s");
    }

    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// SIGKILL: no chance to save anything.
    pub fn kill9(mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn stop(mut self) {
        let mut child = self.child.take().unwrap();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let exit = child.wait().unwrap();
        assert!(exit.success(), "hearth exited with {exit} after SIGTERM");
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The events of a Server-Sent Events body, as (event, parsed data).
pub fn sse_events(body: &str) -> Vec<(String, serde_json::Value)> {
    body.split("\n\n")
        .filter(|block| !block.trim().is_empty())
        .filter_map(|block| {
            let mut event = String::from("message");
            let mut data = String::new();
            for line in block.lines() {
                if let Some(e) = line.strip_prefix("event: ") {
                    event = e.to_string();
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data.push_str(d);
                }
            }
            (!data.is_empty()).then(|| (event, serde_json::from_str(&data).expect("JSON data")))
        })
        .collect()
}

/// One process of a running topology, as `hearth up` lists it.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub name: String,
    pub role: String,
    pub url: String,
    pub pid: u32,
}

/// A real `hearth up --topology T` launcher and its children, on loopback
/// ports, over a data directory.
pub struct TestTopology {
    child: Option<std::process::Child>,
    pub topology: String,
    pub endpoints: Vec<Endpoint>,
    /// Lines the launcher printed after it was ready (restarts, ...).
    pub later: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl TestTopology {
    /// Start the topology and wait until the launcher says every process
    /// is ready.
    pub fn up(topology: &str, data_dir: &std::path::Path, extra: &[&str]) -> Self {
        embedder_path();
        llm_path();
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_hearth"))
            .current_dir(repo())
            .env("RUST_LOG", "hearth=warn")
            .args([
                "up",
                "--topology",
                topology,
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(data_dir)
            .args(extra)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("starting hearth up");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let later = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let later_lines = later.clone();
        // Keep reading for the launcher's whole life, so it never blocks
        // on a full pipe.
        std::thread::spawn(move || {
            use std::io::BufRead;
            let mut endpoints = Vec::new();
            let mut ready = false;
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if ready {
                    later_lines.lock().unwrap().push(line);
                    continue;
                }
                if line == "hearth up: ready" {
                    ready = true;
                    let _ = tx.send(std::mem::take(&mut endpoints));
                    continue;
                }
                let fields: Vec<&str> = line.split_whitespace().collect();
                if line.starts_with("  ") && fields.len() == 4 && fields[0] != "NAME" {
                    endpoints.push(Endpoint {
                        name: fields[0].into(),
                        role: fields[1].into(),
                        url: fields[2].into(),
                        pid: fields[3].parse().expect("a pid"),
                    });
                }
            }
        });
        let endpoints = rx
            .recv_timeout(std::time::Duration::from_secs(180))
            .unwrap_or_else(|_| panic!("hearth up --topology {topology} did not become ready"));
        Self {
            child: Some(child),
            topology: topology.into(),
            endpoints,
            later,
        }
    }

    pub fn endpoint(&self, name: &str) -> &Endpoint {
        self.endpoints
            .iter()
            .find(|e| e.name == name)
            .unwrap_or_else(|| panic!("no {name} process in {:?}", self.endpoints))
    }

    /// Where clients send `/rag` (and `/documents`).
    pub fn rag_url(&self) -> String {
        match self.topology.as_str() {
            "unified" => self.endpoint("unified").url.clone(),
            "gateway" => self.endpoint("gateway").url.clone(),
            _ => self.endpoint("rag").url.clone(),
        }
    }

    /// Where clients send `/fine-tuned`.
    pub fn fine_tuned_url(&self) -> String {
        match self.topology.as_str() {
            "unified" => self.endpoint("unified").url.clone(),
            "gateway" => self.endpoint("gateway").url.clone(),
            _ => self.endpoint("fine-tuned").url.clone(),
        }
    }

    pub fn launcher_pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// SIGTERM the launcher, wait for it, and check that none of its
    /// children outlived it.
    pub fn stop(mut self) {
        let mut child = self.child.take().unwrap();
        signal(child.id(), "TERM");
        let exit = child.wait().unwrap();
        assert!(exit.success(), "hearth up exited with {exit} after SIGTERM");
        let pids = std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok());
        let orphans: Vec<u32> = pids
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/environ")).is_ok_and(|env| {
                    env.contains(&format!(
                        "HEARTH_TOPOLOGY_FILE={}",
                        topology_file(child.id())
                    ))
                })
            })
            .collect();
        assert!(orphans.is_empty(), "processes left behind: {orphans:?}");
    }
}

/// The topology file a launcher with this pid gives its children.
fn topology_file(launcher: u32) -> String {
    std::env::temp_dir()
        .join(format!("hearth-up-{launcher}"))
        .join("topology.json")
        .display()
        .to_string()
}

/// Send `kill -SIG pid`.
pub fn signal(pid: u32, sig: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{sig} {pid} failed");
}

impl Drop for TestTopology {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), "TERM");
            let _ = child.wait();
        }
    }
}

/// POST `body` with `"stream": true` and return the SSE events and the
/// text of their `token` events joined.
pub async fn stream(
    client: &reqwest::Client,
    url: String,
    body: &serde_json::Value,
) -> (Vec<(String, serde_json::Value)>, String) {
    let mut body = body.clone();
    body["stream"] = serde_json::json!(true);
    let text = client
        .post(url)
        .json(&body)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let events = sse_events(&text);
    let joined = events
        .iter()
        .filter(|(e, _)| e == "token")
        .map(|(_, d)| d["text"].as_str().unwrap())
        .collect();
    (events, joined)
}
