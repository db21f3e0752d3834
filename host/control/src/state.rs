//! Where each version's latest deployment stands, as the deployments actor keeps it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::api::DeployState;
use plinth_spec::record::VersionRecord;

/// Where one version's latest deployment stands.
#[derive(Debug, Clone)]
pub(crate) struct Deployment {
    pub(crate) state: DeployState,
    pub(crate) error: Option<String>,
    pub(crate) generation: u64,
    /// Configuration fields accepted but without effect here.
    pub(crate) ignored: Vec<String>,
    /// The content this version served before this deployment, while it still serves it: what the
    /// record goes back to if the deployment fails.
    pub(crate) previous: Option<VersionRecord>,
    /// This deployment failed and the version still serves its previous deployment.
    pub(crate) serving_previous: bool,
    /// Raised when the version is deleted, so that an `init()` still running in any of its instances
    /// stops (the flag passes from one deployment of the version to the next).
    pub(crate) stop: Arc<AtomicBool>,
}

impl Deployment {
    /// The version is deleted: its loads stop.
    pub(crate) fn let_go(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The key of a version's deployment: `service/version`.
pub(crate) fn state_key(service: &str, version: &str) -> String {
    format!("{service}/{version}")
}
