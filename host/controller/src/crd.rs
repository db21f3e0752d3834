//! The `PlinthService` resource (`plinth.dev/v1alpha1`): its spec in our users' language (a package and
//! Azure's two JSON configs), its status, and the CRD generated from these types (`plinth controller crd`;
//! checked in as `host/controller/plinthservice.crd.yaml`, kept equal by a test).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{LocalObjectReference, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, CustomResourceExt};
pub use plinth_spec::manifest::PackageRef;
use plinth_spec::manifest::{VersionSettings, azure_config};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A scoring service on a cluster: the same package and configs `plinth deploy` takes, served by
/// `plinth serve` pods that the controller places and scales.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "plinth.dev",
    version = "v1alpha1",
    kind = "PlinthService",
    plural = "plinthservices",
    shortname = "pls",
    namespaced,
    status = "PlinthServiceStatus",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type=='Ready')].status"
    ),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".status.replicas"),
    printcolumn(name = "Utilization", type_ = "number", json_path = ".status.utilization"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct PlinthServiceSpec {
    /// The package (models, entry script and configs) of the one version, when `versions` is empty; the
    /// default package of every version otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<PackageRef>,
    /// `deploymentconfig.json` as Azure ML spells it (read by the same parser as `plinth deploy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "azure_config")]
    pub deployment_config: Option<Value>,
    /// `inferenceconfig.json` as Azure ML spells it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "azure_config")]
    pub inference_config: Option<Value>,
    /// The container image of the host pods. Default: the controller's `--image`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Versions of the endpoint (at most 6, one default, traffic adding up to at most 100), as
    /// `plinth endpoint` takes them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub versions: Vec<VersionSpec>,
    /// Pods when autoscaling is off (the scale subresource: `kubectl scale` sets it). Default: the
    /// deployment config's `numReplicas`, else 1. With autoscaling on, the controller's scaler decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Node selector of the host pods (GPU or FPGA pools).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    /// Tolerations of the host pods (added to the GPU one when `gpuCores` ≥ 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    /// Extended resources each pod asks for, passed through to its limits (e.g.
    /// `amd.com/xilinx_u250_gen3x16_xdma_shell_4_1-0: 1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extended_resources: Option<BTreeMap<String, String>>,
    /// Secrets to pull the image with from a private registry (the pods' `imagePullSecrets`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_secrets: Option<Vec<LocalObjectReference>>,
    /// Credentials for private package storage (an Azure Blob container, a private server): a Secret
    /// mounted only into the init containers that fetch packages, never written into a manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package_credentials: Option<PackageCredentials>,
    /// A PersistentVolumeClaim (ReadWriteMany) the pods share for compiled code: the first pod on a kind
    /// of node compiles a Python entry script's interpreter (about a minute), the next ones load it in
    /// moments. Default: each pod compiles into its own scratch volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_claim: Option<String>,
    /// The pod's scratch space (a quantity, e.g. `20Gi`): the packages, the imported models and the
    /// compiled code. Sets the scratch volume's `sizeLimit` and the host's `ephemeral-storage` request and
    /// limit, so the scheduler counts the disk and a pod that outgrows it is evicted, not the node's
    /// other pods. Default: unbounded and not requested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scratch_size: Option<String>,
}

/// Where `plinth package fetch` finds credentials: keys of a Secret in the service's namespace. At least one.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PackageCredentials {
    pub secret_name: String,
    /// The key holding a query string added to every package URI: an Azure Blob SAS token
    /// (`sv=...&sig=...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_key: Option<String>,
    /// The key holding an `Authorization` header value sent with every package request
    /// (`Bearer ...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header_key: Option<String>,
    /// The key holding a PEM certificate authority to trust besides the system's (a private server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_key: Option<String>,
}

/// One version of the endpoint: its name, its package (default: the spec's) and the same settings a
/// declared host's manifest holds (`deploymentConfig` and `inferenceConfig` default to the spec's).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VersionSpec {
    pub name: String,
    /// Default: the spec's package.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<PackageRef>,
    #[serde(flatten)]
    pub settings: VersionSettings,
}

/// What the controller last saw and did.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlinthServiceStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Progressing` and `Degraded`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Host pods (the scale subresource's status).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// Pods the scaler (or `spec.replicas`) wants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_replicas: Option<i32>,
    /// The label selector of the host pods (the scale subresource's selector).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// Mean utilization of the host pods, in percent: (busy replicas + waiting requests) / replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utilization: Option<f64>,
    /// When the scaler last changed the pod count (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_time: Option<String>,
    /// Where the service scores, inside the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scoring_uri: Option<String>,
    /// Each version's traffic.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub versions: Vec<VersionStatus>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VersionStatus {
    pub name: String,
    pub traffic: u32,
    pub default: bool,
}

/// The CRD as YAML (what `plinth controller crd` prints and `plinthservice.crd.yaml` holds).
pub fn crd_yaml() -> String {
    let crd = PlinthService::crd();
    serde_saphyr::to_string(&crd).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checked_in_crd_is_the_generated_one() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/plinthservice.crd.yaml");
        if std::env::var_os("PLINTH_WRITE_CRD").is_some() {
            std::fs::write(path, crd_yaml()).unwrap();
        }
        let checked_in = std::fs::read_to_string(path).unwrap_or_default();
        assert_eq!(
            checked_in,
            crd_yaml(),
            "host/controller/plinthservice.crd.yaml is stale: run `plinth controller crd > host/controller/plinthservice.crd.yaml`"
        );
    }

    #[test]
    fn the_crd_has_status_and_scale_subresources() {
        let crd = PlinthService::crd();
        let v = &crd.spec.versions[0];
        let sub = v.subresources.as_ref().expect("subresources");
        assert!(sub.status.is_some());
        let scale = sub.scale.as_ref().expect("scale");
        assert_eq!(scale.spec_replicas_path, ".spec.replicas");
        assert_eq!(scale.status_replicas_path, ".status.replicas");
        assert_eq!(scale.label_selector_path.as_deref(), Some(".status.selector"));
        assert_eq!(crd.spec.group, "plinth.dev");
        assert_eq!(v.name, "v1alpha1");
    }

    #[test]
    fn the_issue_example_parses() {
        let yaml = r#"
apiVersion: plinth.dev/v1alpha1
kind: PlinthService
metadata: {name: diabetes, namespace: ml}
spec:
  package: {uri: "https://models.example.com/diabetes.tar", sha256: "3f2a"}
  inferenceConfig: {entryScript: score.py}
  deploymentConfig:
    containerResourceRequirements: {cpu: 0.5, memoryInGB: 1.5}
    gpuCores: 1
    autoScaler: {autoscaleEnabled: true, minReplicas: 2, maxReplicas: 6, targetUtilization: 70}
"#;
        let ps: PlinthService = serde_saphyr::from_str(yaml).unwrap();
        assert_eq!(ps.spec.package.unwrap().uri, "https://models.example.com/diabetes.tar");
        assert_eq!(ps.spec.deployment_config.unwrap()["gpuCores"], 1);
    }
}
