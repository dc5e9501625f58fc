//! Tool calling on the real default LLM, whose chat template knows no
//! tools (so the prompt is hearth's fallback): calls constrained to the
//! tools' schemas, for every `tool_choice`, whole and streamed; sampled
//! calls always valid; a conversation with calls and their results sent
//! back; and the requests that cannot be honoured refused before any
//! generation.

use crate::common::{openai_chunks, post, TestServer};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

fn tools() -> Value {
    json!([
        { "type": "function", "function": {
            "name": "get_weather", "description": "The current weather in a city",
            "parameters": { "type": "object", "additionalProperties": false, "required": ["city", "unit"],
                "properties": { "city": { "type": "string", "maxLength": 24 },
                                "unit": { "enum": ["celsius", "fahrenheit"] } } } } },
        { "type": "function", "function": {
            "name": "add", "description": "Add two integers",
            "parameters": { "type": "object", "additionalProperties": false, "required": ["a", "b"],
                "properties": { "a": { "type": "integer", "minimum": -1000, "maximum": 1000 },
                                "b": { "type": "integer", "minimum": -1000, "maximum": 1000 } } } } },
    ])
}

fn ask(question: &str, choice: Value) -> Value {
    json!({
        "model": "hearth-fine-tuned",
        "messages": [{ "role": "user", "content": question }],
        "tools": tools(), "tool_choice": choice, "max_tokens": 64, "temperature": 0,
    })
}

/// A call's name is one of the tools and its arguments validate against
/// that tool's schema (checked by the `jsonschema` crate).
fn check_call(call: &Value) -> String {
    let name = call["function"]["name"].as_str().unwrap().to_string();
    let schema = tools()
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["function"]["name"] == name.as_str())
        .unwrap_or_else(|| panic!("unknown tool in {call}"))["function"]["parameters"]
        .clone();
    let text = call["function"]["arguments"].as_str().unwrap();
    let args: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert!(
        jsonschema::is_valid(&schema, &args),
        "{text} does not validate"
    );
    assert!(call["id"].as_str().unwrap().starts_with("call_"), "{call}");
    assert_eq!(call["type"], "function");
    name
}

#[tokio::test]
async fn calls_follow_the_tools_and_the_choice() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]).await;
    let client = Client::new();
    let url = server.at("/v1/chat/completions");

    // required: a call, of some tool.
    let (status, body) = post(
        &client,
        url.clone(),
        ask("What is the weather in Oslo?", json!("required")),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{body}");
    assert_eq!(choice["message"]["content"], Value::Null, "{body}");
    let calls = choice["message"]["tool_calls"].as_array().unwrap();
    assert_eq!(
        calls.len(),
        1,
        "one call unless parallel_tool_calls: {body}"
    );
    check_call(&calls[0]);

    // A named function: that one, even when the question is about another.
    let named = json!({ "type": "function", "function": { "name": "add" } });
    let (_, body) = post(
        &client,
        url.clone(),
        ask("What is the weather in Oslo?", named.clone()),
    )
    .await;
    let calls = body["choices"][0]["message"]["tool_calls"]
        .as_array()
        .unwrap();
    assert_eq!(check_call(&calls[0]), "add", "{body}");

    // Streamed: the call's name first, then its arguments in pieces that
    // add up to the whole answer's.
    let streamed = ask("What is the weather in Oslo?", named);
    let chunks = openai_chunks(&client, url.clone(), &streamed).await;
    let (mut name, mut arguments, mut finish) = (None, String::new(), None);
    for c in &chunks {
        let choice = &c["choices"][0];
        assert!(
            choice["delta"].get("content").is_none_or(|t| t == ""),
            "{c}"
        );
        for call in choice["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            assert_eq!(call["index"], 0);
            if let Some(n) = call["function"]["name"].as_str() {
                assert!(
                    name.is_none() && arguments.is_empty(),
                    "the name comes first: {c}"
                );
                name = Some(n.to_string());
            }
            arguments.push_str(call["function"]["arguments"].as_str().unwrap_or(""));
        }
        if let Some(f) = choice["finish_reason"].as_str() {
            finish = Some(f.to_string());
        }
    }
    assert_eq!(name.as_deref(), Some("add"));
    assert_eq!(finish.as_deref(), Some("tool_calls"));
    assert_eq!(
        arguments,
        calls[0]["function"]["arguments"].as_str().unwrap(),
        "greedy, so the same call"
    );

    // auto: text or calls, as the model likes; either well formed.
    let (_, body) = post(
        &client,
        url.clone(),
        ask("Hello! Who are you?", json!("auto")),
    )
    .await;
    let message = &body["choices"][0]["message"];
    match message["tool_calls"].as_array() {
        Some(calls) => calls.iter().for_each(|c| {
            check_call(c);
        }),
        None => assert!(
            message["content"].as_str().is_some_and(|t| !t.is_empty()),
            "{body}"
        ),
    }

    // parallel_tool_calls: several calls may follow, one per line.
    let mut parallel = ask(
        "What is the weather in Oslo and in Rome?",
        json!("required"),
    );
    parallel["parallel_tool_calls"] = json!(true);
    parallel["max_tokens"] = json!(128);
    let (_, body) = post(&client, url.clone(), parallel).await;
    for call in body["choices"][0]["message"]["tool_calls"]
        .as_array()
        .unwrap()
    {
        if body["choices"][0]["finish_reason"] == "tool_calls" {
            check_call(call);
        }
    }

    // The call and its result sent back, tool_choice "none": the model
    // answers in text (held to text that opens no tool markup).
    let conversation = json!({
        "model": "hearth-fine-tuned", "tools": tools(), "tool_choice": "none", "max_tokens": 24,
        "messages": [
            { "role": "user", "content": "What is 2 + 3?" },
            { "role": "assistant", "content": null, "tool_calls": [{ "id": "call_1", "type": "function",
                "function": { "name": "add", "arguments": "{\"a\": 2, \"b\": 3}" } }] },
            { "role": "tool", "tool_call_id": "call_1", "content": "5" },
        ],
    });
    let (status, body) = post(&client, url.clone(), conversation).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body["choices"][0]["message"].get("tool_calls").is_none(),
        "{body}"
    );
    let answer = body["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(
        !answer.is_empty() && !answer.starts_with('<'),
        "text, not tool markup: {answer:?}"
    );
    server.stop();
}

/// Sampled at temperature 1 with 24 seeds, every call names a tool and its
/// arguments validate: the constraint, not the model, makes them so.
#[tokio::test]
async fn sampled_calls_are_always_valid() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]).await;
    let client = Client::new();
    let url = server.at("/v1/chat/completions");
    // Eight in flight at a time (the server's batch), a new one as soon as
    // one finishes.
    use futures_util::StreamExt;
    let answers: Vec<(u64, Value)> = futures_util::stream::iter(0..24u64)
        .map(|seed| {
            let mut body = ask("Weather in Lima, or 40 + 2?", json!("required"));
            body["temperature"] = json!(1.0);
            body["seed"] = json!(seed);
            let request = client.post(url.clone()).json(&body).send();
            async move { (seed, request.await.unwrap().json::<Value>().await.unwrap()) }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let mut valid = 0;
    for (seed, body) in answers {
        let choice = &body["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls", "seed {seed}: {body}");
        let calls = choice["message"]["tool_calls"].as_array().unwrap();
        assert_eq!(calls.len(), 1, "seed {seed}: {body}");
        check_call(&calls[0]);
        valid += 1;
    }
    assert_eq!(valid, 24);
    server.stop();
}

#[tokio::test]
async fn tool_mistakes_are_400s_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]).await;
    let client = Client::new();
    let url = server.at("/v1/chat/completions");
    let with = |patch: Value| {
        let mut body = ask("hi", json!("auto"));
        for (k, v) in patch.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    let bad_schema = json!([{ "type": "function", "function": { "name": "f",
        "parameters": { "type": "object", "properties": { "x": { "type": "strin" } } } } }]);
    for (body, param) in [
        (
            with(json!({ "tool_choice": { "type": "function", "function": { "name": "nope" } } })),
            "tool_choice",
        ),
        (with(json!({ "tool_choice": "sometimes" })), "tool_choice"),
        (
            with(json!({ "tools": [], "tool_choice": "required" })),
            "tool_choice",
        ),
        (with(json!({ "tools": bad_schema })), "tools"),
        (
            with(
                json!({ "tools": [{ "type": "function", "function": { "name": "f", "parameters": [] } }] }),
            ),
            "tools",
        ),
        (
            with(json!({ "tools": [{ "type": "function", "function": { "name": "has space" } }] })),
            "tools",
        ),
        (
            with(json!({ "tools": [{ "type": "code_interpreter" }] })),
            "tools",
        ),
        (
            with(json!({ "response_format": { "type": "json_object" } })),
            "tools",
        ),
        (with(json!({ "model": "hearth-rag" })), "tools"),
        (
            with(json!({ "messages": [{ "role": "tool", "content": "5" }] })),
            "messages",
        ),
        (
            with(json!({ "messages": [{ "role": "user", "content": "x", "tool_calls": [] }] })),
            "messages",
        ),
    ] {
        let (status, e) = post(&client, url.clone(), body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {e}");
        assert_eq!(e["error"]["param"], param, "{body}: {e}");
    }
    // A malformed call sent back is the client's mistake too.
    let (status, e) = post(
        &client,
        url.clone(),
        with(json!({ "messages": [
        { "role": "assistant", "tool_calls": [{ "id": "c", "function": { "name": "f" } }] } ] })),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    server.stop();
}
