//! Request ids (`x-request-id`): the client's own when it is sensible, else a fresh one.

use std::sync::atomic::{AtomicU64, Ordering};

use http::Request;

/// The request's id, on a request (HTTP header, gRPC metadata) and on its answer.
pub const REQUEST_ID: &str = "x-request-id";

/// Request ids: the client's `x-request-id` when it is sensible, else a fresh one.
pub(crate) struct RequestIds {
    prefix: u64,
    next: AtomicU64,
}

impl RequestIds {
    pub(crate) fn new() -> Self {
        let mut seed = [0u8; 8];
        let _ = getrandom::fill(&mut seed);
        RequestIds {
            prefix: u64::from_le_bytes(seed),
            next: AtomicU64::new(1),
        }
    }

    pub(crate) fn for_request<B>(&self, req: &Request<B>) -> String {
        self.for_candidate(req.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()))
    }

    /// The client's id when it is sensible, else a fresh one.
    pub(crate) fn for_candidate(&self, given: Option<&str>) -> String {
        if let Some(v) = given
            && !v.is_empty()
            && v.len() <= 128
            && v.bytes().all(|b| b.is_ascii_graphic())
        {
            return v.to_string();
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        // 24 hex digits: the host's random prefix, then a counter (what `format!("{:016x}{:08x}")` writes).
        let mut id = String::with_capacity(24);
        push_hex(&mut id, self.prefix, 16);
        push_hex(&mut id, n, 8.max(16 - n.leading_zeros() as usize / 4));
        id
    }
}

fn push_hex(out: &mut String, v: u64, digits: usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for i in (0..digits).rev() {
        out.push(HEX[((v >> (i * 4)) & 0xf) as usize] as char);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn request_ids_are_hex() {
        let ids = super::RequestIds::new();
        let a = ids.for_request(&http::Request::new(()));
        let b = ids.for_request(&http::Request::new(()));
        assert_eq!(a, format!("{:016x}{:08x}", ids.prefix, 1));
        assert_eq!(b, format!("{:016x}{:08x}", ids.prefix, 2));
        for n in [0u64, 0xabc, 0xffff_ffff, 0x1_0000_0000, u64::MAX] {
            let mut hex = String::new();
            super::push_hex(&mut hex, n, 8.max(16 - n.leading_zeros() as usize / 4));
            assert_eq!(hex, format!("{n:08x}"));
        }
    }
}
