//! Service credentials: primary and secondary keys (compared in constant time) and JWTs.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::{Error, Result};

/// A new random key: 32 bytes from the OS, hex-encoded.
pub fn generate_key() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system's random source failed");
    hex(&bytes)
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `given` equals `key`, in time that depends only on the lengths.
pub fn key_matches(given: &[u8], key: &str) -> bool {
    !key.is_empty() && given.ct_eq(key.as_bytes()).into()
}

/// The token from an `Authorization: Bearer <token>` header value.
pub fn bearer(header: Option<&http::HeaderValue>) -> Option<&[u8]> {
    let v = header?.as_bytes();
    let rest = v.strip_prefix(b"Bearer ").or_else(|| v.strip_prefix(b"bearer "))?;
    let rest = rest.trim_ascii();
    (!rest.is_empty()).then_some(rest)
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    aud: String,
    iss: String,
    iat: u64,
    exp: u64,
    refresh_by: u64,
}

/// What `plinth service token` returns (Azure's `get_token()`: the token and when to refresh it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Token {
    #[serde(rename = "accessToken")]
    pub access_token: String,
    #[serde(rename = "tokenType")]
    pub token_type: String,
    /// Unix seconds after which the token is refused.
    #[serde(rename = "expiryOn")]
    pub expiry_on: u64,
    /// Unix seconds after which a new token should be fetched.
    #[serde(rename = "refreshAfter")]
    pub refresh_after: u64,
}

/// Issues and checks HS256 tokens scoped to one service (`aud = plinth:<service>`).
pub struct TokenIssuer {
    encoding: EncodingKey,
    decoding: DecodingKey,
    lifetime: Duration,
}

const ISSUER: &str = "plinth";

impl TokenIssuer {
    pub fn new(secret: &[u8], lifetime: Duration) -> Self {
        TokenIssuer {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            lifetime,
        }
    }

    pub fn issue(&self, service: &str) -> Result<Token> {
        let now = now();
        let exp = now + self.lifetime.as_secs().max(1);
        let refresh_by = now + self.lifetime.as_secs() / 2;
        let claims = Claims {
            sub: service.to_string(),
            aud: audience(service),
            iss: ISSUER.into(),
            iat: now,
            exp,
            refresh_by,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| Error::Internal(format!("signing token: {e}")))?;
        Ok(Token {
            access_token: token,
            token_type: "Bearer".into(),
            expiry_on: exp,
            refresh_after: refresh_by,
        })
    }

    /// Checks signature, algorithm (HS256 only, so `alg: none` fails), expiry, issuer and audience.
    pub fn verify(&self, token: &[u8], service: &str) -> Result<()> {
        let token = std::str::from_utf8(token).map_err(|_| Error::Unauthorized("malformed token".into()))?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&[audience(service)]);
        validation.set_issuer(&[ISSUER]);
        validation.leeway = 0;
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .map(|_| ())
            .map_err(|e| Error::Unauthorized(format!("invalid token: {e}")))
    }
}

fn audience(service: &str) -> String {
    format!("plinth:{service}")
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_long_random_and_compared_exactly() {
        let a = generate_key();
        assert_eq!(a.len(), 64);
        assert_ne!(a, generate_key());
        assert!(key_matches(a.as_bytes(), &a));
        assert!(!key_matches(&a.as_bytes()[..63], &a));
        assert!(!key_matches(b"", ""));
    }

    #[test]
    fn tokens_are_scoped_signed_and_expire() {
        let issuer = TokenIssuer::new(b"0123456789abcdef0123456789abcdef", Duration::from_secs(60));
        let t = issuer.issue("svc").unwrap();
        assert!(t.refresh_after < t.expiry_on);
        issuer.verify(t.access_token.as_bytes(), "svc").unwrap();
        assert!(
            issuer.verify(t.access_token.as_bytes(), "other").is_err(),
            "wrong audience"
        );
        let other = TokenIssuer::new(b"another secret, another signature", Duration::from_secs(60));
        assert!(other.verify(t.access_token.as_bytes(), "svc").is_err(), "wrong key");
        // alg: none with the same claims.
        let parts: Vec<&str> = t.access_token.split('.').collect();
        let none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.", parts[1]);
        assert!(issuer.verify(none.as_bytes(), "svc").is_err(), "alg none");
        let expired = TokenIssuer::new(b"0123456789abcdef0123456789abcdef", Duration::from_secs(0));
        let mut claims_token = expired.issue("svc").unwrap();
        claims_token.access_token = {
            let c = Claims {
                sub: "svc".into(),
                aud: audience("svc"),
                iss: ISSUER.into(),
                iat: 1,
                exp: 2,
                refresh_by: 1,
            };
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &c, &issuer.encoding).unwrap()
        };
        assert!(
            issuer.verify(claims_token.access_token.as_bytes(), "svc").is_err(),
            "expired"
        );
    }

    #[test]
    fn bearer_header() {
        let h = http::HeaderValue::from_static("Bearer abc");
        assert_eq!(bearer(Some(&h)), Some(&b"abc"[..]));
        assert_eq!(bearer(Some(&http::HeaderValue::from_static("Basic abc"))), None);
        assert_eq!(bearer(None), None);
    }
}
