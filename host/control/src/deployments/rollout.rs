//! A deployment's life after the actor accepts it: the build runs off the actor and reports back, a built
//! version joins the router (or a failed one keeps serving what it served before), and the service is
//! republished from its record.

use std::sync::Arc;
use std::time::Duration;

use plinth_router::{BatchConfig, Policy, Routed, Service, Version};
use plinth_spec::record::VersionRecord;

use super::{Actor, Command};
use crate::api::DeployState;
use crate::state::{Deployment, state_key};
use crate::{Error, Result};

impl Actor {
    pub(super) fn start_deploy(
        &mut self,
        service: &str,
        version: VersionRecord,
        ignored: Vec<String>,
        previous: Option<VersionRecord>,
    ) {
        self.generation += 1;
        let generation = self.generation;
        let stop = self
            .deployments
            .get(&state_key(service, &version.name))
            .map_or_else(Default::default, |d| d.stop.clone());
        self.deployments.insert(
            state_key(service, &version.name),
            Deployment {
                state: DeployState::Transitioning,
                error: None,
                generation,
                ignored,
                previous,
                serving_previous: false,
                stop: stop.clone(),
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
            let result = tokio::task::spawn_blocking(move || cx.build(&svc, &version, generation, stop).map(Arc::new))
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

    pub(super) fn built(
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
            if let Err(e) = &result {
                tracing::info!(service = %service, version = %vname, generation, error = %e, "a deleted or superseded deployment ended");
            }
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
                // The version still serves what it served before: the record says so again, so that
                // what the host shows, serves, and restores after a restart are one and the same.
                if let Some(previous) = state.previous.take() {
                    state.serving_previous = true;
                    match self.keep_previous(&service, previous) {
                        Ok(models) => self.cx.logs.event(
                            &service,
                            "WARN",
                            &format!("version {vname} still serves its previous deployment ({models})"),
                        ),
                        Err(e) => self.cx.logs.event(
                            &service,
                            "ERROR",
                            &format!("version {vname}: recording its previous deployment: {e}"),
                        ),
                    }
                }
            }
        }
    }

    /// Puts a version's previous content back in the stored record (its place in the rollout as it is
    /// now); returns its models, for the log.
    fn keep_previous(&self, service: &str, previous: VersionRecord) -> Result<String> {
        let mut record = self.cx.ws.service(service)?;
        let now = record.version_mut(&previous.name)?;
        let models = previous.models.join(", ");
        *now = VersionRecord {
            traffic: now.traffic,
            is_default: now.is_default,
            control: now.control,
            mirror: now.mirror,
            ..previous
        };
        self.cx.ws.put_service(&record)?;
        Ok(if models.is_empty() {
            "an entry script".into()
        } else {
            models
        })
    }

    /// Rebuilds the service from its record and the versions built so far, and swaps it into the router.
    /// Versions still loading take no traffic yet; their share goes to the default.
    pub(super) fn publish(&self, name: &str) -> Result<()> {
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
            token_secret: record.token_secret.clone(),
        };
        self.cx
            .router
            .insert(Service::with_versions(name, auth, routed, default)?);
        Ok(())
    }
}
