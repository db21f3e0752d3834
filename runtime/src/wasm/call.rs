//! What every call into an entry script carries and gives back, whichever runtime runs it (a component
//! or the scientific interpreter): its context, the sandbox's model folder, and the pipe that collects
//! what the script prints.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

/// Where the package's model files appear inside the sandbox (also `AZUREML_MODEL_DIR`).
pub(crate) const MODEL_DIR: &str = "/models";

/// Per-call context passed through to the script's log lines.
#[derive(Debug, Clone, Default)]
pub struct CallContext {
    pub request_id: Option<Arc<str>>,
    /// The HTTP request around the body, for scripts that read it (Azure's `@rawhttp`); set only for
    /// those.
    pub http: Option<Arc<HttpRequest>>,
}

/// One request as a script may read it (the scientific runtime's `Q` frame).
#[derive(Debug, Clone, Default)]
pub struct HttpRequest {
    pub method: String,
    pub path: String,
    pub query: String,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
}

/// The script's stdout and stderr: kept (up to a cap) until the call ends, then written to the log.
#[derive(Clone)]
pub(crate) struct LogPipe {
    buf: Arc<Mutex<Vec<u8>>>,
    cap: usize,
}

impl LogPipe {
    pub(crate) fn new(cap: usize) -> Self {
        LogPipe {
            buf: Arc::new(Mutex::new(Vec::new())),
            cap,
        }
    }

    /// Takes what was written since the last call.
    pub(crate) fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.buf.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Writes what `script` printed since the last call to the log, a line each, and returns it (its
    /// last line goes into error messages).
    pub(crate) fn drain(&self, script: &str, request_id: Option<&str>) -> String {
        let bytes = self.take();
        if bytes.is_empty() {
            return String::new();
        }
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let request_id = request_id.unwrap_or("-");
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            tracing::info!(target: "plinth::script", script, request_id, "{line}");
        }
        text
    }
}

impl IsTerminal for LogPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogPipe {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl tokio::io::AsyncWrite for LogPipe {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let mut buf = self.buf.lock().unwrap_or_else(|p| p.into_inner());
        // Past the cap, output is dropped rather than refused, so a chatty script is not failed for it.
        let room = self.cap.saturating_sub(buf.len());
        buf.extend_from_slice(&data[..data.len().min(room)]);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
