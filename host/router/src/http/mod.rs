//! The HTTP face of a host: the route table (health, scoring, the inference protocol, swagger,
//! `/metrics`, and the admin API an embedder mounts). Every response carries `x-request-id`; every
//! error is JSON, shaped in `response.rs`.

pub(crate) mod body;
mod ids;
pub mod oip;
mod response;
pub(crate) mod score;
mod swagger;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use serde_json::json;

pub use self::body::{AdminBody, DEFAULT_BODY_READ_TIMEOUT, MAX_JSON_DEPTH};
pub use self::response::{Body, error_response, json_response, status_of};

use self::body::read_body;
use self::ids::RequestIds;
use self::score::Payload;
use crate::auth::HostAuth;
use crate::observe::{LogHub, Metrics, Observer};
use crate::router::Router;
use crate::{Error, Result};

pub const REQUEST_ID: &str = "x-request-id";

/// Names the version that served a response; on a request, pins the version.
pub const VERSION_HEADER: &str = "x-plinth-version";

/// Largest admin JSON request (a deployment, a model registration): 16 MiB.
pub const MAX_ADMIN_JSON_BYTES: usize = 16 << 20;

/// Largest upload (one model or source file, streamed to disk as it arrives): 4 GiB.
pub const MAX_UPLOAD_BYTES: u64 = 4 << 30;

/// Default request body limit: 100 MB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 100 * 1024 * 1024;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One admin API request, its credential already checked and its body not yet read.
pub struct AdminRequest<'a> {
    pub method: &'a Method,
    /// The path below `/api/v1/admin/`, in segments.
    pub path: &'a [&'a str],
    pub query: Option<&'a str>,
    pub body: AdminBody,
}

/// An admin API that a host mounts under `/api/v1/admin/` (the control plane's). The router checks the
/// admin token before it reads a body, and shapes every error the API returns.
pub trait Admin: Send + Sync + 'static {
    fn handle<'a>(&'a self, request: AdminRequest<'a>) -> BoxFuture<'a, Result<(StatusCode, serde_json::Value)>>;
    /// Deployments still loading: readiness answers 503 while there are any.
    fn loading(&self) -> usize;
}

/// Routes requests to services (and to an admin API, when one is mounted).
pub struct Host {
    pub(crate) router: Arc<Router>,
    pub(crate) auth: HostAuth,
    admin: Option<Arc<dyn Admin>>,
    pub(crate) max_body_bytes: usize,
    pub(crate) body_timeout: std::time::Duration,
    pub(crate) ids: RequestIds,
    observer: Observer,
    open_metrics: bool,
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
    pub fn with_body_read_timeout(mut self, timeout: std::time::Duration) -> Self {
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

    pub async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let request_id = self.ids.for_request(&req);
        let result = self.route(req, &request_id).await;
        let mut response = result.unwrap_or_else(|e| error_response(&e));
        // The id's bytes move into the header (checked, not copied).
        if let Ok(v) = HeaderValue::from_maybe_shared(Bytes::from(request_id)) {
            response.headers_mut().insert(REQUEST_ID, v);
        }
        response
    }

    async fn route(&self, req: Request<Incoming>, request_id: &str) -> Result<Response<Body>> {
        // The path is shared with the request (no copy); its segments fit on the stack.
        let uri = req.uri().clone();
        let path = uri.path();
        let segments: smallvec::SmallVec<[&str; 8]> = path.trim_matches('/').split('/').collect();
        match (req.method(), segments.as_slice()) {
            (&Method::GET, [""] | ["healthz"] | ["health"]) => {
                Ok(json_response(StatusCode::OK, &json!({"status": "ok"})))
            }
            (&Method::GET, ["readyz"]) => Ok(self.ready()),
            (&Method::GET, ["api", "v1", "load"]) => Ok(json_response(StatusCode::OK, &self.load())),
            (&Method::GET, ["metrics"]) => {
                if !self.open_metrics {
                    self.auth.authorize_metrics(req.headers().get(AUTHORIZATION))?;
                }
                let mut r = Response::new(Full::new(Bytes::from(self.observer.metrics.render())));
                r.headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"));
                Ok(r)
            }
            (&Method::GET, ["v2"]) => Ok(json_response(
                StatusCode::OK,
                &json!({"name": "plinth", "version": env!("CARGO_PKG_VERSION"), "extensions": oip::EXTENSIONS}),
            )),
            (&Method::GET, ["v2", "health", "live"]) => Ok(json_response(StatusCode::OK, &json!({"live": true}))),
            (&Method::GET, ["v2", "health", "ready"]) => {
                let ready = self.loading() == 0;
                let status = if ready {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                Ok(json_response(status, &json!({"ready": ready})))
            }
            (method, ["v2", "models", name, rest @ ..]) => {
                let method = method.clone();
                self.oip_model(method, name, rest, req, request_id).await
            }
            (method, ["api", "v1", "service", name, rest @ ..]) => {
                let service = self.router.get(name).ok_or_else(|| self.missing("service", name))?;
                match (method, rest) {
                    // GET only for scripts that read the request themselves (Azure's @rawhttp).
                    (&Method::POST, ["score"]) | (&Method::GET, ["score"]) => {
                        let started = Instant::now();
                        let method = method.clone();
                        let scored = async {
                            let wants_http = service.versions().iter().any(|v| v.info().wants_http);
                            if method == Method::GET && !wants_http {
                                return Err(Error::NotFound(format!("no route {method} {path} (scoring is POST)")));
                            }
                            service.authorize(&self.auth, req.headers().get(AUTHORIZATION))?;
                            let (parts, body) = req.into_parts();
                            // The request around the body, only for scripts that read it.
                            let http = wants_http.then(|| Arc::new(http_request(&parts)));
                            let body = read_body(&parts.headers, body, self.max_body_bytes, self.body_timeout).await?;
                            let pinned = header_str(&parts.headers, VERSION_HEADER);
                            Ok(self
                                .score_http(&service, Payload::Score(body), pinned, request_id, http)
                                .await)
                        };
                        scored
                            .await
                            .map_err(|e| self.refused(service.name(), started, request_id, e))
                    }
                    (&Method::GET, ["swagger.json"]) => {
                        service.authorize(&self.auth, req.headers().get(AUTHORIZATION))?;
                        Ok(json_response(StatusCode::OK, &swagger::swagger(&service)))
                    }
                    _ => Err(Error::NotFound(format!("no route {method} {path}"))),
                }
            }
            (_, ["api", "v1", "admin", ..]) => match &self.admin {
                Some(admin) => {
                    self.auth
                        .authorize_admin(req.headers().get(AUTHORIZATION), "the admin API")?;
                    let (parts, body) = req.into_parts();
                    let request = AdminRequest {
                        method: &parts.method,
                        path: &segments[3..],
                        query: parts.uri.query(),
                        body: AdminBody::new(&parts.headers, body, self.body_timeout),
                    };
                    let (status, value) = admin.handle(request).await?;
                    Ok(json_response(status, &value))
                }
                None => Err(Error::NotFound("this host has no admin API".into())),
            },
            (method, _) => Err(Error::NotFound(format!("no route {method} {path}"))),
        }
    }

    /// `/v2/models/{name}[/versions/{version}][/ready|/infer]`.
    async fn oip_model(
        &self,
        method: Method,
        name: &str,
        rest: &[&str],
        req: Request<Incoming>,
        request_id: &str,
    ) -> Result<Response<Body>> {
        let service = self.router.get(name).ok_or_else(|| self.missing("model", name))?;
        // An inference request refused before it reaches a version is counted as the service's.
        let infer = method == Method::POST && rest.last() == Some(&"infer");
        let started = Instant::now();
        let answered = async {
            // The credential first: a caller without one learns nothing of the model's versions.
            service.authorize(&self.auth, req.headers().get(AUTHORIZATION))?;
            let (pinned, rest) = match rest {
                ["versions", v, tail @ ..] => {
                    service.version(v).map_err(|_| {
                        let known: Vec<&str> = service.versions().iter().map(|v| v.name()).collect();
                        Error::NotFound(format!(
                            "model {name} has no version {v} (versions: {})",
                            known.join(", ")
                        ))
                    })?;
                    (Some(*v), tail)
                }
                tail => (None, tail),
            };
            match (method, rest) {
                (Method::GET, []) => {
                    let version = match pinned {
                        Some(v) => service.version(v)?.clone(),
                        None => service.default_version().clone(),
                    };
                    let (platform, inputs, outputs) = oip::platform(version.info());
                    let versions: Vec<&str> = service.versions().iter().map(|v| v.name()).collect();
                    Ok(json_response(
                        StatusCode::OK,
                        &oip::model_metadata(name, &versions, platform, inputs, outputs),
                    ))
                }
                (Method::GET, ["ready"]) => Ok(json_response(StatusCode::OK, &json!({"name": name, "ready": true}))),
                (Method::POST, ["infer"]) => {
                    let (parts, body) = req.into_parts();
                    let body = read_body(&parts.headers, body, self.max_body_bytes, self.body_timeout).await?;
                    let header_len = match parts.headers.get(oip::HEADER_LENGTH) {
                        Some(v) => Some(
                            v.to_str()
                                .map_err(|_| Error::BadRequest("Inference-Header-Content-Length is not text".into()))?,
                        ),
                        None => None,
                    };
                    let pinned = pinned.or_else(|| header_str(&parts.headers, VERSION_HEADER));
                    let decoded = oip::decode(&body, header_len)?;
                    let payload = Payload::Oip {
                        decoded,
                        raw: Some(body),
                    };
                    Ok(self.score_http(&service, payload, pinned, request_id, None).await)
                }
                (method, _) => Err(Error::NotFound(format!(
                    "no route {method} /v2/models/{name}/{}",
                    rest.join("/")
                ))),
            }
        };
        match answered.await {
            Err(e) if infer => Err(self.refused(service.name(), started, request_id, e)),
            answered => answered,
        }
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

    /// A scoring request refused before it reached a version (no credential, a body too large, too slow
    /// or undecodable): counted and logged as the service's with version `-`, as routing failures are.
    pub(crate) fn refused(&self, service: &str, started: Instant, request_id: &str, e: Error) -> Error {
        self.observer
            .request(service, None, status_of(&e), started, request_id, Some(&e));
        e
    }

    pub(crate) fn loading(&self) -> usize {
        self.admin.as_ref().map_or(0, |a| a.loading())
    }

    /// What a cluster's scaler reads of this host (`GET /api/v1/load`, no credential: figures only, no
    /// names): replicas, busy replicas and waiting requests now, and the utilization the versions'
    /// autoscalers last measured, the busiest version's (one pod holds one replica of each version, so it
    /// is as saturated as its busiest one).
    fn load(&self) -> serde_json::Value {
        let (mut replicas, mut busy, mut waiting, mut peak, mut versions) = (0u64, 0u64, 0u64, 0.0f64, 0u32);
        for name in self.router.names() {
            let Some(service) = self.router.get(&name) else {
                continue;
            };
            for v in service.versions() {
                let (b, w) = v.load_now();
                replicas += v.replica_count() as u64;
                busy += b as u64;
                waiting += w as u64;
                peak = peak.max(v.utilization());
                versions += 1;
            }
        }
        json!({
            "replicas": replicas, "busy": busy, "waiting": waiting, "utilization": peak,
            "versions": versions, "loading": self.loading(),
        })
    }

    /// Ready, or how many deployments are still loading; no names (readiness needs no credential).
    fn ready(&self) -> Response<Body> {
        let pending = self.loading();
        if pending == 0 {
            json_response(StatusCode::OK, &json!({"status": "ready"}))
        } else {
            json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({"status": "loading", "loading": pending}),
            )
        }
    }
}

/// A request header as text, if present and valid.
fn header_str<'h>(headers: &'h http::HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
}

/// The method, path, query and headers of a request, for a script that reads them.
fn http_request(parts: &http::request::Parts) -> plinth_runtime::wasm::HttpRequest {
    plinth_runtime::wasm::HttpRequest {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().unwrap_or_default().to_string(),
        headers: parts
            .headers
            .iter()
            .filter(|(name, _)| *name != AUTHORIZATION)
            .filter_map(|(name, value)| Some((name.as_str().to_string(), value.to_str().ok()?.to_string())))
            .collect(),
    }
}
