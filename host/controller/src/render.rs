//! From a checked plan (`plan.rs`) to the objects a reconcile applies: a ConfigMap with the host's
//! manifest, a Deployment of `plinth serve` pods, a Service, the keys' Secret and, where more than one pod
//! may run, a PodDisruptionBudget. Typed Kubernetes objects, built by pure functions: `plinth controller
//! render` prints the same objects without a cluster.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    HTTPGetAction, KeyToPath, PersistentVolumeClaimVolumeSource, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, SeccompProfile, Secret, SecretVolumeSource, SecurityContext, Service, ServicePort,
    ServiceSpec, Toleration, Volume, VolumeMount,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};
use plinth_spec::config::ProbeRequirements;
use plinth_spec::record::{generate_key, hex};
use sha2::{Digest, Sha256};

use crate::crd::PlinthService;
use crate::plan::Plan;

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
/// Where `spec.packageCredentials` is mounted in the fetching init containers (and nowhere else).
pub const CREDENTIALS_DIR: &str = "/etc/plinth/package-credentials";
/// Where `spec.cacheClaim` is mounted (compiled code shared by the pods).
pub const CACHE_DIR: &str = "/var/lib/plinth/cache";
/// Memory the `warm` init container may use above the host's limit: compiling the scientific Python
/// interpreter peaks at about 2.2 GB.
pub const COMPILE_HEADROOM_GB: f64 = 3.0;

/// What a reconcile applies.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub config_map: ConfigMap,
    pub deployment: Deployment,
    pub service: Service,
    /// At most one pod evicted at a time, when more than one may run.
    pub disruption_budget: Option<PodDisruptionBudget>,
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

fn metadata(ps: &PlinthService, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: ps.namespace(),
        labels: Some(labels(&ps.name_any())),
        owner_references: ps.controller_owner_ref(&()).map(|o| vec![o]),
        ..Default::default()
    }
}

fn pods_of(service: &str) -> LabelSelector {
    LabelSelector {
        match_labels: Some(BTreeMap::from([(SERVICE_LABEL.into(), service.into())])),
        ..Default::default()
    }
}

/// Millicores, as Kubernetes writes a CPU quantity.
fn cpu_quantity(cores: f64) -> Quantity {
    Quantity(format!("{}m", (cores * 1000.0).round().max(1.0) as u64))
}

/// Mebibytes from Azure's GB (as Azure's AKS deployments take `memoryInGB` × 1024 Mi).
fn memory_quantity(gb: f64) -> Quantity {
    Quantity(format!("{}Mi", (gb * 1024.0).round().max(1.0) as u64))
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: read_only.then_some(true),
        ..Default::default()
    }
}

fn strings<const N: usize>(items: [&str; N]) -> Vec<String> {
    items.map(str::to_string).to_vec()
}

/// Every container's: no root, no privileges to gain, no capabilities, nothing written outside volumes.
fn locked_down() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// An HTTP probe on the host's port: the defaults given, with Azure's settings over them.
fn probe(path: &str, period: i32, failures: i32, azure: &ProbeRequirements) -> Probe {
    let int = |v: Option<u32>| v.map(|n| n.min(i32::MAX as u32) as i32);
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("http".into()),
            ..Default::default()
        }),
        period_seconds: Some(int(azure.period_seconds).unwrap_or(period)),
        failure_threshold: Some(int(azure.failure_threshold).unwrap_or(failures)),
        timeout_seconds: Some(int(azure.timeout_seconds).unwrap_or(2)),
        initial_delay_seconds: int(azure.initial_delay_seconds),
        success_threshold: int(azure.success_threshold),
        ..Default::default()
    }
}

/// The objects a `PlinthService` runs on (its plan checked first).
pub fn render(ps: &PlinthService, plan: &Plan, options: &RenderOptions) -> Rendered {
    let name = ps.name_any();
    let manifest_json = serde_json::to_string_pretty(&plan.manifest).unwrap_or_default();
    let checksum = hex(&Sha256::digest(manifest_json.as_bytes()));
    let config_map = ConfigMap {
        metadata: metadata(ps, &config_map_name(&name)),
        data: Some(BTreeMap::from([("service.json".into(), manifest_json)])),
        ..Default::default()
    };
    let pod_spec = pod(ps, plan, options);
    let deployment = Deployment {
        metadata: metadata(ps, &name),
        spec: DeploymentSpec {
            replicas: options.with_replicas.then(|| plan.initial_replicas()),
            selector: pods_of(&name),
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::String("25%".into())),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(&name)),
                    // A changed manifest rolls the pods.
                    annotations: Some(BTreeMap::from([("plinth.dev/manifest-sha256".into(), checksum)])),
                    ..Default::default()
                }),
                spec: Some(pod_spec),
            },
            ..Default::default()
        },
        ..Default::default()
    };
    let service = Service {
        metadata: metadata(ps, &name),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: pods_of(&name).match_labels,
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                target_port: Some(IntOrString::String("http".into())),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let disruption_budget = plan.may_run_several().then(|| PodDisruptionBudget {
        metadata: metadata(ps, &name),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(pods_of(&name)),
            ..Default::default()
        }),
        ..Default::default()
    });
    Rendered {
        config_map,
        deployment,
        service,
        disruption_budget,
    }
}

/// The host pod: init containers that fetch the packages and warm the cache, then `plinth serve`.
fn pod(ps: &PlinthService, plan: &Plan, options: &RenderOptions) -> PodSpec {
    let name = ps.name_any();
    let spec = &ps.spec;
    let image = spec.image.clone().unwrap_or_else(|| {
        if plan.wants_gpu {
            options.gpu_image.clone()
        } else {
            options.image.clone()
        }
    });
    let packages_dir = format!("{DATA_DIR}/packages");
    let claims_dir = format!("{DATA_DIR}/claims");
    let mut volumes = vec![
        Volume {
            name: "service".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: config_map_name(&name),
                ..Default::default()
            }),
            ..Default::default()
        },
        Volume {
            name: "keys".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret_name(&name)),
                default_mode: Some(0o440),
                ..Default::default()
            }),
            ..Default::default()
        },
        Volume {
            name: "data".into(),
            empty_dir: Some(EmptyDirVolumeSource {
                size_limit: spec.scratch_size.clone().map(Quantity),
                ..Default::default()
            }),
            ..Default::default()
        },
        Volume {
            name: "tmp".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        },
    ];
    let mut mounts = vec![
        mount("service", MANIFEST_DIR, true),
        mount("keys", KEYS_DIR, true),
        mount("data", DATA_DIR, false),
        mount("tmp", "/tmp", false),
    ];
    if let Some(claim) = &spec.cache_claim {
        volumes.push(Volume {
            name: "cache".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim.clone(),
                ..Default::default()
            }),
            ..Default::default()
        });
        mounts.push(mount("cache", CACHE_DIR, false));
    }
    // Package credentials reach the fetching containers only, under fixed file names.
    let mut fetch_flags = Vec::new();
    if let Some(c) = &spec.package_credentials {
        let mut items = Vec::new();
        for (key, file, flag) in [
            (&c.header_key, "authorization", "--header-file"),
            (&c.query_key, "query", "--query-file"),
            (&c.ca_key, "ca.pem", "--cacert"),
        ] {
            if let Some(key) = key {
                items.push(KeyToPath {
                    key: key.clone(),
                    path: file.into(),
                    ..Default::default()
                });
                fetch_flags.extend([flag.to_string(), format!("{CREDENTIALS_DIR}/{file}")]);
            }
        }
        volumes.push(Volume {
            name: "package-credentials".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(c.secret_name.clone()),
                default_mode: Some(0o440),
                items: Some(items),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    let mut init: Vec<Container> = Vec::new();
    let mut fetched: Vec<(&str, &str)> = Vec::new();
    let mut claims: Vec<&str> = Vec::new();
    for v in &plan.manifest.versions {
        let p = &v.package;
        if let Some(rest) = p.uri.strip_prefix("pvc://") {
            let claim = rest.split_once('/').map(|(c, _)| c).unwrap_or(rest);
            if !claims.contains(&claim) {
                let volume = format!("claim-{}", claims.len());
                volumes.push(Volume {
                    name: volume.clone(),
                    persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                        claim_name: claim.into(),
                        read_only: Some(true),
                    }),
                    ..Default::default()
                });
                mounts.push(mount(&volume, &format!("{claims_dir}/{claim}"), true));
                claims.push(claim);
            }
            continue;
        }
        if fetched.contains(&(p.uri.as_str(), p.sha256.as_str())) {
            continue;
        }
        fetched.push((&p.uri, &p.sha256));
        let mut args = strings(["package", "fetch", &p.uri, "--sha256", &p.sha256, "--to", &packages_dir]);
        if let Some(size) = p.size {
            args.extend(["--max-bytes".to_string(), size.to_string()]);
        }
        args.extend(fetch_flags.iter().cloned());
        let mut fetch_mounts = vec![mount("data", DATA_DIR, false), mount("tmp", "/tmp", false)];
        if spec.package_credentials.is_some() {
            fetch_mounts.push(mount("package-credentials", CREDENTIALS_DIR, true));
        }
        init.push(Container {
            name: format!("fetch-{}", fetched.len() - 1),
            image: Some(image.clone()),
            command: Some(strings(["plinth"])),
            args: Some(args),
            volume_mounts: Some(fetch_mounts),
            security_context: Some(locked_down()),
            resources: Some(ResourceRequirements {
                requests: Some(BTreeMap::from([
                    ("cpu".into(), Quantity("100m".into())),
                    ("memory".into(), Quantity("128Mi".into())),
                ])),
                limits: Some(BTreeMap::from([("memory".into(), Quantity("512Mi".into()))])),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    let (requests, limits) = resources(ps, plan);
    let mut serve_args = strings([
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
    ]);
    if spec.cache_claim.is_some() {
        serve_args.extend(strings(["--cache-dir", CACHE_DIR]));
    }
    // The compiled interpreter's machine-wide cache is the pod's cache (the claim, shared between pods,
    // or the workspace's), never the scratch /tmp that HOME points at.
    let machine_cache = match spec.cache_claim {
        Some(_) => format!("{CACHE_DIR}/components"),
        None => format!("{DATA_DIR}/workspace/cache/components"),
    };
    let home = || {
        Some(vec![
            EnvVar {
                name: "HOME".into(),
                value: Some("/tmp".into()),
                ..Default::default()
            },
            EnvVar {
                name: "PLINTH_MACHINE_CACHE".into(),
                value: Some(machine_cache.clone()),
                ..Default::default()
            },
        ])
    };
    if plan.compiles {
        // Loads the service once, before the host: what it compiles (a Python entry script's
        // interpreter: about a minute and 2 GB) lands in the cache within limits of its own, and the host
        // starts from the cache within the service's.
        let mut args = serve_args.clone();
        args[2] = "127.0.0.1:0".to_string();
        args.push("--exit-when-loaded".to_string());
        let mut warm_limits = limits.clone();
        warm_limits.remove("cpu");
        let memory = plan.memory_limit_gb.unwrap_or(plan.memory_gb).max(plan.memory_gb) + COMPILE_HEADROOM_GB;
        warm_limits.insert("memory".into(), memory_quantity(memory));
        init.push(Container {
            name: "warm".into(),
            image: Some(image.clone()),
            command: Some(strings(["plinth"])),
            args: Some(args),
            env: home(),
            resources: Some(ResourceRequirements {
                requests: Some(requests.clone()),
                limits: Some(warm_limits),
                ..Default::default()
            }),
            security_context: Some(locked_down()),
            volume_mounts: Some(mounts.iter().filter(|m| m.name != "keys").cloned().collect()),
            ..Default::default()
        });
    }
    serve_args.extend(strings(["--keys-dir", KEYS_DIR]));
    let none = ProbeRequirements::default();
    let host = Container {
        name: "plinth".into(),
        image: Some(image),
        command: Some(strings(["plinth"])),
        args: Some(serve_args),
        env: home(),
        ports: Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: PORT,
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        readiness_probe: Some(probe("/readyz", 5, 3, &plan.readiness)),
        liveness_probe: Some(probe("/healthz", 10, 3, &plan.liveness)),
        // Slow loads (a scientific score.py compiles its interpreter first): up to 10 minutes to be ready.
        startup_probe: Some(probe("/readyz", 5, 120, &none)),
        resources: Some(ResourceRequirements {
            requests: Some(requests),
            limits: Some(limits),
            ..Default::default()
        }),
        security_context: Some(locked_down()),
        volume_mounts: Some(mounts),
        ..Default::default()
    };
    let mut tolerations: Vec<Toleration> = Vec::new();
    if plan.gpus > 0 {
        tolerations.push(Toleration {
            key: Some("nvidia.com/gpu".into()),
            operator: Some("Exists".into()),
            effect: Some("NoSchedule".into()),
            ..Default::default()
        });
    }
    tolerations.extend(spec.tolerations.iter().flatten().cloned());
    PodSpec {
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(10001),
            run_as_group: Some(10001),
            fs_group: Some(10001),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        init_containers: (!init.is_empty()).then_some(init),
        containers: vec![host],
        volumes: Some(volumes),
        image_pull_secrets: spec.image_pull_secrets.clone(),
        tolerations: (!tolerations.is_empty()).then_some(tolerations),
        node_selector: spec.node_selector.clone(),
        termination_grace_period_seconds: Some(30),
        ..Default::default()
    }
}

/// The host container's requests and limits: every version's one replica, GPUs, extended resources and
/// scratch space.
fn resources(ps: &PlinthService, plan: &Plan) -> (BTreeMap<String, Quantity>, BTreeMap<String, Quantity>) {
    let mut requests = BTreeMap::from([
        ("cpu".to_string(), cpu_quantity(plan.cpu)),
        ("memory".to_string(), memory_quantity(plan.memory_gb)),
    ]);
    let memory_limit = plan.memory_limit_gb.unwrap_or(plan.memory_gb).max(plan.memory_gb);
    let mut limits = BTreeMap::from([("memory".to_string(), memory_quantity(memory_limit))]);
    if let Some(cpu) = plan.cpu_limit {
        limits.insert("cpu".into(), cpu_quantity(cpu.max(plan.cpu)));
    }
    let mut both = |k: &str, v: Quantity| {
        requests.insert(k.into(), v.clone());
        limits.insert(k.into(), v);
    };
    if plan.gpus > 0 {
        both("nvidia.com/gpu", Quantity(plan.gpus.to_string()));
    }
    for (k, v) in ps.spec.extended_resources.iter().flatten() {
        both(k, Quantity(v.clone()));
    }
    if let Some(size) = &ps.spec.scratch_size {
        both("ephemeral-storage", Quantity(size.clone()));
    }
    (requests, limits)
}

/// The keys' Secret, with new keys (created once, when absent; never rotated by the controller). Keys the
/// default version's deployment config names are used instead.
pub fn secret(ps: &PlinthService, plan: &Plan) -> Secret {
    let keys = plan
        .configs
        .get(plan.default)
        .map(|c| c.keys.clone())
        .unwrap_or_default();
    let primary = keys.primary_key.unwrap_or_else(generate_key);
    let secondary = keys.secondary_key.unwrap_or_else(generate_key);
    secret_with_keys(ps, primary, secondary)
}

/// The keys' Secret holding the keys given (`plinth controller render --keys-from`).
pub fn secret_with_keys(ps: &PlinthService, primary: String, secondary: String) -> Secret {
    Secret {
        metadata: metadata(ps, &secret_name(&ps.name_any())),
        type_: Some("Opaque".into()),
        string_data: Some(BTreeMap::from([
            ("primaryKey".into(), primary),
            ("secondaryKey".into(), secondary),
        ])),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests;
