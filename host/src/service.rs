//! A running service (an endpoint): its versions, each a loaded package with its own replica slots,
//! the traffic split between them, and the service's credentials. The [`Router`] maps names to
//! services; replacing an entry never disturbs requests already holding the old one.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dashmap::DashMap;
use plinth_runtime::Package;
use plinth_runtime::wasm::CallContext;
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::auth::{TokenIssuer, key_matches};
use crate::split::{Split, effective};
use crate::{Error, Result};

/// Extra time the host waits past `scoring_timeout` before answering 504 itself.
const TIMEOUT_GRACE: Duration = Duration::from_millis(100);

/// Outcomes kept per version for rollback decisions and `plinth endpoint show`.
const OUTCOMES_KEPT: usize = 20_000;

/// Limits of one version.
#[derive(Debug, Clone)]
pub struct VersionConfig {
    /// Replicas; each serves `max_concurrent` requests at once.
    pub replicas: u32,
    pub max_concurrent: u32,
    /// How long a request may wait for a free slot before a 503.
    pub max_queue_wait: Duration,
    /// How long a request may take before a 504.
    pub scoring_timeout: Duration,
}

impl Default for VersionConfig {
    fn default() -> Self {
        VersionConfig {
            replicas: 1,
            max_concurrent: 1,
            max_queue_wait: Duration::from_millis(500),
            scoring_timeout: Duration::from_secs(60),
        }
    }
}

/// One version of a service: a package and the slots that bound it.
pub struct Version {
    name: String,
    package: Arc<Package>,
    config: VersionConfig,
    permits: Arc<Semaphore>,
    stats: Stats,
}

impl std::fmt::Debug for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Version")
            .field("name", &self.name)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Version {
    pub fn new(name: impl Into<String>, package: Arc<Package>, config: VersionConfig) -> Self {
        let slots = (config.replicas.max(1) * config.max_concurrent.max(1)) as usize;
        Version {
            name: name.into(),
            package,
            config,
            permits: Arc::new(Semaphore::new(slots)),
            stats: Stats::default(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn package(&self) -> &Arc<Package> {
        &self.package
    }

    pub fn config(&self) -> &VersionConfig {
        &self.config
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Runs `f` on the package on a blocking thread, holding a replica slot, within the version's limits:
    /// at most `max_queue_wait` for a slot (503), at most `scoring_timeout` for the answer (504).
    pub async fn run<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Package) -> plinth_runtime::Result<T> + Send + 'static,
    {
        let permit = match tokio::time::timeout(self.config.max_queue_wait, self.permits.clone().acquire_owned()).await
        {
            Ok(Ok(p)) => p,
            _ => {
                return Err(Error::Overloaded(format!(
                    "version {}: no free replica within {} ms",
                    self.name,
                    self.config.max_queue_wait.as_millis()
                )));
            }
        };
        self.run_with(permit, f).await
    }

    /// Like [`Version::run`], but only if a slot is free right now (for mirrored copies).
    async fn try_run<T, F>(&self, f: F) -> Option<Result<T>>
    where
        T: Send + 'static,
        F: FnOnce(&Package) -> plinth_runtime::Result<T> + Send + 'static,
    {
        let permit = self.permits.clone().try_acquire_owned().ok()?;
        Some(self.run_with(permit, f).await)
    }

    async fn run_with<T, F>(&self, permit: tokio::sync::OwnedSemaphorePermit, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Package) -> plinth_runtime::Result<T> + Send + 'static,
    {
        let started = Instant::now();
        let package = self.package.clone();
        // The permit moves into the task: after a 504 the replica stays busy until the call really ends.
        let task = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            f(&package)
        });
        // The runtime stops an entry script at the deadline itself and says why; this is the backstop for
        // work that cannot be interrupted (an ONNX Runtime call), a little later so the precise error wins.
        let result = match tokio::time::timeout(self.config.scoring_timeout + TIMEOUT_GRACE, task).await {
            Ok(Ok(result)) => result.map_err(Error::from),
            Ok(Err(join)) => Err(Error::Internal(format!(
                "version {}: scoring task failed: {join}",
                self.name
            ))),
            Err(_) => Err(Error::Timeout(format!(
                "version {}: no answer within scoringTimeoutMs ({} ms)",
                self.name,
                self.config.scoring_timeout.as_millis()
            ))),
        };
        let failed = result.as_ref().err().is_some_and(|e| e.status().is_server_error());
        self.stats.record(started.elapsed(), failed);
        result
    }
}

/// Recent outcomes of a version: latency and whether the host or model failed (5xx).
#[derive(Default)]
pub struct Stats {
    recent: Mutex<VecDeque<(Instant, u32, bool)>>,
    requests: AtomicU64,
    failures: AtomicU64,
}

/// A summary of [`Stats`] over a window.
#[derive(Debug, Clone, Serialize)]
pub struct Window {
    pub requests: usize,
    pub failures: usize,
    pub error_rate: f64,
    pub p99_ms: f64,
}

impl Stats {
    fn record(&self, latency: Duration, failed: bool) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
        let micros = latency.as_micros().min(u32::MAX as u128) as u32;
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if recent.len() == OUTCOMES_KEPT {
            recent.pop_front();
        }
        recent.push_back((Instant::now(), micros, failed));
    }

    /// Totals since the version started: (requests, failures).
    pub fn totals(&self) -> (u64, u64) {
        (
            self.requests.load(Ordering::Relaxed),
            self.failures.load(Ordering::Relaxed),
        )
    }

    /// Requests that ended within the last `window`.
    pub fn window(&self, window: Duration) -> Window {
        let since = Instant::now().checked_sub(window);
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        let mut latencies: Vec<u32> = Vec::new();
        let mut failures = 0;
        for &(at, micros, failed) in recent.iter().rev() {
            if since.is_some_and(|s| at < s) {
                break;
            }
            latencies.push(micros);
            failures += failed as usize;
        }
        drop(recent);
        let requests = latencies.len();
        latencies.sort_unstable();
        let p99 = if requests == 0 {
            0.0
        } else {
            latencies[(requests * 99 / 100).min(requests - 1)] as f64 / 1000.0
        };
        let error_rate = if requests == 0 {
            0.0
        } else {
            failures as f64 / requests as f64
        };
        Window {
            requests,
            failures,
            error_rate,
            p99_ms: p99,
        }
    }
}

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

/// Credentials of a service.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    pub auth_enabled: bool,
    pub token_auth_enabled: bool,
    pub primary_key: String,
    pub secondary_key: String,
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
    auth: Auth,
    keys: RwLock<(String, String)>,
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
            },
        );
        let auth = Auth {
            auth_enabled: config.auth_enabled,
            token_auth_enabled: config.token_auth_enabled,
            primary_key: config.primary_key,
            secondary_key: config.secondary_key,
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
        let keys = RwLock::new((auth.primary_key.clone(), auth.secondary_key.clone()));
        Ok(Service {
            name: name.into(),
            auth,
            keys,
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
        self.versions.iter().find(|v| v.name == name).ok_or_else(|| {
            let known: Vec<&str> = self.versions.iter().map(|v| v.name.as_str()).collect();
            Error::NotFound(format!(
                "service {} has no version {name} (versions: {})",
                self.name,
                known.join(", ")
            ))
        })
    }

    /// Replaces the keys; nothing restarts.
    pub fn set_keys(&self, primary: String, secondary: String) {
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = (primary, secondary);
    }

    /// Checks a bearer credential: a service key, a token for this service, or the host's admin token.
    pub fn authorize(&self, bearer: Option<&[u8]>, tokens: Option<&TokenIssuer>, admin: Option<&str>) -> Result<()> {
        if !self.auth.auth_enabled && !self.auth.token_auth_enabled {
            return Ok(());
        }
        let Some(given) = bearer else {
            return Err(Error::Unauthorized(format!(
                "service {} needs an 'Authorization: Bearer <key or token>' header",
                self.name
            )));
        };
        if let Some(admin) = admin
            && key_matches(given, admin)
        {
            return Ok(());
        }
        if self.auth.auth_enabled {
            let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
            // Both comparisons always run, so timing does not tell which key matched.
            let primary = key_matches(given, &keys.0);
            let secondary = key_matches(given, &keys.1);
            if primary | secondary {
                return Ok(());
            }
        }
        if self.auth.token_auth_enabled
            && let Some(tokens) = tokens
        {
            return tokens
                .verify(given, &self.name)
                .map_err(|e| Error::Unauthorized(format!("invalid credentials for service {}: {e}", self.name)));
        }
        Err(Error::Unauthorized(format!(
            "invalid credentials for service {}",
            self.name
        )))
    }

    /// The version for a request (`pinned` by name, or by the split), and starts mirrored copies.
    pub fn route(&self, pinned: Option<&str>, body: &Bytes, ctx: &CallContext) -> Result<Arc<Version>> {
        if let Some(name) = pinned {
            return self.version(name).cloned();
        }
        let (serving, copies) = self.split.next();
        for i in copies {
            let mirror = self.versions[i].clone();
            let body = body.clone();
            let ctx = ctx.clone();
            // Fire and forget: a copy runs only on a free slot of its own version and its answer is dropped.
            tokio::spawn(async move {
                let _ = mirror.try_run(move |p| p.score(&body, &ctx)).await;
            });
        }
        Ok(self.versions[serving].clone())
    }

    /// Scores one request body on the version the split (or `pinned`) picks; returns that version too.
    pub async fn score(
        &self,
        body: Bytes,
        ctx: CallContext,
        pinned: Option<&str>,
    ) -> (Option<Arc<Version>>, Result<Vec<u8>>) {
        let version = match self.route(pinned, &body, &ctx) {
            Ok(v) => v,
            Err(e) => return (None, Err(e)),
        };
        let result = version.run(move |package| package.score(&body, &ctx)).await;
        (Some(version), result)
    }
}

/// Services by name. Reads are lock-free snapshots per entry; a deploy swaps in a new `Arc<Service>`.
#[derive(Default)]
pub struct Router {
    services: DashMap<String, Arc<Service>>,
}

impl Router {
    pub fn new() -> Self {
        Router::default()
    }

    /// Adds or replaces a service; returns the one it replaced.
    pub fn insert(&self, service: Service) -> Option<Arc<Service>> {
        self.services.insert(service.name.clone(), Arc::new(service))
    }

    pub fn get(&self, name: &str) -> Option<Arc<Service>> {
        self.services.get(name).map(|s| s.value().clone())
    }

    pub fn remove(&self, name: &str) -> Option<Arc<Service>> {
        self.services.remove(name).map(|(_, s)| s)
    }

    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.services.iter().map(|e| e.key().clone()).collect();
        names.sort();
        names
    }
}
