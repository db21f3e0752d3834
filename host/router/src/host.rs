//! A node host: its services, credentials, limits, request ids and observer, which every face serves
//! (the HTTP routes in `http/`, the gRPC service in `grpc.rs`), and the admin API an embedder mounts.

use std::sync::Arc;
use std::time::Duration;

use crate::Error;
use crate::auth::HostAuth;
use crate::http::Admin;
use crate::ids::RequestIds;
use crate::observe::{LogHub, Metrics, Observer};
use crate::router::Router;

/// Default request body limit (an HTTP body, a gRPC message): 100 MB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 100 * 1024 * 1024;

/// How long a client may take by default to send a request body (whole for scoring and admin JSON,
/// between chunks for an upload, a gRPC request's message) before it is refused (408,
/// DEADLINE_EXCEEDED): a body trickled in slowly holds a connection no timeout of the reaper's covers,
/// since its request is already in flight.
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Routes requests to services (and to an admin API, when one is mounted).
pub struct Host {
    pub(crate) router: Arc<Router>,
    pub(crate) auth: HostAuth,
    pub(crate) admin: Option<Arc<dyn Admin>>,
    pub(crate) max_body_bytes: usize,
    pub(crate) body_timeout: Duration,
    pub(crate) ids: RequestIds,
    pub(crate) observer: Observer,
    pub(crate) open_metrics: bool,
}

impl Host {
    /// A host that serves the services in `router`, with no admin API: the embedding entry point.
    pub fn new(router: Arc<Router>) -> Self {
        Host {
            router,
            auth: HostAuth::default(),
            admin: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            body_timeout: DEFAULT_BODY_READ_TIMEOUT,
            ids: RequestIds::new(),
            observer: Observer {
                metrics: Arc::new(Metrics::new()),
                logs: None,
            },
            open_metrics: false,
        }
    }

    /// Records into `metrics` (shared with the control plane) instead of a registry of its own.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.observer.metrics = metrics;
        self
    }

    /// Keeps a line per request in each service's log (`plinth service logs`).
    pub fn with_logs(mut self, logs: Arc<LogHub>) -> Self {
        self.observer.logs = Some(logs);
        self
    }

    /// The host's admin token and token issuer (see [`HostAuth`]).
    pub fn with_auth(mut self, auth: HostAuth) -> Self {
        self.auth = auth;
        self
    }

    /// Mounts an admin API under `/api/v1/admin/`.
    pub fn with_admin(mut self, admin: Arc<dyn Admin>) -> Self {
        self.admin = Some(admin);
        self
    }

    /// Serves `/metrics` without a credential (default: the admin token is needed, when there is one).
    pub fn with_open_metrics(mut self, open: bool) -> Self {
        self.open_metrics = open;
        self
    }

    /// How long a client may take to send a request body (default [`DEFAULT_BODY_READ_TIMEOUT`]); 408 after.
    pub fn with_body_read_timeout(mut self, timeout: Duration) -> Self {
        self.body_timeout = timeout;
        self
    }

    pub fn with_max_body_bytes(mut self, limit: usize) -> Self {
        self.max_body_bytes = limit;
        self
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.observer.metrics
    }

    pub fn router(&self) -> &Arc<Router> {
        &self.router
    }

    /// A name not served: a 404, or while deployments are still loading (a host starting), a 503 with
    /// `Retry-After`, since the service may be one of them.
    pub(crate) fn missing(&self, what: &str, name: &str) -> Error {
        match self.loading() {
            0 => Error::NotFound(format!("{what} {name} not found")),
            n => Error::Overloaded(format!(
                "{what} {name} is not being served yet: the host is loading {n} deployment(s); retry shortly"
            )),
        }
    }

    /// Deployments the admin API is still loading (none without one).
    pub(crate) fn loading(&self) -> usize {
        self.admin.as_ref().map_or(0, |a| a.loading())
    }
}
