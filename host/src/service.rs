//! A running service: its loaded package, credentials and concurrency limits. The [`Router`] maps
//! names to services; replacing an entry never disturbs requests already holding the old one.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use plinth_runtime::Package;
use plinth_runtime::wasm::CallContext;
use tokio::sync::Semaphore;

use crate::auth::{TokenIssuer, key_matches};
use crate::{Error, Result};

/// Extra time the host waits past `scoring_timeout` before answering 504 itself.
const TIMEOUT_GRACE: Duration = Duration::from_millis(100);

/// How a service is reached and bounded.
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
    /// How long a request may wait for a free slot before a 503.
    pub max_queue_wait: Duration,
    /// How long a request may take before a 504.
    pub scoring_timeout: Duration,
    /// The version name the Open Inference Protocol reports (`/v2/models/{name}/versions/{version}`).
    pub version: String,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            auth_enabled: false,
            token_auth_enabled: false,
            primary_key: String::new(),
            secondary_key: String::new(),
            replicas: 1,
            max_concurrent: 1,
            max_queue_wait: Duration::from_millis(500),
            scoring_timeout: Duration::from_secs(60),
            version: "1".into(),
        }
    }
}

struct Keys {
    primary: String,
    secondary: String,
}

pub struct Service {
    name: String,
    package: Arc<Package>,
    config: ServiceConfig,
    keys: RwLock<Keys>,
    permits: Arc<Semaphore>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("name", &self.name)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Service {
    pub fn new(name: impl Into<String>, package: Arc<Package>, config: ServiceConfig) -> Self {
        let slots = (config.replicas.max(1) * config.max_concurrent.max(1)) as usize;
        let keys = Keys {
            primary: config.primary_key.clone(),
            secondary: config.secondary_key.clone(),
        };
        Service {
            name: name.into(),
            package,
            config,
            keys: RwLock::new(keys),
            permits: Arc::new(Semaphore::new(slots)),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn package(&self) -> &Arc<Package> {
        &self.package
    }

    pub fn config(&self) -> &ServiceConfig {
        &self.config
    }

    /// Replaces one key; the other keeps working, and nothing restarts.
    pub fn set_keys(&self, primary: String, secondary: String) {
        let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
        *keys = Keys { primary, secondary };
    }

    /// Checks a bearer credential: a service key, a token for this service, or the host's admin token.
    pub fn authorize(&self, bearer: Option<&[u8]>, tokens: Option<&TokenIssuer>, admin: Option<&str>) -> Result<()> {
        if !self.config.auth_enabled && !self.config.token_auth_enabled {
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
        if self.config.auth_enabled {
            let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
            // Both comparisons always run, so timing does not tell which key matched.
            let primary = key_matches(given, &keys.primary);
            let secondary = key_matches(given, &keys.secondary);
            if primary | secondary {
                return Ok(());
            }
        }
        if self.config.token_auth_enabled
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

    /// Scores one request body: waits at most `max_queue_wait` for a free slot, then at most
    /// `scoring_timeout` for the answer.
    pub async fn score(&self, body: Bytes, ctx: CallContext) -> Result<Vec<u8>> {
        self.run(move |package| package.score(&body, &ctx)).await
    }

    /// Runs `f` on the package on a blocking thread, holding a replica slot, within the service's limits.
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
                    "service {}: no free replica within {} ms",
                    self.name,
                    self.config.max_queue_wait.as_millis()
                )));
            }
        };
        let package = self.package.clone();
        // The permit moves into the task: after a 504 the replica stays busy until the call really ends.
        let task = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            f(&package)
        });
        // The runtime stops an entry script at the deadline itself and says why; this is the backstop for
        // work that cannot be interrupted (an ONNX Runtime call), a little later so the precise error wins.
        match tokio::time::timeout(self.config.scoring_timeout + TIMEOUT_GRACE, task).await {
            Ok(Ok(result)) => result.map_err(Error::from),
            Ok(Err(join)) => Err(Error::Internal(format!(
                "service {}: scoring task failed: {join}",
                self.name
            ))),
            Err(_) => Err(Error::Timeout(format!(
                "service {}: no answer within scoringTimeoutMs ({} ms)",
                self.name,
                self.config.scoring_timeout.as_millis()
            ))),
        }
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
