//! Shared helpers for the integration tests: where the real models and the
//! reference outputs are, with a clear failure when they are missing.
#![allow(dead_code)]

use hearth::engine::protocol::SseDecoder;
use hearth::engine::remote::wait_until_ready;
use hearth::topology::{Deployment, Endpoint, TOPOLOGY_FILE_ENV};
use reqwest::{Client, StatusCode};
use serde_json::Value;
use std::path::PathBuf;

/// The checkout: where the tests were built, or `HEARTH_TEST_REPO` when the
/// test binary runs elsewhere (`scripts/gpu-check.sh` on a GPU machine).
pub fn repo() -> PathBuf {
    std::env::var_os("HEARTH_TEST_REPO")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
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

/// A reference output of an independent implementation, parsed: a file
/// of `tests/fixtures/` made by `scripts/families/make-fixtures.sh`.
pub fn reference(name: &str) -> serde_json::Value {
    let path = repo().join("tests/fixtures").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "reference file {} is unreadable ({e}): it is committed; remake it with scripts/families/make-fixtures.sh --only default-models",
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
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let every = std::time::Duration::from_millis(100);
        if !wait_until_ready(&client, &server.url, every, Some(deadline)).await {
            panic!("hearth did not become ready within 60 s");
        }
        server
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
    SseDecoder::decode_all(body)
        .into_iter()
        .map(|frame| {
            let data = frame.json().expect("JSON data");
            (frame.event, data)
        })
        .collect()
}

/// POST JSON; the answer must be JSON whatever the status.
pub async fn post(client: &Client, url: String, body: Value) -> (StatusCode, Value) {
    let r = client.post(url).json(&body).send().await.unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    let value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("not JSON ({e}), status {status}: {text}"));
    (status, value)
}

/// GET; the answer must be JSON whatever the status.
pub async fn get(client: &Client, url: String) -> (StatusCode, Value) {
    let r = client.get(url).send().await.unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    let value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("not JSON ({e}), status {status}: {text}"));
    (status, value)
}

/// A real `hearth up --topology T` launcher and its children, on loopback
/// ports, over a data directory; where everything is comes from the
/// deployment file the launcher writes.
pub struct TestTopology {
    child: Option<std::process::Child>,
    pub deployment: Deployment,
    /// The launcher's endpoints file.
    file: PathBuf,
    _files: tempfile::TempDir,
}

impl TestTopology {
    /// Start the topology and wait until the launcher says every process
    /// is ready.
    pub fn up(topology: &str, data_dir: &std::path::Path, extra: &[&str]) -> Self {
        embedder_path();
        llm_path();
        let files = tempfile::tempdir().unwrap();
        let file = files.path().join("endpoints.json");
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
            .arg("--endpoints-file")
            .arg(&file)
            .args(extra)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("starting hearth up");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
        let deployment = loop {
            if let Some(d) = Deployment::read(&file).unwrap().filter(|d| d.ready) {
                break d;
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("hearth up --topology {topology} exited with {status} before it was ready");
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("hearth up --topology {topology} did not become ready");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        Self {
            child: Some(child),
            deployment,
            file,
            _files: files,
        }
    }

    /// The deployment file the launcher keeps up to date.
    pub fn file(&self) -> &std::path::Path {
        &self.file
    }

    pub fn endpoints(&self) -> &[Endpoint] {
        &self.deployment.endpoints
    }

    pub fn endpoint(&self, name: &str) -> &Endpoint {
        self.deployment
            .endpoint(name)
            .unwrap_or_else(|| panic!("no {name} process in {:?}", self.deployment))
    }

    /// Where clients send `/rag` (and `/documents`).
    pub fn rag_url(&self) -> String {
        self.deployment.serves.rag.clone()
    }

    /// Where clients send `/fine-tuned`.
    pub fn fine_tuned_url(&self) -> String {
        self.deployment.serves.fine_tuned.clone()
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
        let marker = format!("{TOPOLOGY_FILE_ENV}={}", self.file.display());
        let orphans: Vec<u32> = pids
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/environ"))
                    .is_ok_and(|env| env.contains(&marker))
            })
            .collect();
        assert!(orphans.is_empty(), "processes left behind: {orphans:?}");
    }
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
pub async fn stream(client: &Client, url: String, body: &Value) -> (Vec<(String, Value)>, String) {
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

/// POST an OpenAI request with `"stream": true`: its chunks, up to
/// `data: [DONE]`.
pub async fn openai_chunks(client: &Client, url: String, body: &Value) -> Vec<Value> {
    let mut body = body.clone();
    body["stream"] = serde_json::json!(true);
    let response = client.post(url).json(&body).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.unwrap();
    SseDecoder::decode_all(&text)
        .into_iter()
        .filter(|frame| frame.data != "[DONE]")
        .map(|frame| frame.json::<Value>().expect("a JSON chunk"))
        .collect()
}

/// Run `scripts/families/SCRIPT` with the test virtualenv's Python
/// (`scripts/python-env.sh`); its standard output.
pub fn family_script(script: &str, args: &[&std::ffi::OsStr]) -> String {
    let python = repo().join("target/py-venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/python-env.sh (scripts/test.sh does it for you)",
        python.display()
    );
    let out = std::process::Command::new(&python)
        .arg(repo().join("scripts/families").join(script))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {script}: {e}"));
    assert!(
        out.status.success(),
        "{script} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A JSON array of token ids.
pub fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}
