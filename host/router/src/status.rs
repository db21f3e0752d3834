//! An error's status, judged once: the HTTP status a response carries, which metrics and request logs
//! count for every face, and which the gRPC service maps to its codes.

use http::StatusCode;

use crate::{Error, Fault};

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
    }
}
