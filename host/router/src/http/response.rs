//! The one place that decides what an error looks like on the wire: its HTTP status (judged in
//! `status.rs`), its JSON body (`{"error": ..., "kind": ...}`) and `Retry-After` on a 503. Every route,
//! the admin API included, answers errors through here.

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use http::{Response, StatusCode};
use http_body_util::Full;
use serde_json::json;

use crate::Error;
use crate::status::status_of;

pub type Body = Full<Bytes>;

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
    use super::*;

    #[test]
    fn a_busy_answer_says_when_to_retry() {
        let r = error_response(&Error::Overloaded("full".into()));
        assert_eq!(r.headers()[RETRY_AFTER], "1");
    }
}
