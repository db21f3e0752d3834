//! The control plane: the admin API behind `plinth model|deploy|service`, and deployments, which
//! materialise a service's files from the blob store, compile its entry script (cached), load the
//! package off the request path and swap it into the router.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use http::{Method, StatusCode};
use plinth_runtime::onnx::SessionOptions;
use plinth_runtime::wasm::{ScriptLimits, WasmEngine};
use plinth_runtime::{MAX_MODELS, ModelSource, Package, PackageSpec};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::auth::{TokenIssuer, bearer, generate_key, key_matches, now};
use crate::autoscale::Policy;
use crate::collect::{Collector, Sampling};
use crate::config::{DeploymentConfig, InferenceConfig};
use crate::logs::LogHub;
use crate::metrics::Metrics;
use crate::service::{Auth, Capacity, Factory, Routed, Router, Service, Version, VersionConfig};
use crate::store::{
    FileRef, ModelRecord, RollbackPolicy, ServiceRecord, VersionRecord, Workspace, check_name, check_relative,
};
use crate::{Error, Result};

/// How often treatments are checked against their rollback policies.
const ROLLBACK_CHECK: Duration = Duration::from_millis(500);

/// Settings of a control plane.
#[derive(Debug, Clone)]
pub struct ControlOptions {
    /// Lifetime of the tokens `plinth service token` hands out. Default 1 hour.
    pub token_lifetime: Duration,
    pub ort_library: Option<PathBuf>,
    /// Where compiled entry scripts are cached. Default: `<workspace>/cache`.
    pub cache_dir: Option<PathBuf>,
    /// Sustained low utilization before replicas are removed. Default 60 s.
    pub scale_down_after: Duration,
    /// Where versions with `dataCollection.storageEnabled` send their records.
    pub collector: Option<Arc<Collector>>,
}

impl Default for ControlOptions {
    fn default() -> Self {
        ControlOptions {
            token_lifetime: Duration::from_secs(3600),
            ort_library: None,
            cache_dir: None,
            scale_down_after: Duration::from_secs(60),
            collector: None,
        }
    }
}

/// Where a service's deployment stands.
#[derive(Debug, Clone, Serialize)]
pub struct DeployState {
    /// `Transitioning`, `Healthy` or `Failed`, as Azure ML names them.
    pub state: &'static str,
    pub error: Option<String>,
    pub generation: u64,
    /// Configuration fields accepted but without effect here.
    pub ignored: Vec<String>,
}

pub struct ControlPlane {
    ws: Arc<Workspace>,
    router: Arc<Router>,
    engine: Arc<WasmEngine>,
    tokens: TokenIssuer,
    logs: Arc<LogHub>,
    /// Deployment state by `service/version`.
    states: DashMap<String, DeployState>,
    /// Loaded versions by service, then version name.
    built: DashMap<String, HashMap<String, Arc<Version>>>,
    generation: AtomicU64,
    options: ControlOptions,
    metrics: Arc<Metrics>,
    capacity: Arc<Capacity>,
}

/// `POST /api/v1/admin/models`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterModel {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    files: Vec<FileRef>,
}

/// `POST /api/v1/admin/services` (deploy, endpoint create) and `.../versions` (version add).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeployRequest {
    #[serde(default)]
    name: String,
    /// The version to create or replace. Default "1".
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    models: Vec<String>,
    #[serde(default)]
    inference_config: Value,
    #[serde(default)]
    deployment_config: Value,
    #[serde(default)]
    source: Vec<FileRef>,
    #[serde(default)]
    entry_script: Option<String>,
    /// Endpoint creation: refuse if the service exists.
    #[serde(default)]
    create: bool,
    #[serde(flatten)]
    settings: VersionSettings,
}

/// What `plinth endpoint version update` may change without redeploying.
#[derive(Debug, Default, Deserialize)]
struct VersionSettings {
    #[serde(default)]
    traffic: Option<u32>,
    #[serde(default)]
    is_default: Option<bool>,
    #[serde(default)]
    control: Option<bool>,
    #[serde(default)]
    mirror: Option<u32>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    tags: Option<BTreeMap<String, String>>,
    #[serde(default)]
    rollback: Option<RollbackPolicy>,
}

/// `PATCH /api/v1/admin/services/{name}/versions/{version}`: settings, and optionally new content.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateRequest {
    #[serde(default)]
    models: Option<Vec<String>>,
    #[serde(default)]
    inference_config: Option<Value>,
    #[serde(default)]
    deployment_config: Option<Value>,
    #[serde(default)]
    source: Option<Vec<FileRef>>,
    #[serde(default)]
    entry_script: Option<String>,
    #[serde(flatten)]
    settings: VersionSettings,
}

impl ControlPlane {
    pub fn new(
        ws: Arc<Workspace>,
        router: Arc<Router>,
        engine: Arc<WasmEngine>,
        logs: Arc<LogHub>,
        metrics: Arc<Metrics>,
        options: ControlOptions,
    ) -> Self {
        let tokens = TokenIssuer::new(ws.jwt_secret(), options.token_lifetime);
        ControlPlane {
            ws,
            router,
            engine,
            tokens,
            logs,
            states: DashMap::new(),
            built: DashMap::new(),
            generation: AtomicU64::new(now() * 1000),
            options,
            metrics,
            capacity: Arc::new(Capacity::of_host()),
        }
    }

    pub fn tokens(&self) -> &TokenIssuer {
        &self.tokens
    }

    pub fn admin_token(&self) -> &str {
        self.ws.admin_token()
    }

    pub fn logs(&self) -> &Arc<LogHub> {
        &self.logs
    }

    /// `service/version` of deployments still loading.
    pub fn transitioning(&self) -> Vec<String> {
        self.states
            .iter()
            .filter(|e| e.value().state == "Transitioning")
            .map(|e| e.key().clone())
            .collect()
    }

    fn state(&self, service: &str, version: &str) -> Option<DeployState> {
        self.states.get(&state_key(service, version)).map(|s| s.clone())
    }

    /// A service's state: Failed if a version failed, Transitioning while one loads, else Healthy.
    pub fn service_state(&self, r: &ServiceRecord) -> (&'static str, Option<String>) {
        let states: Vec<Option<DeployState>> = r.versions.iter().map(|v| self.state(&r.name, &v.name)).collect();
        if let Some(failed) = states.iter().flatten().find(|s| s.state == "Failed") {
            return ("Failed", failed.error.clone());
        }
        if states
            .iter()
            .any(|s| s.as_ref().is_none_or(|s| s.state == "Transitioning"))
        {
            return ("Transitioning", None);
        }
        ("Healthy", None)
    }

    /// Deploys every stored service (at start-up) and starts the rollback monitor.
    pub fn restore(self: &Arc<Self>) -> Result<()> {
        for record in self.ws.services()? {
            for v in &record.versions {
                self.start_deploy(&record.name, v.clone(), Vec::new());
            }
        }
        let this = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(ROLLBACK_CHECK);
            loop {
                tick.tick().await;
                match this.upgrade() {
                    Some(cp) => cp.check_rollbacks(),
                    None => break,
                }
            }
        });
        Ok(())
    }

    pub async fn admin(
        self: &Arc<Self>,
        parts: &http::request::Parts,
        path: &[&str],
        body: Bytes,
    ) -> Result<(StatusCode, Value)> {
        let given = bearer(parts.headers.get(http::header::AUTHORIZATION));
        if !given.is_some_and(|g| key_matches(g, self.ws.admin_token())) {
            return Err(Error::Unauthorized(
                "the admin API needs 'Authorization: Bearer <admin token>' (the workspace's admin-token file)".into(),
            ));
        }
        let ok = |v: Value| Ok((StatusCode::OK, v));
        match (&parts.method, path) {
            (&Method::GET, ["blobs", sha]) => match self.ws.has_blob(sha)? {
                true => ok(json!({"sha256": sha})),
                false => Err(Error::NotFound(format!("blob {sha} not found"))),
            },
            (&Method::PUT, ["blobs", sha]) => {
                let ws = self.ws.clone();
                let sha = sha.to_string();
                blocking(move || ws.put_blob(&sha, &body)).await?;
                Ok((StatusCode::CREATED, json!({})))
            }
            (&Method::POST, ["models"]) => {
                let req: RegisterModel = parse_body(&body)?;
                let ws = self.ws.clone();
                let record =
                    blocking(move || ws.register_model(&req.name, req.description, req.tags, req.files)).await?;
                Ok((StatusCode::CREATED, to_json(&record)))
            }
            (&Method::GET, ["models"]) => ok(to_json(&self.ws.models()?)),
            (&Method::GET, ["models", id]) => ok(to_json(&self.ws.model(id)?)),
            (&Method::DELETE, ["models", id]) => {
                self.ws.delete_model(id)?;
                ok(json!({"deleted": id}))
            }
            (&Method::POST, ["services"]) => {
                let req: DeployRequest = parse_body(&body)?;
                ok(self.deploy(req)?)
            }
            (&Method::GET, ["services"]) => {
                let list: Vec<Value> = self.ws.services()?.iter().map(|r| self.describe(r, false)).collect();
                ok(Value::Array(list))
            }
            (&Method::GET, ["services", name]) => ok(self.describe(&self.ws.service(name)?, true)),
            (&Method::DELETE, ["services", name]) => {
                self.ws.delete_service(name)?;
                self.router.remove(name);
                self.states.retain(|k, _| !k.starts_with(&format!("{name}/")));
                self.built.remove(*name);
                self.logs.remove(name);
                let _ = std::fs::remove_dir_all(self.deploy_root(name));
                ok(json!({"deleted": name}))
            }
            (&Method::POST, ["services", name, "versions"]) => {
                let mut req: DeployRequest = parse_body(&body)?;
                req.name = name.to_string();
                if req.version.is_none() {
                    return Err(Error::BadRequest("a new version needs a name (version)".into()));
                }
                if self.ws.service(name).is_err() {
                    return Err(Error::NotFound(format!("endpoint {name} not found: create it first")));
                }
                ok(self.deploy(req)?)
            }
            (&Method::PATCH, ["services", name, "versions", version]) => {
                let req: UpdateRequest = parse_body(&body)?;
                ok(self.update_version(name, version, req)?)
            }
            (&Method::DELETE, ["services", name, "versions", version]) => {
                let mut r = self.ws.service(name)?;
                let v = r.version(version)?.clone();
                if r.versions.len() == 1 {
                    return Err(Error::Conflict(format!(
                        "{version} is the only version of {name}; delete the endpoint instead"
                    )));
                }
                if v.is_default {
                    return Err(Error::Conflict(format!(
                        "{version} is the default version; make another the default first"
                    )));
                }
                r.versions.retain(|x| x.name != *version);
                r.updated = now();
                r.validate()?;
                self.ws.put_service(&r)?;
                self.states.remove(&state_key(name, version));
                if let Some(mut built) = self.built.get_mut(*name) {
                    built.remove(*version);
                }
                self.publish(name)?;
                self.logs.event(name, "INFO", &format!("version {version} deleted"));
                ok(self.describe(&r, true))
            }
            (&Method::GET, ["services", name, "keys"]) => {
                let r = self.ws.service(name)?;
                ok(json!({"primaryKey": r.primary_key, "secondaryKey": r.secondary_key}))
            }
            (&Method::POST, ["services", name, "regen-key"]) => {
                let req: Value = parse_body(&body)?;
                let which = req.get("key").and_then(Value::as_str).unwrap_or("");
                let mut r = self.ws.service(name)?;
                match which.to_ascii_lowercase().as_str() {
                    "primary" => r.primary_key = generate_key(),
                    "secondary" => r.secondary_key = generate_key(),
                    _ => {
                        return Err(Error::BadRequest(format!(
                            "key must be \"primary\" or \"secondary\", got \"{which}\""
                        )));
                    }
                }
                r.updated = now();
                self.ws.put_service(&r)?;
                if let Some(svc) = self.router.get(name) {
                    svc.set_keys(r.primary_key.clone(), r.secondary_key.clone());
                }
                self.logs.event(name, "INFO", &format!("{which} key regenerated"));
                ok(json!({"primaryKey": r.primary_key, "secondaryKey": r.secondary_key}))
            }
            (&Method::GET | &Method::POST, ["services", name, "token"]) => {
                let r = self.ws.service(name)?;
                if !r.token_auth_enabled {
                    return Err(Error::BadRequest(format!(
                        "service {name} does not use token auth (set tokenAuthEnabled in its deployment config)"
                    )));
                }
                ok(to_json(&self.tokens.issue(name)?))
            }
            (&Method::GET, ["services", name, "logs"]) => {
                self.ws.service(name)?;
                let tail = query_param(parts, "tail").and_then(|t| t.parse().ok());
                ok(json!({"lines": self.logs.lines(name, tail)}))
            }
            (method, _) => Err(Error::NotFound(format!("no admin route {method} /{}", path.join("/")))),
        }
    }

    fn describe(&self, r: &ServiceRecord, full: bool) -> Value {
        let (state, error) = self.service_state(r);
        let live = self.router.get(&r.name);
        let models: Vec<String> = r.versions.iter().flat_map(|v| v.models.clone()).collect();
        let mut v = json!({
            "name": r.name,
            "state": state,
            "error": error,
            "models": models,
            "scoringUri": format!("/api/v1/service/{}/score", r.name),
            "swaggerUri": format!("/api/v1/service/{}/swagger.json", r.name),
            "authEnabled": r.auth_enabled,
            "tokenAuthEnabled": r.token_auth_enabled,
            "created": r.created,
            "updated": r.updated,
        });
        if full {
            let versions: Vec<Value> = r
                .versions
                .iter()
                .map(|ver| {
                    let st = self.state(&r.name, &ver.name);
                    let running = live.as_ref().and_then(|svc| {
                        let i = svc.versions().iter().position(|x| x.name() == ver.name)?;
                        Some((svc.weights()[i], svc.versions()[i].clone()))
                    });
                    let window = ver.rollback.as_ref().map(|p| p.window_secs).unwrap_or(60);
                    let stats = running.as_ref().map(|(_, x)| {
                        let (requests, failures) = x.stats().totals();
                        json!({"requests": requests, "failures": failures, "rejected": x.stats().rejected(), "window": x.stats().window(Duration::from_secs(window))})
                    });
                    json!({
                        "name": ver.name,
                        "state": st.as_ref().map(|s| s.state).unwrap_or("Unknown"),
                        "error": st.as_ref().and_then(|s| s.error.clone()),
                        "ignored": st.map(|s| s.ignored).unwrap_or_default(),
                        "models": ver.models,
                        "entryScript": ver.entry_script,
                        "traffic": ver.traffic,
                        "effectiveTraffic": running.as_ref().map(|(w, _)| *w).unwrap_or(0),
                        "isDefault": ver.is_default,
                        "type": if ver.control { "control" } else { "treatment" },
                        "mirror": ver.mirror,
                        "description": ver.description,
                        "tags": ver.tags,
                        "rollback": ver.rollback,
                        "replicas": running.as_ref().map(|(_, x)| x.replica_count()),
                        "utilization": running.as_ref().map(|(_, x)| (x.utilization() * 1000.0).round() / 1000.0),
                        "stats": stats,
                        "deploymentConfig": to_json(&ver.deployment_config),
                        "inferenceConfig": to_json(&ver.inference_config),
                    })
                })
                .collect();
            v["versions"] = Value::Array(versions);
            if let Some(svc) = &live {
                v["replicas"] = json!(svc.versions().iter().map(|x| x.replica_count()).sum::<u32>());
            }
            v["events"] = json!(r.events);
            if let Some(first) = r.versions.iter().find(|x| x.is_default) {
                v["deploymentConfig"] = to_json(&first.deployment_config);
                v["inferenceConfig"] = to_json(&first.inference_config);
            }
        }
        v
    }

    /// Validates a version's content (configs, models, files) into a record.
    fn version_record(
        &self,
        name: &str,
        models: &[String],
        ic: &Value,
        dc: &Value,
        source: Vec<FileRef>,
        entry_script: Option<String>,
    ) -> Result<(VersionRecord, Vec<String>)> {
        if models.is_empty() && entry_script.is_none() {
            return Err(Error::BadRequest(
                "a deployment needs a model (-m NAME:VERSION) or an entry script".into(),
            ));
        }
        if models.len() > MAX_MODELS {
            return Err(Error::BadRequest(format!(
                "a deployment holds at most {MAX_MODELS} models, this one has {}",
                models.len()
            )));
        }
        let as_bytes = |v: &Value| {
            if v.is_null() {
                b"{}".to_vec()
            } else {
                serde_json::to_vec(v).unwrap_or_default()
            }
        };
        let (dc, mut ignored) = DeploymentConfig::from_json("deploymentconfig.json", &as_bytes(dc))
            .map_err(|e| Error::BadRequest(e.to_string()))?;
        let (ic, ic_ignored) = InferenceConfig::from_json("inferenceconfig.json", &as_bytes(ic))
            .map_err(|e| Error::BadRequest(e.to_string()))?;
        ignored.extend(ic_ignored);
        let mut ids = Vec::with_capacity(models.len());
        for id in models {
            ids.push(self.ws.model(id)?.id());
        }
        self.ws.check_files(&source)?;
        if let Some(script) = &entry_script {
            check_relative(script)?;
            if !source.iter().any(|f| &f.path == script) {
                return Err(Error::BadRequest(format!(
                    "entry script {script} is not among the uploaded source files"
                )));
            }
        } else if ids.len() != 1 {
            return Err(Error::BadRequest(format!(
                "without an entry script a service serves exactly one ONNX model, this deployment names {}",
                ids.len()
            )));
        }
        let record = VersionRecord {
            name: name.to_string(),
            models: ids,
            inference_config: ic,
            deployment_config: dc,
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
        };
        Ok((record, ignored))
    }

    /// `plinth deploy`, `plinth endpoint create` and `plinth endpoint version add`: stores a version and
    /// starts deploying it. Re-deploying a version keeps its keys, traffic and settings.
    fn deploy(self: &Arc<Self>, req: DeployRequest) -> Result<Value> {
        check_name("service", &req.name)?;
        let version_name = req.version.clone().unwrap_or_else(|| "1".into());
        check_name("version", &version_name)?;
        let (mut version, ignored) = self.version_record(
            &version_name,
            &req.models,
            &req.inference_config,
            &req.deployment_config,
            req.source,
            req.entry_script,
        )?;
        let existing = self.ws.service(&req.name).ok();
        if req.create && existing.is_some() {
            return Err(Error::Conflict(format!("endpoint {} already exists", req.name)));
        }
        let dc = version.deployment_config.clone();
        let mut record = match existing {
            Some(r) => r,
            None => {
                let (primary, secondary) = (
                    dc.keys.primary_key.clone().unwrap_or_else(generate_key),
                    dc.keys.secondary_key.clone().unwrap_or_else(generate_key),
                );
                ServiceRecord {
                    name: req.name.clone(),
                    versions: Vec::new(),
                    auth_enabled: dc.auth_enabled,
                    token_auth_enabled: dc.token_auth_enabled,
                    primary_key: primary,
                    secondary_key: secondary,
                    created: now(),
                    updated: now(),
                    events: Vec::new(),
                }
            }
        };
        match record.versions.iter_mut().find(|v| v.name == version_name) {
            Some(old) => {
                // Same version again: new content, same place in the rollout.
                version.traffic = old.traffic;
                version.is_default = old.is_default;
                version.control = old.control;
                version.mirror = old.mirror;
                version.description = old.description.clone();
                version.tags = old.tags.clone();
                version.rollback = old.rollback.clone();
                version.created = old.created;
                apply_settings(&mut version, &req.settings);
                *old = version.clone();
            }
            None => {
                let first = record.versions.is_empty();
                version.is_default = first;
                version.traffic = 0;
                apply_settings(&mut version, &req.settings);
                if version.is_default {
                    for other in &mut record.versions {
                        other.is_default = false;
                    }
                }
                record.versions.push(version.clone());
            }
        }
        if record.versions.len() == 1 || version.is_default {
            // The service's credentials follow the deployment config of its default version.
            record.auth_enabled = dc.auth_enabled;
            record.token_auth_enabled = dc.token_auth_enabled;
            if let Some(k) = &dc.keys.primary_key {
                record.primary_key = k.clone();
            }
            if let Some(k) = &dc.keys.secondary_key {
                record.secondary_key = k.clone();
            }
        }
        if version.control {
            for other in record.versions.iter_mut().filter(|v| v.name != version.name) {
                other.control = false;
            }
        }
        record.updated = now();
        record.validate()?;
        self.ws.put_service(&record)?;
        for note in &ignored {
            self.logs
                .event(&record.name, "WARN", &format!("ignored on a Plinth host: {note}"));
        }
        self.start_deploy(&record.name, version, ignored);
        Ok(self.describe(&record, false))
    }

    /// `plinth endpoint version update`: settings apply at once; new content redeploys the version.
    fn update_version(self: &Arc<Self>, name: &str, version: &str, req: UpdateRequest) -> Result<Value> {
        let mut record = self.ws.service(name)?;
        let old = record.version(version)?.clone();
        let content_changed = req.models.is_some()
            || req.inference_config.is_some()
            || req.deployment_config.is_some()
            || req.source.is_some()
            || req.entry_script.is_some();
        let mut updated = old.clone();
        let mut ignored = Vec::new();
        if content_changed {
            let (fresh, notes) = self.version_record(
                version,
                req.models.as_deref().unwrap_or(&old.models),
                req.inference_config.as_ref().unwrap_or(&to_json(&old.inference_config)),
                req.deployment_config
                    .as_ref()
                    .unwrap_or(&to_json(&old.deployment_config)),
                req.source.clone().unwrap_or_else(|| old.source.clone()),
                req.entry_script.clone().or_else(|| old.entry_script.clone()),
            )?;
            updated.models = fresh.models;
            updated.inference_config = fresh.inference_config;
            updated.deployment_config = fresh.deployment_config;
            updated.source = fresh.source;
            updated.entry_script = fresh.entry_script;
            ignored = notes;
        }
        apply_settings(&mut updated, &req.settings);
        updated.updated = now();
        if updated.is_default && !old.is_default {
            for other in &mut record.versions {
                other.is_default = false;
            }
        }
        if updated.control && !old.control {
            for other in &mut record.versions {
                other.control = false;
            }
        }
        if !updated.is_default && old.is_default {
            return Err(Error::BadRequest(format!(
                "{version} is the default version; make another version the default instead"
            )));
        }
        *record.version_mut(version)? = updated.clone();
        record.updated = now();
        record.validate()?;
        self.ws.put_service(&record)?;
        self.logs.event(
            name,
            "INFO",
            &format!(
                "version {version} updated: traffic {}%{}{}",
                updated.traffic,
                if updated.is_default { ", default" } else { "" },
                if updated.mirror > 0 {
                    format!(", mirror {}%", updated.mirror)
                } else {
                    String::new()
                }
            ),
        );
        if content_changed {
            self.start_deploy(name, updated, ignored);
        } else {
            self.publish(name)?;
        }
        Ok(self.describe(&record, true))
    }

    fn start_deploy(self: &Arc<Self>, service: &str, version: VersionRecord, ignored: Vec<String>) {
        let generation = self.generation.fetch_add(1, Ordering::Relaxed);
        let key = state_key(service, &version.name);
        self.states.insert(
            key.clone(),
            DeployState {
                state: "Transitioning",
                error: None,
                generation,
                ignored,
            },
        );
        self.logs.event(
            service,
            "INFO",
            &format!("deploying version {} (generation {generation})", version.name),
        );
        let this = self.clone();
        let service = service.to_string();
        tokio::spawn(async move {
            let builder = this.clone();
            let svc = service.clone();
            let vname = version.name.clone();
            let policy = this.policy(&version.deployment_config);
            let batch =
                version
                    .deployment_config
                    .max_batch_size
                    .filter(|&n| n > 1)
                    .map(|n| crate::batch::BatchConfig {
                        max_batch_size: n as usize,
                        max_delay: Duration::from_micros(
                            version.deployment_config.max_batch_delay_micros.unwrap_or(500),
                        ),
                    });
            let result = tokio::task::spawn_blocking(move || builder.build(&svc, &version, generation))
                .await
                .unwrap_or_else(|e| Err(Error::Internal(format!("deployment task failed: {e}"))));
            let mut state = match this.states.get_mut(&key) {
                Some(s) if s.generation == generation => s,
                // Deleted, or superseded by a newer deployment: drop this one.
                _ => return,
            };
            match result {
                Ok(built) => {
                    state.state = "Healthy";
                    drop(state);
                    let built = Arc::new(built);
                    if let Some(batch) = batch {
                        let on = built.enable_batching(batch);
                        this.logs.event(
                            &service,
                            "INFO",
                            &format!(
                                "version {vname}: dynamic batching {}",
                                if on {
                                    "on"
                                } else {
                                    "off (the model has no batch dimension)"
                                }
                            ),
                        );
                    }
                    if let Some(policy) = policy {
                        tokio::spawn(crate::autoscale::run(Arc::downgrade(&built), policy));
                    }
                    this.built
                        .entry(service.clone())
                        .or_default()
                        .insert(vname.clone(), built);
                    if let Err(e) = this.publish(&service) {
                        this.logs
                            .event(&service, "ERROR", &format!("publishing version {vname}: {e}"));
                    }
                    this.logs
                        .event(&service, "INFO", &format!("version {vname} deployed: Healthy"));
                    tracing::info!(service = %service, version = %vname, generation, "version deployed");
                    this.prune(&service, &vname, generation);
                }
                Err(e) => {
                    state.state = "Failed";
                    state.error = Some(e.to_string());
                    drop(state);
                    this.logs
                        .event(&service, "ERROR", &format!("version {vname} failed to deploy: {e}"));
                    tracing::warn!(service = %service, version = %vname, error = %e, "deployment failed");
                }
            }
        });
    }

    /// Rebuilds the service from its record and the versions built so far, and swaps it into the router.
    /// Versions still loading take no traffic yet; their share goes to the default.
    fn publish(&self, name: &str) -> Result<()> {
        let record = self.ws.service(name)?;
        let built = self.built.get(name);
        let mut routed = Vec::new();
        let mut default = None;
        for v in &record.versions {
            if let Some(version) = built.as_ref().and_then(|b| b.get(&v.name)) {
                if v.is_default {
                    default = Some(routed.len());
                }
                routed.push(Routed {
                    version: version.clone(),
                    traffic: v.traffic,
                    mirror: v.mirror,
                });
            }
        }
        drop(built);
        if routed.is_empty() {
            return Ok(());
        }
        let default = match default {
            Some(d) => d,
            // The default is still loading: the first ready version stands in.
            None => {
                routed[0].traffic = 0;
                0
            }
        };
        let auth = Auth {
            auth_enabled: record.auth_enabled,
            token_auth_enabled: record.token_auth_enabled,
            primary_key: record.primary_key.clone(),
            secondary_key: record.secondary_key.clone(),
        };
        self.router.insert(Service::with_versions(name, auth, routed, default)?);
        Ok(())
    }

    /// Sets a treatment's traffic to 0 when its recent error rate or p99 breaks its rollback policy.
    fn check_rollbacks(&self) {
        let Ok(services) = self.ws.services() else { return };
        for mut record in services {
            let Some(live) = self.router.get(&record.name) else {
                continue;
            };
            let mut changed = Vec::new();
            for v in record
                .versions
                .iter_mut()
                .filter(|v| !v.control && !v.is_default && v.traffic > 0)
            {
                let Some(policy) = &v.rollback else { continue };
                let Ok(running) = live.version(&v.name) else { continue };
                let w = running.stats().window(Duration::from_secs(policy.window_secs));
                if w.requests < policy.min_requests {
                    continue;
                }
                let error_breach = policy.max_error_rate.is_some_and(|max| w.error_rate > max);
                let latency_breach = policy.max_p99_ms.is_some_and(|max| w.p99_ms > max);
                if error_breach || latency_breach {
                    let event = format!(
                        "{} automatic rollback: version {} traffic {}% → 0% (error rate {:.3}, p99 {:.1} ms over {} requests in {} s; policy {})",
                        crate::logs::timestamp(),
                        v.name,
                        v.traffic,
                        w.error_rate,
                        w.p99_ms,
                        w.requests,
                        policy.window_secs,
                        serde_json::to_string(policy).unwrap_or_default()
                    );
                    v.traffic = 0;
                    changed.push(event);
                }
            }
            if changed.is_empty() {
                continue;
            }
            record.events.extend(changed.iter().cloned());
            record.updated = now();
            if let Err(e) = self.ws.put_service(&record) {
                tracing::error!(service = %record.name, error = %e, "could not store a rollback");
                continue;
            }
            for event in &changed {
                self.logs.event(&record.name, "WARN", event);
                tracing::warn!(service = %record.name, "{event}");
            }
            if let Err(e) = self.publish(&record.name) {
                tracing::error!(service = %record.name, error = %e, "could not apply a rollback");
            }
        }
    }

    fn deploy_root(&self, name: &str) -> PathBuf {
        self.ws.root().join("deployments").join(name)
    }

    /// Removes the files of a version's older generations (loaded sessions and open directories stay valid).
    fn prune(&self, service: &str, version: &str, keep: u64) {
        let dir = self.deploy_root(service).join(version);
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy() != keep.to_string() {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
    }

    /// Materialises files, prepares the entry script and loads the package: the slow part, off the request path.
    fn build(&self, service: &str, record: &VersionRecord, generation: u64) -> Result<Version> {
        let dir = self
            .deploy_root(service)
            .join(&record.name)
            .join(generation.to_string());
        let models_dir = dir.join("models");
        let src_dir = dir.join("src");
        let mut sources = Vec::new();
        let records: Vec<ModelRecord> = record
            .models
            .iter()
            .map(|id| self.ws.model(id))
            .collect::<Result<_>>()?;
        let single = records.len() == 1;
        for m in &records {
            // As Azure ML lays out AZUREML_MODEL_DIR: one model's files directly, several as <name>/<version>/.
            let base = if single {
                models_dir.clone()
            } else {
                models_dir.join(&m.name).join(m.version.to_string())
            };
            for f in &m.files {
                self.materialize(f, &base)?;
            }
            let onnx: Vec<&FileRef> = m.files.iter().filter(|f| f.path.ends_with(".onnx")).collect();
            match onnx.as_slice() {
                [one] => sources.push(ModelSource {
                    name: m.name.clone(),
                    path: base.join(&one.path),
                }),
                [] => {}
                _ => {
                    return Err(Error::BadRequest(format!(
                        "model {} holds several .onnx files; register them separately",
                        m.id()
                    )));
                }
            }
        }
        std::fs::create_dir_all(&models_dir).map_err(|e| Error::Storage(format!("{}: {e}", models_dir.display())))?;
        for f in &record.source {
            self.materialize(f, &src_dir)?;
        }
        let entry_script = match &record.entry_script {
            Some(script) => {
                self.logs.event(
                    service,
                    "INFO",
                    &format!("version {}: preparing entry script {script}", record.name),
                );
                let path = src_dir.join(script);
                let cache = self
                    .options
                    .cache_dir
                    .clone()
                    .unwrap_or_else(|| self.ws.root().join("cache"));
                Some(crate::scripts::prepare(&path, &cache).map_err(|e| Error::BadRequest(format!("{e:#}")))?)
            }
            None => None,
        };
        if entry_script.is_none() && sources.len() != 1 {
            return Err(Error::BadRequest(
                "without an entry script the model must hold exactly one .onnx file".into(),
            ));
        }
        let dc = &record.deployment_config;
        let replicas = dc.initial_replicas();
        let slots = (replicas * dc.max_concurrent_requests_per_container) as usize;
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let spec = PackageSpec {
            models: sources,
            entry_script,
            script_name: Some(service.to_string()),
            model_dir: Some(models_dir),
            session: SessionOptions {
                intra_threads: (dc.container_resource_requirements.cpu.ceil() as usize).clamp(1, cores),
                sessions: slots.clamp(1, 64),
            },
            limits: ScriptLimits {
                deadline: Duration::from_millis(dc.scoring_timeout_ms),
                memory_bytes: (dc.container_resource_requirements.memory_in_gb * (1u64 << 30) as f64) as usize,
                max_idle: slots.clamp(1, 64),
                ..ScriptLimits::default()
            },
            ort_library: self.options.ort_library.clone(),
        };
        let engine = self.engine.clone();
        let warm_rows = dc.max_batch_size.unwrap_or(1) as usize;
        // Every replica runs each batch size it will see once at load, so no request pays for a first size.
        let factory: Factory = Arc::new(move || {
            let package = Package::load(&spec, Some(&engine))?;
            if warm_rows > 1 {
                crate::batch::warm(&package, warm_rows);
            }
            Ok(package)
        });
        let config = VersionConfig {
            replicas,
            max_concurrent: dc.max_concurrent_requests_per_container,
            max_queue_wait: Duration::from_millis(dc.max_queue_wait_ms),
            scoring_timeout: Duration::from_millis(dc.scoring_timeout_ms),
            replica_cpu: dc.container_resource_requirements.cpu,
            replica_memory: (dc.container_resource_requirements.memory_in_gb * (1u64 << 30) as f64) as u64,
        };
        let collect = match (&self.options.collector, dc.data_collection.storage_enabled) {
            (Some(c), true) => {
                let (model, model_version) = match records.first() {
                    Some(m) => (m.name.clone(), m.version.to_string()),
                    None => (service.to_string(), record.name.clone()),
                };
                Some((
                    c.clone(),
                    Sampling::new(model, model_version, dc.data_collection.sample_rate.unwrap_or(1.0)),
                ))
            }
            _ => None,
        };
        Version::with_factory(
            service,
            &record.name,
            factory,
            config,
            Some(self.capacity.clone()),
            Some(self.metrics.clone()),
        )
        .map(|v| match collect {
            Some((c, s)) => v.with_collection(c, s),
            None => v,
        })
        .map_err(|e| match e {
            // A script that fails to load or init is the deployer's problem, reported as such.
            Error::Runtime(
                e @ (plinth_runtime::Error::ScriptInit { .. } | plinth_runtime::Error::ScriptLoad { .. }),
            ) => Error::BadRequest(e.to_string()),
            e => e,
        })
    }

    /// The autoscaling policy of a version, if its deployment config turns autoscaling on.
    fn policy(&self, dc: &DeploymentConfig) -> Option<Policy> {
        dc.autoscale().then(|| Policy {
            target: dc.auto_scaler.target_utilization as f64 / 100.0,
            min: dc.auto_scaler.min_replicas,
            max: dc.auto_scaler.max_replicas,
            scale_down_after: self.options.scale_down_after,
            refresh: Duration::from_secs(dc.auto_scaler.refresh_period_in_seconds as u64),
        })
    }

    /// Places a blob at `base/<path>`: a hard link where the filesystem allows, else a copy.
    fn materialize(&self, f: &FileRef, base: &Path) -> Result<()> {
        check_relative(&f.path)?;
        let to = base.join(&f.path);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::Storage(format!("{}: {e}", parent.display())))?;
        }
        let from = self.ws.blob_path(&f.sha256)?;
        if to.exists() {
            return Ok(());
        }
        std::fs::hard_link(&from, &to)
            .or_else(|_| std::fs::copy(&from, &to).map(drop))
            .map_err(|e| Error::Storage(format!("placing {}: {e}", to.display())))
    }
}

fn state_key(service: &str, version: &str) -> String {
    format!("{service}/{version}")
}

fn apply_settings(v: &mut VersionRecord, s: &VersionSettings) {
    if let Some(t) = s.traffic {
        v.traffic = t;
    }
    if let Some(d) = s.is_default {
        v.is_default = d;
    }
    if let Some(c) = s.control {
        v.control = c;
    }
    if let Some(m) = s.mirror {
        v.mirror = m;
    }
    if let Some(d) = &s.description {
        v.description = Some(d.clone());
    }
    if let Some(t) = &s.tags {
        v.tags = t.clone();
    }
    if let Some(r) = &s.rollback {
        v.rollback = Some(r.clone());
    }
}

fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        Error::BadRequest(if path.is_empty() || path == "." {
            format!("{inner}")
        } else {
            format!("{path}: {inner}")
        })
    })
}

fn query_param<'a>(parts: &'a http::request::Parts, key: &str) -> Option<&'a str> {
    parts
        .uri
        .query()?
        .split('&')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("task failed: {e}")))?
}

fn to_json<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or_default()
}
