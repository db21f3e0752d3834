//! Where every credential is checked: service keys (primary and secondary, compared in constant time,
//! replaced live), service tokens (HS256 JWTs scoped to one service) and the host's admin token.
//! Nothing else in the router compares a credential.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::time::unix_seconds;
use crate::{Error, Result};

pub use plinth_spec::record::generate_key;

/// Whether `given` equals `key`, in time that depends only on the lengths.
fn key_matches(given: &[u8], key: &str) -> bool {
    !key.is_empty() && given.ct_eq(key.as_bytes()).into()
}

/// The token from an `Authorization: Bearer <token>` header value.
pub fn bearer(header: Option<&http::HeaderValue>) -> Option<&[u8]> {
    let v = header?.as_bytes();
    let rest = v.strip_prefix(b"Bearer ").or_else(|| v.strip_prefix(b"bearer "))?;
    let rest = rest.trim_ascii();
    (!rest.is_empty()).then_some(rest)
}

/// How a service is reached: which kinds of credential it takes, and its keys (replaced live).
#[derive(Debug, Clone, Default)]
pub struct Auth {
    /// Key auth: `Authorization: Bearer <primary or secondary key>`.
    pub auth_enabled: bool,
    /// Token auth: `Authorization: Bearer <JWT from plinth service token>`.
    pub token_auth_enabled: bool,
    pub primary_key: String,
    pub secondary_key: String,
    /// The service's own part of its token key: replacing it revokes every token issued before.
    pub token_secret: String,
}

/// A service's credentials as requests see them: a snapshot swapped whole.
#[derive(Debug)]
pub(crate) struct ServiceCredentials {
    auth_enabled: bool,
    token_auth_enabled: bool,
    secrets: ArcSwap<Secrets>,
}

#[derive(Debug)]
struct Secrets {
    primary: String,
    secondary: String,
    token: String,
}

impl ServiceCredentials {
    pub(crate) fn new(auth: Auth) -> Self {
        ServiceCredentials {
            auth_enabled: auth.auth_enabled,
            token_auth_enabled: auth.token_auth_enabled,
            secrets: ArcSwap::from_pointee(Secrets {
                primary: auth.primary_key,
                secondary: auth.secondary_key,
                token: auth.token_secret,
            }),
        }
    }

    pub(crate) fn set(&self, primary: String, secondary: String, token: String) {
        self.secrets.store(Arc::new(Secrets {
            primary,
            secondary,
            token,
        }));
    }
}

/// The host's own credentials: the admin token (admin API, `/metrics`, and every service) and the
/// issuer that checks service tokens. An embedder without them serves services by their keys alone.
#[derive(Default)]
pub struct HostAuth {
    admin_token: Option<String>,
    tokens: Option<Arc<TokenIssuer>>,
}

impl std::fmt::Debug for HostAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostAuth")
            .field("admin_token", &self.admin_token.as_ref().map(|_| "…"))
            .finish_non_exhaustive()
    }
}

impl HostAuth {
    pub fn new(admin_token: Option<String>, tokens: Option<Arc<TokenIssuer>>) -> Self {
        HostAuth { admin_token, tokens }
    }

    fn is_admin(&self, given: &[u8]) -> bool {
        self.admin_token
            .as_deref()
            .is_some_and(|admin| key_matches(given, admin))
    }

    /// Checks the admin token for `what` (a route family, named in the error). Without an admin token
    /// (an embedder's host) nothing is admin.
    pub fn authorize_admin(&self, header: Option<&http::HeaderValue>, what: &str) -> Result<()> {
        match bearer(header) {
            Some(given) if self.is_admin(given) => Ok(()),
            None => Err(Error::Unauthorized(format!(
                "{what} needs 'Authorization: Bearer <admin token>' (the workspace's admin-token file)"
            ))),
            Some(_) => Err(Error::Unauthorized(format!(
                "{what}: the admin token does not match this host's (the CLI reads it from the workspace: \
                 check PLINTH_WORKSPACE or --workspace)"
            ))),
        }
    }

    /// Whether `header` carries the admin token.
    pub(crate) fn is_admin_header(&self, header: Option<&http::HeaderValue>) -> bool {
        bearer(header).is_some_and(|given| self.is_admin(given))
    }

    /// Whether `/metrics` may be read: open when the host has no admin token, else with it.
    pub fn authorize_metrics(&self, header: Option<&http::HeaderValue>) -> Result<()> {
        if self.admin_token.is_none() {
            return Ok(());
        }
        self.authorize_admin(header, "/metrics (or plinth serve --open-metrics)")
    }

    /// Checks a bearer credential for `service`: one of its keys, a token for it, or the admin token.
    pub(crate) fn authorize_service(
        &self,
        service: &str,
        credentials: &ServiceCredentials,
        header: Option<&http::HeaderValue>,
    ) -> Result<()> {
        if !credentials.auth_enabled && !credentials.token_auth_enabled {
            return Ok(());
        }
        let Some(given) = bearer(header) else {
            return Err(Error::Unauthorized(format!(
                "service {service} needs an 'Authorization: Bearer <key or token>' header"
            )));
        };
        if self.is_admin(given) {
            return Ok(());
        }
        let secrets = credentials.secrets.load();
        if credentials.auth_enabled {
            // Both comparisons always run, so timing does not tell which key matched.
            let primary = key_matches(given, &secrets.primary);
            let secondary = key_matches(given, &secrets.secondary);
            if primary | secondary {
                return Ok(());
            }
        }
        if credentials.token_auth_enabled
            && let Some(tokens) = &self.tokens
        {
            return tokens
                .verify(given, service, &secrets.token)
                .map_err(|e| Error::Unauthorized(format!("invalid credentials for service {service}: {e}")));
        }
        Err(Error::Unauthorized(format!(
            "invalid credentials for service {service}"
        )))
    }
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

/// Issues and checks HS256 tokens scoped to one service (`aud = plinth:<service>`), signed with the
/// host's secret and the service's own token secret together: a new service secret (key rotation, or a
/// service deleted and created again) revokes every token issued before it.
pub struct TokenIssuer {
    secret: Vec<u8>,
    lifetime: Duration,
}

const ISSUER: &str = "plinth";
/// How far ahead of this host's clock another host's `iat` may be (hosts of one service share keys).
const CLOCK_SKEW_SECS: u64 = 60;

impl TokenIssuer {
    pub fn new(secret: &[u8], lifetime: Duration) -> Self {
        TokenIssuer {
            secret: secret.to_vec(),
            lifetime,
        }
    }

    /// The HMAC key of one service's tokens.
    fn key(&self, service_secret: &str) -> Vec<u8> {
        let mut key = Vec::with_capacity(self.secret.len() + 1 + service_secret.len());
        key.extend_from_slice(&self.secret);
        key.push(b':');
        key.extend_from_slice(service_secret.as_bytes());
        key
    }

    /// A token for `service`, whose own token secret is `service_secret`.
    pub fn issue(&self, service: &str, service_secret: &str) -> Result<Token> {
        let now = unix_seconds();
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
        let encoding = EncodingKey::from_secret(&self.key(service_secret));
        let token =
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &encoding).map_err(|e| Error::Backend {
                what: "signing a token".into(),
                source: Box::new(e),
            })?;
        Ok(Token {
            access_token: token,
            token_type: "Bearer".into(),
            expiry_on: exp,
            refresh_after: refresh_by,
        })
    }

    /// Checks signature, algorithm (HS256 only, so `alg: none` fails), expiry, issuer and audience, and
    /// that the token lives no longer than this host issues them for (`exp - iat` at most the lifetime, `iat`
    /// not in the future): a token signed with a far expiry is refused even with the right key.
    pub fn verify(&self, token: &[u8], service: &str, service_secret: &str) -> Result<()> {
        let token = std::str::from_utf8(token).map_err(|_| Error::Unauthorized("malformed token".into()))?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&[audience(service)]);
        validation.set_issuer(&[ISSUER]);
        validation.leeway = 0;
        let decoding = DecodingKey::from_secret(&self.key(service_secret));
        let claims = jsonwebtoken::decode::<Claims>(token, &decoding, &validation)
            .map_err(|e| Error::Unauthorized(format!("invalid token: {}", token_problem(e.kind()))))?
            .claims;
        let lifetime = self.lifetime.as_secs().max(1);
        if claims.exp.saturating_sub(claims.iat) > lifetime {
            return Err(Error::Unauthorized(format!(
                "invalid token: it lives longer than this host's tokens do ({lifetime} s); fetch a new one (plinth service token)"
            )));
        }
        if claims.iat > unix_seconds() + CLOCK_SKEW_SECS {
            return Err(Error::Unauthorized("invalid token: it is not valid yet".into()));
        }
        Ok(())
    }
}

/// What is wrong with a token, in the user's words rather than the JWT library's.
fn token_problem(kind: &jsonwebtoken::errors::ErrorKind) -> &'static str {
    use jsonwebtoken::errors::ErrorKind as K;
    match kind {
        K::ExpiredSignature => "it has expired; fetch a new one (plinth service token)",
        K::ImmatureSignature => "it is not valid yet",
        K::InvalidAudience => "it was issued for another service",
        K::InvalidIssuer => "it was not issued by a Plinth host",
        K::InvalidSignature => "its signature does not match this host's key",
        K::InvalidAlgorithm | K::InvalidAlgorithmName | K::UnsupportedAlgorithm | K::MissingAlgorithm => {
            "it must be signed with HS256"
        }
        K::MissingRequiredClaim(_) | K::InvalidClaimFormat(_) => "it lacks the claims a Plinth token carries",
        _ => "it is not a well-formed token",
    }
}

fn audience(service: &str) -> String {
    format!("plinth:{service}")
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
        let t = issuer.issue("svc", "s1").unwrap();
        assert!(t.refresh_after < t.expiry_on);
        let verify = |token: &str, service: &str, secret: &str| issuer.verify(token.as_bytes(), service, secret);
        verify(&t.access_token, "svc", "s1").unwrap();
        let said = |r: Result<()>| r.unwrap_err().to_string();
        assert_eq!(
            said(verify(&t.access_token, "other", "s1")),
            "invalid token: it was issued for another service"
        );
        // The service's token secret rotated (or the service was created again): revoked.
        assert_eq!(
            said(verify(&t.access_token, "svc", "s2")),
            "invalid token: its signature does not match this host's key"
        );
        let other = TokenIssuer::new(b"another secret, another signature", Duration::from_secs(60));
        assert!(
            other.verify(t.access_token.as_bytes(), "svc", "s1").is_err(),
            "wrong host key"
        );
        // alg: none with the same claims.
        let parts: Vec<&str> = t.access_token.split('.').collect();
        let none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.", parts[1]);
        // (The JWT library cannot even parse `none`: no library internals reach the caller.)
        assert_eq!(
            said(verify(&none, "svc", "s1")),
            "invalid token: it is not a well-formed token"
        );
        assert_eq!(
            said(verify("not.a.token", "svc", "s1")),
            "invalid token: it is not a well-formed token"
        );
        let c = Claims {
            sub: "svc".into(),
            aud: audience("svc"),
            iss: ISSUER.into(),
            iat: 1,
            exp: 2,
            refresh_by: 1,
        };
        let key = EncodingKey::from_secret(&issuer.key("s1"));
        let expired = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &c, &key).unwrap();
        assert!(said(verify(&expired, "svc", "s1")).contains("expired"));
        // Signed with the right key, but for longer than the host's lifetime (or from the future).
        let now = unix_seconds();
        let sign = |iat: u64, exp: u64| {
            let c = Claims {
                iat,
                exp,
                ..Claims {
                    sub: "svc".into(),
                    aud: audience("svc"),
                    iss: ISSUER.into(),
                    iat: 0,
                    exp: 0,
                    refresh_by: 0,
                }
            };
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &c, &key).unwrap()
        };
        assert!(said(verify(&sign(now, 32_503_680_000), "svc", "s1")).contains("lives longer"));
        assert!(said(verify(&sign(now + 3600, now + 3620), "svc", "s1")).contains("not valid yet"));
        verify(&sign(now - 10, now + 50), "svc", "s1").unwrap();
    }

    #[test]
    fn bearer_header() {
        let h = http::HeaderValue::from_static("Bearer abc");
        assert_eq!(bearer(Some(&h)), Some(&b"abc"[..]));
        assert_eq!(bearer(Some(&http::HeaderValue::from_static("Basic abc"))), None);
        assert_eq!(bearer(None), None);
    }
}
