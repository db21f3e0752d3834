//! Reading request bodies within a limit (413 before reading when the declared length is too large) and
//! within the host's body-read timeout (408).

use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use crate::{Error, Result};

/// [`read_within`], within `timeout`.
pub(crate) async fn read_body(
    headers: &http::HeaderMap,
    body: Incoming,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes> {
    within(timeout, read_within(declared_length(headers), body, limit)).await
}

/// The `Content-Length` a client declared, if it did (and sensibly).
fn declared_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// `f` within `timeout`, or a 408. No timer is registered when `f` is ready at once (a small body
/// arrives with its head).
async fn within<T>(timeout: Duration, f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    tokio::time::timeout(timeout, f).await.map_err(|_| Error::BodyTimeout {
        secs: timeout.as_secs(),
    })?
}

/// Reads the whole body, refusing one over `limit` before reading it when the length is declared.
async fn read_within(declared: Option<u64>, body: Incoming, limit: usize) -> Result<Bytes> {
    let too_large = || Error::PayloadTooLarge { limit };
    if declared.is_some_and(|len| len > limit as u64) {
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

/// An admin request's body, not yet read: JSON bodies are read whole within
/// [`MAX_ADMIN_JSON_BYTES`](super::MAX_ADMIN_JSON_BYTES); uploads are read a chunk at a time (to disk,
/// say) within [`MAX_UPLOAD_BYTES`](super::MAX_UPLOAD_BYTES).
pub struct AdminBody {
    declared: Option<u64>,
    body: Option<Incoming>,
    read: u64,
    timeout: Duration,
}

impl AdminBody {
    pub(crate) fn new(headers: &http::HeaderMap, body: Incoming, timeout: Duration) -> Self {
        let declared = declared_length(headers);
        AdminBody {
            declared,
            body: Some(body),
            read: 0,
            timeout,
        }
    }

    /// The length the client declared, if it did.
    pub fn declared_len(&self) -> Option<u64> {
        self.declared
    }

    /// The whole body, for a JSON request: a 413 over [`MAX_ADMIN_JSON_BYTES`](super::MAX_ADMIN_JSON_BYTES).
    pub async fn json(mut self) -> Result<Bytes> {
        match self.body.take() {
            Some(body) => {
                within(
                    self.timeout,
                    read_within(self.declared, body, super::MAX_ADMIN_JSON_BYTES),
                )
                .await
            }
            None => Ok(Bytes::new()),
        }
    }

    /// The next chunk of an upload, `None` at its end; a 413 once more than `limit` bytes came (or when
    /// the declared length is over it, before anything is read).
    pub async fn chunk(&mut self, limit: u64) -> Result<Option<Bytes>> {
        let too_large = || Error::PayloadTooLarge {
            limit: usize::try_from(limit).unwrap_or(usize::MAX),
        };
        if self.declared.is_some_and(|len| len > limit) {
            return Err(too_large());
        }
        loop {
            let Some(body) = self.body.as_mut() else {
                return Ok(None);
            };
            match within(self.timeout, async { Ok(body.frame().await) }).await? {
                None => {
                    self.body = None;
                    return Ok(None);
                }
                Some(Err(e)) => return Err(Error::BadRequest(format!("reading the request body: {e}"))),
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else { continue };
                    self.read += data.len() as u64;
                    if self.read > limit {
                        return Err(too_large());
                    }
                    return Ok(Some(data));
                }
            }
        }
    }
}
