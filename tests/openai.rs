//! The OpenAI-compatible API checked with the official `openai` Python
//! package (tests/openai/test_openai.py) against the real server, with an
//! API key configured.

mod common;

use common::{repo, TestServer};

const KEY: &str = "hearth-test-key-0123";

#[tokio::test]
async fn the_official_openai_client_works_unchanged() {
    let python = repo().join("target/py-venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/python-env.sh (scripts/test.sh does it for you)",
        python.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &["--api-key", KEY]).await;

    // Without the key, every route but the probes is refused.
    let client = reqwest::Client::new();
    let r = client.get(server.at("/info")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["type"], "authentication_error");
    assert_eq!(
        client
            .get(server.at("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let url = server.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .arg(repo().join("tests/openai/test_openai.py"))
            .env("HEARTH_URL", url)
            .env("HEARTH_API_KEY", KEY)
            .output()
            .expect("running the Python tests")
    })
    .await
    .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the openai client tests failed:\n{log}"
    );
    eprintln!("{log}");
}
