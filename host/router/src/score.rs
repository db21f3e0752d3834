//! The scoring flow, once for every protocol: what a request to a service goes through, whichever face
//! (the HTTP routes, the gRPC service) reads it and answers it.
//!
//! 1. The caller's credential, checked by the face before it reads a body
//!    ([`Service::authorize`](crate::Service::authorize)); a request refused before it reaches a version
//!    still counts as the service's ([`Host::refused`]).
//! 2. A version: the split, or the one pinned ([`VERSION_HEADER`], a path, a message field); mirror copies.
//! 3. The in-flight gauge, held while the version runs the request on a replica's slot (`queue.rs`
//!    waits for one, `batch.rs` may join it with others), within the scoring timeout.
//! 4. The data collected, the request counted and logged, the version named.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::StatusCode;
use plinth_runtime::Tensor;
use plinth_runtime::wasm::{CallContext, HttpRequest};

use crate::host::Host;
use crate::observe::Served;
use crate::oip;
use crate::service::{Mirrored, Service};
use crate::status::status_of;
use crate::version::Version;
use crate::{Error, Result};

/// Names the version that served a response; on a request, pins the version.
pub const VERSION_HEADER: &str = "x-plinth-version";

/// The deepest JSON nesting (arrays and objects) a body may have before it reaches an entry script.
pub const MAX_JSON_DEPTH: usize = 64;

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

    /// A scoring request refused before it reached a version (no credential, a body too large, too slow
    /// or undecodable): counted and logged as the service's with version `-`, as routing failures are.
    pub(crate) fn refused(&self, service: &str, started: Instant, request_id: &str, e: Error) -> Error {
        self.observer
            .request(service, None, status_of(&e), started, request_id, Some(&e));
        e
    }
}

/// Runs the request on `version` and hands what it answered to data collection.
async fn run(version: &Version, model: &str, payload: Payload, ctx: CallContext, request_id: &str) -> Result<Answer> {
    match payload {
        Payload::Score(body) => {
            if version.info().has_script {
                check_nesting(&body)?;
            }
            let out = version.score(body.clone(), ctx).await?;
            version.collect(request_id, || body, || out.clone());
            Ok(Answer::Json(out))
        }
        Payload::Oip { decoded, raw } if version.info().has_script => {
            // An entry script reads OIP JSON whatever the request's encoding.
            let script_body = Bytes::from(oip::to_script_json(&decoded));
            check_nesting(&script_body)?;
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

/// Refuses a body nested deeper than [`MAX_JSON_DEPTH`], counting brackets outside strings: a script's
/// JSON parser would exhaust its stack on it and fail as if the script were at fault. One pass over
/// the bytes, no allocation.
pub(crate) fn check_nesting(body: &[u8]) -> Result<()> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in body {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_JSON_DEPTH {
                    return Err(Error::BadRequest(format!(
                        "the request body nests JSON more than {MAX_JSON_DEPTH} levels deep"
                    )));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_is_counted_outside_strings() {
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(check_nesting(deep(MAX_JSON_DEPTH).as_bytes()).is_ok());
        let err = check_nesting(deep(2000).as_bytes()).unwrap_err().to_string();
        assert!(err.contains("more than 64 levels"), "{err}");
        let in_string = format!(r#"{{"text": "{}", "escaped": "\"[[["}}"#, "[".repeat(500));
        assert!(check_nesting(in_string.as_bytes()).is_ok());
        assert!(check_nesting(br#"{"data": [[1, 2], [3, 4]]}"#).is_ok());
    }
}
