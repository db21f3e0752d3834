//! A declared service: what a host serves when it is started from a service manifest and its packages
//! (`plinth serve --service-manifest`, the pods a Kubernetes `PlinthService` runs). The workspace is
//! scratch: the packages fill it at start, the keys come from files (a mounted Secret), and the admin API
//! refuses every write (the manifest is the one source of truth).
//!
//! One pod is one replica, as on Azure's AKS: each version runs one replica in the host, with the
//! autoscaler's sampling kept on (pinned to one replica) so the host reports its utilization for the
//! cluster's scaler (`GET /api/v1/load`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};

use crate::api::{DeployRequest, DeployState, VersionSettings};
use crate::deployments::Command;
use plinth_spec::manifest::{ManifestVersion, PackageRef, ServiceManifest};

use crate::package;
use crate::plane::ControlPlane;
use crate::{Error, Result};

/// Where a declared host finds what it serves.
#[derive(Debug, Clone)]
pub struct Declared {
    pub manifest: ServiceManifest,
    /// Where fetched packages lie, as `<sha256>.tar`.
    pub package_dir: PathBuf,
    /// Where `pvc://claim/path` packages are mounted, as `<claims_dir>/<claim>/<path>`.
    pub claims_dir: PathBuf,
    /// The primary and secondary keys.
    pub keys: (String, String),
    /// Where the keys were read from, to follow changes (a Secret edited in the cluster).
    pub keys_dir: Option<PathBuf>,
}

/// How often a declared host looks at its keys folder for changed keys.
pub const KEYS_POLL: Duration = Duration::from_secs(2);

/// The keys in `dir` (files `primaryKey` and `secondaryKey`, trimmed, not empty).
fn read_keys(dir: &Path) -> Result<(String, String)> {
    let read = |name: &str| -> Result<String> {
        let p = dir.join(name);
        let k = std::fs::read_to_string(&p).map_err(Error::io(&p))?.trim().to_string();
        if k.is_empty() {
            return Err(Error::BadRequest(format!("key file {} is empty", p.display())));
        }
        Ok(k)
    };
    Ok((read("primaryKey")?, read("secondaryKey")?))
}

impl Declared {
    /// Reads the manifest file (JSON, as the controller writes it) and the keys folder (files
    /// `primaryKey` and `secondaryKey`, as the controller's Secret mounts them).
    pub fn read(manifest: &Path, package_dir: &Path, claims_dir: &Path, keys_dir: Option<&Path>) -> Result<Self> {
        let bytes = std::fs::read(manifest).map_err(Error::io(manifest))?;
        let manifest_value: ServiceManifest = serde_json::from_slice(&bytes)
            .map_err(|e| Error::BadRequest(format!("service manifest {}: {e}", manifest.display())))?;
        let keys = match keys_dir {
            Some(dir) => read_keys(dir)?,
            None => (plinth_router::generate_key(), plinth_router::generate_key()),
        };
        Ok(Declared {
            manifest: manifest_value,
            package_dir: package_dir.to_path_buf(),
            claims_dir: claims_dir.to_path_buf(),
            keys,
            keys_dir: keys_dir.map(Path::to_path_buf),
        })
    }

    /// Where the package of `r` lies on this host.
    pub fn locate(&self, r: &PackageRef) -> Result<PathBuf> {
        if !plinth_spec::manifest::is_sha256(&r.sha256) {
            return Err(Error::BadRequest(format!(
                "package {}: sha256 '{}' is not 64 lowercase hex digits",
                r.uri, r.sha256
            )));
        }
        if let Some(rest) = r.uri.strip_prefix("pvc://") {
            let (claim, path) = rest.split_once('/').unwrap_or((rest, ""));
            plinth_spec::record::check_relative(path)?;
            return Ok(self.claims_dir.join(claim).join(path));
        }
        Ok(self.package_dir.join(format!("{}.tar", r.sha256)))
    }
}

impl ControlPlane {
    /// Serves `declared`: imports each version's package, deploys it with the given keys, and waits until
    /// every version is loaded. A version that fails to load is an error (the host should exit: its pod
    /// restarts and the error is in its log). The host is not ready from this call on (before the
    /// returned future first runs) until the future ends.
    ///
    /// Once loaded, the keys folder (if any) is read every [`KEYS_POLL`] for as long as the control plane
    /// runs: changed keys replace the service's at once (a Secret edited in the cluster reaches its pods
    /// without a restart); a folder that cannot be read keeps the keys as they are, and says so once.
    pub fn serve_declared(self: &Arc<Self>, declared: Declared) -> impl Future<Output = Result<()>> + Send + 'static {
        self.declaring.fetch_add(1, Ordering::Relaxed);
        let me = self.clone();
        async move {
            let (name, keys, keys_dir) = (
                declared.manifest.name.clone(),
                declared.keys.clone(),
                declared.keys_dir.clone(),
            );
            let result = me.deploy_declared(declared).await;
            me.declaring.fetch_sub(1, Ordering::Relaxed);
            if let (Ok(()), Some(dir)) = (&result, keys_dir) {
                tokio::spawn(follow_keys(Arc::downgrade(&me), name, dir, keys));
            }
            result
        }
    }

    async fn deploy_declared(self: &Arc<Self>, declared: Declared) -> Result<()> {
        let ws = self.cx.ws.clone();
        // A restarted container finds the services it served before: the manifest replaces them.
        for old in ws.services()? {
            self.ask(|reply| Command::DeleteService { name: old.name, reply })
                .await?;
        }
        let name = declared.manifest.name.clone();
        let mut versions: Vec<&ManifestVersion> = declared.manifest.versions.iter().collect();
        if versions.is_empty() {
            return Err(Error::BadRequest(format!("service manifest {name}: no version")));
        }
        // The default version first, so the endpoint always has one.
        let single = versions.len() == 1;
        versions.sort_by_key(|v| !(single || v.settings.default == Some(true)));
        for (i, v) in versions.iter().enumerate() {
            let path = declared.locate(&v.package)?;
            let (ws2, sha) = (ws.clone(), v.package.sha256.clone());
            let p = path.clone();
            let pm = tokio::task::spawn_blocking(move || package::import(&ws2, &p, &sha))
                .await
                .map_err(|source| Error::Task {
                    what: "importing a package",
                    source,
                })??;
            let mut models = Vec::new();
            for m in &pm.models {
                let r = ws.register_model(&m.name, m.description.clone(), m.tags.clone(), m.files.clone())?;
                models.push(r.id());
            }
            let mut dc = v
                .settings
                .deployment_config
                .clone()
                .unwrap_or(pm.deployment_config.clone());
            one_pod_one_replica(&mut dc, &declared.keys);
            let req = DeployRequest {
                name: name.clone(),
                version: Some(v.name.clone()),
                models,
                inference_config: v
                    .settings
                    .inference_config
                    .clone()
                    .unwrap_or(pm.inference_config.clone()),
                deployment_config: dc,
                source: pm.source.clone(),
                entry_script: pm.entry_script.clone(),
                create: false,
                settings: VersionSettings {
                    traffic: Some(v.settings.traffic.unwrap_or(if single { 100 } else { 0 })),
                    is_default: Some(single || v.settings.default == Some(true)),
                    control: v.settings.treatment.map(|t| !t),
                    mirror: v.settings.mirror,
                    ..Default::default()
                },
            };
            let add_to = (i > 0).then(|| name.clone());
            self.ask(|reply| Command::Deploy { req, add_to, reply }).await?;
            tracing::info!(service = %name, version = %v.name, package = %v.package.sha256, "declared version deployed");
        }
        // Wait for every version to load (or fail).
        loop {
            let views = self
                .ask(|reply| Command::Describe {
                    name: Some(name.clone()),
                    reply,
                })
                .await?;
            let Some(view) = views.first() else {
                return Err(Error::NotFound(format!("service {name} vanished while it loaded")));
            };
            let versions = view.versions.as_deref().unwrap_or_default();
            if let Some(failed) = versions.iter().find(|v| v.state == DeployState::Failed) {
                return Err(Error::BadRequest(format!(
                    "service {name} version {}: {}",
                    failed.name,
                    failed.error.as_deref().unwrap_or("failed to load")
                )));
            }
            if versions.iter().all(|v| v.state == DeployState::Healthy) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The pod is the replica: one replica per version, its autoscaler pinned to one so it keeps measuring
/// utilization; the keys are the mounted ones.
fn one_pod_one_replica(dc: &mut Value, keys: &(String, String)) {
    if !dc.is_object() {
        *dc = json!({});
    }
    let obj = dc.as_object_mut().expect("an object");
    let scaler = obj.entry("autoScaler").or_insert_with(|| json!({}));
    if !scaler.is_object() {
        *scaler = json!({});
    }
    let s = scaler.as_object_mut().expect("an object");
    s.insert("autoscaleEnabled".into(), json!(true));
    s.insert("minReplicas".into(), json!(1));
    s.insert("maxReplicas".into(), json!(1));
    obj.remove("numReplicas");
    obj.insert("keys".into(), json!({"primaryKey": keys.0, "secondaryKey": keys.1}));
}

/// Replaces the service's keys whenever the files in `dir` change, until the control plane goes.
async fn follow_keys(plane: std::sync::Weak<ControlPlane>, name: String, dir: PathBuf, mut keys: (String, String)) {
    let mut unreadable = false;
    loop {
        tokio::time::sleep(KEYS_POLL).await;
        let d = dir.clone();
        let read = match tokio::task::spawn_blocking(move || read_keys(&d)).await {
            Ok(read) => read,
            Err(_) => continue,
        };
        let now = match read {
            Ok(now) => now,
            Err(e) => {
                if !unreadable {
                    tracing::warn!(service = %name, error = %e, "the keys folder cannot be read: the keys stay as they are");
                    unreadable = true;
                }
                continue;
            }
        };
        unreadable = false;
        if now == keys {
            continue;
        }
        let Some(plane) = plane.upgrade() else { return };
        let set = plane
            .ask(|reply| Command::SetKeys {
                name: name.clone(),
                keys: now.clone(),
                reply,
            })
            .await;
        match set {
            Ok(()) => {
                tracing::info!(service = %name, "keys replaced by the mounted ones");
                keys = now;
            }
            Err(Error::Stopped) => return,
            Err(e) => tracing::warn!(service = %name, error = %e, "the mounted keys could not be set"),
        }
    }
}
