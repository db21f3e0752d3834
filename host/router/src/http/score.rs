//! The scoring flow, once for every protocol: route to a version (the split, or a pin), mirror copies,
//! hold the in-flight gauge, score, collect the data, count and log the request, name the version.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::Response;
use http::header::{CONTENT_TYPE, HeaderValue};
use http_body_util::Full;
use plinth_runtime::wasm::{CallContext, HttpRequest};

use http::StatusCode;
use plinth_runtime::Tensor;

use super::response::{Body, error_response, json_bytes, status_of};
use super::{Host, VERSION_HEADER, oip};
use crate::Result;
use crate::observe::Served;
use crate::service::{Mirrored, Service};
use crate::version::Version;

/// A scoring request, decoded as far as its route needs before a version is chosen.
pub(crate) enum Payload {
    /// `POST /api/v1/service/{name}/score`: the body goes to the version as it is.
    Score(Bytes),
    /// An inference-protocol request (HTTP or gRPC): tensors for a model, OIP JSON for an entry script.
    /// `raw` is the HTTP body, which data collection records; a gRPC request is recorded as OIP JSON.
    Oip { decoded: oip::Request, raw: Option<Bytes> },
}

/// What a version answered.
pub(crate) enum Answer {
    /// JSON: a `/score` answer, or an entry script's.
    Json(Vec<u8>),
    /// A model's outputs for an inference-protocol request.
    Tensors {
        request: oip::Request,
        outputs: Vec<Tensor>,
    },
}

/// The outcome of [`Host::score`], and the version that gave it (none when routing failed).
pub(crate) struct Scored<'s> {
    pub version: Option<&'s Version>,
    pub result: Result<Answer>,
}

impl Host {
    /// Scores one request on `service`, whatever the protocol: route, mirror, hold the in-flight gauge,
    /// run, collect, count and log.
    pub(crate) async fn score<'s>(
        &self,
        service: &'s Service,
        payload: Payload,
        pinned: Option<&str>,
        request_id: &str,
        http: Option<Arc<HttpRequest>>,
    ) -> Scored<'s> {
        let started = Instant::now();
        let name = service.name();
        let ctx = CallContext {
            request_id: Some(request_id.into()),
            http,
        };
        let (version, copies) = match service.route(pinned) {
            Ok(routed) => routed,
            Err(e) => {
                self.observer
                    .request(name, None, status_of(&e), started, request_id, Some(&e));
                return Scored {
                    version: None,
                    result: Err(e),
                };
            }
        };
        if !copies.is_empty() {
            match &payload {
                Payload::Score(body) => Service::mirror(copies, &Mirrored::Body(body), &ctx),
                Payload::Oip { decoded, .. } => {
                    let script_body = || Bytes::from(oip::to_script_json(decoded));
                    let copy = Mirrored::Tensors {
                        inputs: &decoded.inputs,
                        script_body: &script_body,
                    };
                    Service::mirror(copies, &copy, &ctx);
                }
            }
        }
        let served = Served {
            name: version.shared_name(),
            series: version.series(&self.observer.metrics, name),
        };
        let in_flight = self.observer.in_flight(name, served);
        let result = run(version, name, payload, ctx, request_id).await;
        drop(in_flight);
        let status = match &result {
            Ok(_) => StatusCode::OK,
            Err(e) => status_of(e),
        };
        let error = result.as_ref().err().filter(|e| !e.is_answer());
        self.observer
            .request(name, Some(served), status, started, request_id, error);
        Scored {
            version: Some(version),
            result,
        }
    }

    /// [`Host::score`], answered over HTTP: JSON, or the inference protocol's JSON or binary encoding.
    pub(crate) async fn score_http(
        &self,
        service: &Service,
        payload: Payload,
        pinned: Option<&str>,
        request_id: &str,
        http: Option<Arc<HttpRequest>>,
    ) -> Response<Body> {
        let scored = self.score(service, payload, pinned, request_id, http).await;
        let response = match (scored.result, scored.version) {
            (Ok(Answer::Json(body)), _) => json_bytes(body),
            (Ok(Answer::Tensors { request, outputs }), Some(version)) => {
                let (body, json_len) = oip::encode(service.name(), version.name(), &request, &outputs, false);
                binary_response(body, json_len)
            }
            (Ok(Answer::Tensors { .. }), None) => error_response(&crate::Error::Internal("no version".into())),
            (Err(e), _) => error_response(&e),
        };
        match scored.version {
            Some(version) => tag_version(response, version),
            None => response,
        }
    }
}

/// Runs the request on `version` and hands what it answered to data collection.
async fn run(version: &Version, model: &str, payload: Payload, ctx: CallContext, request_id: &str) -> Result<Answer> {
    match payload {
        Payload::Score(body) => {
            if version.info().has_script {
                super::body::check_nesting(&body)?;
            }
            let out = version.score(body.clone(), ctx).await?;
            version.collect(request_id, || body, || out.clone());
            Ok(Answer::Json(out))
        }
        Payload::Oip { decoded, raw } if version.info().has_script => {
            // An entry script reads OIP JSON whatever the request's encoding.
            let script_body = Bytes::from(oip::to_script_json(&decoded));
            super::body::check_nesting(&script_body)?;
            let input = script_body.clone();
            let out = version.run(move |p| p.score(&script_body, &ctx)).await?;
            version.collect(request_id, || raw.unwrap_or(input), || out.clone());
            Ok(Answer::Json(out))
        }
        Payload::Oip { mut decoded, raw } => {
            oip::check_outputs(&decoded, &version.info().outputs, model)?;
            let raw = match raw {
                None if version.collects() => Some(Bytes::from(oip::to_script_json(&decoded))),
                raw => raw,
            };
            let inputs = std::mem::take(&mut decoded.inputs);
            let outputs = version.infer(inputs).await?;
            version.collect(
                request_id,
                || raw.unwrap_or_default(),
                || oip::encode(model, version.name(), &decoded, &outputs, true).0,
            );
            Ok(Answer::Tensors {
                request: decoded,
                outputs,
            })
        }
    }
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
