//! API keys, and what each may do. With `api_keys` or `[[keys]]`
//! configured, every route but the probes and the API's description
//! requires `Authorization: Bearer KEY` (or Anthropic's `x-api-key: KEY`).
//!
//! `api_keys` are admin keys. A `[[keys]]` key is stored as its SHA-256
//! and carries scopes: the collections it may read and write, and whether
//! it may manage (collections, adapters, the server's own state). The
//! middleware puts the [`Caller`] into the request; handlers ask it
//! before they touch a collection. A collection a key may not read is
//! answered exactly as one that does not exist, so a key learns nothing of
//! the collections outside its scope, not even that they exist.

use super::error::ApiError;
use super::state::AppState;
use crate::config::KeyConfig;
use crate::store::CollectionInfo;
use axum::http::StatusCode;
use std::sync::Arc;

/// Routes anyone may call, keys or not: probes must work without secrets,
/// and the API's description and the web page (which asks for a key
/// before it calls anything else) hold none.
const OPEN_ROUTES: &[&str] = &["/", "/healthz", "/readyz", "/openapi.json"];

/// Anthropic's header for the key, taken as well as a bearer token.
const API_KEY_HEADER: &str = "x-api-key";

/// Who is asking: an admin (an `api_keys` key, or anyone when no keys are
/// configured), or a key with scopes.
#[derive(Debug, Clone)]
pub enum Caller {
    Admin,
    Scoped(Arc<KeyConfig>),
}

impl Caller {
    fn covers(list: &[String], collection: &str) -> bool {
        list.iter().any(|c| c == "*" || c == collection)
    }

    pub fn may_read(&self, collection: &str) -> bool {
        match self {
            Caller::Admin => true,
            Caller::Scoped(k) => {
                Self::covers(&k.read, collection) || Self::covers(&k.write, collection)
            }
        }
    }

    pub fn may_write(&self, collection: &str) -> bool {
        match self {
            Caller::Admin => true,
            Caller::Scoped(k) => Self::covers(&k.write, collection),
        }
    }

    pub fn may_manage(&self) -> bool {
        match self {
            Caller::Admin => true,
            Caller::Scoped(k) => k.manage,
        }
    }

    /// Reading `collection` is allowed; otherwise the very answer a
    /// collection that does not exist gets.
    pub fn read(&self, collection: &str) -> Result<(), ApiError> {
        if self.may_read(collection) {
            Ok(())
        } else {
            Err(crate::store::database::no_collection(collection).into())
        }
    }

    /// Writing `collection` is allowed; a collection the key cannot even
    /// read is answered as missing, one it only reads with a 403.
    pub fn write(&self, collection: &str) -> Result<(), ApiError> {
        self.read(collection)?;
        if self.may_write(collection) {
            Ok(())
        } else {
            Err(forbidden(&format!(
                "this API key may not write to collection {collection:?}"
            )))
        }
    }

    /// Managing (collections, adapters, the server's state) is allowed.
    pub fn manage(&self, what: &str) -> Result<(), ApiError> {
        if self.may_manage() {
            Ok(())
        } else {
            Err(forbidden(&format!("this API key may not {what}")))
        }
    }

    /// The collections of `all` this caller may see.
    pub fn visible(&self, all: Vec<CollectionInfo>) -> Vec<CollectionInfo> {
        all.into_iter().filter(|c| self.may_read(&c.name)).collect()
    }
}

fn forbidden(message: &str) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
}

/// A key's SHA-256 in hex, as `[[keys]]` stores it.
pub fn key_hash(key: &str) -> String {
    crate::store::extract::sha256_hex(key.as_bytes())
}

/// With keys configured, require `Authorization: Bearer KEY` or
/// `x-api-key: KEY` (compared in constant time) on every route but the
/// probes, and put the [`Caller`] into the request.
pub(super) async fn authorize(
    axum::extract::State(state): axum::extract::State<Arc<AppState>>,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    use subtle::ConstantTimeEq;
    let config = &state.config;
    if config.api_keys.is_empty() && config.keys.is_empty() {
        request.extensions_mut().insert(Caller::Admin);
        return next.run(request).await;
    }
    // Anthropic's clients send the key as `x-api-key`. (Owned: a borrow of
    // the request held across the await below would make it not `Send`.)
    let given: String = {
        let header = |name| request.headers().get(name).and_then(|v| v.to_str().ok());
        header(axum::http::header::AUTHORIZATION.as_str())
            .and_then(|v| v.strip_prefix("Bearer "))
            .or_else(|| header(API_KEY_HEADER))
            .unwrap_or("")
            .to_string()
    };
    // Check every key, so the time taken does not say which one matched.
    let admin = config
        .api_keys
        .iter()
        .fold(subtle::Choice::from(0), |acc, key| {
            acc | key.as_bytes().ct_eq(given.as_bytes())
        });
    let hash = key_hash(&given);
    let mut scoped = None;
    for key in &config.keys {
        if bool::from(key.sha256.as_bytes().ct_eq(hash.as_bytes())) {
            scoped = Some(key);
        }
    }
    let caller = if bool::from(admin) {
        Some(Caller::Admin)
    } else {
        scoped.map(|k| Caller::Scoped(Arc::new(k.clone())))
    };
    if OPEN_ROUTES.contains(&request.uri().path()) {
        // Nothing on these routes asks who is calling.
        return next.run(request).await;
    }
    match caller {
        Some(caller) => {
            if let Caller::Scoped(key) = &caller {
                tracing::debug!(key = %key.name, "a scoped key");
            }
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        None => {
            let message = if given.is_empty() {
                "missing API key: send `Authorization: Bearer KEY` (or `x-api-key: KEY`)"
            } else {
                "invalid API key"
            };
            ApiError::new(StatusCode::UNAUTHORIZED, "invalid_api_key", message).into_response()
        }
    }
}
