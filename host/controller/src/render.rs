//! From a `PlinthService` to what it runs on: the checked plan (its configs read by the same parser as
//! `plinth deploy`, its versions by the same endpoint rules) and the objects a reconcile applies (a
//! ConfigMap with the host's manifest, a Deployment of `plinth serve` pods, a Service, the keys' Secret).
//! Pure functions: `plinth controller render` prints the same objects without a cluster.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use kube::{Resource, ResourceExt};
use plinth_control::config::{DeploymentConfig, InferenceConfig};
use plinth_control::package::{ManifestVersion, PackageRef as HostPackageRef, ServiceManifest, is_sha256};
use plinth_control::store::{ServiceRecord, VersionRecord, check_name};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::crd::{PackageRef, PlinthService, VersionSpec};

/// The field manager of every server-side apply.
pub const MANAGER: &str = "plinth-controller";
/// The finalizer a `PlinthService` carries while the controller owns it.
pub const FINALIZER: &str = "plinthservices.plinth.dev/cleanup";
/// The label that selects a service's host pods.
pub const SERVICE_LABEL: &str = "plinth.dev/service";
/// The host's port inside the pod.
pub const PORT: i32 = 8080;
/// The image when neither the spec nor the controller names one.
pub const DEFAULT_IMAGE: &str = "ghcr.io/plinth-ml/plinth:0.1.0";
/// The GPU image (`docker build --build-arg ONNXRUNTIME=...`, see the Dockerfile) for pods on GPUs.
pub const DEFAULT_GPU_IMAGE: &str = "ghcr.io/plinth-ml/plinth:0.1.0-gpu";
/// Where the pod's writable scratch volume is mounted (workspace, fetched packages).
pub const DATA_DIR: &str = "/var/lib/plinth";
/// Where the host's manifest (the ConfigMap) is mounted.
pub const MANIFEST_DIR: &str = "/etc/plinth/service";
/// Where the keys (the Secret) are mounted.
pub const KEYS_DIR: &str = "/etc/plinth/keys";
/// Where `spec.cacheClaim` is mounted (compiled code shared by the pods).
pub const CACHE_DIR: &str = "/var/lib/plinth/cache";
/// Memory the `warm` init container may use above the host's limit: compiling the scientific Python
/// interpreter peaks at about 2.2 GB.
pub const COMPILE_HEADROOM_GB: f64 = 3.0;

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
                default: Some(true),
                traffic: Some(100),
                ..Default::default()
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
    for (at, v) in &versions {
        check_name("version", &v.name).map_err(|e| format!("{at}.name: {e}"))?;
        let (package, package_at) = match (&v.package, &spec.package) {
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
        let mut record = VersionRecord::new(&v.name, Vec::new(), ic, dc.clone(), Vec::new(), None);
        record.traffic = v.traffic.unwrap_or(if single { 100 } else { 0 });
        record.is_default = single || v.default == Some(true);
        record.control = v.treatment == Some(false);
        record.mirror = v.mirror.unwrap_or(0);
        records.push(record);
        configs.push(dc);
        manifest.versions.push(ManifestVersion {
            name: v.name.clone(),
            package: HostPackageRef {
                uri: package.uri.clone(),
                sha256: package.sha256.clone(),
            },
            // The keys go to the Secret, never into the ConfigMap.
            deployment_config: dc_value.cloned().map(|mut v| {
                plinth_control::package::redact(&mut v);
                v
            }),
            inference_config: ic_value.cloned(),
            traffic: Some(records.last().map(|r| r.traffic).unwrap_or(0)),
            default: Some(single || v.default == Some(true)),
            treatment: v.treatment,
            mirror: v.mirror,
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
        gpus: configs
            .iter()
            .map(|c| c.gpu_cores.or(c.container_resource_requirements.gpu).unwrap_or(0))
            .sum(),
        traffic: endpoint
            .versions
            .iter()
            .map(|v| (v.name.clone(), v.traffic, v.is_default))
            .collect(),
        default,
        wants_gpu: configs.iter().any(|c| {
            c.gpu_cores.or(c.container_resource_requirements.gpu).unwrap_or(0) > 0
                || c.execution_providers.iter().flatten().any(|p| {
                    let name = p
                        .as_str()
                        .or_else(|| p["name"].as_str())
                        .unwrap_or_default()
                        .to_ascii_lowercase();
                    name.contains("cuda") || name.contains("tensorrt") || name == "trt"
                })
        }),
        configs,
        compiles,
    })
}

/// A DNS-1035 label: what a Service may be named.
fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_lowercase()
        && b[b.len() - 1] != b'-'
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// A DNS-1123 subdomain: what a PersistentVolumeClaim may be named.
fn is_dns_subdomain(s: &str) -> bool {
    let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|part| {
            let b = part.as_bytes();
            !b.is_empty() && alnum(&b[0]) && alnum(&b[b.len() - 1]) && b.iter().all(|c| alnum(c) || *c == b'-')
        })
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
        plinth_control::store::check_relative(path).map_err(|e| format!("{at}.uri: {e}"))?;
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

/// What a reconcile applies.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub config_map: ConfigMap,
    pub deployment: Deployment,
    pub service: Service,
}

/// Options that are the controller's, not the resource's.
#[derive(Debug, Clone)]
pub struct RenderOptions {
    /// The image when the spec names none.
    pub image: String,
    /// The image of pods that run on a GPU (built with the GPU ONNX Runtime), when the spec names none.
    pub gpu_image: String,
    /// Put `spec.replicas` in the Deployment (for `kubectl apply` without a controller).
    pub with_replicas: bool,
}

impl Default for RenderOptions {
    fn default() -> Self {
        RenderOptions {
            image: DEFAULT_IMAGE.into(),
            gpu_image: DEFAULT_GPU_IMAGE.into(),
            with_replicas: false,
        }
    }
}

/// Names of what a `PlinthService` owns.
pub fn config_map_name(service: &str) -> String {
    format!("{service}-config")
}

pub fn secret_name(service: &str) -> String {
    format!("{service}-keys")
}

pub fn labels(service: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), "plinth".into()),
        ("app.kubernetes.io/instance".into(), service.into()),
        ("app.kubernetes.io/managed-by".into(), MANAGER.into()),
        (SERVICE_LABEL.into(), service.into()),
    ])
}

/// The label selector of a service's pods, as text (the scale subresource's `status.selector`).
pub fn selector(service: &str) -> String {
    format!("{SERVICE_LABEL}={service}")
}

/// Where the service scores inside the cluster.
pub fn scoring_uri(service: &str, namespace: &str) -> String {
    format!("http://{service}.{namespace}.svc.cluster.local/api/v1/service/{service}/score")
}

fn metadata(ps: &PlinthService, name: &str) -> Value {
    let mut m = json!({
        "name": name,
        "labels": labels(&ps.name_any()),
    });
    if let Some(ns) = ps.namespace() {
        m["namespace"] = json!(ns);
    }
    if let Some(owner) = ps.controller_owner_ref(&()) {
        m["ownerReferences"] = json!([owner]);
    }
    m
}

/// Millicores, as Kubernetes writes a CPU quantity.
fn cpu_quantity(cores: f64) -> String {
    format!("{}m", (cores * 1000.0).round().max(1.0) as u64)
}

/// Mebibytes from Azure's GB (as Azure's AKS deployments take `memoryInGB` × 1024 Mi).
fn memory_quantity(gb: f64) -> String {
    format!("{}Mi", (gb * 1024.0).round().max(1.0) as u64)
}

/// The objects a `PlinthService` runs on (its plan checked first).
pub fn render(ps: &PlinthService, plan: &Plan, options: &RenderOptions) -> Rendered {
    let name = ps.name_any();
    let manifest_json = serde_json::to_string_pretty(&plan.manifest).unwrap_or_default();
    let checksum = plinth_control::store::hex(&Sha256::digest(manifest_json.as_bytes()));
    let config_map: ConfigMap = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(ps, &config_map_name(&name)),
        "data": {"service.json": manifest_json},
    }))
    .expect("a ConfigMap");
    let image = ps.spec.image.clone().unwrap_or_else(|| {
        if plan.wants_gpu {
            options.gpu_image.clone()
        } else {
            options.image.clone()
        }
    });
    let security = json!({
        "allowPrivilegeEscalation": false,
        "readOnlyRootFilesystem": true,
        "runAsNonRoot": true,
        "capabilities": {"drop": ["ALL"]},
    });
    let data_mount = json!({"name": "data", "mountPath": DATA_DIR});
    let cache_claim = ps.spec.cache_claim.as_deref();
    let packages_dir = format!("{DATA_DIR}/packages");
    let claims_dir = format!("{DATA_DIR}/claims");
    let mut init = Vec::new();
    let mut volumes = vec![
        json!({"name": "service", "configMap": {"name": config_map_name(&name)}}),
        json!({"name": "keys", "secret": {"secretName": secret_name(&name), "defaultMode": 0o440}}),
        match &ps.spec.scratch_size {
            Some(size) => json!({"name": "data", "emptyDir": {"sizeLimit": size}}),
            None => json!({"name": "data", "emptyDir": {}}),
        },
        json!({"name": "tmp", "emptyDir": {}}),
    ];
    let mut mounts = vec![
        json!({"name": "service", "mountPath": MANIFEST_DIR, "readOnly": true}),
        json!({"name": "keys", "mountPath": KEYS_DIR, "readOnly": true}),
        data_mount.clone(),
        json!({"name": "tmp", "mountPath": "/tmp"}),
    ];
    if let Some(claim) = cache_claim {
        volumes.push(json!({"name": "cache", "persistentVolumeClaim": {"claimName": claim}}));
        mounts.push(json!({"name": "cache", "mountPath": CACHE_DIR}));
    }
    let mut claims: Vec<&str> = Vec::new();
    for v in &plan.manifest.versions {
        let p = &v.package;
        if let Some(rest) = p.uri.strip_prefix("pvc://") {
            let claim = rest.split_once('/').map(|(c, _)| c).unwrap_or(rest);
            if !claims.contains(&claim) {
                let volume = format!("claim-{}", claims.len());
                volumes.push(json!({"name": volume, "persistentVolumeClaim": {"claimName": claim, "readOnly": true}}));
                mounts.push(json!({"name": volume, "mountPath": format!("{claims_dir}/{claim}"), "readOnly": true}));
                claims.push(claim);
            }
        } else if !init
            .iter()
            .any(|c: &Value| c["args"][2] == json!(p.uri) && c["args"][4] == json!(p.sha256))
        {
            init.push(json!({
                "name": format!("fetch-{}", init.len()),
                "image": image,
                "command": ["plinth"],
                "args": ["package", "fetch", p.uri, "--sha256", p.sha256, "--to", packages_dir],
                "volumeMounts": [data_mount.clone(), {"name": "tmp", "mountPath": "/tmp"}],
                "securityContext": security.clone(),
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
            }));
        }
    }
    let mut requests = json!({"cpu": cpu_quantity(plan.cpu), "memory": memory_quantity(plan.memory_gb)});
    let mut limits =
        json!({"memory": memory_quantity(plan.memory_limit_gb.unwrap_or(plan.memory_gb).max(plan.memory_gb))});
    if let Some(cpu) = plan.cpu_limit {
        limits["cpu"] = json!(cpu_quantity(cpu.max(plan.cpu)));
    }
    let mut tolerations: Vec<Value> = Vec::new();
    if plan.gpus > 0 {
        limits["nvidia.com/gpu"] = json!(plan.gpus.to_string());
        requests["nvidia.com/gpu"] = json!(plan.gpus.to_string());
        tolerations.push(json!({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}));
    }
    for (k, v) in ps.spec.extended_resources.iter().flatten() {
        limits[k] = json!(v);
        requests[k] = json!(v);
    }
    if let Some(size) = &ps.spec.scratch_size {
        requests["ephemeral-storage"] = json!(size);
        limits["ephemeral-storage"] = json!(size);
    }
    tolerations.extend(
        ps.spec
            .tolerations
            .iter()
            .flatten()
            .map(|t| serde_json::to_value(t).unwrap_or_default()),
    );
    let mut serve_args: Vec<String> = [
        "serve",
        "--listen",
        &format!("0.0.0.0:{PORT}"),
        "--workspace",
        &format!("{DATA_DIR}/workspace"),
        "--service-manifest",
        &format!("{MANIFEST_DIR}/service.json"),
        "--package-dir",
        &packages_dir,
        "--claims-dir",
        &claims_dir,
    ]
    .map(str::to_string)
    .to_vec();
    if cache_claim.is_some() {
        serve_args.extend(["--cache-dir".to_string(), CACHE_DIR.to_string()]);
    }
    if plan.compiles {
        // Loads the service once, before the host: what it compiles (a Python entry script's
        // interpreter: about a minute and 2 GB) lands in the cache within limits of its own, and the host
        // starts from the cache within the service's.
        let mut args = serve_args.clone();
        args[2] = "127.0.0.1:0".to_string();
        args.push("--exit-when-loaded".to_string());
        let mut warm_limits = limits.clone();
        if let Some(l) = warm_limits.as_object_mut() {
            l.remove("cpu");
        }
        let memory = plan.memory_limit_gb.unwrap_or(plan.memory_gb).max(plan.memory_gb) + COMPILE_HEADROOM_GB;
        warm_limits["memory"] = json!(memory_quantity(memory));
        let warm_mounts: Vec<Value> = mounts.iter().filter(|m| m["name"] != "keys").cloned().collect();
        init.push(json!({
            "name": "warm",
            "image": image,
            "command": ["plinth"],
            "args": args,
            "env": [{"name": "HOME", "value": "/tmp"}],
            "resources": {"requests": requests, "limits": warm_limits},
            "securityContext": security.clone(),
            "volumeMounts": warm_mounts,
        }));
    }
    serve_args.extend(["--keys-dir".to_string(), KEYS_DIR.to_string()]);
    let probe = |path: &str, period: u32, failures: u32| json!({"httpGet": {"path": path, "port": "http"}, "periodSeconds": period, "failureThreshold": failures, "timeoutSeconds": 2});
    let container = json!({
        "name": "plinth",
        "image": image,
        "command": ["plinth"],
        "args": serve_args,
        "env": [{"name": "HOME", "value": "/tmp"}],
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        "readinessProbe": probe("/readyz", 5, 3),
        "livenessProbe": probe("/healthz", 10, 3),
        // Slow loads (a scientific score.py compiles its interpreter first): up to 10 minutes to be ready.
        "startupProbe": probe("/readyz", 5, 120),
        "resources": {"requests": requests, "limits": limits},
        "securityContext": security,
        "volumeMounts": mounts,
    });
    let mut pod_spec = json!({
        "securityContext": {
            "runAsNonRoot": true,
            "runAsUser": 10001,
            "runAsGroup": 10001,
            "fsGroup": 10001,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": volumes,
        "terminationGracePeriodSeconds": 30,
    });
    if !init.is_empty() {
        pod_spec["initContainers"] = json!(init);
    }
    if !tolerations.is_empty() {
        pod_spec["tolerations"] = json!(tolerations);
    }
    if let Some(ns) = &ps.spec.node_selector {
        pod_spec["nodeSelector"] = json!(ns);
    }
    let mut deployment_spec = json!({
        "selector": {"matchLabels": {SERVICE_LABEL: name}},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}},
        "template": {
            "metadata": {
                "labels": labels(&name),
                // A changed manifest rolls the pods.
                "annotations": {"plinth.dev/manifest-sha256": checksum},
            },
            "spec": pod_spec,
        },
    });
    if options.with_replicas {
        deployment_spec["replicas"] = json!(plan.initial_replicas());
    }
    let deployment: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(ps, &name),
        "spec": deployment_spec,
    }))
    .expect("a Deployment");
    let service: Service = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(ps, &name),
        "spec": {
            "type": "ClusterIP",
            "selector": {SERVICE_LABEL: name},
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
        },
    }))
    .expect("a Service");
    Rendered {
        config_map,
        deployment,
        service,
    }
}

/// The keys' Secret, with new keys (created once, when absent; never rotated by the controller). Keys the
/// default version's deployment config names are used instead.
pub fn secret(ps: &PlinthService, plan: &Plan) -> Secret {
    let name = ps.name_any();
    let keys = plan
        .configs
        .get(plan.default)
        .map(|c| c.keys.clone())
        .unwrap_or_default();
    let primary = keys.primary_key.unwrap_or_else(plinth_router::generate_key);
    let secondary = keys.secondary_key.unwrap_or_else(plinth_router::generate_key);
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata(ps, &secret_name(&name)),
        "type": "Opaque",
        "stringData": {"primaryKey": primary, "secondaryKey": secondary},
    }))
    .expect("a Secret")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::PlinthServiceSpec;

    const SHA: &str = "3f2a3f2a3f2a3f2a3f2a3f2a3f2a3f2a3f2a3f2a3f2a3f2a3f2a3f2a3f2a3f2a";

    fn service(spec: Value) -> PlinthService {
        let spec: PlinthServiceSpec = serde_json::from_value(spec).unwrap();
        let mut ps = PlinthService::new("diabetes", spec);
        ps.metadata.namespace = Some("ml".into());
        ps
    }

    #[test]
    fn a_gpu_spec_asks_for_gpus_tolerates_their_taint_and_sizes_the_pod() {
        let ps = service(json!({
            "package": {"uri": "https://models.example.com/diabetes.tar", "sha256": SHA},
            "inferenceConfig": {"entryScript": "score.py"},
            "deploymentConfig": {
                "containerResourceRequirements": {"cpu": 0.5, "memoryInGB": 1.5},
                "gpuCores": 1,
                "autoScaler": {"autoscaleEnabled": true, "minReplicas": 2, "maxReplicas": 6, "targetUtilization": 70},
            },
            "nodeSelector": {"pool": "gpu"},
        }));
        let plan = plan(&ps).unwrap();
        assert_eq!((plan.min_replicas, plan.max_replicas, plan.gpus), (2, 6, 1));
        let r = render(&ps, &plan, &RenderOptions::default());
        let d = serde_json::to_value(&r.deployment).unwrap();
        let pod = &d["spec"]["template"]["spec"];
        let c = &pod["containers"][0];
        assert_eq!(c["resources"]["requests"]["cpu"], "500m");
        assert_eq!(c["resources"]["requests"]["memory"], "1536Mi");
        assert_eq!(c["resources"]["limits"]["nvidia.com/gpu"], "1");
        assert_eq!(c["image"], DEFAULT_GPU_IMAGE, "a GPU pod runs the GPU image");
        assert_eq!(pod["tolerations"][0]["key"], "nvidia.com/gpu");
        assert_eq!(pod["nodeSelector"]["pool"], "gpu");
        assert!(d["spec"].get("replicas").is_none(), "the scaler owns replicas");
        assert_eq!(
            pod["initContainers"][0]["args"][2],
            "https://models.example.com/diabetes.tar"
        );
        // A Python entry script: the `warm` init container loads the service first, with room to
        // compile (and the GPU its models load on), then exits.
        let warm = &pod["initContainers"][1];
        assert_eq!(warm["name"], "warm");
        let args: Vec<&str> = warm["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(&args[..3], ["serve", "--listen", "127.0.0.1:0"]);
        assert_eq!(args.last(), Some(&"--exit-when-loaded"));
        assert!(
            !args.contains(&"--keys-dir") && !args.contains(&"--cache-dir"),
            "{args:?}"
        );
        assert_eq!(warm["resources"]["limits"]["memory"], "4608Mi");
        assert_eq!(warm["resources"]["limits"]["nvidia.com/gpu"], "1");
        assert_eq!(warm["resources"]["requests"], c["resources"]["requests"]);
        let mounts = warm["volumeMounts"].as_array().unwrap();
        assert!(mounts.iter().all(|m| m["name"] != "keys"), "{mounts:?}");
        // The host's own arguments, but for its address, its keys and the flag.
        let mut host_args = args[..args.len() - 1].to_vec();
        host_args[2] = "0.0.0.0:8080";
        host_args.extend(["--keys-dir", KEYS_DIR]);
        assert_eq!(c["args"], json!(host_args));
    }

    #[test]
    fn a_scratch_size_bounds_the_volume_and_is_requested() {
        let ps = service(json!({
            "package": {"uri": "https://models.example.com/diabetes.tar", "sha256": SHA},
            "inferenceConfig": {"entryScript": "score.py"},
            "scratchSize": "20Gi",
        }));
        let r = render(&ps, &plan(&ps).unwrap(), &RenderOptions::default());
        let d = serde_json::to_value(&r.deployment).unwrap();
        let pod = &d["spec"]["template"]["spec"];
        let vols = pod["volumes"].as_array().unwrap();
        assert!(vols.contains(&json!({"name": "data", "emptyDir": {"sizeLimit": "20Gi"}})));
        for c in [&pod["initContainers"][1], &pod["containers"][0]] {
            assert_eq!(c["resources"]["requests"]["ephemeral-storage"], "20Gi");
            assert_eq!(c["resources"]["limits"]["ephemeral-storage"], "20Gi");
        }
        let bad = service(json!({
            "package": {"uri": "https://models.example.com/diabetes.tar", "sha256": SHA},
            "scratchSize": "lots",
        }));
        let e = plan(&bad).unwrap_err();
        assert!(e.starts_with("spec.scratchSize: 'lots'"), "{e}");
    }

    #[test]
    fn a_cache_claim_is_shared_by_the_warm_container_and_the_host() {
        let ps = service(json!({
            "package": {"uri": "https://models.example.com/diabetes.tar", "sha256": SHA},
            "inferenceConfig": {"entryScript": "score.py"},
            "cacheClaim": "plinth-cache",
        }));
        let r = render(&ps, &plan(&ps).unwrap(), &RenderOptions::default());
        let d = serde_json::to_value(&r.deployment).unwrap();
        let pod = &d["spec"]["template"]["spec"];
        let vols = pod["volumes"].as_array().unwrap();
        assert!(vols.contains(&json!({"name": "cache", "persistentVolumeClaim": {"claimName": "plinth-cache"}})));
        for c in [&pod["initContainers"][1], &pod["containers"][0]] {
            let args = c["args"].as_array().unwrap();
            let at = args.iter().position(|a| a == "--cache-dir").expect("--cache-dir");
            assert_eq!(args[at + 1], CACHE_DIR);
            let mounts = c["volumeMounts"].as_array().unwrap();
            assert!(mounts.contains(&json!({"name": "cache", "mountPath": CACHE_DIR})));
        }
        let bad = service(json!({
            "package": {"uri": "https://models.example.com/diabetes.tar", "sha256": SHA},
            "cacheClaim": "Not_A_Claim",
        }));
        let e = plan(&bad).unwrap_err();
        assert!(e.starts_with("spec.cacheClaim: 'Not_A_Claim'"), "{e}");
    }

    #[test]
    fn a_bad_config_names_its_field() {
        let ps = service(json!({
            "package": {"uri": "https://x/p.tar", "sha256": SHA},
            "deploymentConfig": {"autoScaler": {"targetUtilization": 300}},
        }));
        let e = plan(&ps).unwrap_err();
        assert!(
            e.starts_with("spec.deploymentConfig: autoScaler.targetUtilization"),
            "{e}"
        );
        let ps = service(json!({"package": {"uri": "http://x/p.tar", "sha256": SHA}}));
        assert!(plan(&ps).unwrap_err().contains("spec.package.uri"));
        let ps = service(json!({"package": {"uri": "https://x/p.tar", "sha256": "abc"}}));
        assert!(plan(&ps).unwrap_err().contains("spec.package.sha256"));
        let mut ps = service(json!({"package": {"uri": "https://x/p.tar", "sha256": SHA}}));
        ps.metadata.name = Some("Diabetes.v2".into());
        assert!(plan(&ps).unwrap_err().starts_with("metadata.name:"));
        let ps = service(
            json!({"package": {"uri": "https://x/p.tar", "sha256": SHA}, "extendedResources": {"amd.com/fpga": "one"}}),
        );
        assert!(plan(&ps).unwrap_err().contains("spec.extendedResources.amd.com/fpga"));
        // Keys stay out of the ConfigMap.
        let ps = service(json!({"package": {"uri": "https://x/p.tar", "sha256": SHA},
                                "deploymentConfig": {"keys": {"primaryKey": "a-very-secret-key-123"}}}));
        let p = plan(&ps).unwrap();
        let r = render(&ps, &p, &RenderOptions::default());
        let cm = serde_json::to_string(&r.config_map).unwrap();
        assert!(
            !cm.contains("a-very-secret-key-123") && !cm.contains("primaryKey"),
            "{cm}"
        );
        let secret = serde_json::to_value(secret(&ps, &p)).unwrap();
        assert_eq!(secret["stringData"]["primaryKey"], "a-very-secret-key-123");
    }

    #[test]
    fn versions_follow_the_endpoint_rules() {
        let v = |name: &str, traffic: u32, default: bool| json!({"name": name, "traffic": traffic, "default": default, "package": {"uri": "https://x/p.tar", "sha256": SHA}});
        let ps = service(json!({"versions": [v("a", 80, true), v("b", 30, false)]}));
        assert!(plan(&ps).unwrap_err().contains("traffic adds up to 110%"));
        let ps = service(json!({"versions": [v("a", 80, false), v("b", 20, false)]}));
        assert!(plan(&ps).unwrap_err().contains("exactly one default"));
        let ps = service(json!({"versions": [v("a", 80, true), v("b", 20, false)]}));
        let p = plan(&ps).unwrap();
        assert_eq!(p.traffic, vec![("a".into(), 80, true), ("b".into(), 20, false)]);
        // One package for both: fetched once (then warmed: the inference configs are the package's).
        let r = render(&ps, &p, &RenderOptions::default());
        let d = serde_json::to_value(&r.deployment).unwrap();
        let names: Vec<&str> = d["spec"]["template"]["spec"]["initContainers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["fetch-0", "warm"]);
    }

    #[test]
    fn a_claim_is_mounted_read_only_instead_of_fetched() {
        // No entry script: nothing to compile, nothing to fetch, no init container.
        let ps =
            service(json!({"package": {"uri": "pvc://models/diabetes/p.tar", "sha256": SHA}, "inferenceConfig": {}}));
        let p = plan(&ps).unwrap();
        let r = render(&ps, &p, &RenderOptions::default());
        let d = serde_json::to_value(&r.deployment).unwrap();
        let pod = &d["spec"]["template"]["spec"];
        assert!(pod.get("initContainers").is_none());
        let vols = pod["volumes"].as_array().unwrap();
        let claim = vols.iter().find(|v| v.get("persistentVolumeClaim").is_some()).unwrap();
        assert_eq!(
            claim["persistentVolumeClaim"],
            json!({"claimName": "models", "readOnly": true})
        );
        let mounts = pod["containers"][0]["volumeMounts"].as_array().unwrap();
        assert!(
            mounts
                .iter()
                .any(|m| m["mountPath"] == "/var/lib/plinth/claims/models" && m["readOnly"] == true)
        );
    }
}
