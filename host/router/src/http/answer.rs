//! A scored request answered over HTTP: JSON, or the inference protocol's JSON or binary encoding, and
//! the version that served it in `x-plinth-version`.

use std::sync::Arc;

use bytes::Bytes;
use http::Response;
use http::header::{CONTENT_TYPE, HeaderValue};
use http_body_util::Full;
use plinth_runtime::wasm::HttpRequest;

use super::response::{Body, error_response, json_bytes};
use crate::host::Host;
use crate::oip;
use crate::score::{Answer, Payload, VERSION_HEADER};
use crate::service::Service;
use crate::version::Version;

impl Host {
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
