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
