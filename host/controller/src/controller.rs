//! The reconciler: a `PlinthService` in, its ConfigMap, Deployment, Service and (when several pods may
//! run) PodDisruptionBudget applied (server-side
//! apply, field manager `plinth-controller`, owned by the resource), its keys' Secret created once, and
//! its status written. A finalizer guards cleanup; failures requeue with backoff and are counted.
//! Pod counts are the scaler's (`scale.rs`), never the reconcile's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use crate::crd::{PlinthService, PlinthServiceStatus, VersionStatus};
use crate::metrics::Metrics;
use crate::plan::{self, Plan};
use crate::render::{self, FINALIZER, MANAGER, RenderOptions};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    #[error("{0} has no namespace")]
    NoNamespace(String),
}

impl Error {
    /// The `error` label of `plinth_controller_reconcile_failures_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Finalizer(e) => match e.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(inner)
                | kube::runtime::finalizer::Error::CleanupFailed(inner) => inner.label(),
                _ => "finalizer",
            },
            Error::NoNamespace(_) => "no_namespace",
        }
    }
}

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub render: RenderOptions,
    /// Consecutive failures per object, for the requeue backoff.
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(client: Client, metrics: Arc<Metrics>, render: RenderOptions) -> Self {
        let reporter = Reporter {
            controller: MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            render,
            failures: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) async fn event(&self, ps: &PlinthService, type_: EventType, reason: &str, action: &str, note: String) {
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &ps.object_ref(&())).await {
            tracing::warn!(service = %ps.name_any(), error = %e, "cannot publish an event");
        }
    }
}

fn key(ps: &PlinthService) -> String {
    format!("{}/{}", ps.namespace().unwrap_or_default(), ps.name_any())
}

/// One reconcile of one `PlinthService`.
pub async fn reconcile(ps: Arc<PlinthService>, cx: Arc<Context>) -> Result<Action, Error> {
    cx.metrics.reconciliations.inc();
    let _timer = cx
        .metrics
        .reconcile_seconds
        .with_label_values(&[] as &[&str])
        .start_timer();
    let ns = ps.namespace().ok_or_else(|| Error::NoNamespace(ps.name_any()))?;
    let api: Api<PlinthService> = Api::namespaced(cx.client.clone(), &ns);
    let k = key(&ps);
    let action = finalizer(&api, FINALIZER, ps, |event| async {
        match event {
            Finalizer::Apply(ps) => apply(&ps, &cx).await,
            Finalizer::Cleanup(ps) => cleanup(&ps, &cx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))?;
    cx.failures.lock().unwrap_or_else(|p| p.into_inner()).remove(&k);
    Ok(action)
}

/// A failed reconcile: counted, logged, and retried after a backoff that doubles (5 s to 5 min).
pub fn error_policy(ps: Arc<PlinthService>, error: &Error, cx: Arc<Context>) -> Action {
    cx.metrics.failures.with_label_values(&[error.label()]).inc();
    let n = {
        let mut failures = cx.failures.lock().unwrap_or_else(|p| p.into_inner());
        let n = failures.entry(key(&ps)).or_insert(0);
        *n += 1;
        *n
    };
    let delay = backoff(n);
    tracing::warn!(service = %key(&ps), error = %error, attempt = n, retry_in_s = delay.as_secs(), "reconcile failed");
    Action::requeue(delay)
}

/// 5 s, 10 s, 20 s, ... at most 5 minutes.
pub fn backoff(failures: u32) -> Duration {
    Duration::from_secs((5u64 << failures.saturating_sub(1).min(6)).min(300))
}

async fn apply(ps: &PlinthService, cx: &Context) -> Result<Action, Error> {
    let name = ps.name_any();
    let ns = ps.namespace().unwrap_or_default();
    let api: Api<PlinthService> = Api::namespaced(cx.client.clone(), &ns);
    let plan = match plan::plan(ps) {
        Ok(plan) => plan,
        Err(message) => return invalid(ps, cx, &api, message).await,
    };
    let deployment = match write_objects(ps, cx, &plan, &ns).await {
        Ok(d) => d,
        // What the API server's own validation refuses is the spec's fault too: shown, not retried.
        Err(kube::Error::Api(e)) if e.code == 400 || e.code == 422 => {
            return invalid(ps, cx, &api, format!("the API server refused an object: {}", e.message)).await;
        }
        Err(e) => return Err(e.into()),
    };
    let status = status_from(ps, &plan, &deployment, &ns);
    patch_status(&api, &name, &status).await?;
    // Watching the Deployment brings changes sooner; this is the periodic resync.
    Ok(Action::requeue(Duration::from_secs(300)))
}

/// The Secret (when absent), the ConfigMap, the Deployment, the Service and the disruption budget;
/// returns the Deployment as the API server has it.
async fn write_objects(ps: &PlinthService, cx: &Context, plan: &Plan, ns: &str) -> Result<Deployment, kube::Error> {
    let name = ps.name_any();
    let objects = render::render(ps, plan, &cx.render);
    let params = PatchParams::apply(MANAGER).force();
    // The keys: created once, when absent (a create the API server refuses as existing means present: the
    // controller never reads Secrets); rotating them is the user's.
    let secrets: Api<Secret> = Api::namespaced(cx.client.clone(), ns);
    let secret_name = render::secret_name(&name);
    match secrets.create(&PostParams::default(), &render::secret(ps, plan)).await {
        Ok(_) => {
            cx.event(
                ps,
                EventType::Normal,
                "KeysCreated",
                "Create",
                format!("Secret {secret_name} holds the service keys"),
            )
            .await
        }
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(e),
    }
    let config_maps: Api<ConfigMap> = Api::namespaced(cx.client.clone(), ns);
    config_maps
        .patch(
            &render::config_map_name(&name),
            &params,
            &Patch::Apply(&objects.config_map),
        )
        .await?;
    let deployments: Api<Deployment> = Api::namespaced(cx.client.clone(), ns);
    let deployment = deployments
        .patch(&name, &params, &Patch::Apply(&objects.deployment))
        .await?;
    let services: Api<Service> = Api::namespaced(cx.client.clone(), ns);
    services.patch(&name, &params, &Patch::Apply(&objects.service)).await?;
    let budgets: Api<PodDisruptionBudget> = Api::namespaced(cx.client.clone(), ns);
    match &objects.disruption_budget {
        Some(budget) => {
            budgets.patch(&name, &params, &Patch::Apply(budget)).await?;
        }
        // One pod at most: a budget an earlier spec needed goes (none there is fine).
        None => match budgets.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e),
        },
    }
    Ok(deployment)
}

/// A spec that cannot run: status only (what still runs keeps serving and stays described), a Warning
/// event, and no retry until the spec changes: never a crash loop.
async fn invalid(ps: &PlinthService, cx: &Context, api: &Api<PlinthService>, message: String) -> Result<Action, Error> {
    tracing::info!(service = %key(ps), %message, "invalid spec");
    let mut status = ps.status.clone().unwrap_or_default();
    status.observed_generation = ps.metadata.generation;
    status.conditions = conditions(
        ps,
        [
            ("Ready", false, "InvalidSpec", message.clone()),
            (
                "Progressing",
                false,
                "InvalidSpec",
                "the spec must be fixed first".into(),
            ),
            ("Degraded", true, "InvalidSpec", message.clone()),
        ],
    );
    // The scaler's fields are its own (merge patches): this apply leaves them out.
    status.desired_replicas = None;
    status.utilization = None;
    status.last_scale_time = None;
    patch_status(api, &ps.name_any(), &status).await?;
    cx.event(ps, EventType::Warning, "InvalidSpec", "Validate", message)
        .await;
    Ok(Action::await_change())
}

async fn cleanup(ps: &PlinthService, cx: &Context) -> Result<Action, Error> {
    // Everything the service owns goes with it (owner references): nothing to delete by hand.
    cx.event(
        ps,
        EventType::Normal,
        "Deleted",
        "Delete",
        format!(
            "PlinthService {} deleted; its pods, Service, ConfigMap and Secret follow",
            ps.name_any()
        ),
    )
    .await;
    Ok(Action::await_change())
}

async fn patch_status(api: &Api<PlinthService>, name: &str, status: &PlinthServiceStatus) -> Result<(), Error> {
    let body = json!({
        "apiVersion": "plinth.dev/v1alpha1",
        "kind": "PlinthService",
        "status": status,
    });
    api.patch_status(name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&body))
        .await?;
    Ok(())
}

/// The status a reconcile writes: what the Deployment reports, the plan's traffic, and conditions.
fn status_from(ps: &PlinthService, plan: &Plan, d: &Deployment, ns: &str) -> PlinthServiceStatus {
    let name = ps.name_any();
    let ds = d.status.clone().unwrap_or_default();
    let replicas = ds.replicas.unwrap_or(0);
    let ready = ds.ready_replicas.unwrap_or(0);
    let updated = ds.updated_replicas.unwrap_or(0);
    let wanted = d.spec.replicas.unwrap_or(plan.initial_replicas());
    let stalled = ds
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_.as_deref() == Some("Progressing") && c.status.as_deref() == Some("False"))
        .map(|c| {
            c.message
                .clone()
                .unwrap_or_else(|| c.reason.clone().unwrap_or_default())
        });
    // Until the Deployment controller has seen the latest template, its counts describe the old one.
    let stale = ds.observed_generation.unwrap_or(0) < d.metadata.generation.unwrap_or(0);
    let rolling = stale || updated < wanted || ready < wanted || replicas > wanted;
    let ready_cond = if ready > 0 {
        (
            "Ready",
            true,
            "PodsReady",
            format!("{ready} of {wanted} host pods ready"),
        )
    } else {
        (
            "Ready",
            false,
            "NoPodReady",
            format!("0 of {wanted} host pods ready (models load before a pod is ready)"),
        )
    };
    let progressing = if rolling {
        (
            "Progressing",
            true,
            "RollingOut",
            format!("{updated} of {wanted} pods updated, {ready} ready"),
        )
    } else {
        (
            "Progressing",
            false,
            "Complete",
            "every pod runs the current spec".to_string(),
        )
    };
    // The Deployment's own verdict: no progress within its deadline (pods that never become ready).
    let degraded = match &stalled {
        Some(why) => ("Degraded", true, "ProgressDeadlineExceeded", why.clone()),
        None => ("Degraded", false, "AsExpected", String::new()),
    };
    // `desiredReplicas`, `utilization` and `lastScaleTime` are the scaler's (merge patches): this apply
    // leaves them out, so it never owns nor removes them.
    PlinthServiceStatus {
        observed_generation: ps.metadata.generation,
        conditions: conditions(ps, [ready_cond, progressing, degraded]),
        replicas: Some(replicas),
        ready_replicas: Some(ready),
        desired_replicas: None,
        selector: Some(render::selector(&name)),
        utilization: None,
        last_scale_time: None,
        scoring_uri: Some(render::scoring_uri(&name, ns)),
        versions: plan
            .traffic
            .iter()
            .map(|(name, traffic, default)| VersionStatus {
                name: name.clone(),
                traffic: *traffic,
                default: *default,
            })
            .collect(),
    }
}

/// Conditions with their transition time kept while their status is unchanged.
fn conditions<const N: usize>(ps: &PlinthService, wanted: [(&str, bool, &str, String); N]) -> Vec<Condition> {
    let old = ps.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    wanted
        .into_iter()
        .map(|(type_, ok, reason, message)| {
            let status = if ok { "True" } else { "False" }.to_string();
            let since = old
                .iter()
                .find(|c| c.type_ == type_ && c.status == status)
                .map(|c| c.last_transition_time.clone())
                .unwrap_or_else(|| now.clone());
            Condition {
                type_: type_.into(),
                status,
                reason: reason.into(),
                message,
                last_transition_time: since,
                observed_generation: ps.metadata.generation,
            }
        })
        .collect()
}
