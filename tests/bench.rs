//! `hearth bench` (the real binary) on a tiny workload against a live
//! unified server: every figure is present, non-zero and consistent, and
//! the report and charts are written.

use crate::common;
use crate::common::TestServer;
use serde_json::Value;

const WORKLOAD: &str = r#"
name = "tiny"
description = "test: 1 client, 4 requests, 4-token greedy answers"

[mix]
rag = 0.5

[prompts]
rag = "QUESTIONS"
fine_tuned = "PROMPTS"

[generation]
max_tokens = 4
top_k = 1

[load]
kind = "closed"
clients = [1]

[bounds]
warmup = 1
requests = 4
seconds = 300

[corpus]
paths = ["CORPUS"]
"#;

#[tokio::test]
async fn bench_measures_a_running_server_consistently() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("data"), &[]).await;
    let file = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let corpus = file(
        "facts.txt",
        "Mount Zorblax is a dormant volcano on the island of Quillon. It last erupted in 1723.",
    );
    let questions = file("questions.txt", "When did Mount Zorblax erupt?\n");
    let prompts = file("prompts.txt", "Name a colour.\nName a fruit.\n");
    let workload = file(
        "tiny.toml",
        &WORKLOAD
            .replace("QUESTIONS", &questions)
            .replace("PROMPTS", &prompts)
            .replace("CORPUS", &corpus),
    );
    let out = dir.path().join("out");
    let url = server.url.clone();
    let run = {
        let out = out.clone();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_hearth"))
                .current_dir(common::repo())
                .args([
                    "bench",
                    "--url",
                    &url,
                    "--ingest",
                    "--repeat",
                    "2",
                    "--workload",
                    &workload,
                ])
                .args(["--scenario", "steady,routing", "--out"])
                .arg(&out)
                .output()
                .unwrap()
        })
        .await
        .unwrap()
    };
    assert!(
        run.status.success(),
        "hearth bench failed:\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    for name in [
        "results.json",
        "report.md",
        "latency.svg",
        "throughput.svg",
        "memory.svg",
    ] {
        assert!(out.join(name).exists(), "{name} is missing");
    }
    let results: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    assert!(results["machine"]["cores"].as_u64().unwrap() >= 1);
    assert_eq!(results["workload"]["name"], "tiny");
    let topology = &results["topologies"][0];
    assert_eq!(topology["topology"], "running");
    // The server's own process, found through /topology, was sampled.
    assert_eq!(topology["processes"][0]["pid"], server.pid());
    assert!(topology["ingest_ms"].as_f64().unwrap() > 0.0);

    let level = &topology["steady"][0];
    let runs = level["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    let mut pipelines = std::collections::BTreeSet::new();
    for run in runs {
        let summary = &run["summary"];
        assert_eq!(summary["requests"], 4, "{summary}");
        assert_eq!(summary["ok"], 4, "{summary}");
        assert_eq!(summary["inconsistent"], 0);
        for figure in ["e2e", "ttft", "itl"] {
            let s = &summary[figure];
            let (p50, p95, max) = (
                s["p50"].as_f64().unwrap(),
                s["p95"].as_f64().unwrap(),
                s["max"].as_f64().unwrap(),
            );
            assert!(p50 > 0.0 && p50 <= p95 && p95 <= max, "{figure}: {s}");
        }
        assert!(summary["requests_per_s"].as_f64().unwrap() > 0.0);
        assert!(summary["tokens_per_s"].as_f64().unwrap() > 0.0);
        assert!(
            summary["peak_rss_mib"].as_f64().unwrap() > 50.0,
            "{summary}"
        );
        assert!(summary["cpu_s"].as_f64().unwrap() > 0.0, "{summary}");
        let mut tokens = 0;
        for sample in run["samples"].as_array().unwrap() {
            pipelines.insert(sample["pipeline"].as_str().unwrap().to_string());
            let (t, p) = (
                sample["tokens"].as_u64().unwrap(),
                sample["pieces"].as_u64().unwrap(),
            );
            // Tokens the server counted equal the pieces streamed (plain
            // English text: one piece per token), and TTFT <= end to end.
            assert_eq!(t, p, "{sample}");
            assert!((1..=4).contains(&t), "{sample}");
            assert!(sample["ttft_ms"].as_f64().unwrap() <= sample["e2e_ms"].as_f64().unwrap());
            assert_eq!(sample["itl_ms"].as_array().unwrap().len() as u64, p - 1);
            tokens += t;
        }
        assert_eq!(summary["tokens"].as_u64().unwrap(), tokens);
    }
    assert_eq!(pipelines.len(), 2, "both pipelines were exercised");
    let routing = &topology["routing"][0];
    assert_eq!(routing["path"], "direct");
    assert!(routing["rejected"]["p50"].as_f64().unwrap() > 0.0);
    assert!(routing["one_token"]["count"].as_u64().unwrap() > 0);

    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        report.contains("## Steady load") && report.contains("| running | 1 client |"),
        "{report}"
    );
    assert!(report.contains("## Routing overhead"));

    // compare: a run against itself is 1.00x everywhere.
    let compared = std::process::Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args(["bench", "compare"])
        .arg(out.join("results.json"))
        .arg(out.join("results.json"))
        .output()
        .unwrap();
    assert!(compared.status.success());
    let text = String::from_utf8_lossy(&compared.stdout);
    assert!(text.contains("running") && text.contains("1.00x"), "{text}");
    server.stop();
}
