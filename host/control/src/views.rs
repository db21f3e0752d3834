//! What the admin API shows of a service: the stored record, where each version's deployment stands,
//! and what the router is doing with it now (traffic, replicas, statistics).

use std::collections::HashMap;
use std::time::Duration;

use crate::api::{DeployState, GpuPlacement, ModelProvider, ServiceView, VersionStats, VersionView, to_json};
use crate::context::Context;
use crate::state::{Deployment, state_key};
use plinth_spec::record::ServiceRecord;

/// A service's state: Failed if a version failed, Transitioning while one loads, else Healthy; and
/// whether the failed one still serves its previous deployment.
fn service_state(r: &ServiceRecord, deployments: &HashMap<String, Deployment>) -> (DeployState, Option<String>, bool) {
    let states: Vec<Option<&Deployment>> = r
        .versions
        .iter()
        .map(|v| deployments.get(&state_key(&r.name, &v.name)))
        .collect();
    if let Some(failed) = states.iter().flatten().find(|s| s.state == DeployState::Failed) {
        return (DeployState::Failed, failed.error.clone(), failed.serving_previous);
    }
    if states
        .iter()
        .any(|s| s.is_none_or(|s| s.state == DeployState::Transitioning))
    {
        return (DeployState::Transitioning, None, false);
    }
    (DeployState::Healthy, None, false)
}

/// The view of one service; `full` adds its versions, replicas, events and configuration.
pub(crate) fn service(
    cx: &Context,
    r: &ServiceRecord,
    deployments: &HashMap<String, Deployment>,
    full: bool,
) -> ServiceView {
    let (state, error, serving_previous) = service_state(r, deployments);
    let live = cx.router.get(&r.name);
    let mut view = ServiceView {
        name: r.name.clone(),
        state,
        error,
        serving_previous,
        models: r.versions.iter().flat_map(|v| v.models.clone()).collect(),
        scoring_uri: format!("/api/v1/service/{}/score", r.name),
        swagger_uri: format!("/api/v1/service/{}/swagger.json", r.name),
        auth_enabled: r.auth_enabled,
        token_auth_enabled: r.token_auth_enabled,
        created: r.created,
        updated: r.updated,
        versions: None,
        replicas: None,
        host_cpu_subscription: None,
        events: None,
        deployment_config: None,
        inference_config: None,
    };
    if !full {
        return view;
    }
    let versions = r
        .versions
        .iter()
        .map(|ver| {
            let deployment = deployments.get(&state_key(&r.name, &ver.name));
            let running = live.as_ref().and_then(|svc| {
                let i = svc.versions().iter().position(|x| x.name() == ver.name)?;
                Some((svc.weights()[i], svc.versions()[i].clone()))
            });
            let window = ver.rollback.as_ref().map(|p| p.window_secs).unwrap_or(60);
            let stats = running.as_ref().map(|(_, x)| {
                let (requests, failures) = x.stats().totals();
                VersionStats {
                    requests,
                    failures,
                    rejected: x.stats().rejected(),
                    window: x.stats().window(Duration::from_secs(window)),
                }
            });
            VersionView {
                name: ver.name.clone(),
                state: deployment.map(|d| d.state).unwrap_or(DeployState::Unknown),
                error: deployment.and_then(|d| d.error.clone()),
                serving_previous: deployment.is_some_and(|d| d.serving_previous),
                ignored: deployment.map(|d| d.ignored.clone()).unwrap_or_default(),
                models: ver.models.clone(),
                entry_script: ver.entry_script.clone(),
                traffic: ver.traffic,
                effective_traffic: running.as_ref().map(|(w, _)| *w).unwrap_or(0),
                is_default: ver.is_default,
                kind: if ver.control { "control" } else { "treatment" }.into(),
                mirror: ver.mirror,
                description: ver.description.clone(),
                tags: ver.tags.clone(),
                rollback: ver.rollback.clone(),
                replicas: running.as_ref().map(|(_, x)| x.replica_count()),
                utilization: running
                    .as_ref()
                    .map(|(_, x)| (x.utilization() * 1000.0).round() / 1000.0),
                stats,
                providers: running
                    .as_ref()
                    .map(|(_, x)| {
                        x.info()
                            .placements
                            .iter()
                            .map(|(model, p)| ModelProvider {
                                model: model.clone(),
                                provider: p.provider.name().into(),
                                providers: p.providers.iter().map(|p| p.name().to_string()).collect(),
                                fallback: p.fallback.clone(),
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
                runtime: running.as_ref().map(|(_, x)| {
                    let info = x.info();
                    match (info.has_script, info.wants_http) {
                        (false, _) => "onnx",
                        (true, true) => "python-scientific",
                        (true, false) if ver.entry_script.as_deref().is_some_and(|s| s.ends_with(".py")) => "python",
                        (true, false) => "wasm",
                    }
                    .to_string()
                }),
                gpus: cx
                    .gpus
                    .placements(&format!("{}/{}", r.name, ver.name))
                    .into_iter()
                    .map(|(gpu, memory_gb)| GpuPlacement { gpu, memory_gb })
                    .collect(),
                deployment_config: to_json(&ver.deployment_config),
                inference_config: to_json(&ver.inference_config),
            }
        })
        .collect();
    view.versions = Some(versions);
    if let Some(svc) = &live {
        view.replicas = Some(svc.versions().iter().map(|x| x.replica_count()).sum());
    }
    view.events = Some(r.events.clone());
    view.host_cpu_subscription = Some((cx.capacity.cpu_subscription().0 * 1000.0).round() / 1000.0);
    if let Some(first) = r.versions.iter().find(|x| x.is_default) {
        view.deployment_config = Some(to_json(&first.deployment_config));
        view.inference_config = Some(to_json(&first.inference_config));
    }
    view
}
