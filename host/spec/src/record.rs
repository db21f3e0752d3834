//! What a service is made of, as a host stores it and a package carries it: models and their files,
//! services (endpoints) with their versions, and Azure's rules for an endpoint. Names and paths are
//! checked here, once, for every place that takes them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::{DeploymentConfig, InferenceConfig};
use crate::time::unix_seconds as now;
use crate::{Error, Result};

/// A file of a model or a source folder: where it goes and what it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRef {
    /// Relative path with `/` separators.
    pub path: String,
    pub sha256: String,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelRecord {
    pub name: String,
    pub version: u32,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    pub files: Vec<FileRef>,
    pub created: u64,
}

impl ModelRecord {
    pub fn id(&self) -> String {
        format!("{}:{}", self.name, self.version)
    }
}

/// A service (an endpoint) as stored: its versions, credentials and rollout events.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceRecord {
    pub name: String,
    pub versions: Vec<VersionRecord>,
    pub auth_enabled: bool,
    pub token_auth_enabled: bool,
    pub primary_key: String,
    pub secondary_key: String,
    /// The service's part of its token signing key (see `plinth_router::TokenIssuer`); a new one revokes
    /// every token issued before. Records from before it existed have none until it is rotated.
    #[serde(default)]
    pub token_secret: String,
    pub created: u64,
    pub updated: u64,
    /// Rollout events (automatic rollbacks), newest last.
    #[serde(default)]
    pub events: Vec<String>,
}

impl ServiceRecord {
    pub fn version(&self, name: &str) -> Result<&VersionRecord> {
        self.versions
            .iter()
            .find(|v| v.name == name)
            .ok_or_else(|| Error::NotFound(format!("service {} has no version {name}", self.name)))
    }

    pub fn version_mut(&mut self, name: &str) -> Result<&mut VersionRecord> {
        let service = self.name.clone();
        self.versions
            .iter_mut()
            .find(|v| v.name == name)
            .ok_or_else(|| Error::NotFound(format!("service {service} has no version {name}")))
    }

    /// Azure's rules for an endpoint: at most six versions, exactly one default, at most one control,
    /// and claimed traffic adding up to at most 100%.
    pub fn validate(&self) -> Result<()> {
        if self.versions.is_empty() {
            return Err(Error::Invalid(format!("service {} has no version", self.name)));
        }
        if self.versions.len() > MAX_VERSIONS {
            return Err(Error::Invalid(format!(
                "an endpoint holds at most {MAX_VERSIONS} versions"
            )));
        }
        let defaults = self.versions.iter().filter(|v| v.is_default).count();
        if defaults != 1 {
            return Err(Error::Invalid(format!(
                "an endpoint needs exactly one default version, {} has {defaults}",
                self.name
            )));
        }
        if self.versions.iter().filter(|v| v.control).count() > 1 {
            return Err(Error::Invalid("an endpoint has at most one control version".into()));
        }
        for v in &self.versions {
            if v.traffic > 100 || v.mirror > 100 {
                return Err(Error::Invalid(format!(
                    "version {}: percentages must be 0..100",
                    v.name
                )));
            }
        }
        let total: u32 = self.versions.iter().map(|v| v.traffic).sum();
        if total > 100 {
            let parts: Vec<String> = self
                .versions
                .iter()
                .map(|v| format!("{} {}%", v.name, v.traffic))
                .collect();
            return Err(Error::Invalid(format!(
                "traffic adds up to {total}% ({}), more than 100%",
                parts.join(", ")
            )));
        }
        Ok(())
    }
}

/// At most this many versions per endpoint (as Azure ML allows).
pub const MAX_VERSIONS: usize = 6;

/// One version of a service: what it runs and how much traffic it takes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VersionRecord {
    pub name: String,
    /// `name:version` of each model.
    pub models: Vec<String>,
    pub inference_config: InferenceConfig,
    pub deployment_config: DeploymentConfig,
    /// The packed source folder (or just the entry script).
    pub source: Vec<FileRef>,
    /// The entry script's path inside `source`.
    pub entry_script: Option<String>,
    /// Percent of traffic claimed; the default version also gets what nobody claims.
    pub traffic: u32,
    pub is_default: bool,
    /// A control version (at most one per endpoint); otherwise a treatment.
    #[serde(default)]
    pub control: bool,
    /// Percent of traffic copied to this version; its answers are never returned.
    #[serde(default)]
    pub mirror: u32,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default)]
    pub rollback: Option<RollbackPolicy>,
    pub created: u64,
    pub updated: u64,
}

impl VersionRecord {
    /// A new version of this content: the default, claiming all traffic, no settings yet.
    pub fn new(
        name: &str,
        models: Vec<String>,
        inference_config: InferenceConfig,
        deployment_config: DeploymentConfig,
        source: Vec<FileRef>,
        entry_script: Option<String>,
    ) -> Self {
        VersionRecord {
            name: name.to_string(),
            models,
            inference_config,
            deployment_config,
            source,
            entry_script,
            traffic: 100,
            is_default: true,
            control: false,
            mirror: 0,
            description: None,
            tags: BTreeMap::new(),
            rollback: None,
            created: now(),
            updated: now(),
        }
    }
}

/// When a treatment's traffic is automatically set to 0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackPolicy {
    /// Roll back when the share of failed (5xx) requests in the window is above this (0..1).
    #[serde(default)]
    pub max_error_rate: Option<f64>,
    /// Roll back when the window's p99 latency is above this many milliseconds.
    #[serde(default)]
    pub max_p99_ms: Option<f64>,
    /// The window, in seconds. Default 60.
    #[serde(default = "default_window")]
    pub window_secs: u64,
    /// No decision on fewer requests than this in the window. Default 20.
    #[serde(default = "default_min_requests")]
    pub min_requests: usize,
}

fn default_window() -> u64 {
    60
}

fn default_min_requests() -> usize {
    20
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A new random key: 32 bytes from the operating system, as 64 hex digits. Service keys, the admin
/// token and token secrets are made this way.
pub fn generate_key() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system's random source failed");
    hex(&bytes)
}

/// Names of models and services: letters, digits, `-`, `_`, `.`; 1..=64 characters; a letter or digit first.
pub fn check_name(what: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "{what} name '{name}' is invalid: use 1 to 64 letters, digits, '-', '_' or '.', starting with a letter or digit"
        )))
    }
}

/// A DNS-1035 label: what a Kubernetes Service (and so a service on a cluster) may be named.
pub fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_lowercase()
        && b[b.len() - 1] != b'-'
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// `name` or `name:version`.
pub fn parse_model_id(id: &str) -> Result<(&str, Option<u32>)> {
    match id.split_once(':') {
        None => Ok((id, None)),
        Some((name, v)) => {
            let v = v
                .parse()
                .map_err(|_| Error::Invalid(format!("model '{id}': the version must be a number")))?;
            Ok((name, Some(v)))
        }
    }
}

/// A relative path with no `..`, no root and no empty parts.
pub fn check_relative(path: &str) -> Result<()> {
    let bad = path.is_empty()
        || path.starts_with('/')
        || path.contains('\\')
        || path.split('/').any(|p| p.is_empty() || p == "." || p == "..");
    if bad {
        return Err(Error::Invalid(format!(
            "file path '{path}' must be relative, without '..'"
        )));
    }
    Ok(())
}

/// Records for tests (here, and in crates that enable the `fixtures` feature), built up from a plain
/// one-version service.
#[cfg(any(test, feature = "fixtures"))]
impl ServiceRecord {
    /// `name` with one version, `blue`: the default, keys `name-primary-key…`.
    pub fn test(name: &str) -> Self {
        ServiceRecord {
            name: name.into(),
            versions: vec![VersionRecord::test("blue")],
            auth_enabled: true,
            token_auth_enabled: false,
            primary_key: format!("{name}-primary-key-0123456789"),
            secondary_key: format!("{name}-secondary-key-0123456789"),
            token_secret: format!("{name}-token-secret"),
            created: 1,
            updated: 1,
            events: Vec::new(),
        }
    }

    /// Blue claims `blue`%, and a treatment `green` claims `green`%.
    pub fn with_split(mut self, blue: u32, green: u32) -> Self {
        self.versions[0].traffic = blue;
        let mut v = VersionRecord::test("green");
        v.is_default = false;
        v.traffic = green;
        self.versions.push(v);
        self
    }
}

#[cfg(any(test, feature = "fixtures"))]
impl VersionRecord {
    pub fn test(name: &str) -> Self {
        VersionRecord::new(
            name,
            Vec::new(),
            InferenceConfig::default(),
            DeploymentConfig::default(),
            Vec::new(),
            None,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_rules() {
        ServiceRecord::test("ep").with_split(80, 20).validate().unwrap();
        let over = ServiceRecord::test("ep").with_split(90, 20);
        assert!(over.validate().unwrap_err().to_string().contains("adds up to 110%"));
        let mut two_defaults = ServiceRecord::test("ep").with_split(80, 20);
        two_defaults.versions[1].is_default = true;
        assert!(two_defaults.validate().is_err());
    }

    #[test]
    fn names_and_paths_are_checked() {
        assert!(check_name("service", "my-svc_1.0").is_ok());
        for bad in ["", "-x", "a/b", "a b", &"x".repeat(65)] {
            assert!(check_name("service", bad).is_err(), "{bad}");
        }
        assert!(check_relative("a/b.txt").is_ok());
        for bad in ["/etc/passwd", "../x", "a/../b", "a//b", ""] {
            assert!(check_relative(bad).is_err(), "{bad}");
        }
    }
}
