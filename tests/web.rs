//! The web page (`GET /`) in a real browser: Debian's Chromium, headless,
//! driven by Selenium (tests/web/test_page.py) against the real server
//! with an API key: a wrong key's error, a RAG answer streamed with its
//! sources, both pipelines side by side, documents uploaded, found,
//! asked about and deleted, a generation stopped, keyboard navigation.
//! `scripts/browser-env.sh` installs Chromium and chromedriver.

use crate::common::{repo, TestServer};

#[tokio::test]
async fn the_page_works_in_a_browser() {
    for tool in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
        assert!(
            std::path::Path::new(tool).exists(),
            "{tool} is missing: run scripts/browser-env.sh (scripts/test.sh does it for you)"
        );
    }
    let python = repo().join("target/py-venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/python-env.sh",
        python.display()
    );
    const KEY: &str = "page-test-key-7";
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &["--api-key", KEY]).await;
    // The page itself needs no key, and says what it is.
    let page = reqwest::get(server.at("/")).await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(page.text().await.unwrap().contains("<title>hearth</title>"));
    let url = server.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        let mut command = std::process::Command::new(python);
        command
            .arg(repo().join("tests/web/test_page.py"))
            .env("HEARTH_URL", url)
            .env("HEARTH_API_KEY", KEY);
        if let Ok(dir) = std::env::var("HEARTH_SCREENSHOTS") {
            command.env("HEARTH_SCREENSHOTS", dir);
        }
        command.output().expect("running the browser tests")
    })
    .await
    .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the browser tests failed:\n{log}");
    eprintln!("{log}");
    server.stop();
}
