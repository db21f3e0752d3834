//! The scoring flow, once for every protocol: route to a version (the split, or a pin), mirror copies,
//! hold the in-flight gauge, score, collect the data, count and log the request, name the version.

use std::time::Instant;

use bytes::Bytes;
use http::Response;
use http::header::{CONTENT_TYPE, HeaderValue};
use http_body_util::Full;
use plinth_runtime::wasm::CallContext;

use super::response::{Body, error_response, json_bytes};
use super::{Host, VERSION_HEADER, oip};
use crate::Result;
use crate::observe::Served;
use crate::service::{Mirrored, Service};
use crate::version::Version;

/// A scoring request, decoded as far as its route needs before a version is chosen.
pub(crate) enum Payload {
    /// `POST /api/v1/service/{name}/score`: the body goes to the version as it is.
    Score(Bytes),
    /// `POST /v2/models/{name}/infer`: tensors for a model, OIP JSON for an entry script.
    Oip { decoded: oip::Request, raw: Bytes },
}

impl Host {
    /// Scores one request on `service`; every outcome is an answer (errors shaped as everywhere else).
    pub(crate) async fn score(
        &self,
        service: &Service,
        payload: Payload,
        pinned: Option<&str>,
        request_id: &str,
    ) -> Response<Body> {
        let started = Instant::now();
        let name = service.name();
        let ctx = CallContext {
            request_id: Some(request_id.into()),
        };
        let (version, copies) = match service.route(pinned) {
            Ok(routed) => routed,
            Err(e) => {
                let response = error_response(&e);
                self.observer
                    .request(name, None, response.status(), started, request_id);
                return response;
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
        let response = result.unwrap_or_else(|e| error_response(&e));
        self.observer
            .request(name, Some(served), response.status(), started, request_id);
        tag_version(response, version)
    }
}

/// Runs the request on `version` and hands what it answered to data collection.
async fn run(
    version: &Version,
    model: &str,
    payload: Payload,
    ctx: CallContext,
    request_id: &str,
) -> Result<Response<Body>> {
    match payload {
        Payload::Score(body) => {
            if version.info().has_script {
                super::body::check_nesting(&body)?;
            }
            let out = version.score(body.clone(), ctx).await?;
            version.collect(request_id, body, &out);
            Ok(json_bytes(out))
        }
        Payload::Oip { decoded, raw } if version.info().has_script => {
            // An entry script reads OIP JSON whatever the request's encoding.
            let script_body = Bytes::from(oip::to_script_json(&decoded));
            super::body::check_nesting(&script_body)?;
            let out = version.run(move |p| p.score(&script_body, &ctx)).await?;
            version.collect(request_id, raw, &out);
            Ok(json_bytes(out))
        }
        Payload::Oip { mut decoded, raw } => {
            oip::check_outputs(&decoded, &version.info().outputs, model)?;
            let inputs = std::mem::take(&mut decoded.inputs);
            let outputs = version.infer(inputs).await?;
            let (body, json_len) = oip::encode(model, version.name(), &decoded, outputs);
            version.collect(request_id, raw, &body[..json_len.unwrap_or(body.len())]);
            Ok(binary_response(body, json_len))
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
