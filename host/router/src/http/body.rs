//! Reading request bodies within a limit (413 before reading when the declared length is too large).

use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use crate::{Error, Result};

/// How long a client may take by default to send a request body (whole for scoring and admin JSON,
/// between chunks for an upload) before it gets a 408: a body trickled in slowly holds a connection no
/// timeout of the reaper's covers, since its request is already in flight.
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(60);

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

/// A request body that fails once it has been waited for longer than a timeout, for readers that take
/// the body themselves (the gRPC service decodes its message from it): the error is the gRPC status for
/// [`Error::BodyTimeout`], which tonic answers as it is. No timer until the body is first waited for.
pub(crate) struct Deadline<B> {
    inner: B,
    timeout: Duration,
    sleep: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl<B> Deadline<B> {
    pub(crate) fn new(inner: B, timeout: Duration) -> Self {
        Deadline {
            inner,
            timeout,
            sleep: None,
        }
    }
}

impl<B> hyper::body::Body for Deadline<B>
where
    B: hyper::body::Body + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = B::Data;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<std::result::Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        use std::future::Future;
        use std::task::Poll;
        let this = &mut *self;
        match std::pin::Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(frame.map(|f| f.map_err(Into::into))),
            Poll::Pending => {
                let timeout = this.timeout;
                let sleep = this.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                let error = Error::BodyTimeout {
                    secs: timeout.as_secs(),
                };
                Poll::Ready(Some(Err(Box::new(crate::grpc::status(&error)))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// The deepest JSON nesting (arrays and objects) a body may have before it reaches an entry script.
pub const MAX_JSON_DEPTH: usize = 64;

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
