//! Retrieval end to end: hybrid, lexical and dense search, metadata
//! filters, score thresholds, and the lexical index's consistency after a
//! SIGKILL, on the real server with the real embedder and a real SQLite
//! file.

use crate::common::{post, TestServer};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

const TEAMS: [&str; 4] = ["ops", "sre", "web", "data"];
const SERVICES: [&str; 8] = [
    "billing", "search", "ingest", "auth", "mail", "cache", "queue", "render",
];

/// `n` short runbook documents spread over teams, services and levels.
fn runbooks(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            let (team, service) = (TEAMS[i % 4], SERVICES[i % 8]);
            json!({
                "id": format!("rb-{i}"),
                "text": format!("Runbook {i}: when the {service} service pages, the {team} team restarts it on host {}.", i % 13),
                "source": if i % 2 == 0 { "runbooks" } else { "wiki" },
                "metadata": { "team": team, "level": i % 5 },
            })
        })
        .collect()
}

async fn ingest(client: &Client, server: &TestServer, docs: Vec<Value>) {
    for batch in docs.chunks(500) {
        let (status, body) = post(client, server.at("/documents"), json!(batch)).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
}

async fn search(client: &Client, server: &TestServer, body: Value) -> Vec<Value> {
    let (status, found) = post(client, server.at("/search"), body.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body} -> {found}");
    found["results"].as_array().unwrap().clone()
}

fn meta<'a>(p: &'a Value, key: &str) -> &'a Value {
    &p["metadata"][key]
}

#[tokio::test]
async fn hybrid_search_filters_and_thresholds() {
    let dir = tempfile::tempdir().unwrap();
    let client = Client::new();
    let server = TestServer::start(dir.path(), &[]).await;
    // 1,200 documents: every filter below but the time range matches at most
    // 512 chunks (searched exactly); the time range matches them all (the
    // graph walk that admits only matching chunks).
    let mut docs = runbooks(1200);
    docs.push(json!({
        "id": "zorblax",
        "text": "If the dashboard shows ERR_ZORBLAX_42, drain the node before anything else.",
        "source": "alerts",
        "metadata": { "team": "ops", "level": 9 },
    }));
    ingest(&client, &server, docs).await;

    // Every mode answers, best first, with its scores and ranks.
    for mode in ["dense", "lexical", "hybrid"] {
        let found = search(
            &client,
            &server,
            json!({ "query": "who restarts the billing service", "mode": mode, "top_k": 5 }),
        )
        .await;
        assert_eq!(found.len(), 5, "{mode}");
        let scores: Vec<f64> = found.iter().map(|p| p["score"].as_f64().unwrap()).collect();
        assert!(
            scores.windows(2).all(|w| w[0] >= w[1]),
            "{mode}: {scores:?}"
        );
        for p in &found {
            // A lexical search embeds the query only to check a min_score.
            assert_eq!(
                p["dense_score"].is_number(),
                mode != "lexical",
                "{mode}: {p}"
            );
            match mode {
                "dense" => assert!(p["dense_rank"].is_number() && p["lexical_rank"].is_null()),
                "lexical" => assert!(p["lexical_rank"].is_number() && p["dense_rank"].is_null()),
                _ => assert!(p["dense_rank"].is_number() || p["lexical_rank"].is_number()),
            }
        }
        assert!(
            found[0]["text"].as_str().unwrap().contains("billing"),
            "{mode}: {found:?}"
        );
    }

    // An identifier: the lexical list finds it first, and so does hybrid.
    for mode in ["lexical", "hybrid"] {
        let found = search(
            &client,
            &server,
            json!({ "query": "ERR_ZORBLAX_42", "mode": mode, "top_k": 3 }),
        )
        .await;
        assert_eq!(found[0]["document_id"], "zorblax", "{mode}: {found:?}");
        assert!(found[0]["lexical_score"].as_f64().unwrap() > 0.0);
    }

    // Filters hold inside every mode: only matching chunks, and all k.
    let filters = [
        json!({ "metadata.team": "sre" }),
        json!({ "metadata.team": ["web", "data"], "source": "runbooks" }),
        json!({ "metadata.level": { "gte": 3 }, "source": "wiki" }),
        json!({ "document_id": ["rb-7", "rb-8", "rb-9"] }),
    ];
    for filter in &filters {
        for mode in ["dense", "lexical", "hybrid"] {
            let found = search(
                &client,
                &server,
                json!({ "query": "restart the service on the host", "mode": mode, "top_k": 3, "filter": filter }),
            )
            .await;
            assert_eq!(found.len(), 3, "{mode} {filter}: {found:?}");
            for p in &found {
                let ok = match filter.as_object().unwrap().keys().next().unwrap().as_str() {
                    "metadata.team" if filter.get("source").is_some() => {
                        ["web", "data"].contains(&meta(p, "team").as_str().unwrap())
                            && p["source"] == "runbooks"
                    }
                    "metadata.team" => meta(p, "team") == "sre",
                    "metadata.level" => {
                        meta(p, "level").as_u64().unwrap() >= 3 && p["source"] == "wiki"
                    }
                    _ => ["rb-7", "rb-8", "rb-9"].contains(&p["document_id"].as_str().unwrap()),
                };
                assert!(ok, "{mode} {filter} let through {p}");
            }
        }
    }
    // A time range: everything was written just now.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let recent = json!({ "created_at": { "gte": now - 3600 } });
    let future = json!({ "created_at": { "gt": now + 3600 } });
    let q = "restart the service";
    assert_eq!(
        search(
            &client,
            &server,
            json!({ "query": q, "filter": recent, "top_k": 4 })
        )
        .await
        .len(),
        4
    );
    for mode in ["dense", "lexical", "hybrid"] {
        let none = search(
            &client,
            &server,
            json!({ "query": q, "mode": mode, "filter": future }),
        )
        .await;
        assert!(none.is_empty(), "{mode}: {none:?}");
    }

    // A threshold on the cosine similarity drops weak passages.
    let weak = search(
        &client,
        &server,
        json!({ "query": "a recipe for sourdough bread", "min_score": 0.6, "top_k": 10 }),
    )
    .await;
    assert!(weak.is_empty(), "{weak:?}");
    let strong = search(
        &client,
        &server,
        json!({ "query": "the billing service pages and the ops team restarts it", "min_score": 0.5 }),
    )
    .await;
    assert!(!strong.is_empty());
    assert!(strong
        .iter()
        .all(|p| p["dense_score"].as_f64().unwrap() >= 0.5));

    // RAG with nothing left says the documents do not cover the question,
    // without a guess and without sources.
    for extra in [
        json!({ "min_score": 0.9 }),
        json!({ "filter": { "metadata.team": "nobody" } }),
    ] {
        let mut body = json!({ "question": "How do I bake sourdough bread?", "max_tokens": 16 });
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let (status, answer) = post(&client, server.at("/rag"), body).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert!(answer["sources"].as_array().unwrap().is_empty(), "{answer}");
        assert!(
            answer["answer"].as_str().unwrap().contains("do not cover"),
            "{answer}"
        );
    }
    // With an output format, nothing found is still an answer in it.
    let schema = json!({ "type": "object", "required": ["answer"], "additionalProperties": false,
                         "properties": { "answer": { "type": "string", "maxLength": 80 } } });
    let (status, answer) = post(
        &client,
        server.at("/rag"),
        json!({ "question": "How do I bake sourdough bread?", "max_tokens": 48, "min_score": 0.9, "format": schema }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert!(answer["sources"].as_array().unwrap().is_empty(), "{answer}");
    let parsed: serde_json::Value = serde_json::from_str(answer["answer"].as_str().unwrap())
        .unwrap_or_else(|e| panic!("{e}: {answer}"));
    assert!(parsed["answer"].is_string(), "{answer}");
    // The OpenAI route takes the same fields for hearth-rag, and refuses
    // them for a model that does not retrieve.
    let (status, chat) = post(
        &client,
        server.at("/v1/chat/completions"),
        json!({ "model": "hearth-rag", "messages": [{"role": "user", "content": "Who restarts billing?"}],
                "max_tokens": 8, "filter": { "metadata.team": "nobody" } }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{chat}");
    assert!(chat["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .contains("do not cover"));
    let (status, refused) = post(
        &client,
        server.at("/v1/chat/completions"),
        json!({ "model": "hearth-fine-tuned", "messages": [{"role": "user", "content": "hi"}], "mode": "lexical" }),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");

    // Filters and options that cannot be read are 400s that say why.
    for (body, words) in [
        (
            json!({ "query": q, "filter": { "team": "ops" } }),
            "unknown filter field",
        ),
        (
            json!({ "query": q, "filter": { "created_at": { "after": 1 } } }),
            "unknown range bound",
        ),
        (json!({ "query": q, "filter": "ops" }), "must be an object"),
        (json!({ "query": q, "min_score": 2.0 }), "between -1 and 1"),
    ] {
        let (status, err) = post(&client, server.at("/search"), body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} -> {err}");
        let message = err["error"]["message"].as_str().unwrap();
        assert!(message.contains(words), "{body} -> {message}");
    }
    let (status, err) = post(
        &client,
        server.at("/search"),
        json!({ "query": q, "mode": "fuzzy" }),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    server.stop();
}

#[tokio::test]
async fn a_sigkill_during_ingestion_leaves_the_lexical_index_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let client = Client::new();
    let server = TestServer::start(dir.path(), &[]).await;
    let url = server.at("/documents");
    // Ingest in the background, one document per request, and kill the
    // server while it is writing.
    let writer = {
        let client = client.clone();
        tokio::spawn(async move {
            for doc in runbooks(400) {
                if client.post(&url).json(&doc).send().await.is_err() {
                    break;
                }
            }
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    server.kill9();
    let _ = writer.await;

    let db = dir.path().join("hearth.sqlite");
    let conn = rusqlite::Connection::open(&db).unwrap();
    let chunks: i64 = conn
        .query_row("SELECT COUNT(*) FROM chunks", [], |r| r.get(0))
        .unwrap();
    assert!(chunks > 0, "the kill came before any write");
    conn.execute(
        "INSERT INTO \"fts:default\"(\"fts:default\", rank) VALUES ('integrity-check', 1)",
        [],
    )
    .expect("the lexical index matches the chunks");
    // Every chunk's words find it.
    let matched: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM \"fts:default\" WHERE \"fts:default\" MATCH 'runbook'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(matched, chunks);
    drop(conn);
    // And the restarted server searches it.
    let server = TestServer::start(dir.path(), &[]).await;
    let found = search(
        &client,
        &server,
        json!({ "query": "billing", "mode": "lexical", "top_k": 1 }),
    )
    .await;
    assert_eq!(found.len(), 1);
    server.stop();
}

#[tokio::test]
async fn a_configured_reranker_rescores_the_candidates() {
    let dir = tempfile::tempdir().unwrap();
    let client = Client::new();
    // A random-weight cross-encoder with the embedder's vocabulary: its
    // scores mean nothing, but they are the model's, so the server's order
    // and scores can be checked against the model run here directly.
    let model_dir = dir.path().join("reranker");
    hearth::models::reranker::write_random(
        &model_dir,
        &crate::common::embedder_path().join("tokenizer.json"),
        11,
    )
    .unwrap();
    let server = TestServer::start(
        &dir.path().join("data"),
        &[
            "--reranker",
            model_dir.to_str().unwrap(),
            "--rerank-candidates",
            "6",
        ],
    )
    .await;
    ingest(&client, &server, runbooks(40)).await;
    let (_, info) = crate::common::get(&client, server.at("/info")).await;
    assert_eq!(info["models"]["reranker"]["name"], "reranker", "{info}");

    let query = "who restarts the billing service";
    let found = search(&client, &server, json!({ "query": query, "top_k": 3 })).await;
    assert_eq!(found.len(), 3);
    let model = hearth::models::Reranker::load(
        &hearth::models::ModelSource::parse(model_dir.to_str().unwrap()).unwrap(),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let scores: Vec<f32> = found
        .iter()
        .map(|p| p["rerank_score"].as_f64().unwrap() as f32)
        .collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    for (p, s) in found.iter().zip(&scores) {
        assert_eq!(p["score"].as_f64().unwrap() as f32, *s);
        let direct = model.score(query, &[p["text"].as_str().unwrap()]).unwrap()[0];
        assert!((direct - s).abs() < 1e-4, "{direct} vs {s}");
    }
    // The best 3 of the 6 candidates hybrid search brings.
    let candidates = search(
        &client,
        &server,
        json!({ "query": query, "top_k": 6, "rerank": false }),
    )
    .await;
    assert!(candidates.iter().all(|p| p["rerank_score"].is_null()));
    let texts: Vec<&str> = candidates
        .iter()
        .map(|p| p["text"].as_str().unwrap())
        .collect();
    let mut best: Vec<(f32, &str)> = model
        .score(query, &texts)
        .unwrap()
        .into_iter()
        .zip(texts.iter().copied())
        .collect();
    best.sort_by(|a, b| b.0.total_cmp(&a.0));
    let want: Vec<&str> = best[..3].iter().map(|b| b.1).collect();
    let got: Vec<&str> = found.iter().map(|p| p["text"].as_str().unwrap()).collect();
    assert_eq!(got, want);

    // The same cross-encoder through the rerank API (Cohere's and Jina's
    // shape): documents best first, relevance the logistic of the logit.
    for route in ["/v1/rerank", "/rerank"] {
        let documents: Vec<Value> = texts
            .iter()
            .enumerate()
            .map(|(i, t)| {
                if i % 2 == 0 {
                    json!(t)
                } else {
                    json!({ "text": t })
                }
            })
            .collect();
        let (status, reranked) = post(
            &client,
            server.at(route),
            json!({ "query": query, "documents": documents, "top_n": 3, "return_documents": true }),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{reranked}");
        assert_eq!(reranked["model"], "reranker", "{reranked}");
        let results = reranked["results"].as_array().unwrap();
        let texts_got: Vec<&str> = results
            .iter()
            .map(|r| r["document"]["text"].as_str().unwrap())
            .collect();
        assert_eq!(texts_got, want, "{reranked}");
        for (r, (logit, _)) in results.iter().zip(&best) {
            let relevance = r["relevance_score"].as_f64().unwrap() as f32;
            assert!(
                (relevance - 1.0 / (1.0 + (-logit).exp())).abs() < 1e-4,
                "{r}"
            );
            let index = r["index"].as_u64().unwrap() as usize;
            assert_eq!(texts[index], r["document"]["text"], "{r}");
        }
    }
    let (status, err) = post(
        &client,
        server.at("/v1/rerank"),
        json!({ "query": query, "documents": [] }),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    assert_eq!(err["error"]["param"], "documents");
    server.stop();

    // Without a reranker, asking for one is a 400.
    let plain = TestServer::start(&dir.path().join("data"), &[]).await;
    let (status, err) = post(
        &client,
        plain.at("/search"),
        json!({ "query": query, "rerank": true }),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    assert!(err["error"]["message"]
        .as_str()
        .unwrap()
        .contains("no reranker"));
    // And the rerank API says how to configure one.
    let (status, err) = post(
        &client,
        plain.at("/v1/rerank"),
        json!({ "query": query, "documents": ["a"] }),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{err}");
    assert!(err["error"]["message"]
        .as_str()
        .unwrap()
        .contains("models.reranker"));
    plain.stop();
}
