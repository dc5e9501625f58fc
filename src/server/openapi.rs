//! The OpenAPI document of the whole HTTP API, generated from the handlers'
//! annotations and the request and response types (utoipa), served at
//! `GET /openapi.json`.

use super::state::AppState;
use super::{
    adapters, anthropic, collections, dialect, documents, error, health, observe, ollama, openai,
    page, pipelines, rerank, responses, tokens, topology,
};
use crate::config::Config;
use axum::extract::State;
use axum::Json;
use serde_json::{json, Map, Value};
use std::sync::Arc;
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "hearth",
        description = "Local inference: a RAG pipeline and a fine-tuned LLM behind one HTTP API, plus an OpenAI-compatible one."
    ),
    paths(
        pipelines::rag,
        pipelines::fine_tuned,
        adapters::get,
        adapters::load,
        adapters::unload,
        documents::create,
        documents::list,
        documents::get,
        documents::delete,
        documents::search,
        documents::embed,
        collections::list,
        collections::create,
        collections::delete,
        health::healthz,
        health::readyz,
        health::info,
        topology::topology,
        openai::models,
        openai::chat_completions,
        openai::completions,
        openai::embeddings,
        responses::responses,
        anthropic::messages,
        anthropic::count_tokens,
        rerank::rerank,
        tokens::tokenize,
        tokens::detokenize,
        tokens::apply_template,
        ollama::chat,
        ollama::generate,
        ollama::embed,
        ollama::embeddings,
        ollama::tags,
        ollama::ps,
        ollama::show,
        ollama::version,
        observe::metrics,
        page::page,
        document,
    ),
    components(schemas(error::ErrorBody))
)]
pub struct ApiDoc;

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "health", responses((status = 200, description = "OpenAPI 3.1", body = Object)))]
pub async fn document(State(state): State<Arc<AppState>>) -> Json<Value> {
    let dimensions = state
        .services
        .get()
        .and_then(|s| s.embedding().ok())
        .map(|e| e.dim());
    Json(spec(&state.config, dimensions))
}

/// The document: utoipa's, then made to say what the server does where
/// annotations cannot (statuses every route shares, request bodies that
/// refuse unknown fields, inputs of several shapes, limits from the
/// config and the loaded embedder, streams).
pub fn spec(config: &Config, dimensions: Option<usize>) -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("the document serializes");
    shared_statuses(&mut doc);
    streams(&mut doc);
    dialect_errors(&mut doc);
    let schemas = doc["components"]["schemas"]
        .as_object_mut()
        .expect("components");
    // hearth's own request bodies refuse unknown fields (a 422 naming it).
    for name in STRICT {
        close(schemas, name);
    }
    // `/fine-tuned` takes a conversation or a prompt, exactly one.
    // (null counts as absent).
    let given = json!({ "messages": { "type": "array" }, "prompt": { "type": "string" } });
    schemas["FineTunedRequest"]["anyOf"] = json!([
        { "required": ["messages"], "properties": { "messages": given["messages"] } },
        { "required": ["prompt"], "properties": { "prompt": given["prompt"] } },
    ]);
    schemas["FineTunedRequest"]["not"] =
        json!({ "required": ["messages", "prompt"], "properties": given });
    // A `tool` message names the call it answers; only assistants call.
    let rules = json!([
        { "if": { "required": ["role"], "properties": { "role": { "const": "tool" } } },
          "then": { "required": ["tool_call_id"], "properties": { "tool_call_id": { "type": "string" } } } },
        { "if": { "required": ["role"], "properties": { "role": { "not": { "const": "assistant" } } } },
          "then": { "properties": { "tool_calls": { "type": "null" } } } },
    ]);
    schemas["ChatMessage"]["allOf"] = rules;
    // Embedding inputs: one text or a list of 1 to 2048 non-empty texts.
    let texts = json!({ "oneOf": [
        { "type": "string", "minLength": 1 },
        { "type": "array", "minItems": 1, "maxItems": super::fields::MAX_EMBED_INPUTS,
          "items": { "type": "string", "minLength": 1 } },
    ]});
    schemas["EmbedRequest"]["properties"]["input"] = texts.clone();
    schemas["EmbeddingsRequest"]["properties"]["input"] = texts;
    // Text that must hold more than whitespace, within the configured length.
    let text = json!({ "type": "string", "minLength": 1, "maxLength": config.limits.max_query_chars, "pattern": "\\S" });
    schemas["RagRequest"]["properties"]["question"] = text.clone();
    schemas["SearchRequest"]["properties"]["query"] = text;
    schemas["DocumentBody"]["properties"]["text"] = json!({ "type": "string", "pattern": "\\S" });
    schemas["DocumentBody"]["properties"]["id"] = json!({ "type": ["string", "null"], "minLength": 1,
        "maxLength": crate::pipelines::ingest::MAX_ID_CHARS, "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]*$",
        "description": "Its id (default: one is made); replaces a document of the same id." });
    // `/v1/completions`' prompt: a text, or a list of one.
    let prompt = json!({ "type": "string", "minLength": 1 });
    schemas["CompletionRequest"]["properties"]["prompt"] = json!({ "oneOf": [prompt,
        { "type": "array", "minItems": 1, "maxItems": 1, "items": prompt }] });
    schemas["Sampling"]["properties"]["n"] =
        json!({ "type": ["integer", "null"], "minimum": 1, "maximum": 1 });
    // Alternatives per token: 0-20, as OpenAI's.
    let alternatives = json!({ "type": ["integer", "null"], "minimum": 0, "maximum": 20 });
    schemas["CompletionRequest"]["properties"]["logprobs"] = alternatives.clone();
    schemas["ChatRequest"]["properties"]["top_logprobs"] = alternatives;
    if let Some(d) = dimensions {
        schemas["EmbeddingsRequest"]["properties"]["dimensions"] =
            json!({ "type": ["integer", "null"], "enum": [d, null] });
    }
    // Fields with a fixed set of values.
    schemas["ChatMessage"]["properties"]["role"] =
        json!({ "type": "string", "enum": ["system", "developer", "user", "assistant", "tool"] });
    schemas["Message"]["properties"]["role"] =
        json!({ "type": "string", "enum": ["system", "user", "assistant", "tool"] });
    schemas["EmbeddingsRequest"]["properties"]["encoding_format"] =
        json!({ "type": ["string", "null"], "enum": ["float", "base64", null] });
    for name in ["RagRequest", "SearchRequest", "RetrievalFields"] {
        if let Some(p) = schemas[name].pointer_mut("/properties/filter") {
            p["type"] = json!(["object", "null"]);
            p["propertyNames"] =
                json!({ "pattern": "^(source|document_id|created_at|metadata(\\.[^.\"]+)+)$" });
            let bound = json!({ "type": "number" });
            p["additionalProperties"] = json!({ "anyOf": [
                { "type": ["string", "number", "boolean", "null"] },
                { "type": "array", "minItems": 1, "items": { "type": ["string", "number", "boolean"] } },
                { "type": "object", "minProperties": 1, "additionalProperties": false,
                  "properties": { "gt": bound, "gte": bound, "lt": bound, "lte": bound } },
            ]});
        }
    }
    // `rerank: true` needs a configured reranker.
    if config.models.reranker.is_empty() {
        for name in ["RagRequest", "SearchRequest", "RetrievalFields"] {
            if let Some(p) = schemas[name].pointer_mut("/properties/rerank") {
                *p = json!({ "type": ["boolean", "null"], "enum": [false, null],
                             "description": "No reranker is configured (`models.reranker`): only false." });
            }
        }
    }
    // Limits the config sets.
    let top_k = json!({ "type": ["integer", "null"], "minimum": 1, "maximum": config.retrieval.max_top_k,
                        "description": "Passages to retrieve (at most `retrieval.max_top_k`)." });
    for name in ["RagRequest", "SearchRequest"] {
        schemas[name]["properties"]["top_k"] = top_k.clone();
    }
    let max_tokens = config.generation.max_tokens_limit;
    for name in ["RagRequest", "FineTunedRequest", "SamplingFields"] {
        if let Some(p) = schemas[name].pointer_mut("/properties/max_tokens") {
            p["maximum"] = json!(max_tokens);
        }
    }
    anthropic_requests(schemas, max_tokens);
    schemas["ResponsesRequest"]["properties"]["max_output_tokens"] =
        json!({ "type": ["integer", "null"], "minimum": 1, "maximum": max_tokens });
    schemas["RerankRequest"]["properties"]["top_n"] = json!({ "type": ["integer", "null"], "minimum": 1, "maximum": super::rerank::MAX_DOCUMENTS });
    ollama_requests(schemas);
    // `POST /documents` takes one document, a list, or `{"documents": [...]}`.
    let one = json!({ "$ref": "#/components/schemas/DocumentBody" });
    let many =
        json!({ "type": "array", "minItems": 1, "maxItems": documents::MAX_BATCH, "items": one });
    if let Some(body) =
        doc.pointer_mut("/paths/~1documents/post/requestBody/content/application~1json/schema")
    {
        *body = json!({ "oneOf": [one, many, { "type": "object", "required": ["documents"],
            "additionalProperties": false, "properties": { "documents": many } }] });
    }
    doc
}

/// The routes that stream with `"stream": true` answer `text/event-stream`
/// (Ollama's, streaming unless `"stream": false`, newline-delimited JSON).
fn streams(doc: &mut Value) {
    for path in ["/api/chat", "/api/generate"] {
        let key = format!(
            "/paths/{}/post/responses/200/content",
            path.replace('/', "~1")
        );
        if let Some(content) = doc.pointer_mut(&key).and_then(Value::as_object_mut) {
            content.insert(
                "application/x-ndjson".into(),
                json!({ "schema": { "type": "object",
                    "description": "One JSON object per line (the default, `\"stream\": true`); the last has `done: true`" } }),
            );
        }
    }
    for path in [
        "/rag",
        "/fine-tuned",
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/responses",
        "/v1/messages",
    ] {
        let key = format!(
            "/paths/{}/post/responses/200/content",
            path.replace('/', "~1")
        );
        if let Some(content) = doc.pointer_mut(&key).and_then(Value::as_object_mut) {
            content.insert(
                "text/event-stream".into(),
                json!({ "schema": { "type": "object", "required": ["data"],
                    "description": "Server-sent events (with `\"stream\": true`): `data` holds JSON, or `[DONE]` on the OpenAI routes",
                    "properties": { "event": { "type": "string" }, "data": { "type": "string" } } } }),
            );
        }
    }
}

/// Anthropic's request bodies, written out: the types read blocks as
/// JSON values (to name a block the server does not take in its error),
/// so their derived schemas say too little.
fn anthropic_requests(schemas: &mut Map<String, Value>, max_tokens: usize) {
    let text_block = json!({ "type": "object", "required": ["type", "text"],
        "properties": { "type": { "const": "text" }, "text": { "type": "string" } } });
    let conversation = json!({
        "model": { "type": "string" },
        "messages": { "type": "array", "minItems": 1, "items": {
            "type": "object", "required": ["role", "content"], "properties": {
                "role": { "type": "string", "enum": ["user", "assistant"] },
                "content": { "oneOf": [
                    { "type": "string" },
                    { "type": "array", "items": { "type": "object", "required": ["type"],
                        "properties": { "type": { "type": "string" } },
                        "description": "`text`, `tool_use` (assistant) or `tool_result` (user)" } },
                ] } } } },
        "system": { "oneOf": [{ "type": "string" }, { "type": "array", "items": text_block }, { "type": "null" }] },
        "tools": { "type": ["array", "null"], "items": { "type": "object", "required": ["name"], "properties": {
            "name": { "type": "string", "pattern": "^[a-zA-Z0-9_-]{1,64}$" },
            "description": { "type": ["string", "null"] },
            "input_schema": { "type": ["object", "null"] },
            "type": { "type": ["string", "null"], "enum": ["custom", null] } } } },
        "tool_choice": { "type": ["object", "null"], "required": ["type"], "properties": {
            "type": { "type": "string", "enum": ["auto", "any", "none", "tool"] },
            "name": { "type": "string" },
            "disable_parallel_tool_use": { "type": "boolean" } } },
    });
    schemas.insert(
        "Conversation".into(),
        json!({ "type": "object", "required": ["model", "messages"], "properties": conversation }),
    );
    let mut request = conversation;
    let number =
        |min: f64, max: f64| json!({ "type": ["number", "null"], "minimum": min, "maximum": max });
    request["max_tokens"] = json!({ "type": "integer", "minimum": 1, "maximum": max_tokens });
    request["stop_sequences"] = json!({ "type": ["array", "null"],
        "maxItems": crate::models::llm::sampling::MAX_STOP_SEQUENCES,
        "items": { "type": "string", "minLength": 1 } });
    request["temperature"] = number(0.0, 2.0);
    request["top_p"] = json!({ "type": ["number", "null"], "exclusiveMinimum": 0, "maximum": 1 });
    request["top_k"] = json!({ "type": ["integer", "null"], "minimum": 0 });
    request["stream"] = json!({ "type": "boolean" });
    let format = json!({ "type": "object", "required": ["type", "schema"], "properties": {
        "type": { "const": "json_schema" }, "schema": { "type": "object" } } });
    request["output_config"] = json!({ "type": ["object", "null"], "properties": {
        "format": { "oneOf": [format.clone(), { "type": "null" }] },
        "effort": { "type": ["string", "null"] } } });
    request["output_format"] = json!({ "oneOf": [format, { "type": "null" }] });
    request["thinking"] = json!({ "type": ["object", "null"],
        "description": "Extended thinking: `{\"type\": \"enabled\"}` is refused." });
    for field in ["mode", "filter", "min_score", "rerank"] {
        if let Some(p) = schemas["RetrievalFields"].pointer(&format!("/properties/{field}")) {
            request[field] = p.clone();
        }
    }
    schemas.insert(
        "MessagesRequest".into(),
        json!({ "type": "object", "required": ["model", "messages", "max_tokens"], "properties": request }),
    );
}

/// Anthropic's and Ollama's routes answer errors in their API's shape
/// (`server::dialect`).
fn dialect_errors(doc: &mut Value) {
    use dialect::Dialect;
    let anthropic = json!({ "type": "object", "required": ["type", "error"], "properties": {
        "type": { "const": "error" },
        "error": { "type": "object", "required": ["type", "message"], "properties": {
            "type": { "type": "string" }, "message": { "type": "string" } } } } });
    let ollama = json!({ "type": "object", "required": ["error"],
        "properties": { "error": { "type": "string" } } });
    let Some(paths) = doc["paths"].as_object_mut() else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        let schema = match Dialect::of_path(path) {
            Dialect::OpenAi => continue,
            Dialect::Anthropic => &anthropic,
            Dialect::Ollama => &ollama,
        };
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for operation in item.values_mut() {
            let Some(responses) = operation
                .get_mut("responses")
                .and_then(Value::as_object_mut)
            else {
                continue;
            };
            for (status, response) in responses.iter_mut() {
                if !status.starts_with('2') {
                    response["content"] = json!({ "application/json": { "schema": schema } });
                }
            }
        }
    }
}

/// Ollama's request fields whose shapes the types cannot state: `format`
/// (`"json"` or a schema), `input` (a text or a list).
fn ollama_requests(schemas: &mut Map<String, Value>) {
    let format = json!({ "oneOf": [
        { "type": "string", "enum": ["json", ""] }, { "type": "object" }, { "type": "null" } ] });
    if let Some(p) = schemas["OllamaCommon"].pointer_mut("/properties/format") {
        *p = format;
    }
    let texts = json!({ "oneOf": [
        { "type": "string", "minLength": 1 },
        { "type": "array", "minItems": 1, "maxItems": super::fields::MAX_EMBED_INPUTS,
          "items": { "type": "string", "minLength": 1 } },
    ]});
    schemas["OllamaEmbedRequest"]["properties"]["input"] = texts;
    schemas["OllamaLegacyEmbedRequest"]["properties"]["prompt"] =
        json!({ "type": "string", "minLength": 1 });
}

/// The request bodies of hearth's own routes, which refuse unknown fields.
const STRICT: &[&str] = &[
    "RagRequest",
    "FineTunedRequest",
    "SearchRequest",
    "EmbedRequest",
    "DocumentBody",
    "LoadAdapter",
];

/// Merge a schema's `allOf` parts (its flattened field groups) into one
/// object and refuse properties it does not list.
fn close(schemas: &mut Map<String, Value>, name: &str) {
    let Some(schema) = schemas.get(name).cloned() else {
        return;
    };
    let mut merged = json!({ "type": "object", "properties": {}, "required": [] });
    let parts = match schema.get("allOf") {
        Some(Value::Array(parts)) => parts.clone(),
        _ => vec![schema.clone()],
    };
    for part in parts {
        let part = match part.get("$ref").and_then(Value::as_str) {
            Some(r) => schemas[r.trim_start_matches("#/components/schemas/")].clone(),
            None => part,
        };
        if let Some(props) = part.get("properties").and_then(Value::as_object) {
            for (k, v) in props {
                merged["properties"][k] = v.clone();
            }
        }
        if let Some(required) = part.get("required").and_then(Value::as_array) {
            merged["required"]
                .as_array_mut()
                .expect("an array")
                .extend(required.iter().cloned());
        }
    }
    if let Some(d) = schema.get("description") {
        merged["description"] = d.clone();
    }
    merged["additionalProperties"] = json!(false);
    schemas.insert(name.to_string(), merged);
}

/// What every route may answer besides its own statuses: a bad
/// `x-request-timeout` (400), a missing API key (401), a route this role
/// does not serve (404), a deadline passed (504), loading or overload
/// (503), a fault (500); and, with a body, one too large (413), not JSON
/// (415) or of the wrong shape (422).
fn shared_statuses(doc: &mut Value) {
    let error = |description: &str| {
        json!({ "description": description, "content": { "application/json": {
            "schema": { "$ref": "#/components/schemas/ErrorBody" } } } })
    };
    let always = [
        (
            "400",
            "Invalid value (`param` names it), or a bad `x-request-timeout` header",
        ),
        ("401", "Missing or wrong API key (when keys are configured)"),
        ("404", "Not found, or not served by this process's role"),
        ("500", "Internal error"),
        ("503", "Loading or overloaded; see Retry-After"),
        (
            "504",
            "The request's deadline passed (`x-request-timeout` or `limits.request_timeout_s`)",
        ),
    ];
    let with_body = [
        ("413", "Body over `limits.max_body_bytes`"),
        ("415", "Not `Content-Type: application/json`"),
        ("422", "Not JSON of the right shape: a missing field, a wrong type, or an unknown field on hearth's own routes"),
    ];
    let Some(paths) = doc["paths"].as_object_mut() else {
        return;
    };
    for item in paths.values_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for operation in item.values_mut() {
            let has_body = operation.get("requestBody").is_some();
            let Some(responses) = operation
                .get_mut("responses")
                .and_then(Value::as_object_mut)
            else {
                continue;
            };
            let extra = always.iter().chain(with_body.iter().filter(|_| has_body));
            for (status, description) in extra {
                responses
                    .entry(status.to_string())
                    .or_insert_with(|| error(description));
            }
        }
    }
}
