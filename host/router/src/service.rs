//! A service (an endpoint): its versions, the traffic split between them, and its credentials.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use plinth_runtime::wasm::CallContext;
use plinth_runtime::{Package, Tensor};

use crate::auth::{Auth, HostAuth, ServiceCredentials};
use crate::split::{Split, effective};
use crate::version::{Version, VersionConfig};
use crate::{Error, Result};

/// How a service is reached; the version settings apply to the single version `Service::new` makes.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Key auth: `Authorization: Bearer <primary or secondary key>`.
    pub auth_enabled: bool,
    /// Token auth: `Authorization: Bearer <JWT from plinth service token>`.
    pub token_auth_enabled: bool,
    pub primary_key: String,
    pub secondary_key: String,
    /// Replicas; each serves `max_concurrent` requests at once.
    pub replicas: u32,
    pub max_concurrent: u32,
    pub max_queue_wait: Duration,
    pub scoring_timeout: Duration,
    /// The version's name (`/v2/models/{name}/versions/{version}`, `x-plinth-version`).
    pub version: String,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        let v = VersionConfig::default();
        ServiceConfig {
            auth_enabled: false,
            token_auth_enabled: false,
            primary_key: String::new(),
            secondary_key: String::new(),
            replicas: v.replicas,
            max_concurrent: v.max_concurrent,
            max_queue_wait: v.max_queue_wait,
            scoring_timeout: v.scoring_timeout,
            version: "1".into(),
        }
    }
}

/// A version in a service's split.
pub struct Routed {
    pub version: Arc<Version>,
    /// Percent of traffic the version claims (the default also gets what nobody claims).
    pub traffic: u32,
    /// Percent of traffic copied to this version; its answers are recorded, never returned.
    pub mirror: u32,
}

pub struct Service {
    name: String,
    credentials: ServiceCredentials,
    versions: Vec<Arc<Version>>,
    weights: Vec<u32>,
    default: usize,
    split: Split,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("name", &self.name)
            .field("versions", &self.versions)
            .finish_non_exhaustive()
    }
}

impl Service {
    /// A service with one version.
    pub fn new(name: impl Into<String>, package: Arc<Package>, config: ServiceConfig) -> Self {
        let version = Version::new(
            config.version.clone(),
            package,
            VersionConfig {
                replicas: config.replicas,
                max_concurrent: config.max_concurrent,
                max_queue_wait: config.max_queue_wait,
                scoring_timeout: config.scoring_timeout,
                ..VersionConfig::default()
            },
        );
        let auth = Auth {
            auth_enabled: config.auth_enabled,
            token_auth_enabled: config.token_auth_enabled,
            primary_key: config.primary_key,
            secondary_key: config.secondary_key,
            token_secret: String::new(),
        };
        let routed = vec![Routed {
            version: Arc::new(version),
            traffic: 100,
            mirror: 0,
        }];
        Service::with_versions(name, auth, routed, 0).expect("a single version always splits")
    }

    /// A service over several versions; `default` (an index into `versions`) gets what nobody claims.
    pub fn with_versions(name: impl Into<String>, auth: Auth, versions: Vec<Routed>, default: usize) -> Result<Self> {
        let claims: Vec<u32> = versions.iter().map(|r| r.traffic).collect();
        let weights = effective(&claims, default).map_err(Error::BadRequest)?;
        let mirrors = versions
            .iter()
            .enumerate()
            .filter(|(_, r)| r.mirror > 0)
            .map(|(i, r)| (i, r.mirror))
            .collect();
        Ok(Service {
            name: name.into(),
            credentials: ServiceCredentials::new(auth),
            versions: versions.into_iter().map(|r| r.version).collect(),
            split: Split::new(&weights, mirrors),
            weights,
            default,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn versions(&self) -> &[Arc<Version>] {
        &self.versions
    }

    /// Effective traffic percentages, by version.
    pub fn weights(&self) -> &[u32] {
        &self.weights
    }

    pub fn default_version(&self) -> &Arc<Version> {
        &self.versions[self.default]
    }

    pub fn version(&self, name: &str) -> Result<&Arc<Version>> {
        self.versions.iter().find(|v| v.name() == name).ok_or_else(|| {
            let known: Vec<&str> = self.versions.iter().map(|v| v.name()).collect();
            Error::NotFound(format!(
                "service {} has no version {name} (versions: {})",
                self.name,
                known.join(", ")
            ))
        })
    }

    /// Replaces the keys and the token secret; nothing restarts, requests already checked finish.
    pub fn set_credentials(&self, primary: String, secondary: String, token_secret: String) {
        self.credentials.set(primary, secondary, token_secret);
    }

    /// Checks a request's `Authorization` header against this service (see [`HostAuth`]).
    pub fn authorize(&self, host: &HostAuth, header: Option<&http::HeaderValue>) -> Result<()> {
        host.authorize_service(&self.name, &self.credentials, header)
    }

    /// The version for a request (`pinned` by name, or by the split), and the versions that get a copy of
    /// it (see [`Service::mirror`]). No copies for a pinned request.
    pub fn route(&self, pinned: Option<&str>) -> Result<(&Arc<Version>, Vec<Arc<Version>>)> {
        if let Some(name) = pinned {
            return Ok((self.version(name)?, Vec::new()));
        }
        let (serving, copies) = self.split.next();
        let copies = copies.map(|i| self.versions[i].clone()).collect();
        Ok((&self.versions[serving], copies))
    }

    /// Sends copies of a request to mirror versions. Fire and forget: a copy runs only on a free slot of
    /// its own version and its answer is dropped (the version's statistics count it).
    pub fn mirror(copies: Vec<Arc<Version>>, request: &Mirrored<'_>, ctx: &CallContext) {
        let mut script_body: Option<Bytes> = None;
        for mirror in copies {
            let ctx = ctx.clone();
            match request {
                Mirrored::Tensors { inputs, .. } if !mirror.info().has_script => {
                    let inputs = inputs.to_vec();
                    tokio::spawn(async move {
                        let _ = mirror.try_infer(inputs).await;
                    });
                }
                _ => {
                    let body = match request {
                        Mirrored::Body(body) => Bytes::clone(body),
                        Mirrored::Tensors { script_body: make, .. } => script_body.get_or_insert_with(make).clone(),
                    };
                    tokio::spawn(async move {
                        let _ = mirror.try_run(move |p| p.score(&body, &ctx)).await;
                    });
                }
            }
        }
    }
}

/// What a mirrored copy of a request carries.
pub enum Mirrored<'a> {
    /// A `/score` body, as the client sent it.
    Body(&'a Bytes),
    /// Decoded tensors (an inference-protocol request) for a model, and the JSON an entry script reads
    /// instead, made at most once.
    Tensors {
        inputs: &'a [Tensor],
        script_body: &'a dyn Fn() -> Bytes,
    },
}
