//! The HTTP face of a host: the route table (health, scoring, the inference protocol, swagger,
//! `/metrics`, and the admin API an embedder mounts). Every response carries `x-request-id`; every
//! error is JSON, shaped in `response.rs`.

mod answer;
mod body;
mod response;
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

pub use self::body::AdminBody;
pub use self::response::{Body, error_response, json_response};

use self::body::read_body;
use crate::host::Host;
use crate::ids::REQUEST_ID;
use crate::oip;
use crate::score::{Payload, VERSION_HEADER};
use crate::{Error, Result};

/// Largest admin JSON request (a deployment, a model registration): 16 MiB.
pub const MAX_ADMIN_JSON_BYTES: usize = 16 << 20;

/// Largest upload (one model or source file, streamed to disk as it arrives): 4 GiB.
pub const MAX_UPLOAD_BYTES: u64 = 4 << 30;

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

impl Host {
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
                let Some(service) = self.router.get(name) else {
                    let missing = self.missing("service", name);
                    self.discard(req);
                    return Err(missing);
                };
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
                            if let Err(e) = service.authorize(&self.auth, req.headers().get(AUTHORIZATION)) {
                                self.discard(req);
                                return Err(e);
                            }
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
        let Some(service) = self.router.get(name) else {
            let missing = self.missing("model", name);
            self.discard(req);
            return Err(missing);
        };
        // An inference request refused before it reaches a version is counted as the service's.
        let infer = method == Method::POST && rest.last() == Some(&"infer");
        let started = Instant::now();
        let answered = async {
            // The credential first: a caller without one learns nothing of the model's versions.
            if let Err(e) = service.authorize(&self.auth, req.headers().get(AUTHORIZATION)) {
                self.discard(req);
                return Err(e);
            }
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

    /// Reads and drops what a refused request still sends (up to the body limit, within the body-read
    /// timeout) while its answer goes out, so that its client reads the 401 or 404 instead of a connection
    /// reset under its upload. Nothing is kept; past the limit or the timeout the connection closes.
    fn discard(&self, req: Request<Incoming>) {
        use http_body_util::BodyExt as _;
        use hyper::body::Body as _;
        let mut body = req.into_body();
        if body.is_end_stream() {
            return;
        }
        let (limit, timeout) = (self.max_body_bytes as u64, self.body_timeout);
        tokio::spawn(async move {
            let mut read = 0u64;
            let _ = tokio::time::timeout(timeout, async {
                while let Some(Ok(frame)) = body.frame().await {
                    read += frame.data_ref().map_or(0, |d| d.len() as u64);
                    if read > limit {
                        break;
                    }
                }
            })
            .await;
        });
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
