//! The request fields the routes share, and how they are read: the
//! sampling fields of every generation route ([`SamplingFields`], with
//! the config's defaults), the retrieval fields of `/search`, `/rag` and
//! `hearth-rag` ([`RetrievalFields`]), a stop field of one string or many,
//! the embedding routes' `input`, and integers read as JSON Schema reads
//! them ([`integer`]).

use super::error::ApiError;
use crate::config::{GenerationConfig, SearchMode};
use crate::error::Error;
use crate::models::llm::grammar::Format;
use crate::models::llm::sampling::SamplingParams;
use crate::pipelines::rag::SearchOptions;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;

/// Sampling fields shared by both routes; unset ones take the config's defaults.
#[derive(Debug, Deserialize, Default, ToSchema)]
pub struct SamplingFields {
    /// Most tokens to generate (at most the config's
    /// `generation.max_tokens_limit`).
    #[schema(minimum = 1)]
    #[serde(default, deserialize_with = "integer::opt")]
    pub max_tokens: Option<usize>,
    /// 0 is greedy.
    #[schema(minimum = 0, maximum = 2)]
    pub temperature: Option<f64>,
    #[schema(exclusive_minimum = 0, maximum = 1)]
    pub top_p: Option<f64>,
    #[schema(minimum = 0.01, maximum = 100)]
    pub repetition_penalty: Option<f64>,
    #[serde(default, deserialize_with = "integer::opt")]
    pub seed: Option<u64>,
    pub stop: Option<StopField>,
    /// The output's shape: a JSON schema the answer must be valid against,
    /// or `"json"` for any JSON object. Decoding is constrained to it.
    #[schema(value_type = Option<Object>)]
    pub format: Option<Value>,
    /// The output's language as a Lark grammar (llguidance's dialect:
    /// `start: ...`, rules, `/regex/` terminals). Not with `format`.
    #[schema(min_length = 1)]
    pub grammar: Option<String>,
}

/// Retrieval fields shared by `/search`, `/rag` and the OpenAI
/// `hearth-rag` model; unset ones take the config's `retrieval` values.
#[derive(Debug, Deserialize, Default, ToSchema)]
pub struct RetrievalFields {
    /// `dense` (embeddings), `lexical` (BM25 over words) or `hybrid` (both,
    /// fused).
    pub mode: Option<SearchMode>,
    /// Which documents' chunks may be returned: `{"source": "runbooks",
    /// "metadata.team": ["ops", "sre"], "document_id": "a",
    /// "created_at": {"gte": 1767225600}}`: a value, a list of values (any
    /// of them), or a range (`gt`, `gte`, `lt`, `lte`); all must hold.
    #[schema(value_type = Option<Object>)]
    pub filter: Option<Value>,
    /// Drop passages whose cosine similarity to the query is below this
    /// (-1 to 1).
    #[schema(minimum = -1, maximum = 1)]
    pub min_score: Option<f32>,
    /// Re-score the candidates with the configured cross-encoder (default:
    /// yes when `models.reranker` is set; `true` without one is an error).
    pub rerank: Option<bool>,
    /// The collection searched (default `default`).
    #[schema(min_length = 1, max_length = 64)]
    pub collection: Option<String>,
}

impl RetrievalFields {
    /// For a model that does not retrieve: an error naming the first
    /// retrieval field given, rather than ignoring it.
    pub fn refuse_without_retrieval(&self) -> Result<(), ApiError> {
        let given = [
            ("mode", self.mode.is_some()),
            ("filter", self.filter.is_some()),
            ("min_score", self.min_score.is_some()),
            ("rerank", self.rerank.is_some()),
            ("collection", self.collection.is_some()),
        ];
        match given.iter().find(|(_, set)| *set) {
            Some((field, _)) => Err(ApiError::from(Error::InvalidInput(format!(
                "`{field}` applies to retrieval: only the hearth-rag model takes it"
            )))),
            None => Ok(()),
        }
    }

    /// The search these fields ask for, once `caller` may read its
    /// collection (one it may not is answered as missing).
    pub fn options(
        &self,
        caller: &super::auth::Caller,
        top_k: Option<usize>,
        exact: bool,
    ) -> Result<SearchOptions, ApiError> {
        caller.read(
            self.collection
                .as_deref()
                .unwrap_or(crate::store::DEFAULT_COLLECTION),
        )?;
        Ok(SearchOptions {
            collection: self.collection.clone(),
            top_k,
            mode: self.mode,
            filter: self.filter.clone(),
            min_score: self.min_score,
            exact,
            rerank: self.rerank,
        })
    }
}

/// A stop sequence or a list of them.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum StopField {
    One(String),
    Many(Vec<String>),
}

impl StopField {
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            StopField::One(s) => vec![s.clone()],
            StopField::Many(v) => v.clone(),
        }
    }
}

impl SamplingFields {
    /// The constrained output format `format` or `grammar` asks for.
    pub fn output_format(&self) -> Result<Option<Format>, ApiError> {
        match (&self.format, &self.grammar) {
            (Some(_), Some(_)) => Err(ApiError::bad_request(
                "give either `format` (a JSON schema) or `grammar` (Lark), not both",
            )
            .param("grammar")),
            (Some(Value::String(s)), None) if s == "json" => Ok(Some(Format::JsonObject)),
            (Some(schema @ Value::Object(_)), None) => Ok(Some(Format::JsonSchema {
                schema: schema.clone(),
            })),
            (Some(_), None) => Err(ApiError::bad_request(
                "`format` must be a JSON schema (an object) or \"json\"",
            )
            .param("format")),
            (None, Some(g)) if g.trim().is_empty() => {
                Err(ApiError::bad_request("`grammar` is empty").param("grammar"))
            }
            (None, Some(g)) => Ok(Some(Format::Lark { grammar: g.clone() })),
            (None, None) => Ok(None),
        }
    }

    pub fn params(&self, defaults: &GenerationConfig, top_k: usize) -> SamplingParams {
        let base = SamplingParams::default();
        SamplingParams {
            max_tokens: self.max_tokens.unwrap_or(defaults.max_tokens),
            temperature: self.temperature.map_or(defaults.temperature, narrow),
            top_p: self.top_p.map_or(base.top_p, narrow),
            top_k,
            repetition_penalty: self
                .repetition_penalty
                .map_or(base.repetition_penalty, narrow),
            seed: self.seed,
            stop: self
                .stop
                .as_ref()
                .map(StopField::to_vec)
                .unwrap_or_default(),
            ..base
        }
    }
}

/// A request's f64 as the f32 the sampler uses, keeping which side of a
/// bound it is on: a value rounding onto 0 or onto an integer bound (2,
/// 1, 100) from outside moves one f32 step further, so that validation
/// still refuses it, and from inside one step back.
fn narrow(v: f64) -> f32 {
    let n = v as f32;
    let back = f64::from(n);
    if back == v || !v.is_finite() {
        return n;
    }
    // Rounding crossed or reached v's neighbour: step toward v.
    if back > v {
        n.next_down()
    } else {
        n.next_up()
    }
}

/// Most texts in one embeddings request (OpenAI's limit).
pub const MAX_EMBED_INPUTS: usize = 2048;

/// A 400 naming the request field at fault.
pub fn invalid(param: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_value", message).param(param)
}

/// An embedding request's `input`: one text or a list of 1 to
/// [`MAX_EMBED_INPUTS`] non-empty texts.
pub fn input_texts(input: Value) -> Result<Vec<String>, ApiError> {
    let texts = match input {
        Value::String(s) => vec![s],
        Value::Array(items) if items.iter().all(Value::is_string) => items
            .into_iter()
            .map(|v| match v {
                Value::String(s) => s,
                _ => unreachable!("checked to be strings"),
            })
            .collect(),
        Value::Array(_) => {
            return Err(invalid(
                "input",
                "input must be a string or a list of strings; token arrays are not supported",
            ))
        }
        _ => {
            return Err(invalid(
                "input",
                "input must be a string or a list of strings",
            ))
        }
    };
    if texts.is_empty() || texts.len() > MAX_EMBED_INPUTS {
        return Err(invalid(
            "input",
            format!("input must hold 1 to {MAX_EMBED_INPUTS} texts"),
        ));
    }
    if texts.iter().any(|t| t.is_empty()) {
        return Err(invalid("input", "input texts must not be empty"));
    }
    Ok(texts)
}

/// Integer request fields read as JSON Schema reads "integer": any number
/// with no fractional part (`5` and `5.0`), in range for the Rust type.
pub mod integer {
    use serde::de::{Deserializer, Error};
    use serde::Deserialize;

    pub fn opt<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: TryFrom<u64>,
    {
        let Some(n) = Option::<serde_json::Number>::deserialize(d)? else {
            return Ok(None);
        };
        let whole = n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= u64::MAX as f64)
                .map(|f| f as u64)
        });
        whole
            .and_then(|w| T::try_from(w).ok())
            .map(Some)
            .ok_or_else(|| {
                D::Error::custom(format!("expected a non-negative integer in range, got {n}"))
            })
    }

    /// An optional integer that may be negative, read the same way.
    pub fn opt_signed<'de, D>(d: D) -> Result<Option<i64>, D::Error>
    where
        D: Deserializer<'de>,
    {
        let Some(n) = Option::<serde_json::Number>::deserialize(d)? else {
            return Ok(None);
        };
        n.as_i64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && *f >= i64::MIN as f64 && *f <= i64::MAX as f64)
                    .map(|f| f as i64)
            })
            .map(Some)
            .ok_or_else(|| D::Error::custom(format!("expected an integer in range, got {n}")))
    }

    /// A list of such integers.
    pub fn vec<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: TryFrom<u64>,
    {
        Vec::<serde_json::Number>::deserialize(d)?
            .into_iter()
            .map(|n| {
                let whole = n.as_u64().or_else(|| {
                    n.as_f64()
                        .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= u64::MAX as f64)
                        .map(|f| f as u64)
                });
                whole.and_then(|w| T::try_from(w).ok()).ok_or_else(|| {
                    D::Error::custom(format!("expected a non-negative integer in range, got {n}"))
                })
            })
            .collect()
    }
}
