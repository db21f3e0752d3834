//! Where each version's latest deployment stands, as the deployments actor keeps it.

use crate::api::DeployState;

/// Where one version's latest deployment stands.
#[derive(Debug, Clone)]
pub(crate) struct Deployment {
    pub(crate) state: DeployState,
    pub(crate) error: Option<String>,
    pub(crate) generation: u64,
    /// Configuration fields accepted but without effect here.
    pub(crate) ignored: Vec<String>,
}

/// The key of a version's deployment: `service/version`.
pub(crate) fn state_key(service: &str, version: &str) -> String {
    format!("{service}/{version}")
}
