//! Reading request bodies within a limit (413 before reading when the declared length is too large).

use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use crate::{Error, Result};

/// Reads the whole body, refusing one over `limit` before reading it when the length is declared.
pub(crate) async fn read_body(headers: &http::HeaderMap, body: Incoming, limit: usize) -> Result<Bytes> {
    let too_large = || Error::PayloadTooLarge { limit };
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
