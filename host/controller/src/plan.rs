//! A `PlinthService` checked as `plinth deploy` and `plinth endpoint` would check it (its configs read by the
//! same parser, its versions by the same endpoint rules), into the plan its objects are rendered from.
//! Pure: `plinth controller render` runs it without a cluster.

use kube::ResourceExt;
use plinth_spec::config::{DeploymentConfig, InferenceConfig, ProbeRequirements};
use plinth_spec::manifest::{ManifestVersion, PackageRef, ServiceManifest, VersionSettings, is_sha256, redact};
use plinth_spec::record::{ServiceRecord, VersionRecord, check_name, check_relative, is_dns_label};
use serde_json::Value;

use crate::crd::{PlinthService, VersionSpec};

/// A checked `PlinthService`: what the host pods serve and how many of them there should be.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub manifest: ServiceManifest,
    /// Each version's deployment config, as parsed.
    pub configs: Vec<DeploymentConfig>,
    /// Autoscaling (from the default version's `autoScaler`).
    pub autoscale: bool,
    pub min_replicas: i32,
    pub max_replicas: i32,
    /// Target utilization, 0..1.
    pub target: f64,
    pub refresh_secs: u64,
    /// Pods when autoscaling is off.
    pub fixed_replicas: i32,
    /// Per pod: the sum of every version's one replica.
    pub cpu: f64,
    pub memory_gb: f64,
    pub cpu_limit: Option<f64>,
    pub memory_limit_gb: Option<f64>,
    pub gpus: u32,
    /// Each version's traffic and whether it is the default.
    pub traffic: Vec<(String, u32, bool)>,
    /// The default version's index in `configs`.
    pub default: usize,
    /// A version runs on a GPU (`gpuCores`, or a CUDA/TensorRT provider listed).
    pub wants_gpu: bool,
    /// A version may compile an interpreter when it loads: its entry script is Python, or its inference
    /// config is the package's own (not known here).
    pub compiles: bool,
    /// The host container's probes (Azure's `livenessProbeRequirements` and `readinessProbeRequirements`
    /// of the default version).
    pub liveness: ProbeRequirements,
    pub readiness: ProbeRequirements,
}

impl Plan {
    /// The pods wanted before any load is seen: `minReplicas` when autoscaling, else the fixed count.
    pub fn initial_replicas(&self) -> i32 {
        if self.autoscale {
            self.min_replicas.max(1)
        } else {
            self.fixed_replicas
        }
    }

    /// Whether more than one pod may run (and so a disruption budget keeps evictions to one at a time).
    pub fn may_run_several(&self) -> bool {
        if self.autoscale {
            self.max_replicas > 1
        } else {
            self.fixed_replicas > 1
        }
    }
}

/// Checks a `PlinthService` as `plinth deploy` and `plinth endpoint` would; the error is the message its
/// status shows (`Ready=False`, reason `InvalidSpec`), naming the field.
pub fn plan(ps: &PlinthService) -> Result<Plan, String> {
    let name = ps.name_any();
    check_name("service", &name).map_err(|e| format!("metadata.name: {e}"))?;
    // The Service, and the labels, carry the name: a DNS-1035 label.
    if !is_dns_label(&name) {
        return Err(format!(
            "metadata.name: '{name}' must be at most 63 lowercase letters, digits and '-', starting with a letter \
             (it names the Kubernetes Service)"
        ));
    }
    for (k, v) in ps.spec.extended_resources.iter().flatten() {
        if !is_quantity(v) {
            return Err(format!(
                "spec.extendedResources.{k}: '{v}' is not a quantity (e.g. \"1\")"
            ));
        }
    }
    let spec = &ps.spec;
    for (i, s) in spec.image_pull_secrets.iter().flatten().enumerate() {
        if !is_dns_subdomain(&s.name) {
            return Err(format!(
                "spec.imagePullSecrets[{i}].name: '{}' is not a Secret name (lowercase letters, digits, '-' and '.')",
                s.name
            ));
        }
    }
    if let Some(c) = &spec.package_credentials {
        if !is_dns_subdomain(&c.secret_name) {
            return Err(format!(
                "spec.packageCredentials.secretName: '{}' is not a Secret name (lowercase letters, digits, '-' and '.')",
                c.secret_name
            ));
        }
        if c.header_key.is_none() && c.query_key.is_none() && c.ca_key.is_none() {
            return Err(
                "spec.packageCredentials: name the Secret's key holding a SAS query (queryKey), an Authorization \
                 header (headerKey) or a certificate authority (caKey)"
                    .into(),
            );
        }
        for (field, key) in [
            ("headerKey", &c.header_key),
            ("queryKey", &c.query_key),
            ("caKey", &c.ca_key),
        ] {
            if let Some(k) = key.as_deref().filter(|k| !is_secret_key(k)) {
                return Err(format!(
                    "spec.packageCredentials.{field}: '{k}' is not a Secret key (letters, digits, '-', '_' and '.')"
                ));
            }
        }
    }
    if let Some(claim) = spec.cache_claim.as_deref().filter(|c| !is_dns_subdomain(c)) {
        return Err(format!(
            "spec.cacheClaim: '{claim}' is not a claim name (lowercase letters, digits, '-' and '.')"
        ));
    }
    if let Some(size) = spec.scratch_size.as_deref().filter(|q| !is_quantity(q)) {
        return Err(format!("spec.scratchSize: '{size}' is not a quantity (e.g. \"20Gi\")"));
    }
    let versions: Vec<(String, VersionSpec)> = if spec.versions.is_empty() {
        vec![(
            "spec".into(),
            VersionSpec {
                name: "1".into(),
                package: spec.package.clone(),
                settings: VersionSettings {
                    default: Some(true),
                    traffic: Some(100),
                    ..Default::default()
                },
            },
        )]
    } else {
        spec.versions
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("spec.versions[{i}]"), v.clone()))
            .collect()
    };
    let mut manifest = ServiceManifest {
        name: name.clone(),
        versions: Vec::new(),
    };
    let mut records = Vec::new();
    let mut configs = Vec::new();
    let mut compiles = false;
    for (at, version) in &versions {
        let v = &version.settings;
        check_name("version", &version.name).map_err(|e| format!("{at}.name: {e}"))?;
        let (package, package_at) = match (&version.package, &spec.package) {
            (Some(p), _) => (p, format!("{at}.package")),
            (None, Some(p)) => (p, "spec.package".to_string()),
            (None, None) => return Err(format!("{at}.package: required (or spec.package for every version)")),
        };
        check_package(package, &package_at)?;
        let (dc_value, dc_at) = match (&v.deployment_config, &spec.deployment_config) {
            (Some(c), _) => (Some(c), format!("{at}.deploymentConfig")),
            (None, c) => (c.as_ref(), "spec.deploymentConfig".to_string()),
        };
        let (ic_value, ic_at) = match (&v.inference_config, &spec.inference_config) {
            (Some(c), _) => (Some(c), format!("{at}.inferenceConfig")),
            (None, c) => (c.as_ref(), "spec.inferenceConfig".to_string()),
        };
        let dc = match dc_value {
            Some(value) => {
                DeploymentConfig::from_json(&dc_at, &to_bytes(value))
                    .map_err(|e| e.to_string())?
                    .0
            }
            None => DeploymentConfig::default(),
        };
        let ic = match ic_value {
            Some(value) => {
                InferenceConfig::from_json(&ic_at, &to_bytes(value))
                    .map_err(|e| e.to_string())?
                    .0
            }
            None => InferenceConfig::default(),
        };
        compiles |= ic_value.is_none() || ic.entry_script.as_deref().is_some_and(|e| e.ends_with(".py"));
        let single = versions.len() == 1;
        let mut record = VersionRecord::new(&version.name, Vec::new(), ic, dc.clone(), Vec::new(), None);
        record.traffic = v.traffic.unwrap_or(if single { 100 } else { 0 });
        record.is_default = single || v.default == Some(true);
        record.control = v.treatment == Some(false);
        record.mirror = v.mirror.unwrap_or(0);
        records.push(record);
        configs.push(dc);
        manifest.versions.push(ManifestVersion {
            name: version.name.clone(),
            package: package.clone(),
            settings: VersionSettings {
                // The keys go to the Secret, never into the ConfigMap.
                deployment_config: dc_value.cloned().map(|mut v| {
                    redact(&mut v);
                    v
                }),
                inference_config: ic_value.cloned(),
                traffic: Some(records.last().map(|r| r.traffic).unwrap_or(0)),
                default: Some(single || v.default == Some(true)),
                treatment: v.treatment,
                mirror: v.mirror,
            },
        });
    }
    let mut names: Vec<&str> = records.iter().map(|r| r.name.as_str()).collect();
    names.sort_unstable();
    if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
        return Err(format!("spec.versions: version {} is listed twice", w[0]));
    }
    let endpoint = ServiceRecord {
        name: name.clone(),
        versions: records,
        auth_enabled: true,
        token_auth_enabled: false,
        primary_key: String::new(),
        secondary_key: String::new(),
        token_secret: String::new(),
        created: 0,
        updated: 0,
        events: Vec::new(),
    };
    endpoint.validate().map_err(|e| format!("spec.versions: {e}"))?;
    let default = endpoint.versions.iter().position(|v| v.is_default).unwrap_or(0);
    let dc = &configs[default];
    let sum = |f: &dyn Fn(&DeploymentConfig) -> f64| configs.iter().map(f).sum::<f64>();
    let limit = |f: &dyn Fn(&DeploymentConfig) -> Option<f64>| -> Option<f64> {
        configs
            .iter()
            .any(|c| f(c).is_some())
            .then(|| configs.iter().map(|c| f(c).unwrap_or(0.0)).sum())
    };
    let fixed = spec.replicas.or(dc.num_replicas.map(|n| n as i32)).unwrap_or(1);
    if fixed < 0 {
        return Err(format!("spec.replicas: {fixed} is negative"));
    }
    Ok(Plan {
        manifest,
        autoscale: dc.autoscale(),
        min_replicas: dc.auto_scaler.min_replicas as i32,
        max_replicas: dc.auto_scaler.max_replicas as i32,
        target: dc.auto_scaler.target_utilization as f64 / 100.0,
        refresh_secs: dc.auto_scaler.refresh_period_in_seconds.max(1) as u64,
        fixed_replicas: fixed,
        cpu: sum(&|c| c.container_resource_requirements.cpu),
        memory_gb: sum(&|c| c.container_resource_requirements.memory_in_gb),
        cpu_limit: limit(&|c| c.container_resource_requirements.cpu_limit),
        memory_limit_gb: limit(&|c| c.container_resource_requirements.memory_in_gb_limit),
        // Whole GPUs per version, and one more that the versions with a share (gpuMemoryGb) split.
        gpus: configs
            .iter()
            .map(|c| c.gpu_cores.or(c.container_resource_requirements.gpu).unwrap_or(0))
            .sum::<u32>()
            + u32::from(configs.iter().any(|c| c.gpu_memory_gb.is_some())),
        traffic: endpoint
            .versions
            .iter()
            .map(|v| (v.name.clone(), v.traffic, v.is_default))
            .collect(),
        default,
        wants_gpu: configs.iter().any(|c| {
            c.gpu_cores.or(c.container_resource_requirements.gpu).unwrap_or(0) > 0
                || c.gpu_memory_gb.is_some()
                || c.execution_providers.iter().flatten().any(|p| {
                    let name = p
                        .as_str()
                        .or_else(|| p["name"].as_str())
                        .unwrap_or_default()
                        .to_ascii_lowercase();
                    name.contains("cuda") || name.contains("tensorrt") || name == "trt"
                })
        }),
        liveness: dc.liveness(),
        readiness: dc.readiness(),
        configs,
        compiles,
    })
}

/// A DNS-1123 subdomain: what a PersistentVolumeClaim may be named.
pub(crate) fn is_dns_subdomain(s: &str) -> bool {
    let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|part| {
            let b = part.as_bytes();
            !b.is_empty() && alnum(&b[0]) && alnum(&b[b.len() - 1]) && b.iter().all(|c| alnum(c) || *c == b'-')
        })
}

/// A key of a Secret's data.
fn is_secret_key(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// A Kubernetes quantity as extended resources take them: a number with an optional suffix.
fn is_quantity(s: &str) -> bool {
    let digits = s.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let suffix = &s[digits.len()..];
    !digits.is_empty()
        && digits.parse::<f64>().is_ok_and(|n| n >= 0.0)
        && [
            "", "m", "k", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei",
        ]
        .contains(&suffix)
}

fn to_bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

fn check_package(p: &PackageRef, at: &str) -> Result<(), String> {
    if !is_sha256(&p.sha256) {
        return Err(format!("{at}.sha256: '{}' is not 64 lowercase hex digits", p.sha256));
    }
    if let Some(rest) = p.uri.strip_prefix("pvc://") {
        let (claim, path) = rest.split_once('/').unwrap_or((rest, ""));
        if claim.is_empty() || path.is_empty() {
            return Err(format!("{at}.uri: '{}' must be pvc://claim/path/to/package.tar", p.uri));
        }
        check_relative(path).map_err(|e| format!("{at}.uri: {e}"))?;
        return Ok(());
    }
    if p.uri.starts_with("https://") || p.uri.starts_with("file:///") {
        return Ok(());
    }
    Err(format!(
        "{at}.uri: '{}' must start with https://, file:/// or pvc:// (plain http is refused)",
        p.uri
    ))
}
