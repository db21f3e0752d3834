//! The runtime's one error type, and whose fault each error is.

use std::fmt;
use std::path::PathBuf;

/// What went wrong while loading or running a deployment package.
///
/// Where wasmtime, ONNX Runtime or the file system gave a reason, it is kept as the error's source; the
/// message shows it too (wasmtime's with its whole chain), so `to_string()` alone is what a caller shows.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The ONNX Runtime shared library could not be found or loaded.
    #[error("{0}")]
    OrtLibrary(String),

    /// A model file could not be loaded into an ONNX Runtime session.
    #[error("model {model}: load failed: {}", Reason(.message, .source.as_ref()))]
    ModelLoad {
        model: String,
        /// The host's words; empty when the source says it all.
        message: String,
        /// ONNX Runtime's reason, or the file system's.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },

    /// A request named a model that the package does not hold.
    #[error("unknown model '{model}' (this deployment has: {known})")]
    UnknownModel { model: String, known: String },

    /// A model's execution providers could not be used (missing from the library, or failed to start).
    #[error("model {model}: {message}")]
    Provider { model: String, message: String },

    /// The caller's input does not fit the model or the script (bad JSON, wrong datatype or shape).
    #[error("{0}")]
    InvalidInput(String),

    /// ONNX Runtime failed while running a model on valid input.
    #[error("model {model}: inference failed: {}", Reason(.message, .source.as_ref()))]
    Inference {
        model: String,
        /// The host's words; empty when ONNX Runtime's reason says it all.
        message: String,
        #[source]
        source: Option<ort::Error>,
    },

    /// An entry script could not be compiled or linked.
    #[error("entry script {script}: {}", Reason(.message, .source.as_ref()))]
    ScriptLoad {
        script: String,
        message: String,
        /// wasmtime's reason, when it refused the script.
        #[source]
        source: Option<wasmtime::Error>,
    },

    /// An entry script's `init()` failed.
    #[error("entry script {script}: init failed: {message}")]
    ScriptInit { script: String, message: String },

    /// An entry script call was stopped by the host: deadline, memory cap, or a trap in the script.
    #[error("entry script {script}: {kind}: {message}")]
    ScriptTrap {
        script: String,
        kind: TrapKind,
        message: String,
    },

    /// An entry script's `run` returned an internal error.
    #[error("entry script {script}: run failed: {message}")]
    ScriptFailed { script: String, message: String },

    /// An entry script's response exceeded the configured limit.
    #[error("entry script {script}: response of {size} bytes exceeds the limit of {limit} bytes")]
    OutputTooLarge { script: String, size: usize, limit: usize },

    /// Every instance slot of the engine is in use.
    #[error("entry script {script}: no free instance slot ({source:#})")]
    Overloaded {
        script: String,
        /// The pooling allocator's refusal.
        #[source]
        source: wasmtime::Error,
    },

    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },

    /// A script answered with a status of its own (Azure's `AMLResponse`): not a failure of the host.
    #[error("the entry script answered {status}")]
    Response {
        status: u16,
        content_type: Option<String>,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },

    /// A package or limit setting is invalid.
    #[error("{0}")]
    Config(String),

    /// What runs entry scripts could not be set up: wasmtime refused the engine, a linker or the
    /// interpreter's compile, or a thread could not start.
    #[error("{what}: {source:#}")]
    Engine {
        what: &'static str,
        #[source]
        source: wasmtime::Error,
    },
}

/// Why the host stopped an entry script call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrapKind {
    /// The call ran past its deadline (epoch interruption).
    Deadline,
    /// The script tried to grow its memory past the cap.
    Memory,
    /// The script trapped on its own (panic, `unreachable`, out-of-bounds access).
    Trap,
}

impl TrapKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TrapKind::Deadline => "deadline exceeded",
            TrapKind::Memory => "memory limit exceeded",
            TrapKind::Trap => "trapped",
        }
    }
}

impl fmt::Display for TrapKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whose fault an [`Error`] is: what a host answers (the status is its own choice) and whether it counts
/// the error against the version that served it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The request: input that does not fit the model or the script, a model the package does not hold,
    /// or a script's own answer below 500. Never counted as the version failing.
    Client,
    /// The package: its entry script does not compile, link or initialise, or it asks for execution
    /// providers the host cannot give. A deployment that fails so is refused as the deployer's mistake;
    /// once deployed (a fresh instance whose `init()` fails), it is a failure like [`Fault::Server`].
    Package,
    /// No capacity now (every instance slot in use): the caller should retry.
    Overload,
    /// The call ran past its deadline.
    Timeout,
    /// The model, the running script or the host failed (a script's own answer of 500 or more included).
    Server,
}

impl Error {
    /// A short, stable name for metric labels and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::OrtLibrary(_) => "ort_library",
            Error::ModelLoad { .. } => "model_load",
            Error::Provider { .. } => "provider",
            Error::UnknownModel { .. } => "unknown_model",
            Error::InvalidInput(_) => "invalid_input",
            Error::Inference { .. } => "inference",
            Error::ScriptLoad { .. } => "script_load",
            Error::ScriptInit { .. } => "script_init",
            Error::ScriptTrap {
                kind: TrapKind::Deadline,
                ..
            } => "deadline",
            Error::ScriptTrap {
                kind: TrapKind::Memory, ..
            } => "memory",
            Error::ScriptTrap {
                kind: TrapKind::Trap, ..
            } => "trap",
            Error::ScriptFailed { .. } => "script_failed",
            Error::OutputTooLarge { .. } => "output_too_large",
            Error::Overloaded { .. } => "overloaded",
            Error::Io { .. } => "io",
            Error::Config(_) | Error::Engine { .. } => "config",
            Error::Response { .. } => "script_response",
        }
    }

    /// Whose fault the error is.
    pub fn fault(&self) -> Fault {
        match self {
            Error::InvalidInput(_) | Error::UnknownModel { .. } => Fault::Client,
            Error::Response { status, .. } if *status < 500 => Fault::Client,
            Error::ScriptLoad { .. } | Error::ScriptInit { .. } | Error::Provider { .. } => Fault::Package,
            Error::Overloaded { .. } => Fault::Overload,
            Error::ScriptTrap {
                kind: TrapKind::Deadline,
                ..
            } => Fault::Timeout,
            Error::OrtLibrary(_)
            | Error::ModelLoad { .. }
            | Error::Inference { .. }
            | Error::ScriptTrap { .. }
            | Error::ScriptFailed { .. }
            | Error::OutputTooLarge { .. }
            | Error::Io { .. }
            | Error::Response { .. }
            | Error::Config(_)
            | Error::Engine { .. } => Fault::Server,
        }
    }

    /// Whether the caller's data caused the error: bad input, or a model the package does not hold.
    pub fn is_client_error(&self) -> bool {
        matches!(self, Error::InvalidInput(_) | Error::UnknownModel { .. })
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// wasmtime's refusal (or a thread's failure to start) while setting up `what`.
    pub(crate) fn engine<E: Into<wasmtime::Error>>(what: &'static str) -> impl FnOnce(E) -> Self {
        move |source| Error::Engine {
            what,
            source: source.into(),
        }
    }
}

/// The host's words, then its source's own (a wasmtime error with its whole chain): the text callers saw
/// when the two were one string.
struct Reason<'a, E>(&'a str, Option<&'a E>);

impl<E: fmt::Display> fmt::Display for Reason<'_, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.0, self.1) {
            (words, None) => f.write_str(words),
            ("", Some(source)) => write!(f, "{source:#}"),
            (words, Some(source)) => write!(f, "{words}: {source:#}"),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn a_kept_source_reads_as_it_did_when_flattened() {
        let refused = || wasmtime::Error::msg("unexpected end").context("failed to parse WebAssembly module");
        let e = Error::ScriptLoad {
            script: "s".into(),
            message: "not a valid component".into(),
            source: Some(refused()),
        };
        assert_eq!(
            e.to_string(),
            format!("entry script s: not a valid component: {:#}", refused())
        );
        assert_eq!(
            e.to_string(),
            "entry script s: not a valid component: failed to parse WebAssembly module: unexpected end"
        );
        let source = e.source().expect("the source is kept");
        assert_eq!(source.to_string(), "failed to parse WebAssembly module");

        let e = Error::ScriptLoad {
            script: "s".into(),
            message: "score is not a Python module name".into(),
            source: None,
        };
        assert_eq!(e.to_string(), "entry script s: score is not a Python module name");
        assert!(e.source().is_none());

        let e = Error::ModelLoad {
            model: "m".into(),
            message: String::new(),
            source: Some(Box::new(std::io::Error::other("no such model"))),
        };
        assert_eq!(e.to_string(), "model m: load failed: no such model");
        assert_eq!(e.source().unwrap().to_string(), "no such model");

        let e = Error::Engine {
            what: "wasm engine: epoch thread",
            source: std::io::Error::other("no threads left").into(),
        };
        assert_eq!(e.to_string(), "wasm engine: epoch thread: no threads left");
        assert_eq!(e.kind(), "config");
    }

    #[test]
    fn fault_classes() {
        let trap = |kind| Error::ScriptTrap {
            script: "s".into(),
            kind,
            message: "m".into(),
        };
        let response = |status| Error::Response {
            status,
            content_type: None,
            headers: Vec::new(),
            body: Vec::new(),
        };
        let cases = [
            (Error::InvalidInput("x".into()), Fault::Client),
            (
                Error::UnknownModel {
                    model: "x".into(),
                    known: "y".into(),
                },
                Fault::Client,
            ),
            (response(201), Fault::Client),
            (response(422), Fault::Client),
            (response(503), Fault::Server),
            (
                Error::ScriptLoad {
                    script: "s".into(),
                    message: "m".into(),
                    source: None,
                },
                Fault::Package,
            ),
            (
                Error::ScriptInit {
                    script: "s".into(),
                    message: "m".into(),
                },
                Fault::Package,
            ),
            (
                Error::Provider {
                    model: "x".into(),
                    message: "m".into(),
                },
                Fault::Package,
            ),
            (
                Error::Overloaded {
                    script: "s".into(),
                    source: wasmtime::Error::msg("maximum concurrent instances"),
                },
                Fault::Overload,
            ),
            (trap(TrapKind::Deadline), Fault::Timeout),
            (trap(TrapKind::Memory), Fault::Server),
            (trap(TrapKind::Trap), Fault::Server),
            (
                Error::ScriptFailed {
                    script: "s".into(),
                    message: "m".into(),
                },
                Fault::Server,
            ),
            (Error::Config("x".into()), Fault::Server),
        ];
        for (e, fault) in cases {
            assert_eq!(e.fault(), fault, "{e:?}");
        }
    }
}
