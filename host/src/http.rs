//! The HTTP face of a host: health, scoring, the service's OpenAPI document, and (when a control
//! plane is attached) the admin API. Every response carries `x-request-id`; every error is JSON.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use plinth_runtime::wasm::CallContext;
use serde_json::json;

use crate::auth::{TokenIssuer, bearer};
use crate::control::ControlPlane;
use crate::metrics::Metrics;
use crate::oip;
use crate::service::{Router, Service, Version};
use crate::{Error, Result};

pub type Body = Full<Bytes>;

pub const REQUEST_ID: &str = "x-request-id";

/// Names the version that served a response; on a request, pins the version.
pub const VERSION_HEADER: &str = "x-plinth-version";

/// Largest admin request (a model or source file upload): 4 GiB, held in memory while it is hashed.
pub const MAX_ADMIN_BODY_BYTES: usize = 4 << 30;

/// Default request body limit: 100 MB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 100 * 1024 * 1024;

/// Routes requests to services (and to the control plane, when there is one).
pub struct Host {
    router: Arc<Router>,
    control: Option<Arc<ControlPlane>>,
    max_body_bytes: usize,
    ids: RequestIds,
    metrics: Arc<Metrics>,
    open_metrics: bool,
}

impl Host {
    /// A host that serves the services in `router`, with no admin API: the embedding entry point.
    pub fn new(router: Arc<Router>) -> Self {
        Host {
            router,
            control: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            ids: RequestIds::new(),
            metrics: Arc::new(Metrics::new()),
            open_metrics: false,
        }
    }

    /// Records into `metrics` (shared with the control plane) instead of a registry of its own.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Serves `/metrics` without a credential (default: the admin token is needed).
    pub fn with_open_metrics(mut self, open: bool) -> Self {
        self.open_metrics = open;
        self
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Counts and logs one scoring request.
    fn observe(
        &self,
        service: &str,
        version: Option<&Version>,
        status: StatusCode,
        started: Instant,
        request_id: &str,
    ) {
        let latency = started.elapsed();
        let version_name = version.map(|v| v.name()).unwrap_or("-");
        match version.and_then(|v| v.series(&self.metrics, service)) {
            Some(series) => {
                if status == StatusCode::OK {
                    series.ok.inc();
                } else {
                    self.metrics
                        .requests
                        .with_label_values(&[service, version_name, status.as_str()])
                        .inc();
                }
                series.seconds.observe(latency.as_secs_f64());
            }
            None => {
                self.metrics
                    .requests
                    .with_label_values(&[service, version_name, status.as_str()])
                    .inc();
                self.metrics
                    .request_seconds
                    .with_label_values(&[service, version_name])
                    .observe(latency.as_secs_f64());
            }
        }
        let latency_us = latency.as_micros() as u64;
        tracing::info!(target: "plinth::request", request_id, service, version = version_name, status = status.as_u16(), latency_us, "request");
        if let Some(c) = &self.control {
            let shared;
            let name = match version {
                Some(v) => v.shared_name(),
                None => {
                    shared = Arc::from("-");
                    &shared
                }
            };
            c.logs().request(service, request_id, name, status.as_u16(), latency_us);
        }
    }

    /// Counts a request of `version` in flight until the guard drops (also when the client leaves).
    fn in_flight<'v>(&self, service: &str, version: &'v Version) -> InFlight<'v> {
        let gauge = match version.series(&self.metrics, service) {
            Some(series) => InFlight::Series(&series.in_flight),
            None => InFlight::Looked(self.metrics.in_flight.with_label_values(&[service, version.name()])),
        };
        gauge.gauge().inc();
        gauge
    }

    /// Adds the admin API and token auth of a control plane.
    pub fn with_control(mut self, control: Arc<ControlPlane>) -> Self {
        self.control = Some(control);
        self
    }

    pub fn with_max_body_bytes(mut self, limit: usize) -> Self {
        self.max_body_bytes = limit;
        self
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
            (&Method::GET, ["metrics"]) => {
                if !self.open_metrics {
                    let given = bearer(req.headers().get(http::header::AUTHORIZATION));
                    let admin = self.control.as_ref().map(|c| c.admin_token());
                    if let Some(admin) = admin
                        && !given.is_some_and(|g| crate::auth::key_matches(g, admin))
                    {
                        return Err(Error::Unauthorized(
                            "/metrics needs 'Authorization: Bearer <admin token>' (or plinth serve --open-metrics)"
                                .into(),
                        ));
                    }
                }
                let mut r = Response::new(Full::new(Bytes::from(self.metrics.render())));
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
                let ready = self
                    .control
                    .as_ref()
                    .map(|c| c.transitioning().is_empty())
                    .unwrap_or(true);
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
                let service = self
                    .router
                    .get(name)
                    .ok_or_else(|| Error::NotFound(format!("service {name} not found")))?;
                match (method, rest) {
                    (&Method::POST, ["score"]) => self.score(req, service, request_id).await,
                    (&Method::GET, ["swagger.json"]) => {
                        self.authorize(&service, &req)?;
                        Ok(json_response(StatusCode::OK, &swagger(&service)))
                    }
                    _ => Err(Error::NotFound(format!("no route {method} {path}"))),
                }
            }
            (_, ["api", "v1", "admin", ..]) => match &self.control {
                Some(control) => {
                    let (parts, body) = req.into_parts();
                    let body = read_body(&parts.headers, body, MAX_ADMIN_BODY_BYTES).await?;
                    let (status, value) = control.admin(&parts, &segments[3..], body).await?;
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
        let service = self
            .router
            .get(name)
            .ok_or_else(|| Error::NotFound(format!("model {name} not found")))?;
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
        self.authorize(&service, &req)?;
        match (method, rest) {
            (Method::GET, []) => {
                let version = match pinned {
                    Some(v) => service.version(v)?.clone(),
                    None => service.default_version().clone(),
                };
                let info = version.info();
                let (platform, inputs, outputs) = match info.has_script {
                    false => ("onnxruntime_onnx", info.inputs.clone(), info.outputs.clone()),
                    true => ("plinth_entry_script", Vec::new(), Vec::new()),
                };
                let versions: Vec<&str> = service.versions().iter().map(|v| v.name()).collect();
                Ok(json_response(
                    StatusCode::OK,
                    &oip::model_metadata(name, &versions, platform, &inputs, &outputs),
                ))
            }
            (Method::GET, ["ready"]) => Ok(json_response(StatusCode::OK, &json!({"name": name, "ready": true}))),
            (Method::POST, ["infer"]) => {
                let (parts, body) = req.into_parts();
                let body = read_body(&parts.headers, body, self.max_body_bytes).await?;
                let header_len = match parts.headers.get(oip::HEADER_LENGTH) {
                    Some(v) => Some(
                        v.to_str()
                            .map_err(|_| Error::BadRequest("Inference-Header-Content-Length is not text".into()))?,
                    ),
                    None => None,
                };
                let pinned = pinned.or_else(|| header_str(&parts.headers, VERSION_HEADER));
                let started = Instant::now();
                let mut decoded = oip::decode(&body, header_len)?;
                let ctx = CallContext {
                    request_id: Some(request_id.into()),
                };
                let (version, copies) = service.route(pinned)?;
                if !copies.is_empty() {
                    mirror_oip(copies, &decoded, &ctx);
                }
                let _in_flight = self.in_flight(name, version);
                let input = body.clone();
                let result = if version.info().has_script {
                    // An entry script reads OIP JSON whatever the request's encoding.
                    let script_body = Bytes::from(oip::to_script_json(&decoded));
                    version.run(move |p| p.score(&script_body, &ctx)).await.map(|out| {
                        version.collect(request_id, input, &out);
                        let mut response = Response::new(Full::new(Bytes::from(out)));
                        response
                            .headers_mut()
                            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                        response
                    })
                } else {
                    match oip::check_outputs(&decoded, &version.info().outputs, name) {
                        Err(e) => Err(e),
                        Ok(()) => {
                            let inputs = std::mem::take(&mut decoded.inputs);
                            let outputs = version.infer(inputs).await;
                            outputs.map(|outputs| {
                                let (body, json_len) = oip::encode(name, version.name(), &decoded, outputs);
                                version.collect(request_id, input, &body[..json_len.unwrap_or(body.len())]);
                                binary_response(body, json_len)
                            })
                        }
                    }
                };
                let response = result.unwrap_or_else(|e| error_response(&e));
                self.observe(name, Some(version), response.status(), started, request_id);
                Ok(tag_version(response, version))
            }
            (method, _) => Err(Error::NotFound(format!(
                "no route {method} /v2/models/{name}/{}",
                rest.join("/")
            ))),
        }
    }

    fn ready(&self) -> Response<Body> {
        let pending = self.control.as_ref().map(|c| c.transitioning()).unwrap_or_default();
        if pending.is_empty() {
            json_response(
                StatusCode::OK,
                &json!({"status": "ready", "services": self.router.names()}),
            )
        } else {
            json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({"status": "loading", "loading": pending}),
            )
        }
    }

    fn authorize(&self, service: &Service, req: &Request<Incoming>) -> Result<()> {
        let token = bearer(req.headers().get(http::header::AUTHORIZATION));
        let tokens: Option<&TokenIssuer> = self.control.as_ref().map(|c| c.tokens());
        let admin = self.control.as_ref().map(|c| c.admin_token());
        service.authorize(token, tokens, admin)
    }

    async fn score(&self, req: Request<Incoming>, service: Arc<Service>, request_id: &str) -> Result<Response<Body>> {
        self.authorize(&service, &req)?;
        let (parts, body) = req.into_parts();
        let body = read_body(&parts.headers, body, self.max_body_bytes).await?;
        let ctx = CallContext {
            request_id: Some(request_id.into()),
        };
        let pinned = header_str(&parts.headers, VERSION_HEADER);
        let started = Instant::now();
        let (version, copies) = match service.route(pinned) {
            Ok(routed) => routed,
            Err(e) => {
                let response = error_response(&e);
                self.observe(service.name(), None, response.status(), started, request_id);
                return Ok(response);
            }
        };
        Service::mirror(copies, &body, &ctx);
        let in_flight = self.in_flight(service.name(), version);
        let input = body.clone();
        let result = version.score(body, ctx).await;
        drop(in_flight);
        let response = match result {
            Ok(out) => {
                version.collect(request_id, input, &out);
                let mut response = Response::new(Full::new(Bytes::from(out)));
                response
                    .headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                response
            }
            Err(e) => error_response(&e),
        };
        self.observe(service.name(), Some(version), response.status(), started, request_id);
        Ok(tag_version(response, version))
    }
}

/// Holds a version's in-flight gauge up while a request is served: the version's own series, or (for a
/// version that reports to another registry too) the one looked up by label.
enum InFlight<'v> {
    Series(&'v prometheus::IntGauge),
    Looked(prometheus::IntGauge),
}

impl InFlight<'_> {
    fn gauge(&self) -> &prometheus::IntGauge {
        match self {
            InFlight::Series(g) => g,
            InFlight::Looked(g) => g,
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.gauge().dec();
    }
}

/// Copies an OIP request to mirror versions: decoded tensors to a model, OIP JSON to an entry script.
/// Fire and forget, on free slots only; the answers are dropped.
fn mirror_oip(copies: Vec<Arc<Version>>, decoded: &oip::Request, ctx: &CallContext) {
    let mut script_body: Option<Bytes> = None;
    for mirror in copies {
        if mirror.info().has_script {
            let body = script_body
                .get_or_insert_with(|| Bytes::from(oip::to_script_json(decoded)))
                .clone();
            let ctx = ctx.clone();
            tokio::spawn(async move {
                let _ = mirror.try_run(move |p| p.score(&body, &ctx)).await;
            });
        } else {
            let inputs = decoded.inputs.clone();
            tokio::spawn(async move {
                let _ = mirror.try_infer(inputs).await;
            });
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

/// Names the version that served a response.
fn tag_version(mut response: Response<Body>, version: &Version) -> Response<Body> {
    if let Ok(v) = HeaderValue::from_str(version.name()) {
        response.headers_mut().insert(VERSION_HEADER, v);
    }
    response
}

fn binary_response(body: Vec<u8>, json_len: Option<usize>) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    let headers = response.headers_mut();
    match json_len {
        Some(n) => {
            headers.insert(oip::HEADER_LENGTH, HeaderValue::from(n));
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
        }
        None => {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
    }
    response
}

/// Reads the whole body, refusing one over `limit` before reading it when the length is declared.
async fn read_body(headers: &http::HeaderMap, body: Incoming, limit: usize) -> Result<Bytes> {
    let too_large = || Error::PayloadTooLarge(format!("request body exceeds the limit of {limit} bytes"));
    if let Some(len) = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > limit as u64
    {
        return Err(too_large());
    }
    let mut body = Limited::new(body, limit);
    // Most bodies arrive as one frame: keep it as it is; join several only when there are several.
    let mut first: Option<Bytes> = None;
    let mut joined: Option<bytes::BytesMut> = None;
    loop {
        let frame = match body.frame().await {
            None => break,
            Some(Ok(frame)) => frame,
            Some(Err(e)) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => return Err(too_large()),
            Some(Err(e)) => return Err(Error::BadRequest(format!("reading the request body: {e}"))),
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        match (&mut joined, first.take()) {
            (Some(all), _) => all.extend_from_slice(&data),
            (None, None) => first = Some(data),
            (None, Some(head)) => {
                let mut all = bytes::BytesMut::with_capacity(head.len() + data.len());
                all.extend_from_slice(&head);
                all.extend_from_slice(&data);
                joined = Some(all);
            }
        }
    }
    Ok(match joined {
        Some(all) => all.freeze(),
        None => first.unwrap_or_default(),
    })
}

pub fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(serde_json::to_vec(value).unwrap_or_default())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

pub fn error_response(e: &Error) -> Response<Body> {
    let status = e.status();
    if status.is_server_error() {
        tracing::warn!(kind = e.kind(), error = %e, "request failed");
    }
    let mut r = json_response(status, &json!({"error": e.to_string(), "kind": e.kind()}));
    if status == StatusCode::SERVICE_UNAVAILABLE {
        r.headers_mut().insert(RETRY_AFTER, HeaderValue::from_static("1"));
    }
    r
}

/// OpenAPI 3 for one service: its scoring route, and its inputs when it serves an ONNX model directly.
fn swagger(service: &Service) -> serde_json::Value {
    let info = service.default_version().info();
    let request_schema = match info.has_script {
        false => {
            let inputs = &info.inputs;
            let mut props = serde_json::Map::new();
            for spec in inputs {
                props.insert(
                    spec.name.clone(),
                    json!({"type": "array", "description": format!("{} tensor of shape {:?} (-1: any size)", spec.datatype, spec.shape)}),
                );
            }
            if inputs.len() == 1 {
                props.insert(
                    "data".into(),
                    json!({"type": "array", "description": "the single input, by another name"}),
                );
            }
            json!({"type": "object", "properties": props})
        }
        _ => json!({"type": "object", "description": "passed as it is to the entry script's run(raw_data)"}),
    };
    json!({
        "openapi": "3.0.1",
        "info": {"title": format!("Plinth service {}", service.name()), "version": "1.0"},
        "paths": {
            format!("/api/v1/service/{}/score", service.name()): {
                "post": {
                    "summary": "Score",
                    "security": [{"bearer": []}],
                    "requestBody": {"required": true, "content": {"application/json": {"schema": request_schema}}},
                    "responses": {
                        "200": {"description": "The prediction"},
                        "400": {"description": "The request does not fit the model"},
                        "401": {"description": "Missing or invalid key or token"},
                        "503": {"description": "No free replica within maxQueueWaitMs"},
                        "504": {"description": "No answer within scoringTimeoutMs"}
                    }
                }
            }
        },
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}}
    })
}

/// Request ids: the client's `x-request-id` when it is sensible, else a fresh one.
struct RequestIds {
    prefix: u64,
    next: AtomicU64,
}

impl RequestIds {
    fn new() -> Self {
        let mut seed = [0u8; 8];
        let _ = getrandom::fill(&mut seed);
        RequestIds {
            prefix: u64::from_le_bytes(seed),
            next: AtomicU64::new(1),
        }
    }

    fn for_request<B>(&self, req: &Request<B>) -> String {
        if let Some(v) = req.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok())
            && !v.is_empty()
            && v.len() <= 128
            && v.bytes().all(|b| b.is_ascii_graphic())
        {
            return v.to_string();
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        // 24 hex digits: the host's random prefix, then a counter (what `format!("{:016x}{:08x}")` writes).
        let mut id = String::with_capacity(24);
        push_hex(&mut id, self.prefix, 16);
        push_hex(&mut id, n, 8.max(16 - n.leading_zeros() as usize / 4));
        id
    }
}

fn push_hex(out: &mut String, v: u64, digits: usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for i in (0..digits).rev() {
        out.push(HEX[((v >> (i * 4)) & 0xf) as usize] as char);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn request_ids_are_hex() {
        let ids = super::RequestIds::new();
        let a = ids.for_request(&http::Request::new(()));
        let b = ids.for_request(&http::Request::new(()));
        assert_eq!(a, format!("{:016x}{:08x}", ids.prefix, 1));
        assert_eq!(b, format!("{:016x}{:08x}", ids.prefix, 2));
        for n in [0u64, 0xabc, 0xffff_ffff, 0x1_0000_0000, u64::MAX] {
            let mut hex = String::new();
            super::push_hex(&mut hex, n, 8.max(16 - n.leading_zeros() as usize / 4));
            assert_eq!(hex, format!("{n:08x}"));
        }
    }
}
