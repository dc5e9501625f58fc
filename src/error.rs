//! The library's error type. Every fallible public function returns
//! [`Result`]; the server maps these variants to HTTP statuses in one place.

/// What can go wrong, in the user's terms.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The caller asked for something invalid (bad parameter, empty input, ...).
    #[error("{0}")]
    InvalidInput(String),
    /// One request field holds an invalid value; `field` names it, so that
    /// APIs can point at it (OpenAI's `param`).
    #[error("{message}")]
    InvalidField {
        field: &'static str,
        message: String,
    },
    /// The input is valid but does not fit a limit (context window, max tokens).
    #[error("{0}")]
    TooLarge(String),
    /// A model could not be found or loaded; the message says how to get it.
    #[error("{0}")]
    Model(String),
    /// The requested device is not available in this build or on this host.
    #[error("{0}")]
    Device(String),
    /// The request ran past its deadline (`x-request-timeout`, or the
    /// configured default); its work was stopped.
    #[error("{0}")]
    Deadline(String),
    /// The worker is gone or overloaded.
    #[error("{0}")]
    Unavailable(String),
    /// This process's role does not run the part asked for; the message
    /// names the role that does.
    #[error("{0}")]
    NotServed(String),
    /// An uploaded file is not in a format hearth reads, is damaged, or
    /// holds no text (a PDF without a text layer).
    #[error("{0}")]
    Unreadable(String),
    /// The API key may not do this (its scopes do not cover it).
    #[error("{0}")]
    Forbidden(String),
    /// The named thing (a document, a route) does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The document store failed (disk, corruption); not the caller's fault.
    #[error("document store: {0}")]
    Store(String),
    /// A fault inside a tensor computation.
    #[error("model computation failed: {0}")]
    Compute(#[from] candle_core::Error),
    /// Another hearth process (a remote embedder or generator) refused the
    /// request; its status and error are passed on as they are.
    #[error("{message}")]
    Remote {
        status: u16,
        code: String,
        param: Option<String>,
        message: String,
    },
    #[error("tokenizer error: {0}")]
    Tokenizer(String),
    #[error("I/O error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }

    pub(crate) fn tokenizer(err: impl std::fmt::Display) -> Self {
        Error::Tokenizer(err.to_string())
    }
}

impl From<hearth_kernels::Error> for Error {
    fn from(e: hearth_kernels::Error) -> Self {
        match e {
            hearth_kernels::Error::Model(m) => Error::Model(m),
            hearth_kernels::Error::Compute(e) => Error::Compute(e),
        }
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Error::Store(e.to_string())
    }
}
