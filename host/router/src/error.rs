//! The router's one error type. Which HTTP status (and body, and `Retry-After`) an error becomes is
//! decided in one place: `http/response.rs`.

use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No such service, version or route.
    #[error("{0}")]
    NotFound(String),
    /// The request is wrong in a way the router or a decoder can name.
    #[error("{0}")]
    BadRequest(String),
    /// The request conflicts with what exists (a name taken, the last version of an endpoint).
    #[error("{0}")]
    Conflict(String),
    /// A missing or wrong credential.
    #[error("{0}")]
    Unauthorized(String),
    #[error("request body exceeds the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// The client did not send its request body in time.
    #[error("the request body did not arrive within {secs} s")]
    BodyTimeout { secs: u64 },
    /// No free replica (or batching queue slot) within the wait; the client should retry.
    #[error("{0}")]
    Overloaded(String),
    /// The request ran past its scoring timeout.
    #[error("{0}")]
    Timeout(String),
    /// The model or entry script failed; its fault class says whose fault it is.
    #[error(transparent)]
    Runtime(#[from] plinth_runtime::Error),
    /// One failure shared by every request of a dynamic batch: each request keeps the original
    /// (its status and kind included).
    #[error(transparent)]
    Shared(Arc<Error>),
    /// A task that ran a call ended without an answer (it panicked or was cancelled).
    #[error("{what}: {source}")]
    Task {
        what: String,
        #[source]
        source: tokio::task::JoinError,
    },
    /// Reading or writing the host's files.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// A TLS certificate or key that cannot be used.
    #[error("{what}: {source}")]
    Tls {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A failure behind an embedder's handler (the admin API's storage, say), kept with its cause.
    #[error("{what}: {source}")]
    Backend {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Something the router itself got wrong.
    #[error("{0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A short, stable name for logs, metric labels and the `kind` field of error bodies.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::NotFound(_) => "not_found",
            Error::BadRequest(_) => "bad_request",
            Error::Conflict(_) => "conflict",
            Error::Unauthorized(_) => "unauthorized",
            Error::PayloadTooLarge { .. } => "payload_too_large",
            Error::BodyTimeout { .. } => "body_timeout",
            Error::Overloaded(_) => "overloaded",
            Error::Timeout(_) => "timeout",
            Error::Runtime(e) => e.kind(),
            Error::Shared(e) => e.kind(),
            Error::Task { .. } => "task",
            Error::Io { .. } => "io",
            Error::Tls { .. } => "tls",
            Error::Backend { .. } => "storage",
            Error::Internal(_) => "internal",
        }
    }

    /// A script's own answer with a success status (Azure's `AMLResponse` with 2xx or 3xx): carried as
    /// an error only because it is not JSON or not 200; counted and logged as the success it is.
    pub fn is_answer(&self) -> bool {
        matches!(self, Error::Runtime(plinth_runtime::Error::Response { status, .. }) if *status < 400)
    }

    /// Whose fault the failure is. Error rates, rollbacks and the 4xx/5xx split follow from this;
    /// the exact status code is the HTTP layer's choice.
    pub fn fault(&self) -> Fault {
        match self {
            Error::NotFound(_)
            | Error::BadRequest(_)
            | Error::Conflict(_)
            | Error::Unauthorized(_)
            | Error::PayloadTooLarge { .. }
            | Error::BodyTimeout { .. } => Fault::Client,
            Error::Overloaded(_) => Fault::Busy,
            Error::Timeout(_) => Fault::Late,
            Error::Runtime(e) => match e.fault() {
                plinth_runtime::Fault::Client => Fault::Client,
                plinth_runtime::Fault::Overload => Fault::Busy,
                plinth_runtime::Fault::Timeout => Fault::Late,
                // A package that cannot load is refused at deploy time; a fresh instance failing while
                // serving is the version failing.
                plinth_runtime::Fault::Package | plinth_runtime::Fault::Server => Fault::Server,
            },
            Error::Shared(e) => e.fault(),
            Error::Task { .. } | Error::Io { .. } | Error::Tls { .. } | Error::Backend { .. } | Error::Internal(_) => {
                Fault::Server
            }
        }
    }
}

/// Whose fault a failed request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The request itself (a 4xx): rejected, never counted as the version failing.
    Client,
    /// No capacity right now (503): the client should retry.
    Busy,
    /// The deadline passed (504).
    Late,
    /// The host or the model failed (500).
    Server,
}

impl Fault {
    /// Whether it counts toward a version's error rate (and automatic rollback).
    pub fn is_failure(self) -> bool {
        !matches!(self, Fault::Client)
    }
}
