//! Every topology from one binary and one config, brought up by the real
//! launcher (`hearth up`) with the real models on loopback ports: the same
//! requests give the same greedy answers everywhere; a crashed process is
//! isolated and restarted; stopping the launcher leaves nothing behind.

use crate::common::{post, signal, stream, TestTopology};
use hearth::topology::Deployment;
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;

const FACTS: &[(&str, &str)] = &[
    ("volcano", "Mount Zorblax is a dormant volcano on the island of Quillon. It last erupted in the year 1723."),
    ("bread", "To bake lumenbread, mix two cups of starlight flour with one cup of river water and bake it for forty minutes."),
    ("tides", "The harbor of Vellmoor sees tides of eleven meters every spring."),
];

async fn ingest(client: &Client, url: &str) {
    let docs: Vec<Value> = FACTS
        .iter()
        .map(|(id, text)| json!({ "id": id, "text": text }))
        .collect();
    let (status, body) = post(client, format!("{url}/documents"), json!(docs)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

fn rag_request() -> Value {
    json!({ "question": "When did the volcano on Quillon last erupt?", "max_tokens": 24, "top_k": 2 })
}

fn fine_tuned_request() -> Value {
    json!({ "messages": [{ "role": "user", "content": "Name a colour of the sky." }], "max_tokens": 12 })
}

/// What one topology answered: the RAG answer and its sources, and the
/// fine-tuned text, plain and streamed.
#[derive(Debug, PartialEq)]
struct Answers {
    rag: String,
    sources: Vec<String>,
    fine_tuned: String,
    fine_tuned_streamed: String,
}

async fn ask(client: &Client, topo: &TestTopology) -> Answers {
    let (status, rag) = post(client, format!("{}/rag", topo.rag_url()), rag_request()).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "{}: {rag}",
        topo.deployment.topology
    );
    let (status, ft) = post(
        client,
        format!("{}/fine-tuned", topo.fine_tuned_url()),
        fine_tuned_request(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{}: {ft}", topo.deployment.topology);
    let (events, streamed) = stream(
        client,
        format!("{}/fine-tuned", topo.fine_tuned_url()),
        &fine_tuned_request(),
    )
    .await;
    assert_eq!(
        events.last().unwrap().0,
        "done",
        "{}",
        topo.deployment.topology
    );
    Answers {
        rag: rag["answer"].as_str().unwrap().into(),
        sources: rag["sources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["document_id"].as_str().unwrap().to_string())
            .collect(),
        fine_tuned: ft["text"].as_str().unwrap().into(),
        fine_tuned_streamed: streamed,
    }
}

#[tokio::test]
async fn every_topology_gives_the_same_greedy_answers() {
    let client = Client::new();
    let mut all: Vec<(String, Answers)> = Vec::new();
    for (topology, processes) in [
        ("unified", 1),
        ("separated", 2),
        ("per-model", 4),
        ("gateway", 3),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let topo = TestTopology::up(topology, dir.path(), &[]);
        assert_eq!(topo.endpoints().len(), processes, "{:?}", topo.endpoints());
        ingest(&client, &topo.rag_url()).await;
        let answers = ask(&client, &topo).await;
        assert!(answers.rag.contains("1723"), "{topology}: {answers:?}");
        assert_eq!(answers.sources[0], "volcano");
        assert_eq!(answers.fine_tuned, answers.fine_tuned_streamed);

        // /topology on a front process lists every process, live.
        let r = client
            .get(format!("{}/topology", topo.rag_url()))
            .send()
            .await
            .unwrap();
        let listed: Value = r.json().await.unwrap();
        assert_eq!(listed["topology"], topology);
        let procs = listed["processes"].as_array().unwrap();
        assert_eq!(procs.len(), processes, "{listed}");
        for (p, e) in procs.iter().zip(topo.endpoints()) {
            assert_eq!(p["name"], e.name.as_str());
            assert_eq!(p["role"], e.role.as_str(), "{listed}");
            assert_eq!(p["pid"], e.pid, "{listed}");
            assert_eq!(p["healthy"], true, "{listed}");
            assert_eq!(p["ready"], true, "{listed}");
            // What each serves comes from the roles table.
            let serves: Vec<&str> = p["serves"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect();
            let want: &[&str] = match e.role.as_str() {
                "all" => &["documents", "embeddings", "rag", "fine-tuned"],
                "rag" => &["documents", "embeddings", "rag"],
                "fine-tuned" => &["fine-tuned"],
                "embed" => &["embeddings"],
                "generate" if e.name == "fine-tuned" => &["generator", "fine-tuned"],
                "generate" => &["generator"],
                "gateway" => &["documents", "embeddings", "rag", "fine-tuned"],
                other => panic!("unexpected role {other}"),
            };
            assert_eq!(serves, want, "{listed}");
        }

        // A split process names the one that serves what it does not.
        if topology == "separated" {
            let (status, body) = post(
                &client,
                format!("{}/fine-tuned", topo.rag_url()),
                fine_tuned_request(),
            )
            .await;
            assert_eq!(status, StatusCode::NOT_FOUND);
            assert_eq!(body["error"]["code"], "not_served_here");
            assert!(body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("`fine-tuned` process"));
        }
        topo.stop(); // and checks that no child outlived the launcher
        all.push((topology.to_string(), answers));
    }
    let (first, reference) = &all[0];
    for (topology, answers) in &all[1..] {
        assert_eq!(answers, reference, "{topology} differs from {first}");
    }
}

#[tokio::test]
async fn a_killed_fine_tuned_process_leaves_rag_answering_and_comes_back() {
    let client = Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let topo = TestTopology::up("gateway", dir.path(), &[]);
    let front = topo.rag_url();
    ingest(&client, &front).await;
    let victim = topo.endpoint("fine-tuned").pid;

    // RAG traffic throughout the outage.
    let mut rag_load = Vec::new();
    for _ in 0..3 {
        let (client, url) = (client.clone(), format!("{front}/rag"));
        rag_load.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            for _ in 0..2 {
                let (status, body) = post(&client, url.clone(), rag_request()).await;
                statuses.push((status, body["answer"].as_str().map(String::from)));
            }
            statuses
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    signal(victim, "KILL");

    // During the outage: a JSON error at once, not a hang.
    let quick = Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let (status, body) = post(&quick, format!("{front}/fine-tuned"), fine_tuned_request()).await;
    assert!(
        status == StatusCode::BAD_GATEWAY || status == StatusCode::SERVICE_UNAVAILABLE,
        "{status}: {body}"
    );
    assert!(body["error"]["message"].is_string(), "{body}");

    // The launcher restarts it, and it answers again.
    let mut back = false;
    for _ in 0..240 {
        let r = quick
            .post(format!("{front}/fine-tuned"))
            .json(&fine_tuned_request())
            .send()
            .await;
        if let Ok(r) = r {
            if r.status() == StatusCode::OK {
                back = true;
                break;
            }
            let status = r.status();
            let body: Value = r.json().await.expect("errors are JSON");
            assert!(
                status == StatusCode::BAD_GATEWAY || status == StatusCode::SERVICE_UNAVAILABLE,
                "{status}: {body}"
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(back, "the fine-tuned process did not come back");

    // Every RAG request succeeded with the same answer.
    let mut answers = Vec::new();
    for task in rag_load {
        for (status, answer) in task.await.unwrap() {
            assert_eq!(status, StatusCode::OK);
            answers.push(answer.unwrap());
        }
    }
    assert!(answers.iter().all(|a| a == &answers[0]), "{answers:?}");

    // The restarted process has a new pid, and the topology says so.
    let (ft, listed) = listed_process(&client, &front, "fine-tuned").await;
    assert_eq!(ft["healthy"], true, "{listed}");
    assert_ne!(ft["pid"], victim, "{listed}");
    topo.stop();
}

/// The process `name` as `GET /topology` at `front` lists it, and the list.
async fn listed_process(client: &Client, front: &str, name: &str) -> (Value, Value) {
    let listed: Value = client
        .get(format!("{front}/topology"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let process = listed["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {listed}"))
        .clone();
    (process, listed)
}

/// With API keys set, the processes of a split topology call each other
/// with the key (no internal route is left open), and a caller without
/// it is refused at every process.
#[tokio::test]
async fn split_processes_authenticate_to_each_other() {
    const KEY: &str = "internal-test-key-42";
    let dir = tempfile::tempdir().unwrap();
    let topo = TestTopology::up("per-model", dir.path(), &["--api-key", KEY]);
    let keyed = {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert("authorization", format!("Bearer {KEY}").parse().unwrap());
        Client::builder().default_headers(headers).build().unwrap()
    };
    ingest(&keyed, &topo.rag_url()).await;
    let (status, rag) = post(&keyed, format!("{}/rag", topo.rag_url()), rag_request()).await;
    assert_eq!(status, StatusCode::OK, "{rag}");
    assert!(!rag["sources"].as_array().unwrap().is_empty(), "{rag}");
    // Every process refuses the model routes without the key.
    let anonymous = Client::new();
    for endpoint in topo.endpoints() {
        for (path, body) in [
            ("/generate", json!({ "prompt": "hi", "max_tokens": 1 })),
            ("/embed", json!({ "input": "hi" })),
        ] {
            let r = anonymous
                .post(format!("{}{path}", endpoint.url))
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(
                r.status(),
                StatusCode::UNAUTHORIZED,
                "{} {path}",
                endpoint.name
            );
        }
    }
    topo.stop();
}

/// A killed process whose port is taken before it restarts comes back on
/// another port, and the topology follows: the deployment file and
/// `/topology` give its new URL, and the gateway (restarted with it)
/// routes to it.
#[tokio::test]
async fn a_restarted_process_whose_port_was_taken_moves_and_the_gateway_follows() {
    let client = Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let topo = TestTopology::up("gateway", dir.path(), &[]);
    let front = topo.endpoint("gateway").url.clone();
    let old = topo.endpoint("fine-tuned").url.clone();
    let port: u16 = old.rsplit(':').next().unwrap().parse().unwrap();
    signal(topo.endpoint("fine-tuned").pid, "KILL");
    // Take its port before the launcher restarts it (after 0.5 s).
    let mut squatter = None;
    for _ in 0..100 {
        if let Ok(l) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            squatter = Some(l);
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(squatter.is_some(), "could not take port {port}");
    // It comes back elsewhere, and the gateway routes to it.
    let mut moved = None;
    for _ in 0..240 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let Some(d) = Deployment::read(topo.file()).unwrap() else {
            continue;
        };
        let url = d.endpoint("fine-tuned").unwrap().url.clone();
        if url == old {
            continue;
        }
        let Ok(r) = client
            .post(format!("{front}/fine-tuned"))
            .json(&fine_tuned_request())
            .send()
            .await
        else {
            continue;
        };
        if r.status() == StatusCode::OK {
            moved = Some(url);
            break;
        }
    }
    let moved = moved.expect("the fine-tuned process did not come back on another port");
    let (ft, listed) = listed_process(&client, &front, "fine-tuned").await;
    assert_eq!(ft["url"], json!(moved), "{listed}");
    drop(squatter);
    topo.stop();
}
