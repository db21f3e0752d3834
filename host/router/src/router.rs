//! The services a host serves, by name.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::service::Service;

/// Services by name. A request reads a snapshot without taking a lock; a deploy builds the next map and
/// swaps it in, so requests already holding an `Arc<Service>` are never disturbed.
#[derive(Default)]
pub struct Router {
    services: ArcSwap<HashMap<String, Arc<Service>>>,
    /// Serialises writers (each copies the map).
    write: Mutex<()>,
}

impl Router {
    pub fn new() -> Self {
        Router::default()
    }

    fn update<T>(&self, f: impl FnOnce(&mut HashMap<String, Arc<Service>>) -> T) -> T {
        let _one_writer = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = HashMap::clone(&self.services.load());
        let out = f(&mut next);
        self.services.store(Arc::new(next));
        out
    }

    /// Adds or replaces a service; returns the one it replaced.
    pub fn insert(&self, service: Service) -> Option<Arc<Service>> {
        self.update(|m| m.insert(service.name().to_string(), Arc::new(service)))
    }

    pub fn get(&self, name: &str) -> Option<Arc<Service>> {
        self.services.load().get(name).cloned()
    }

    pub fn remove(&self, name: &str) -> Option<Arc<Service>> {
        self.update(|m| m.remove(name))
    }

    /// Whether at least one service would let a request with `header` in (an open service lets any in).
    pub fn admits_any(&self, auth: &crate::auth::HostAuth, header: Option<&http::HeaderValue>) -> bool {
        auth.is_admin_header(header) || self.services.load().values().any(|s| s.authorize(auth, header).is_ok())
    }

    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.services.load().keys().cloned().collect();
        names.sort();
        names
    }
}
