//! `plinth controller run`: the controller process. It watches `PlinthService`s (and what they own),
//! reconciles them, runs the scaler over the watched resources, and serves its own `/metrics` and
//! `/healthz`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::api::{Api, ListParams};
use kube::runtime::{Controller, watcher};
use kube::{Client, Config, ResourceExt};

use crate::controller::{Context, error_policy, reconcile};
use crate::crd::PlinthService;
use crate::metrics::Metrics;
use crate::render::RenderOptions;
use crate::scale::{Scaler, http_reader};

/// What `plinth controller run` takes.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub kubeconfig: Option<PathBuf>,
    /// Watch one namespace only (default: all).
    pub namespace: Option<String>,
    pub image: String,
    /// The host image of pods on GPUs whose spec names none.
    pub gpu_image: String,
    /// Where `/metrics` and `/healthz` are served.
    pub listen: SocketAddr,
    pub scale_down_after: Duration,
}

/// A client from `--kubeconfig`, else the usual places (in-cluster, `$KUBECONFIG`, `~/.kube/config`).
pub async fn client(kubeconfig: Option<&std::path::Path>) -> anyhow::Result<Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading the kubeconfig {}", path.display()))?;
            Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .with_context(|| format!("using the kubeconfig {}", path.display()))?
        }
        None => Config::infer()
            .await
            .context("no cluster found (in-cluster, $KUBECONFIG or ~/.kube/config; or pass --kubeconfig)")?,
    };
    Ok(Client::try_from(config)?)
}

pub async fn run(options: RunOptions) -> anyhow::Result<()> {
    let client = client(options.kubeconfig.as_deref()).await?;
    let api: Api<PlinthService> = match &options.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    api.list(&ListParams::default().limit(1))
        .await
        .context("cannot list PlinthServices: is the CRD installed? (plinth controller crd | kubectl apply -f -)")?;
    let metrics = Arc::new(Metrics::default());
    let cx = Arc::new(Context::new(
        client.clone(),
        metrics.clone(),
        RenderOptions {
            image: options.image.clone(),
            gpu_image: options.gpu_image.clone(),
            with_replicas: false,
        },
    ));
    let owned = |client: &Client| -> (Api<Deployment>, Api<ConfigMap>, Api<Service>) {
        match &options.namespace {
            Some(ns) => (
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client.clone(), ns),
            ),
            None => (
                Api::all(client.clone()),
                Api::all(client.clone()),
                Api::all(client.clone()),
            ),
        }
    };
    let (deployments, config_maps, services) = owned(&client);
    let labelled = watcher::Config::default().labels("app.kubernetes.io/managed-by=plinth-controller");
    let controller = Controller::new(api, watcher::Config::default().any_semantic())
        .owns(deployments, labelled.clone())
        .owns(config_maps, labelled.clone())
        .owns(services, labelled)
        .shutdown_on_signal();
    let store = controller.store();
    // The scaler: every second, each service whose refresh period has passed.
    let scaler = Arc::new(Scaler::new(http_reader(), options.scale_down_after));
    let scaling = {
        let (cx, scaler) = (cx.clone(), scaler.clone());
        tokio::spawn(async move {
            let mut last: HashMap<String, Instant> = HashMap::new();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let services = store.state();
                let live: std::collections::HashSet<String> = services
                    .iter()
                    .map(|ps| format!("{}/{}", ps.namespace().unwrap_or_default(), ps.name_any()))
                    .collect();
                scaler.retain(&live);
                last.retain(|k, _| live.contains(k));
                for ps in services {
                    if ps.metadata.deletion_timestamp.is_some() || !scaler.due(&ps, &mut last) {
                        continue;
                    }
                    if let Err(e) = scaler.tick(&cx, &ps, scaler.now()).await {
                        cx.metrics.failures.with_label_values(&["scale"]).inc();
                        tracing::warn!(service = %ps.name_any(), error = %e, "scaling failed");
                    }
                }
            }
        })
    };
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .with_context(|| format!("listening on {}", options.listen))?;
    tracing::info!(listen = %options.listen, namespace = ?options.namespace, "controller started");
    tokio::spawn(serve_metrics(listener, metrics));
    controller
        .run(reconcile, error_policy, cx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "reconcile loop");
            }
        })
        .await;
    scaling.abort();
    tracing::info!("controller stopped");
    Ok(())
}

/// `/metrics` and `/healthz` for the controller's own pod.
async fn serve_metrics(listener: tokio::net::TcpListener, metrics: Arc<Metrics>) {
    use http_body_util::Full;
    use hyper::service::service_fn;
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let metrics = metrics.clone();
                async move {
                    let (status, body) = match req.uri().path() {
                        "/metrics" => (http::StatusCode::OK, metrics.render()),
                        "/healthz" | "/readyz" => (http::StatusCode::OK, "{\"status\":\"ok\"}".to_string()),
                        _ => (http::StatusCode::NOT_FOUND, "{\"error\":\"no such route\"}".to_string()),
                    };
                    let mut r = http::Response::new(Full::new(bytes::Bytes::from(body)));
                    *r.status_mut() = status;
                    Ok::<_, std::convert::Infallible>(r)
                }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await;
        });
    }
}
