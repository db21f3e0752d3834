//! Deployments as one actor: every write to a stored service (deploy, version add/update/delete, key
//! regeneration, an automatic rollback, a finished build, a deletion) is a [`Command`] handled one at a
//! time by the task that owns the deployment states and the loaded versions. Each command reads the
//! current record, changes it and writes it back before the next starts, so no write is lost and the
//! router always gets the record as stored. Builds (file placement, script compilation, model loading)
//! run off the actor and report back as a command.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use plinth_router::{BatchConfig, Policy, Version, generate_key};
use plinth_spec::record::{ServiceRecord, check_name};
use plinth_spec::time::unix_seconds as now;
use tokio::sync::{mpsc, oneshot};

use crate::api::{DeployRequest, DeployState, Keys, ServiceView, UpdateRequest};
use crate::context::Context;
use crate::state::{Deployment, state_key};
use crate::{Error, Result};

/// Commands waiting for the actor.
pub(crate) const COMMANDS: usize = 256;

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
    /// Replaces the primary and secondary keys with given ones (a declared host's mounted keys changed).
    SetKeys {
        name: String,
        keys: (String, String),
        reply: oneshot::Sender<Result<()>>,
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

/// The deployments actor: the only writer of stored services.
pub(crate) struct Actor {
    cx: Arc<Context>,
    /// Deployment state by `service/version`.
    deployments: HashMap<String, Deployment>,
    /// Loaded versions by service, then version name.
    built: HashMap<String, HashMap<String, Arc<Version>>>,
    generation: u64,
    to_self: mpsc::WeakSender<Command>,
    loading: Arc<AtomicUsize>,
}

impl Actor {
    pub(crate) fn new(
        cx: Arc<Context>,
        generation: u64,
        to_self: mpsc::WeakSender<Command>,
        loading: Arc<AtomicUsize>,
    ) -> Self {
        Actor {
            cx,
            deployments: HashMap::new(),
            built: HashMap::new(),
            generation,
            to_self,
            loading,
        }
    }

    pub(crate) async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        while let Some(command) = rx.recv().await {
            self.handle(command);
            let loading = self
                .deployments
                .values()
                .filter(|d| d.state == DeployState::Transitioning)
                .count();
            self.loading.store(loading, Ordering::Relaxed);
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
            Command::SetKeys { name, keys, reply } => {
                let _ = reply.send(self.set_keys(&name, keys));
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
                        self.start_deploy(&service, v, Vec::new(), None);
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
        let (mut version, ignored) = crate::validate::version_record(
            &self.cx.ws,
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
        let mut previous = None;
        let mut record = match existing {
            Some(r) => r,
            None => ServiceRecord {
                name: req.name.clone(),
                versions: Vec::new(),
                auth_enabled: dc.auth_enabled,
                token_auth_enabled: dc.token_auth_enabled,
                primary_key: dc.keys.primary_key.clone().unwrap_or_else(generate_key),
                secondary_key: dc.keys.secondary_key.clone().unwrap_or_else(generate_key),
                token_secret: generate_key(),
                created: now(),
                updated: now(),
                events: Vec::new(),
            },
        };
        match record.versions.iter_mut().find(|v| v.name == version_name) {
            Some(old) => {
                // The content it serves now, if it serves: what it keeps serving should this fail.
                previous = self.serving(&req.name, &old.name).then(|| old.clone());
                // Same version again: new content, same place in the rollout.
                version.traffic = old.traffic;
                version.is_default = old.is_default;
                version.control = old.control;
                version.mirror = old.mirror;
                version.description = old.description.clone();
                version.tags = old.tags.clone();
                version.rollback = old.rollback.clone();
                version.created = old.created;
                crate::validate::apply_settings(&mut version, &req.settings);
                *old = version.clone();
            }
            None => {
                let first = record.versions.is_empty();
                version.is_default = first;
                version.traffic = 0;
                crate::validate::apply_settings(&mut version, &req.settings);
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
        // Said once per version: a redeploy with the same ignored fields does not repeat them.
        let said = self
            .deployments
            .get(&state_key(&record.name, &version.name))
            .map(|d| d.ignored.clone())
            .unwrap_or_default();
        for note in ignored.iter().filter(|n| !said.contains(n)) {
            self.cx
                .logs
                .event(&record.name, "WARN", &format!("ignored on a Plinth host: {note}"));
        }
        self.start_deploy(&record.name, version, ignored, previous);
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
            let (fresh, notes) = crate::validate::version_record(
                &self.cx.ws,
                version,
                req.models.as_deref().unwrap_or(&old.models),
                req.inference_config
                    .as_ref()
                    .unwrap_or(&crate::api::to_json(&old.inference_config)),
                req.deployment_config
                    .as_ref()
                    .unwrap_or(&crate::api::to_json(&old.deployment_config)),
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
        crate::validate::apply_settings(&mut updated, &req.settings);
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
            let previous = self.serving(name, version).then_some(old);
            self.start_deploy(name, updated, ignored, previous);
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
        if let Some(d) = self.deployments.remove(&state_key(name, version)) {
            d.let_go();
        }
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
        self.deployments.retain(|k, d| {
            let keep = !k.starts_with(&prefix);
            if !keep {
                d.let_go();
            }
            keep
        });
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
            "token" => r.token_secret = generate_key(),
            _ => {
                return Err(Error::BadRequest(format!(
                    "key must be \"primary\", \"secondary\" or \"token\", got \"{which}\""
                )));
            }
        }
        r.updated = now();
        self.cx.ws.put_service(&r)?;
        if let Some(svc) = self.cx.router.get(name) {
            svc.set_credentials(r.primary_key.clone(), r.secondary_key.clone(), r.token_secret.clone());
        }
        self.cx.logs.event(name, "INFO", &format!("{which} key regenerated"));
        Ok(Keys {
            primary_key: r.primary_key,
            secondary_key: r.secondary_key,
        })
    }

    fn set_keys(&mut self, name: &str, (primary, secondary): (String, String)) -> Result<()> {
        let mut r = self.cx.ws.service(name)?;
        if (r.primary_key.as_str(), r.secondary_key.as_str()) == (primary.as_str(), secondary.as_str()) {
            return Ok(());
        }
        r.primary_key = primary;
        r.secondary_key = secondary;
        r.updated = now();
        self.cx.ws.put_service(&r)?;
        if let Some(svc) = self.cx.router.get(name) {
            svc.set_credentials(r.primary_key.clone(), r.secondary_key.clone(), r.token_secret.clone());
        }
        self.cx.logs.event(name, "INFO", "keys replaced by the mounted ones");
        Ok(())
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

    /// Whether `version` of `service` is built and in the router now.
    fn serving(&self, service: &str, version: &str) -> bool {
        self.built.get(service).is_some_and(|b| b.contains_key(version))
    }
}

mod rollout;

#[cfg(test)]
mod tests;
