//! Every HTTP error hearth sends, in one shape:
//! `{"error": {"message", "type", "code"}}`, with the status decided here
//! from the library's [`Error`] and from axum's extractor rejections.

pub use crate::engine::protocol::{ErrorBody, ErrorDetail};
use crate::error::Error;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use std::borrow::Cow;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub code: Cow<'static, str>,
    /// The request field at fault, when there is one (OpenAI's `param`).
    pub param: Option<Cow<'static, str>>,
    /// Seconds for `Retry-After` (503s).
    pub retry_after: Option<u32>,
}

impl ApiError {
    pub fn new(
        status: StatusCode,
        code: impl Into<Cow<'static, str>>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            message: message.into(),
            code: code.into(),
            param: None,
            retry_after: None,
        }
    }

    /// Name the request field at fault.
    pub fn param(self, param: impl Into<Cow<'static, str>>) -> Self {
        Self {
            param: Some(param.into()),
            ..self
        }
    }

    /// The same error with its message rewritten (to say where it arose:
    /// which file, which item of a batch).
    pub fn with_message(self, f: impl FnOnce(String) -> String) -> Self {
        Self {
            message: f(self.message),
            ..self
        }
    }

    /// The JSON body: `{"error": {"message", "type", "param", "code"}}`.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!(ErrorBody {
            error: ErrorDetail {
                message: self.message.clone(),
                kind: self.kind().into(),
                param: self.param.as_deref().map(String::from),
                code: self.code.to_string(),
            }
        })
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    /// A `model` that no process here serves.
    pub fn model_not_found(model: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "model_not_found",
            format!("the model `{model}` does not exist; GET /v1/models lists the served models"),
        )
        .param("model")
    }

    pub fn not_ready(message: impl Into<String>) -> Self {
        Self {
            retry_after: Some(2),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", message)
        }
    }

    /// The error's `type`, from its status.
    pub fn kind(&self) -> &'static str {
        match self.status {
            StatusCode::NOT_FOUND => "not_found_error",
            StatusCode::UNAUTHORIZED => "authentication_error",
            StatusCode::FORBIDDEN => "permission_error",
            StatusCode::SERVICE_UNAVAILABLE => "unavailable_error",
            StatusCode::GATEWAY_TIMEOUT => "timeout_error",
            s if s.is_client_error() => "invalid_request_error",
            _ => "server_error",
        }
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let (status, code) = match &e {
            Error::InvalidInput(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            Error::InvalidField { field, .. } => {
                return Self::new(StatusCode::BAD_REQUEST, "invalid_request", e.to_string())
                    .param(*field)
            }
            Error::TooLarge(_) => (StatusCode::BAD_REQUEST, "context_length_exceeded"),
            Error::Remote {
                status,
                code,
                param,
                message,
            } => {
                let status =
                    StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                let mut passed = Self::new(status, code.clone(), message.clone());
                passed.param = param.clone().map(Cow::Owned);
                if status == StatusCode::SERVICE_UNAVAILABLE {
                    passed.retry_after = Some(1);
                }
                return passed;
            }
            Error::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Error::Unreadable(_) => (StatusCode::UNPROCESSABLE_ENTITY, "unreadable_document"),
            Error::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            Error::Deadline(_) => (StatusCode::GATEWAY_TIMEOUT, "deadline_exceeded"),
            Error::NotServed(_) => (StatusCode::NOT_FOUND, "not_served_here"),
            Error::Unavailable(_) => {
                return Self {
                    retry_after: Some(1),
                    ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", e.to_string())
                }
            }
            Error::Model(_)
            | Error::Device(_)
            | Error::Compute(_)
            | Error::Tokenizer(_)
            | Error::Store(_)
            | Error::Io { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
        };
        // A passed deadline is the request's limit, not a fault.
        if status.is_server_error() && status != StatusCode::GATEWAY_TIMEOUT {
            tracing::error!(error = %e, "internal error");
        }
        Self::new(status, code, e.to_string())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        let code = match &r {
            JsonRejection::JsonSyntaxError(_) => "invalid_json",
            JsonRejection::JsonDataError(_) => "invalid_field",
            JsonRejection::MissingJsonContentType(_) => "unsupported_media_type",
            JsonRejection::BytesRejection(_) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                "body_too_large"
            }
            _ => "invalid_body",
        };
        Self::new(r.status(), code, r.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_query", r.body_text())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// `axum::Json`, with its rejections answered in hearth's error shape.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let axum::Json(value) = axum::Json::<T>::from_request(req, state).await?;
        Ok(Self(value))
    }
}

/// JSON whatever the `Content-Type` says (none, or curl's default): the
/// examples of Ollama and of llama.cpp's server send bodies with a bare
/// `curl -d`, and their routes here take them. Malformed JSON is a 400,
/// JSON of the wrong shape a 422, a body over the limit a 413, as with
/// [`ApiJson`].
pub struct AnyJson<T>(pub T);

impl<S, T> FromRequest<S> for AnyJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|r| {
                let code = if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    "body_too_large"
                } else {
                    "invalid_body"
                };
                ApiError::new(r.status(), code, r.body_text())
            })?;
        serde_json::from_slice(&bytes).map(Self).map_err(|e| {
            if e.classify() == serde_json::error::Category::Data {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_field",
                    format!("Failed to deserialize the JSON body into the target type: {e}"),
                )
            } else {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_json",
                    format!("Failed to parse the request body as JSON: {e}"),
                )
            }
        })
    }
}

/// Refuse fields a request type does not know (they are usually typos).
pub fn reject_unknown(extra: &serde_json::Map<String, serde_json::Value>) -> Result<(), ApiError> {
    match extra.keys().next() {
        None => Ok(()),
        Some(key) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            format!("unknown field `{key}`"),
        )),
    }
}
