//! The runtime's one error type.

use std::path::PathBuf;

/// What went wrong while loading or running a deployment package.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The ONNX Runtime shared library could not be found or loaded.
    #[error("{0}")]
    OrtLibrary(String),

    /// A model file could not be loaded into an ONNX Runtime session.
    #[error("model {model}: load failed: {message}")]
    ModelLoad { model: String, message: String },

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
    #[error("model {model}: inference failed: {message}")]
    Inference { model: String, message: String },

    /// An entry script could not be compiled or linked.
    #[error("entry script {script}: {message}")]
    ScriptLoad { script: String, message: String },

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
    #[error("entry script {script}: no free instance slot ({message})")]
    Overloaded { script: String, message: String },

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

impl std::fmt::Display for TrapKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
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
            Error::Config(_) => "config",
            Error::Response { .. } => "script_response",
        }
    }

    /// Whether the caller's request caused the error (as opposed to the model, script or host).
    pub fn is_client_error(&self) -> bool {
        matches!(self, Error::InvalidInput(_) | Error::UnknownModel { .. })
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
