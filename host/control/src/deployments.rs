//! Deployments as one actor: every write to a stored service (deploy, version add/update/delete, key
//! regeneration, an automatic rollback, a finished build, a deletion) is a [`Command`] handled one at a
//! time by the task that owns the deployment states and the loaded versions. Each command reads the
//! current record, changes it and writes it back before the next starts, so no write is lost and the
//! router always gets the record as stored. Builds (file placement, script compilation, model loading)
//! run off the actor and report back as a command.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use plinth_router::time::unix_seconds as now;
use plinth_router::{
    BatchConfig, Capacity, Collector, LogHub, Metrics, Policy, Routed, Router, Service, TokenIssuer, Version,
    generate_key,
};
use plinth_runtime::MAX_MODELS;
use plinth_runtime::wasm::WasmEngine;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::api::{DeployRequest, DeployState, Keys, ServiceView, UpdateRequest, VersionSettings};
use crate::config::{DeploymentConfig, InferenceConfig};
use crate::store::{FileRef, ModelRecord, ServiceRecord, VersionRecord, Workspace, check_name, check_relative};
use crate::{Error, Result};

/// Commands waiting for the actor.
const COMMANDS: usize = 256;

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

/// Where one version's latest deployment stands.
#[derive(Debug, Clone)]
pub(crate) struct Deployment {
    pub(crate) state: DeployState,
    pub(crate) error: Option<String>,
    generation: u64,
    /// Configuration fields accepted but without effect here.
    pub(crate) ignored: Vec<String>,
}

/// What every part of the control plane shares, read-only.
pub(crate) struct Context {
    pub(crate) ws: Arc<Workspace>,
    pub(crate) router: Arc<Router>,
    pub(crate) engine: Arc<WasmEngine>,
    pub(crate) tokens: Arc<TokenIssuer>,
    pub(crate) logs: Arc<LogHub>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) capacity: Arc<Capacity>,
    pub(crate) options: ControlOptions,
}

/// The writes the actor serialises (and the reads that need its state), each with its reply.
pub(crate) enum Command {
    Deploy {
        req: DeployRequest,
        /// `version add` on an existing endpoint: refuse if the endpoint does not exist.
        add_to: Option<String>,
        reply: oneshot::Sender<Result<ServiceView>>,
    },
    Update {
        name: String,
        version: String,
        req: UpdateRequest,
        reply: oneshot::Sender<Result<ServiceView>>,
    },
    DeleteVersion {
        name: String,
        version: String,
        reply: oneshot::Sender<Result<ServiceView>>,
    },
    DeleteService {
        name: String,
        reply: oneshot::Sender<Result<()>>,
    },
    RegenKey {
        name: String,
        which: String,
        reply: oneshot::Sender<Result<Keys>>,
    },
    DeleteModel {
        id: String,
        reply: oneshot::Sender<Result<()>>,
    },
    /// From the rollback monitor: set `version`'s traffic to 0, recording `event`, if it still takes any.
    Rollback {
        service: String,
        version: String,
        event: String,
    },
    /// At start-up: deploy every version of a stored service.
    Restore { service: String },
    /// From a build task.
    Built {
        service: String,
        version: String,
        generation: u64,
        result: Result<Arc<Version>>,
        batch: Option<BatchConfig>,
        policy: Option<Policy>,
    },
    Describe {
        name: Option<String>,
        reply: oneshot::Sender<Result<Vec<ServiceView>>>,
    },
}

/// The control plane: the admin API's handlers talk to it, and it owns the deployments actor.
pub struct ControlPlane {
    pub(crate) cx: Arc<Context>,
    tx: mpsc::Sender<Command>,
    /// `service/version` of deployments still loading, as the actor last left them (for readiness).
    loading: Arc<Mutex<Vec<String>>>,
}

impl ControlPlane {
    /// Starts the deployments actor (on the current tokio runtime).
    pub fn new(
        ws: Arc<Workspace>,
        router: Arc<Router>,
        engine: Arc<WasmEngine>,
        logs: Arc<LogHub>,
        metrics: Arc<Metrics>,
        options: ControlOptions,
    ) -> Arc<Self> {
        let tokens = Arc::new(TokenIssuer::new(ws.jwt_secret(), options.token_lifetime));
        let cx = Arc::new(Context {
            ws,
            router,
            engine,
            tokens,
            logs,
            metrics,
            capacity: Arc::new(Capacity::of_host()),
            options,
        });
        let (tx, rx) = mpsc::channel(COMMANDS);
        let loading = Arc::new(Mutex::new(Vec::new()));
        let actor = Actor {
            cx: cx.clone(),
            deployments: HashMap::new(),
            built: HashMap::new(),
            generation: now() * 1000,
            to_self: tx.downgrade(),
            loading: loading.clone(),
        };
        tokio::spawn(actor.run(rx));
        Arc::new(ControlPlane { cx, tx, loading })
    }

    /// The credentials a host checks requests against: the workspace's admin token and this control
    /// plane's token issuer.
    pub fn host_auth(&self) -> plinth_router::HostAuth {
        plinth_router::HostAuth::new(Some(self.cx.ws.admin_token().to_string()), Some(self.cx.tokens.clone()))
    }

    /// `service/version` of deployments still loading.
    pub fn loading(&self) -> Vec<String> {
        self.loading.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Deploys every stored service (at start-up) and starts the rollback monitor.
    pub async fn restore(self: &Arc<Self>) -> Result<()> {
        for record in self.cx.ws.services()? {
            self.send(Command::Restore { service: record.name }).await?;
        }
        crate::rollback::start(Arc::downgrade(self));
        Ok(())
    }

    pub(crate) async fn send(&self, command: Command) -> Result<()> {
        self.tx.send(command).await.map_err(|_| Error::Stopped)
    }

    /// Sends a command and waits for its reply.
    pub(crate) async fn ask<T>(&self, command: impl FnOnce(oneshot::Sender<Result<T>>) -> Command) -> Result<T> {
        let (reply, answer) = oneshot::channel();
        self.send(command(reply)).await?;
        answer.await.map_err(|_| Error::Stopped)?
    }
}

/// The deployments actor: the only writer of stored services.
struct Actor {
    cx: Arc<Context>,
    /// Deployment state by `service/version`.
    deployments: HashMap<String, Deployment>,
    /// Loaded versions by service, then version name.
    built: HashMap<String, HashMap<String, Arc<Version>>>,
    generation: u64,
    to_self: mpsc::WeakSender<Command>,
    loading: Arc<Mutex<Vec<String>>>,
}

impl Actor {
    async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        while let Some(command) = rx.recv().await {
            self.handle(command);
            let loading: Vec<String> = self
                .deployments
                .iter()
                .filter(|(_, d)| d.state == DeployState::Transitioning)
                .map(|(k, _)| k.clone())
                .collect();
            *self.loading.lock().unwrap_or_else(|p| p.into_inner()) = loading;
        }
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::Deploy { req, add_to, reply } => {
                let _ = reply.send(self.deploy(req, add_to));
            }
            Command::Update {
                name,
                version,
                req,
                reply,
            } => {
                let _ = reply.send(self.update_version(&name, &version, req));
            }
            Command::DeleteVersion { name, version, reply } => {
                let _ = reply.send(self.delete_version(&name, &version));
            }
            Command::DeleteService { name, reply } => {
                let _ = reply.send(self.delete_service(&name));
            }
            Command::RegenKey { name, which, reply } => {
                let _ = reply.send(self.regen_key(&name, &which));
            }
            Command::DeleteModel { id, reply } => {
                let _ = reply.send(self.cx.ws.delete_model(&id));
            }
            Command::Rollback {
                service,
                version,
                event,
            } => self.rollback(&service, &version, event),
            Command::Restore { service } => match self.cx.ws.service(&service) {
                Ok(record) => {
                    for v in record.versions {
                        self.start_deploy(&service, v, Vec::new());
                    }
                }
                Err(e) => tracing::error!(service, error = %e, "cannot restore"),
            },
            Command::Built {
                service,
                version,
                generation,
                result,
                batch,
                policy,
            } => self.built(service, version, generation, result, batch, policy),
            Command::Describe { name, reply } => {
                let _ = reply.send(self.describe(name.as_deref()));
            }
        }
    }

    fn describe(&self, name: Option<&str>) -> Result<Vec<ServiceView>> {
        match name {
            Some(name) => {
                let record = self.cx.ws.service(name)?;
                Ok(vec![crate::views::service(&self.cx, &record, &self.deployments, true)])
            }
            None => Ok(self
                .cx
                .ws
                .services()?
                .iter()
                .map(|r| crate::views::service(&self.cx, r, &self.deployments, false))
                .collect()),
        }
    }

    fn view(&self, record: &ServiceRecord, full: bool) -> ServiceView {
        crate::views::service(&self.cx, record, &self.deployments, full)
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
        let (dc, mut ignored) = DeploymentConfig::from_json("deploymentconfig.json", &as_bytes(dc))?;
        let (ic, ic_ignored) = InferenceConfig::from_json("inferenceconfig.json", &as_bytes(ic))?;
        ignored.extend(ic_ignored);
        let mut ids = Vec::with_capacity(models.len());
        for id in models {
            ids.push(self.cx.ws.model(id)?.id());
        }
        self.cx.ws.check_files(&source)?;
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
    fn deploy(&mut self, mut req: DeployRequest, add_to: Option<String>) -> Result<ServiceView> {
        if let Some(name) = add_to {
            req.name = name;
            if req.version.is_none() {
                return Err(Error::BadRequest("a new version needs a name (version)".into()));
            }
            if self.cx.ws.service(&req.name).is_err() {
                return Err(Error::NotFound(format!(
                    "endpoint {} not found: create it first",
                    req.name
                )));
            }
        }
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
        let existing = self.cx.ws.service(&req.name).ok();
        if req.create && existing.is_some() {
            return Err(Error::Conflict(format!("endpoint {} already exists", req.name)));
        }
        let dc = version.deployment_config.clone();
        let mut record = match existing {
            Some(r) => r,
            None => ServiceRecord {
                name: req.name.clone(),
                versions: Vec::new(),
                auth_enabled: dc.auth_enabled,
                token_auth_enabled: dc.token_auth_enabled,
                primary_key: dc.keys.primary_key.clone().unwrap_or_else(generate_key),
                secondary_key: dc.keys.secondary_key.clone().unwrap_or_else(generate_key),
                created: now(),
                updated: now(),
                events: Vec::new(),
            },
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
            // The service's credentials follow the deployment config of its default version; keys the
            // config does not name stay as they are (generated, or regenerated since).
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
        self.cx.ws.put_service(&record)?;
        for note in &ignored {
            self.cx
                .logs
                .event(&record.name, "WARN", &format!("ignored on a Plinth host: {note}"));
        }
        self.start_deploy(&record.name, version, ignored);
        Ok(self.view(&record, false))
    }

    /// `plinth endpoint version update`: settings apply at once; new content redeploys the version.
    fn update_version(&mut self, name: &str, version: &str, req: UpdateRequest) -> Result<ServiceView> {
        let mut record = self.cx.ws.service(name)?;
        let old = record.version(version)?.clone();
        let content_changed = req.changes_content();
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
        self.cx.ws.put_service(&record)?;
        self.cx.logs.event(
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
        Ok(self.view(&record, true))
    }

    fn delete_version(&mut self, name: &str, version: &str) -> Result<ServiceView> {
        let mut r = self.cx.ws.service(name)?;
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
        r.versions.retain(|x| x.name != version);
        r.updated = now();
        r.validate()?;
        self.cx.ws.put_service(&r)?;
        self.deployments.remove(&state_key(name, version));
        if let Some(built) = self.built.get_mut(name) {
            built.remove(version);
        }
        self.publish(name)?;
        self.cx.logs.event(name, "INFO", &format!("version {version} deleted"));
        Ok(self.view(&r, true))
    }

    fn delete_service(&mut self, name: &str) -> Result<()> {
        self.cx.ws.delete_service(name)?;
        self.cx.router.remove(name);
        let prefix = format!("{name}/");
        self.deployments.retain(|k, _| !k.starts_with(&prefix));
        self.built.remove(name);
        self.cx.logs.remove(name);
        let _ = std::fs::remove_dir_all(self.cx.deploy_root(name));
        Ok(())
    }

    fn regen_key(&mut self, name: &str, which: &str) -> Result<Keys> {
        let mut r = self.cx.ws.service(name)?;
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
        self.cx.ws.put_service(&r)?;
        if let Some(svc) = self.cx.router.get(name) {
            svc.set_keys(r.primary_key.clone(), r.secondary_key.clone());
        }
        self.cx.logs.event(name, "INFO", &format!("{which} key regenerated"));
        Ok(Keys {
            primary_key: r.primary_key,
            secondary_key: r.secondary_key,
        })
    }

    /// Sets a treatment's traffic to 0 (the monitor saw its policy broken), on the record as it is now.
    fn rollback(&mut self, service: &str, version: &str, event: String) {
        let Ok(mut record) = self.cx.ws.service(service) else {
            return;
        };
        let Some(v) = record
            .versions
            .iter_mut()
            .find(|v| v.name == version && !v.control && !v.is_default && v.traffic > 0)
        else {
            return;
        };
        v.traffic = 0;
        record.events.push(event.clone());
        record.updated = now();
        if let Err(e) = self.cx.ws.put_service(&record) {
            tracing::error!(service, error = %e, "could not store a rollback");
            return;
        }
        self.cx.logs.event(service, "WARN", &event);
        tracing::warn!(service, "{event}");
        if let Err(e) = self.publish(service) {
            tracing::error!(service, error = %e, "could not apply a rollback");
        }
    }

    fn start_deploy(&mut self, service: &str, version: VersionRecord, ignored: Vec<String>) {
        self.generation += 1;
        let generation = self.generation;
        self.deployments.insert(
            state_key(service, &version.name),
            Deployment {
                state: DeployState::Transitioning,
                error: None,
                generation,
                ignored,
            },
        );
        self.cx.logs.event(
            service,
            "INFO",
            &format!("deploying version {} (generation {generation})", version.name),
        );
        let cx = self.cx.clone();
        let to_self = self.to_self.clone();
        let service = service.to_string();
        tokio::spawn(async move {
            let dc = &version.deployment_config;
            let policy = cx.policy(dc);
            let batch = dc.max_batch_size.filter(|&n| n > 1).map(|n| BatchConfig {
                max_batch_size: n as usize,
                max_delay: Duration::from_micros(dc.max_batch_delay_micros.unwrap_or(500)),
            });
            let vname = version.name.clone();
            let svc = service.clone();
            let result = tokio::task::spawn_blocking(move || cx.build(&svc, &version, generation).map(Arc::new))
                .await
                .unwrap_or_else(|source| {
                    Err(Error::Task {
                        what: "the deployment task failed",
                        source,
                    })
                });
            if let Some(tx) = to_self.upgrade() {
                let _ = tx
                    .send(Command::Built {
                        service,
                        version: vname,
                        generation,
                        result,
                        batch,
                        policy,
                    })
                    .await;
            }
        });
    }

    fn built(
        &mut self,
        service: String,
        vname: String,
        generation: u64,
        result: Result<Arc<Version>>,
        batch: Option<BatchConfig>,
        policy: Option<Policy>,
    ) {
        let Some(state) = self
            .deployments
            .get_mut(&state_key(&service, &vname))
            .filter(|s| s.generation == generation)
        else {
            // Deleted, or superseded by a newer deployment: drop this one.
            return;
        };
        match result {
            Ok(built) => {
                state.state = DeployState::Healthy;
                if let Some(batch) = batch {
                    let on = built.enable_batching(batch);
                    self.cx.logs.event(
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
                    plinth_router::autoscale(&built, policy);
                }
                self.built
                    .entry(service.clone())
                    .or_default()
                    .insert(vname.clone(), built);
                if let Err(e) = self.publish(&service) {
                    self.cx
                        .logs
                        .event(&service, "ERROR", &format!("publishing version {vname}: {e}"));
                }
                self.cx
                    .logs
                    .event(&service, "INFO", &format!("version {vname} deployed: Healthy"));
                tracing::info!(service = %service, version = %vname, generation, "version deployed");
                self.cx.prune(&service, &vname, generation);
            }
            Err(e) => {
                state.state = DeployState::Failed;
                state.error = Some(e.to_string());
                self.cx
                    .logs
                    .event(&service, "ERROR", &format!("version {vname} failed to deploy: {e}"));
                tracing::warn!(service = %service, version = %vname, error = %e, "deployment failed");
            }
        }
    }

    /// Rebuilds the service from its record and the versions built so far, and swaps it into the router.
    /// Versions still loading take no traffic yet; their share goes to the default.
    fn publish(&self, name: &str) -> Result<()> {
        let record = self.cx.ws.service(name)?;
        let built = self.built.get(name);
        let mut routed = Vec::new();
        let mut default = None;
        for v in &record.versions {
            if let Some(version) = built.and_then(|b| b.get(&v.name)) {
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
        let auth = plinth_router::Auth {
            auth_enabled: record.auth_enabled,
            token_auth_enabled: record.token_auth_enabled,
            primary_key: record.primary_key.clone(),
            secondary_key: record.secondary_key.clone(),
        };
        self.cx
            .router
            .insert(Service::with_versions(name, auth, routed, default)?);
        Ok(())
    }
}

pub(crate) fn state_key(service: &str, version: &str) -> String {
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

pub(crate) fn to_json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or_default()
}

/// Models of a version, as records (for placing their files).
pub(crate) fn model_records(ws: &Workspace, record: &VersionRecord) -> Result<Vec<ModelRecord>> {
    record.models.iter().map(|id| ws.model(id)).collect()
}

#[cfg(test)]
mod tests {
    use plinth_runtime::wasm::EngineConfig;

    use super::*;

    async fn control(tag: &str) -> (Arc<ControlPlane>, Arc<Workspace>, PathBuf) {
        let dir = std::env::temp_dir().join(format!("plinth-{tag}-{}", generate_key()));
        let ws = Arc::new(Workspace::open(&dir).unwrap());
        ws.put_service(&ServiceRecord::test("ep").with_split(80, 20)).unwrap();
        let engine = Arc::new(WasmEngine::new(EngineConfig::default()).unwrap());
        let cp = ControlPlane::new(
            ws.clone(),
            Arc::new(Router::new()),
            engine,
            Arc::new(LogHub::new()),
            Arc::new(Metrics::new()),
            ControlOptions::default(),
        );
        (cp, ws, dir)
    }

    #[tokio::test]
    async fn a_rollback_never_undoes_a_key_regeneration() {
        let (cp, ws, dir) = control("rollback-keys").await;
        // The monitor decides on the record as it read it; the key is regenerated after that read.
        let seen_by_monitor = ws.service("ep").unwrap();
        let keys = cp
            .ask(|reply| Command::RegenKey {
                name: "ep".into(),
                which: "primary".into(),
                reply,
            })
            .await
            .unwrap();
        cp.send(Command::Rollback {
            service: "ep".into(),
            version: "green".into(),
            event: "rolled back".into(),
        })
        .await
        .unwrap();
        // A command is answered only after every command sent before it.
        cp.ask(|reply| Command::Describe { name: None, reply }).await.unwrap();
        let stored = ws.service("ep").unwrap();
        assert_ne!(keys.primary_key, seen_by_monitor.primary_key);
        assert_eq!(stored.primary_key, keys.primary_key, "the regenerated key is kept");
        assert_eq!(stored.secondary_key, seen_by_monitor.secondary_key);
        assert_eq!(stored.version("green").unwrap().traffic, 0);
        assert_eq!(stored.events, vec!["rolled back".to_string()]);
        // A second rollback of the same version changes nothing.
        cp.send(Command::Rollback {
            service: "ep".into(),
            version: "green".into(),
            event: "again".into(),
        })
        .await
        .unwrap();
        cp.ask(|reply| Command::Describe { name: None, reply }).await.unwrap();
        assert_eq!(ws.service("ep").unwrap().events.len(), 1);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn concurrent_regenerations_are_each_kept_in_turn() {
        let (cp, ws, dir) = control("regen").await;
        let mut tasks = Vec::new();
        for i in 0..20 {
            let cp = cp.clone();
            let which = if i % 2 == 0 { "primary" } else { "secondary" };
            tasks.push(tokio::spawn(async move {
                cp.ask(|reply| Command::RegenKey {
                    name: "ep".into(),
                    which: which.into(),
                    reply,
                })
                .await
                .unwrap()
            }));
        }
        let mut answers = Vec::new();
        for t in tasks {
            answers.push(t.await.unwrap());
        }
        let stored = ws.service("ep").unwrap();
        // Whatever order the actor took them in, the stored pair is one it answered.
        assert!(
            answers
                .iter()
                .any(|k| k.primary_key == stored.primary_key && k.secondary_key == stored.secondary_key),
            "stored keys were never handed out"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
