//! The scaler: pods of a `PlinthService` as azureml-fe scales them. Each host pod reports its load
//! (`GET /api/v1/load`: the mean utilization its own autoscaler measured, (busy replicas + waiting
//! requests) / replicas); the mean over the pods goes through the host's own policy (`plinth_spec::
//! Policy`: eager up, down only after a sustained quiet window, within min/max), and a changed count is
//! applied with a patch of the Deployment's `/scale`. With autoscaling off, `spec.replicas` (or
//! `numReplicas`) is applied the same way. Never an HPA (the two would fight); nodes are not its concern.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::events::EventType;
use plinth_spec::scale::{Decision, Policy, State as ScaleState};
use serde::Deserialize;
use serde_json::json;

use crate::controller::Context;
use crate::crd::PlinthService;
use crate::render;

/// What one host pod reports.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct HostLoad {
    pub replicas: u64,
    pub busy: u64,
    pub waiting: u64,
    /// Mean utilization (0..; above 1 when requests wait) its autoscaler last measured.
    pub utilization: f64,
}

/// Reads a host's load; the real one asks `http://addr/api/v1/load`.
pub type LoadReader = Arc<dyn Fn(SocketAddr) -> BoxFuture<'static, Result<HostLoad, String>> + Send + Sync>;

/// The reader for real hosts: one GET with a 2-second deadline.
pub fn http_reader() -> LoadReader {
    let client: hyper_util::client::legacy::Client<_, http_body_util::Empty<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(hyper_util::client::legacy::connect::HttpConnector::new());
    Arc::new(move |addr: SocketAddr| {
        let client = client.clone();
        Box::pin(async move {
            let uri: http::Uri = format!("http://{addr}/api/v1/load")
                .parse()
                .map_err(|e| format!("{e}"))?;
            let read = async {
                let response = client.get(uri).await.map_err(|e| format!("connecting: {e}"))?;
                if !response.status().is_success() {
                    return Err(format!("status {}", response.status()));
                }
                let body = http_body_util::BodyExt::collect(response.into_body())
                    .await
                    .map_err(|e| format!("reading: {e}"))?
                    .to_bytes();
                serde_json::from_slice::<HostLoad>(&body).map_err(|e| format!("not a load report: {e}"))
            };
            tokio::time::timeout(Duration::from_secs(2), read)
                .await
                .map_err(|_| "no answer in 2 s".to_string())?
        })
    })
}

/// What the scaler remembers of one service.
#[derive(Default)]
struct Memory {
    state: ScaleState,
}

pub struct Scaler {
    reader: LoadReader,
    /// How long utilization must stay below target before a pod is removed (the host's own window).
    pub scale_down_after: Duration,
    started: Instant,
    memory: Mutex<HashMap<String, Memory>>,
}

/// What a tick did.
#[derive(Debug, Clone, PartialEq)]
pub enum Tick {
    /// Nothing to do yet (invalid spec, no Deployment, not due, no load readable).
    Skipped(&'static str),
    /// A decision, applied when `desired != current`.
    Decided(Decision),
    /// Autoscaling off: the fixed count, applied when it differed.
    Fixed { current: i32, desired: i32 },
}

impl Scaler {
    pub fn new(reader: LoadReader, scale_down_after: Duration) -> Self {
        Scaler {
            reader,
            scale_down_after,
            started: Instant::now(),
            memory: Mutex::new(HashMap::new()),
        }
    }

    /// One look at one service, at `now` since the scaler started (tests pass a simulated clock).
    pub async fn tick(&self, cx: &Context, ps: &PlinthService, now: Duration) -> Result<Tick, kube::Error> {
        let Ok(plan) = crate::plan::plan(ps) else {
            return Ok(Tick::Skipped("invalid spec"));
        };
        let (name, ns) = (ps.name_any(), ps.namespace().unwrap_or_default());
        let deployments: Api<Deployment> = Api::namespaced(cx.client.clone(), &ns);
        let scale = match deployments.get_scale(&name).await {
            Ok(s) => s,
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(Tick::Skipped("no Deployment yet")),
            Err(e) => return Err(e),
        };
        let current = scale.spec.and_then(|s| s.replicas).unwrap_or(0);
        if !plan.autoscale {
            let desired = plan.fixed_replicas;
            if desired != current {
                self.apply(cx, ps, current, desired, "set", format!("spec.replicas is {desired}"))
                    .await?;
            }
            return Ok(Tick::Fixed { current, desired });
        }
        let key = format!("{ns}/{name}");
        let policy = Policy {
            target: plan.target,
            min: plan.min_replicas.max(0) as u32,
            max: plan.max_replicas.max(1) as u32,
            scale_down_after: self.scale_down_after,
            refresh: Duration::from_secs(plan.refresh_secs),
        };
        let pods: Api<Pod> = Api::namespaced(cx.client.clone(), &ns);
        let list = pods
            .list(&ListParams::default().labels(&render::selector(&name)))
            .await?;
        let addrs: Vec<SocketAddr> = list.items.iter().filter_map(pod_address).collect();
        let loads = futures::future::join_all(addrs.iter().map(|a| (self.reader)(*a))).await;
        let (mut replicas, mut weighted, mut waiting, mut serving) = (0u64, 0.0f64, false, 0i32);
        for (addr, load) in addrs.iter().zip(loads) {
            match load {
                Ok(l) => {
                    serving += (l.replicas > 0) as i32;
                    replicas += l.replicas;
                    weighted += l.utilization * l.replicas as f64;
                    waiting |= l.waiting > 0;
                }
                Err(e) => {
                    cx.metrics.load_read_failures.with_label_values(&["unreadable"]).inc();
                    tracing::debug!(service = %key, %addr, error = %e, "cannot read a host's load");
                }
            }
        }
        let measured = replicas > 0;
        let utilization = if measured { weighted / replicas as f64 } else { 0.0 };
        if !measured && current >= policy.min as i32 && current > 0 {
            return Ok(Tick::Skipped("no host load readable"));
        }
        let decision = {
            let mut memory = self.memory.lock().unwrap_or_else(|p| p.into_inner());
            let m = memory.entry(key.clone()).or_default();
            policy.decide(&mut m.state, now, current.max(0) as u32, utilization, waiting)
        };
        // The pods of the last scale-up still starting: their capacity is on its way, and the load
        // measured on fewer pods must not be multiplied by the larger count again.
        if decision.desired as i32 > current && current >= policy.min as i32 && serving < current {
            return Ok(Tick::Skipped("pods still starting"));
        }
        let desired = decision.desired as i32;
        let mut status = json!({"status": {
            "utilization": (utilization * 1000.0).round() / 10.0,
            "desiredReplicas": desired,
        }});
        if desired != current {
            let direction = if desired > current { "up" } else { "down" };
            let note = format!(
                "{current} → {desired} pods: utilization {:.0}% against a target of {:.0}% ({})",
                utilization * 100.0,
                plan.target * 100.0,
                decision.reason
            );
            self.apply(cx, ps, current, desired, direction, note).await?;
            status["status"]["lastScaleTime"] = json!(k8s_openapi::jiff::Timestamp::now().to_string());
        }
        let api: Api<PlinthService> = Api::namespaced(cx.client.clone(), &ns);
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
            .await?;
        Ok(Tick::Decided(decision))
    }

    async fn apply(
        &self,
        cx: &Context,
        ps: &PlinthService,
        current: i32,
        desired: i32,
        direction: &'static str,
        note: String,
    ) -> Result<(), kube::Error> {
        let deployments: Api<Deployment> = Api::namespaced(cx.client.clone(), &ps.namespace().unwrap_or_default());
        let patch = json!({"spec": {"replicas": desired}});
        deployments
            .patch_scale(&ps.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        cx.metrics.scalings.with_label_values(&[direction]).inc();
        tracing::info!(service = %ps.name_any(), current, desired, direction, "scaled");
        cx.event(ps, EventType::Normal, "Scaled", "Scale", note).await;
        Ok(())
    }

    /// Forgets services that are gone (`live` holds `namespace/name` of those still watched).
    pub fn retain(&self, live: &std::collections::HashSet<String>) {
        self.memory
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|k, _| live.contains(k));
    }

    /// Seconds since the scaler started (the clock `tick` takes in production).
    pub fn now(&self) -> Duration {
        self.started.elapsed()
    }

    /// Whether `ps` is due for a look (its `refreshPeriodInSeconds` since the last one).
    pub fn due(&self, ps: &PlinthService, last: &mut HashMap<String, Instant>) -> bool {
        let refresh = crate::plan::plan(ps).map(|p| p.refresh_secs).unwrap_or(5);
        let key = format!("{}/{}", ps.namespace().unwrap_or_default(), ps.name_any());
        let due = last
            .get(&key)
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(refresh));
        if due {
            last.insert(key, Instant::now());
        }
        due
    }
}

/// A running pod's address: its IP and the `http` container port.
pub fn pod_address(pod: &Pod) -> Option<SocketAddr> {
    let status = pod.status.as_ref()?;
    if status.phase.as_deref() != Some("Running") || pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let ip: IpAddr = status.pod_ip.as_deref()?.parse().ok()?;
    let port = pod
        .spec
        .as_ref()?
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.name.as_deref() == Some("http"))
        .map(|p| p.container_port)
        .unwrap_or(render::PORT);
    Some(SocketAddr::new(ip, u16::try_from(port).ok()?))
}
