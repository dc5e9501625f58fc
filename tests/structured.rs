//! Structured outputs on the real default LLM: JSON schemas, any JSON
//! object and Lark grammars, through the OpenAI routes (`response_format`)
//! and hearth's own (`format`, `grammar`), streamed and not, several at
//! once in one batch; and the formats that cannot be honoured refused.

use crate::common::{openai_chunks, post, TestServer};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

/// A person: name, age, up to three languages, nothing else (the schema
/// `hearth bench grammar` measures with).
fn person_schema() -> Value {
    hearth::bench::micro::PERSON_SCHEMA.clone()
}

/// `text` parses, and follows [`person_schema`].
fn check_person(text: &str) {
    let v: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text:?}"));
    let o = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {text}"));
    assert!(o["name"].is_string(), "{text}");
    assert!(o["age"].as_u64().is_some(), "{text}");
    let languages = o["languages"].as_array().unwrap();
    assert!(
        languages.len() <= 3 && languages.iter().all(Value::is_string),
        "{text}"
    );
    assert_eq!(o.len(), 3, "no other keys: {text}");
}

fn chat(schema_format: Value, stream: bool) -> Value {
    json!({
        "model": "hearth-fine-tuned",
        "messages": [{ "role": "user", "content": "Describe a programmer as JSON." }],
        "max_tokens": 96,
        "stream": stream,
        "response_format": schema_format,
    })
}

#[tokio::test]
async fn outputs_follow_their_schema_or_grammar() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]).await;
    let client = Client::new();
    let json_schema = json!({ "type": "json_schema", "json_schema": { "name": "person", "schema": person_schema(), "strict": true } });

    // OpenAI chat, json_schema.
    let (status, body) = post(
        &client,
        server.at("/v1/chat/completions"),
        chat(json_schema.clone(), false),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["choices"][0]["finish_reason"], "stop", "{body}");
    check_person(body["choices"][0]["message"]["content"].as_str().unwrap());

    // Streamed: the deltas add up to valid JSON.
    let text: String = openai_chunks(
        &client,
        server.at("/v1/chat/completions"),
        &chat(json_schema.clone(), true),
    )
    .await
    .iter()
    .filter_map(|v| {
        v["choices"][0]["delta"]["content"]
            .as_str()
            .map(String::from)
    })
    .collect();
    check_person(&text);

    // json_object on /v1/completions: any object.
    let (status, body) = post(
        &client,
        server.at("/v1/completions"),
        json!({ "model": "hearth-fine-tuned", "prompt": "A JSON object describing Rust:", "max_tokens": 64,
                "response_format": { "type": "json_object" } }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let text = body["choices"][0]["text"].as_str().unwrap();
    if body["choices"][0]["finish_reason"] == "stop" {
        let v: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text:?}"));
        assert!(v.is_object(), "{text}");
    } else {
        // Cut by max_tokens: still the beginning of an object.
        assert!(text.trim_start().starts_with('{'), "{text}");
    }

    // hearth's /fine-tuned: a Lark grammar, and `format` as a schema.
    let (status, body) = post(
        &client,
        server.at("/fine-tuned"),
        json!({ "prompt": "Is Rust memory safe? Answer:", "max_tokens": 8,
                "grammar": "start: \" yes\" | \" no\"" }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        [" yes", " no"].contains(&body["text"].as_str().unwrap()),
        "{body}"
    );
    assert_eq!(body["finish_reason"], "stop");
    let (status, body) = post(
        &client,
        server.at("/fine-tuned"),
        json!({ "messages": [{ "role": "user", "content": "Describe a programmer." }],
                "max_tokens": 96, "format": person_schema() }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    check_person(body["text"].as_str().unwrap());

    // /rag answers as an object with its answer and the sources it cites.
    let (status, body) = post(
        &client,
        server.at("/documents"),
        json!({ "id": "volcano", "text": "Mount Zorblax is a dormant volcano on the island of Quillon. It last erupted in the year 1723." }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = post(
        &client,
        server.at("/rag"),
        // (The sources a client can cite: the document ids it holds.)
        json!({ "question": "When did Mount Zorblax last erupt?", "max_tokens": 96, "top_k": 1,
                "format": { "type": "object",
                            "properties": { "answer": { "type": "string", "maxLength": 80 },
                                            "cited_sources": { "type": "array", "items": { "enum": ["volcano"] }, "maxItems": 1 } },
                            "required": ["answer", "cited_sources"], "additionalProperties": false } }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let answer: Value = serde_json::from_str(body["answer"].as_str().unwrap())
        .unwrap_or_else(|e| panic!("{e}: {body}"));
    assert!(answer["answer"].is_string(), "{answer}");
    assert!(
        answer["cited_sources"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s == "volcano"),
        "{answer}"
    );

    // Several at once, constrained and not, batched together: each its own.
    let requests = (0..4).map(|i| {
        let body = if i % 2 == 0 {
            chat(json_schema.clone(), false)
        } else {
            json!({ "model": "hearth-fine-tuned", "max_tokens": 16,
                    "messages": [{ "role": "user", "content": "Say hello." }] })
        };
        let request = client
            .post(server.at("/v1/chat/completions"))
            .json(&body)
            .send();
        async move { request.await.unwrap().json::<Value>().await.unwrap() }
    });
    let answers = futures_util::future::join_all(requests).await;
    for (i, a) in answers.iter().enumerate() {
        let content = a["choices"][0]["message"]["content"].as_str().unwrap();
        if i % 2 == 0 {
            check_person(content);
        } else {
            assert!(!content.is_empty(), "{a}");
        }
    }

    // Formats that cannot be honoured are the client's mistake.
    for (route, body, param) in [
        (
            "/fine-tuned",
            json!({ "prompt": "x", "grammar": "start: foo" }),
            Some("grammar"),
        ),
        (
            "/fine-tuned",
            json!({ "prompt": "x", "format": { "type": 5 } }),
            Some("format"),
        ),
        (
            "/v1/chat/completions",
            chat(
                json!({ "type": "json_schema", "json_schema": { "schema": { "type": "object", "minProperties": "two" } } }),
                false,
            ),
            Some("response_format"),
        ),
        (
            "/fine-tuned",
            json!({ "prompt": "x", "format": "yaml" }),
            Some("format"),
        ),
        (
            "/fine-tuned",
            json!({ "prompt": "x", "format": "json", "grammar": "start: \"a\"" }),
            Some("grammar"),
        ),
        (
            "/v1/chat/completions",
            chat(
                json!({ "type": "json_schema", "json_schema": { "schema": 3 } }),
                false,
            ),
            Some("response_format"),
        ),
        (
            "/v1/chat/completions",
            {
                let mut b = chat(json!({ "type": "json_object" }), false);
                b["format"] = json!("json");
                b
            },
            Some("response_format"),
        ),
    ] {
        let (status, e) = post(&client, server.at(route), body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} -> {e}");
        assert!(e["error"]["message"].is_string(), "{e}");
        if let Some(p) = param {
            assert_eq!(e["error"]["param"], p, "{e}");
        }
    }
    let (status, e) = post(
        &client,
        server.at("/v1/chat/completions"),
        chat(json!({ "type": "xml" }), false),
    )
    .await;
    assert!(status.is_client_error(), "{e}");
    server.stop();
}

/// Log-probabilities on both OpenAI routes, whole and streamed: one per
/// generated token, its alternatives most likely first, the chosen one
/// the most likely under greedy decoding, the tokens spelling the text.
#[tokio::test]
async fn logprobs_describe_each_token() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]).await;
    let client = Client::new();
    let request = json!({
        "model": "hearth-fine-tuned",
        "messages": [{ "role": "user", "content": "What is Rust?" }],
        "max_tokens": 12, "logprobs": true, "top_logprobs": 3,
    });
    let (status, body) = post(&client, server.at("/v1/chat/completions"), request.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let content = body["choices"][0]["logprobs"]["content"]
        .as_array()
        .unwrap();
    assert_eq!(
        content.len() as u64,
        body["usage"]["completion_tokens"].as_u64().unwrap(),
        "{body}"
    );
    let mut spelled = String::new();
    for t in content {
        let top = t["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), 3, "{t}");
        let lps: Vec<f64> = top.iter().map(|x| x["logprob"].as_f64().unwrap()).collect();
        assert!(lps.windows(2).all(|w| w[0] >= w[1]) && lps[0] <= 0.0, "{t}");
        assert!(
            lps.iter().map(|l| l.exp()).sum::<f64>() <= 1.0 + 1e-4,
            "{t}"
        );
        // Greedy: the chosen token is the most likely.
        assert_eq!(t["token"], top[0]["token"], "{t}");
        assert_eq!(t["logprob"], top[0]["logprob"], "{t}");
        let token = t["token"].as_str().unwrap();
        assert_eq!(t["bytes"], json!(token.as_bytes()), "{t}");
        spelled.push_str(token);
    }
    assert_eq!(
        spelled,
        body["choices"][0]["message"]["content"].as_str().unwrap()
    );

    // Streamed: each chunk carries its tokens' entries, the same ones.
    let streamed: Vec<Value> = openai_chunks(&client, server.at("/v1/chat/completions"), &request)
        .await
        .iter()
        .filter_map(|v| v["choices"][0]["logprobs"]["content"].as_array().cloned())
        .flatten()
        .collect();
    assert_eq!(&streamed, content);

    // The completions route's format.
    let (status, body) = post(
        &client,
        server.at("/v1/completions"),
        json!({ "model": "hearth-fine-tuned", "prompt": "The capital of France is", "max_tokens": 4, "logprobs": 2 }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let lp = &body["choices"][0]["logprobs"];
    let tokens: Vec<&str> = lp["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(
        tokens.concat(),
        body["choices"][0]["text"].as_str().unwrap(),
        "{body}"
    );
    assert_eq!(lp["token_logprobs"].as_array().unwrap().len(), tokens.len());
    assert!(
        lp["top_logprobs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m.as_object().unwrap().len() == 2),
        "{lp}"
    );
    // Without asking: null, as OpenAI answers.
    let mut plain = request.clone();
    plain["logprobs"] = json!(false);
    plain.as_object_mut().unwrap().remove("top_logprobs");
    let (_, body) = post(&client, server.at("/v1/chat/completions"), plain).await;
    assert!(body["choices"][0]["logprobs"].is_null(), "{body}");
    // Out of range, or alternatives without logprobs: 400 naming the field.
    for (body, param) in [
        (
            {
                let mut b = request.clone();
                b["top_logprobs"] = json!(21);
                b
            },
            "top_logprobs",
        ),
        (
            {
                let mut b = request.clone();
                b["logprobs"] = json!(false);
                b
            },
            "top_logprobs",
        ),
    ] {
        let (status, e) = post(&client, server.at("/v1/chat/completions"), body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{e}");
        assert_eq!(e["error"]["param"], param, "{e}");
    }
    server.stop();
}

/// The property the constraint exists for: sampled at temperature 1 with
/// 24 seeds each, five schemas (nested objects, enums, integers with
/// ranges, strings with patterns, arrays with bounds) give 120 outputs,
/// every one complete, parsed and valid against its schema (checked by the
/// `jsonschema` crate, not by hearth). Eight at a time, batched. (A
/// fraction, `"type": "number"`, has no bound on its digits: at
/// temperature 1 the model can write them until `max_tokens`, an output
/// that is cut, not invalid.)
#[tokio::test]
async fn sampled_outputs_are_always_valid() {
    let schemas = [
        json!({ "type": "object", "additionalProperties": false, "required": ["user"],
                "properties": { "user": { "type": "object", "additionalProperties": false, "required": ["id", "tags"],
                    "properties": { "id": { "type": "integer", "minimum": 1, "maximum": 999 },
                                    "tags": { "type": "array", "items": { "enum": ["a", "b", "c"] }, "minItems": 1, "maxItems": 3 } } } } }),
        json!({ "type": "object", "additionalProperties": false, "required": ["color", "score"],
                "properties": { "color": { "enum": ["red", "green", "blue"] },
                                "score": { "type": "integer", "minimum": 0, "maximum": 100 } } }),
        json!({ "type": "object", "additionalProperties": false, "required": ["code"],
                "properties": { "code": { "type": "string", "pattern": "^[A-Z]{3}-[0-9]{2}$" } } }),
        json!({ "type": "array", "items": { "type": "integer", "minimum": -5, "maximum": 5 }, "minItems": 2, "maxItems": 4 }),
        json!({ "type": "object", "additionalProperties": false, "required": ["name", "age"],
                "properties": { "name": { "type": "string", "maxLength": 12 },
                                "age": { "type": "integer", "minimum": 0, "maximum": 120 } } }),
    ];
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]).await;
    let client = Client::new();
    let jobs: Vec<(usize, u64)> = (0..schemas.len())
        .flat_map(|s| (0..24).map(move |seed| (s, seed)))
        .collect();
    // Eight in flight at a time (the server's batch), a new one as soon as
    // one finishes.
    use futures_util::StreamExt;
    let schemas = &schemas;
    let answers: Vec<(usize, u64, Value)> = futures_util::stream::iter(jobs)
        .map(|(s, seed)| {
            let body = json!({
                "model": "hearth-fine-tuned",
                "messages": [{ "role": "user", "content": "Answer with JSON." }],
                "max_tokens": 160, "temperature": 1.0, "seed": seed,
                "response_format": { "type": "json_schema", "json_schema": { "name": "x", "schema": schemas[s] } },
            });
            let request = client.post(server.at("/v1/chat/completions")).json(&body).send();
            async move { (s, seed, request.await.unwrap().json::<Value>().await.unwrap()) }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let (mut valid, mut total) = (0, 0);
    for (s, seed, body) in answers {
        total += 1;
        let choice = &body["choices"][0];
        let text = choice["message"]["content"]
            .as_str()
            .unwrap_or_else(|| panic!("{body}"));
        assert_eq!(
            choice["finish_reason"], "stop",
            "schema {s}, seed {seed}: cut short: {text}"
        );
        let value: Value = serde_json::from_str(text)
            .unwrap_or_else(|e| panic!("schema {s}, seed {seed}: {e}: {text}"));
        assert!(
            jsonschema::is_valid(&schemas[s], &value),
            "schema {s}, seed {seed}: {text} does not validate"
        );
        valid += 1;
    }
    assert_eq!((valid, total), (120, 120));
    server.stop();
}
