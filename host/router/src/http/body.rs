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
