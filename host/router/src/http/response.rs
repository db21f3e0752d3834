//! The one place that decides what an error looks like on the wire: its HTTP status, its JSON body
//! (`{"error": ..., "kind": ...}`) and `Retry-After` on a 503. Every route, the admin API included,
//! answers errors through here.

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use http::{Response, StatusCode};
use http_body_util::Full;
use serde_json::json;

use crate::{Error, Fault};

pub type Body = Full<Bytes>;

/// The HTTP status of an error. Client mistakes are 4xx; nothing a caller sends is a 500.
pub fn status_of(e: &Error) -> StatusCode {
    if let Error::Runtime(plinth_runtime::Error::Response { status, .. }) = e {
        return StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    }
    match e.fault() {
        Fault::Busy => StatusCode::SERVICE_UNAVAILABLE,
        Fault::Late => StatusCode::GATEWAY_TIMEOUT,
        Fault::Server => StatusCode::INTERNAL_SERVER_ERROR,
        Fault::Client => match e {
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::Conflict(_) => StatusCode::CONFLICT,
            Error::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Error::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Error::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            Error::Shared(inner) => status_of(inner),
            _ => StatusCode::BAD_REQUEST,
        },
    }
}

impl From<&Error> for Response<Body> {
    fn from(e: &Error) -> Self {
        let status = status_of(e);
        // A script's own answer (Azure's AMLResponse): its status, body and content type, as it gave them.
        if let Error::Runtime(plinth_runtime::Error::Response {
            content_type,
            body,
            headers,
            ..
        }) = e
        {
            let mut r = Response::new(Full::new(Bytes::from(body.clone())));
            *r.status_mut() = status;
            let ct = content_type.as_deref().unwrap_or("application/json");
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_str(ct).unwrap_or(HeaderValue::from_static("application/octet-stream")),
            );
            for (name, value) in headers {
                // Only well-formed headers, and none that would change how the response is framed.
                if let (Ok(n), Ok(v)) = (
                    http::header::HeaderName::from_bytes(name.as_bytes()),
                    HeaderValue::from_str(value),
                ) && !matches!(
                    n.as_str(),
                    "content-length" | "transfer-encoding" | "connection" | "content-type"
                ) {
                    r.headers_mut().append(n, v);
                }
            }
            return r;
        }
        // Busy and late answers are counted in metrics; under overload a line each would flood the log.
        match e.fault() {
            crate::Fault::Server => tracing::warn!(kind = e.kind(), error = %e, "request failed"),
            crate::Fault::Busy | crate::Fault::Late => tracing::debug!(kind = e.kind(), error = %e, "request refused"),
            crate::Fault::Client => {}
        }
        let mut r = json_response(status, &json!({"error": e.to_string(), "kind": e.kind()}));
        if status == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut().insert(RETRY_AFTER, HeaderValue::from_static("1"));
        }
        r
    }
}

/// The response for an error (see [`status_of`]).
pub fn error_response(e: &Error) -> Response<Body> {
    Response::from(e)
}

pub fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut r = json_bytes(serde_json::to_vec(value).unwrap_or_default());
    *r.status_mut() = status;
    r
}

/// A 200 with a JSON body that is already bytes (a model's or a script's answer).
pub fn json_bytes(body: Vec<u8>) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn statuses_by_fault() {
        let cases = [
            (Error::NotFound("x".into()), 404),
            (Error::BadRequest("x".into()), 400),
            (Error::Conflict("x".into()), 409),
            (Error::Unauthorized("x".into()), 401),
            (Error::PayloadTooLarge { limit: 1 }, 413),
            (Error::BodyTimeout { secs: 1 }, 408),
            (Error::Overloaded("x".into()), 503),
            (Error::Timeout("x".into()), 504),
            (Error::Internal("x".into()), 500),
        ];
        for (e, status) in cases {
            assert_eq!(status_of(&e).as_u16(), status, "{e:?}");
            let shared = Error::Shared(Arc::new(e));
            assert_eq!(status_of(&shared).as_u16(), status, "shared by a batch: {shared:?}");
        }
        let r = error_response(&Error::Overloaded("full".into()));
        assert_eq!(r.headers()[RETRY_AFTER], "1");
    }
}
