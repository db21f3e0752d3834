//! Packages and the services made of them: `plinth-package.json` (what one exported version holds), a
//! package's address, and the service a declared host serves (`plinth serve --service-manifest`, the
//! ConfigMap the Kubernetes controller writes). The controller's `PlinthService` spells its versions with
//! the same [`VersionSettings`], so the two can never drift apart.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::record::{FileRef, ModelRecord};

/// The package's own description, its first entry.
pub const MANIFEST_ENTRY: &str = "plinth-package.json";
/// The format `plinth-package.json` declares.
pub const FORMAT: &str = "plinth.dev/package/v1";

/// `plinth-package.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PackageManifest {
    pub format: String,
    /// The service and version it was exported from (informative).
    pub service: String,
    pub version: String,
    /// The models as the edge host registered them (re-registered under new versions where imported).
    pub models: Vec<ModelRecord>,
    /// The source folder (or the entry script alone).
    #[serde(default)]
    pub source: Vec<FileRef>,
    #[serde(default)]
    pub entry_script: Option<String>,
    /// Azure's `inferenceconfig.json`, as the version was deployed with it.
    #[serde(default)]
    pub inference_config: Value,
    /// Azure's `deploymentconfig.json`, as the version was deployed with it.
    #[serde(default)]
    pub deployment_config: Value,
}

/// A package: the tarball `plinth service export` writes, addressed by its sha256.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct PackageRef {
    /// `https://...`, `file:///...` (fetched by an init container) or `pvc://claim/path` (the claim is
    /// mounted read-only).
    pub uri: String,
    /// The package's sha256 (lowercase hex); a package that hashes differently is refused.
    pub sha256: String,
    /// Its size in bytes, when known (`plinth service export` writes it): a fetch stops there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

/// The service a declarative host serves (`plinth serve --service-manifest`): what the controller puts in
/// the pods' ConfigMap, with every version's package and configs resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceManifest {
    pub name: String,
    pub versions: Vec<ManifestVersion>,
}

/// One version of a declared service: its package (resolved) and its settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestVersion {
    pub name: String,
    pub package: PackageRef,
    #[serde(flatten)]
    pub settings: VersionSettings,
}

/// What a version of an endpoint says beyond its package, as a declared host's manifest and a
/// `PlinthService` both spell it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct VersionSettings {
    /// `deploymentconfig.json` as Azure ML spells it (read by the same parser as `plinth deploy`).
    /// Default: the package's own (in a `PlinthService`: the spec's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(schema_with = "azure_config"))]
    pub deployment_config: Option<Value>,
    /// `inferenceconfig.json` as Azure ML spells it. Default: the package's own (in a `PlinthService`:
    /// the spec's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(schema_with = "azure_config"))]
    pub inference_config: Option<Value>,
    /// Percent of traffic this version claims (0..100); the default version also gets what is unclaimed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<u32>,
    /// The default version (exactly one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<bool>,
    /// A treatment (true, the default) or the control version (false; at most one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub treatment: Option<bool>,
    /// Percent of traffic copied to this version (its answers are never returned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<u32>,
}

/// An Azure ML config in a schema: any JSON object (checked by Plinth's own parser, which names the bad
/// field).
#[cfg(feature = "schema")]
pub fn azure_config(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

/// The fields of a deployment config that hold secrets (keys, the TLS private key): never written into a
/// package, an exported manifest or a ConfigMap.
pub const SECRET_FIELDS: &[&str] = &["keys", "primaryKey", "secondaryKey", "sslKey"];

/// Removes [`SECRET_FIELDS`] from a deployment config.
pub fn redact(deployment_config: &mut Value) {
    if let Some(o) = deployment_config.as_object_mut() {
        for f in SECRET_FIELDS {
            o.remove(*f);
        }
    }
}

/// Whether `s` is a lowercase hex sha256.
pub fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_version_reads_and_writes_its_settings_beside_its_name() {
        let v = json!({
            "name": "blue",
            "package": {"uri": "https://x/p.tar", "sha256": "ab"},
            "deploymentConfig": {"numReplicas": 2},
            "traffic": 80,
            "default": true,
            "treatment": false,
        });
        let parsed: ManifestVersion = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(parsed.settings.traffic, Some(80));
        assert_eq!(parsed.settings.treatment, Some(false));
        assert_eq!(serde_json::to_value(&parsed).unwrap(), v);
        let e = serde_json::from_value::<ManifestVersion>(json!({"name": "x"})).unwrap_err();
        assert!(e.to_string().contains("missing field `package`"), "{e}");
    }

    #[test]
    fn secrets_are_redacted() {
        let mut dc = json!({"keys": {"primaryKey": "k"}, "primaryKey": "k", "sslKey": "s", "numReplicas": 1});
        redact(&mut dc);
        assert_eq!(dc, json!({"numReplicas": 1}));
        assert!(is_sha256(&"a".repeat(64)) && !is_sha256(&"A".repeat(64)) && !is_sha256("ab"));
    }
}
