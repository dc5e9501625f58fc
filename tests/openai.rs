//! The OpenAI-compatible API checked with the official `openai` Python
//! package (tests/openai/test_openai.py) and with LangChain's
//! `langchain-openai` (tests/openai/test_langchain.py), and the Anthropic
//! Messages API with the official `anthropic` package
//! (tests/anthropic/test_anthropic.py), and Ollama's API with the official
//! `ollama` package (tests/ollama/test_ollama.py), against the real server
//! and the gateway topology's front door, with an API key configured.

use crate::common::{repo, TestServer, TestTopology};

const KEY: &str = "hearth-test-key-0123";

fn python() -> std::path::PathBuf {
    let python = repo().join("target/py-venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/python-env.sh (scripts/test.sh does it for you)",
        python.display()
    );
    python
}

/// Without the key, every route but the probes is refused.
async fn check_keys_required(url: &str) {
    let client = reqwest::Client::new();
    let r = client.get(format!("{url}/info")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["type"], "authentication_error");
    let r = client.get(format!("{url}/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn the_official_openai_client_works_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &["--api-key", KEY]).await;
    check_keys_required(&server.url).await;
    run_python_suite(server.url.clone()).await;
}

/// The same checks through the gateway topology's front door, which routes
/// the OpenAI, Anthropic and Ollama routes to separate processes by the
/// body's `model` (and merges the model lists).
#[tokio::test]
async fn the_official_openai_client_works_through_the_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let topo = TestTopology::up("gateway", dir.path(), &["--api-key", KEY]);
    let url = topo.endpoint("gateway").url.clone();
    check_keys_required(&url).await;
    run_python_suite(url).await;
    topo.stop();
}

async fn run_python_suite(url: String) {
    for script in [
        "openai/test_openai.py",
        "openai/test_langchain.py",
        "anthropic/test_anthropic.py",
        "ollama/test_ollama.py",
    ] {
        let python = python();
        let url = url.clone();
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new(python)
                .arg(repo().join("tests").join(script))
                .env("HEARTH_URL", url)
                .env("HEARTH_API_KEY", KEY)
                .output()
                .expect("running the Python tests")
        })
        .await
        .unwrap();
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{script} failed:\n{log}");
        eprintln!("{log}");
    }
}
