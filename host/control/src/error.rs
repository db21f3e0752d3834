//! The control plane's one error type. It becomes the router's error at the admin API's edge (see the
//! `From` impl below), so its HTTP status is decided where every other status is: in the router.

use std::path::PathBuf;

use plinth_spec::config::ConfigError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    NotFound(String),
    /// A request or a deployment the control plane refuses, with what is wrong in it.
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Conflict(String),
    /// A configuration file that does not parse or holds an impossible value (names the field).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// An entry script that cannot become a component (a compile error, a missing tool).
    #[error("{0}")]
    Script(String),
    /// Loading a deployment's package failed (models, script, init).
    #[error(transparent)]
    Runtime(#[from] plinth_runtime::Error),
    /// The router refused (a split that does not add up, a host with no room).
    #[error(transparent)]
    Router(#[from] plinth_router::Error),
    #[error("{what}: {source}")]
    Database {
        what: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("corrupt record: {0}")]
    Corrupt(#[source] serde_json::Error),
    /// Another host holds the workspace.
    #[error("workspace {} is in use by another plinth host (PID {holder}): stop it, or give this one another --workspace", root.display())]
    Locked { root: PathBuf, holder: String },
    /// The deployments actor stopped (the host is shutting down).
    #[error("the control plane is shutting down")]
    Stopped,
    #[error("{what}: {source}")]
    Task {
        what: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A short, stable name for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::NotFound(_) => "not_found",
            Error::BadRequest(_) => "bad_request",
            Error::Conflict(_) => "conflict",
            Error::Config(_) => "config",
            Error::Script(_) => "script",
            Error::Runtime(e) => e.kind(),
            Error::Router(e) => e.kind(),
            Error::Database { .. } => "database",
            Error::Io { .. } => "io",
            Error::Corrupt(_) => "corrupt",
            Error::Locked { .. } => "locked",
            Error::Stopped => "stopped",
            Error::Task { .. } => "task",
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }

    pub(crate) fn db(what: &'static str) -> impl FnOnce(rusqlite::Error) -> Error {
        move |source| Error::Database { what, source }
    }
}

/// A record's rule broken: a missing part is a 404, anything else the request's fault.
impl From<plinth_spec::Error> for Error {
    fn from(e: plinth_spec::Error) -> Self {
        match e {
            plinth_spec::Error::NotFound(m) => Error::NotFound(m),
            plinth_spec::Error::Invalid(m) => Error::BadRequest(m),
        }
    }
}

/// The admin API's errors, as the router answers them: a refused request stays a client error, a
/// storage failure a server error with its cause.
impl From<Error> for plinth_router::Error {
    fn from(e: Error) -> Self {
        use plinth_router::Error as R;
        match e {
            Error::NotFound(m) => R::NotFound(m),
            Error::BadRequest(m) | Error::Script(m) => R::BadRequest(m),
            Error::Conflict(m) => R::Conflict(m),
            Error::Config(e) => R::BadRequest(e.to_string()),
            Error::Router(e) => e,
            Error::Runtime(e) => R::Runtime(e),
            e @ (Error::Database { .. }
            | Error::Io { .. }
            | Error::Corrupt(_)
            | Error::Locked { .. }
            | Error::Stopped
            | Error::Task { .. }) => R::Backend {
                what: format!("the control plane ({})", e.kind()),
                source: Box::new(e),
            },
        }
    }
}
