//! `plinth serve`: the node host. Opens (or creates) the workspace, brings back every service, serves.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use plinth_control::{ControlOptions, ControlPlane, Workspace};
use plinth_router::{Collector, Host, LogHub, Metrics, Router};
use plinth_runtime::wasm::{EngineConfig, WasmEngine};

#[derive(clap::Args)]
pub struct Args {
    /// Address to listen on (port 0 picks a free one; the address is printed).
    #[arg(long, env = "PLINTH_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Also serve the inference protocol over gRPC (HTTP/2; TLS as for HTTP) on this address (port 0 picks
    /// a free one; the address is printed).
    #[arg(long, env = "PLINTH_GRPC_LISTEN")]
    grpc_listen: Option<SocketAddr>,
    /// Where models, services, keys and caches live.
    #[arg(long, env = "PLINTH_WORKSPACE", default_value = ".plinth")]
    workspace: PathBuf,
    /// PEM certificate chain for HTTPS (with --tls-key).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for HTTPS (with --tls-cert).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Largest request body, in bytes (larger ones get 413).
    #[arg(long, default_value_t = plinth_router::DEFAULT_MAX_BODY_BYTES)]
    max_body_bytes: usize,
    /// Lifetime of service tokens, in seconds (they should be refreshed after half of it).
    #[arg(long, default_value_t = 3600)]
    token_lifetime_secs: u64,
    /// Where compiled entry scripts are cached (default: <workspace>/cache).
    #[arg(long, env = "PLINTH_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Sustained low utilization, in seconds, before the autoscaler removes a replica.
    #[arg(long, env = "PLINTH_SCALE_DOWN_WINDOW_SECS", default_value_t = 60)]
    scale_down_window_secs: u64,
    /// Seconds a client has to finish the TLS handshake before it is disconnected.
    #[arg(long, default_value_t = 10)]
    tls_handshake_timeout_secs: u64,
    /// Seconds a connection with no request in flight has to send a whole request head.
    #[arg(long, default_value_t = 30)]
    header_read_timeout_secs: u64,
    /// Seconds a client has to send a request body (between chunks, for an upload) or a gRPC request's
    /// message; 408 (gRPC: DEADLINE_EXCEEDED) after.
    #[arg(long, default_value_t = 60)]
    body_read_timeout_secs: u64,
    /// Seconds a connection with no request in flight may stay silent before it is closed.
    #[arg(long, default_value_t = 75)]
    idle_timeout_secs: u64,
    /// Open connections at most; at the cap the oldest idle ones are closed to make room (default: the
    /// descriptor limit, raised to its hard maximum, less a quarter kept for models, logs and data).
    #[arg(long)]
    max_connections: Option<usize>,
    /// Caps CPU requests at RATIO × the host's cores (default: no cap). CPU is shared as Kubernetes
    /// limits share it: requests may add up to more than the cores; memory stays a hard budget.
    #[arg(long, env = "PLINTH_CPU_OVERSUBSCRIPTION", value_name = "RATIO")]
    cpu_oversubscription: Option<f64>,
    /// GPUs replicas may be placed on (default: those the NVIDIA driver and CUDA report): fewer to keep
    /// some for other work, or some on a machine without one to try placement (replicas then serve on
    /// a `cpu` listed after the GPU provider).
    #[arg(long, env = "PLINTH_GPUS", value_name = "N")]
    gpus: Option<u32>,
    /// Each GPU's memory in GB for placing replicas with `gpuMemoryGb` (default: what the driver
    /// reports).
    #[arg(long, env = "PLINTH_GPU_MEMORY_GB", value_name = "GB")]
    gpu_memory_gb: Option<f64>,
    /// Serve /metrics without the admin credential (for a Prometheus that scrapes without one).
    #[arg(long)]
    open_metrics: bool,
    /// How the listening address is printed on stdout: `text` or `json`.
    #[arg(long, short = 'o', default_value = "text")]
    output: super::Output,
    /// Threads that run the HTTP server and quick model calls (default: one per core).
    #[arg(long, env = "PLINTH_WORKERS")]
    workers: Option<usize>,
    /// The ONNX Runtime library file (default: found in ./.venv, beside the binary, or system-wide).
    #[arg(long, env = "ORT_DYLIB_PATH")]
    ort_lib: Option<PathBuf>,
    /// Serve the one service this manifest declares (JSON, as the Kubernetes controller's ConfigMap holds
    /// it) from its packages, statelessly: the workspace is scratch, the admin API refuses writes.
    #[arg(long, env = "PLINTH_SERVICE_MANIFEST", value_name = "FILE")]
    service_manifest: Option<PathBuf>,
    /// Where `plinth package fetch` left the manifest's packages (as `<sha256>.tar`).
    #[arg(
        long,
        env = "PLINTH_PACKAGE_DIR",
        default_value = "/var/lib/plinth/packages",
        requires = "service_manifest"
    )]
    package_dir: PathBuf,
    /// Where `pvc://claim/path` packages are mounted (as `<dir>/<claim>/<path>`).
    #[arg(
        long,
        env = "PLINTH_CLAIMS_DIR",
        default_value = "/var/lib/plinth/claims",
        requires = "service_manifest"
    )]
    claims_dir: PathBuf,
    /// The declared service's keys: a folder with files `primaryKey` and `secondaryKey` (a mounted
    /// Secret), read again every 2 s: changed files replace the keys without a restart. Default: new
    /// keys at each start.
    #[arg(long, env = "PLINTH_KEYS_DIR", requires = "service_manifest")]
    keys_dir: Option<PathBuf>,
    /// Load the declared service (compiling what it needs into the cache), then exit: 0 once loaded,
    /// 1 with the reason when it cannot be. A pod's init container warms the cache this way, within
    /// limits of its own, so the host that serves starts from it.
    #[arg(long, requires = "service_manifest")]
    exit_when_loaded: bool,
}

pub fn run(args: Args, logs: Arc<LogHub>) -> anyhow::Result<()> {
    // What the host writes (the workspace, collected data, compiled code, scripts' scratch) is its
    // owner's alone, whoever started it with whatever umask.
    #[cfg(unix)]
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.workers {
        builder.worker_threads(n.max(1));
    }
    let runtime = builder.enable_all().build()?;
    runtime.block_on(serve(args, logs))
}

async fn serve(args: Args, logs: Arc<LogHub>) -> anyhow::Result<()> {
    let declared = match &args.service_manifest {
        Some(file) => Some(
            plinth_control::Declared::read(file, &args.package_dir, &args.claims_dir, args.keys_dir.as_deref())
                .with_context(|| format!("reading the service manifest {}", file.display()))?,
        ),
        None => None,
    };
    let ws = Arc::new(
        Workspace::open(&args.workspace).with_context(|| format!("opening workspace {}", args.workspace.display()))?,
    );
    if declared.is_some() {
        // A declared host's workspace is scratch: what a previous start left is replaced, not restored.
        for old in ws.services()? {
            ws.delete_service(&old.name)?;
        }
    }
    let (tls, grpc_tls) = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => (
            Some(plinth_router::tls_acceptor(cert, key)?),
            Some(plinth_router::tls_acceptor_h2(cert, key)?),
        ),
        _ => (None, None),
    };
    let cache_dir = args.cache_dir.clone().unwrap_or_else(|| ws.root().join("cache"));
    let engine = Arc::new(WasmEngine::new(EngineConfig {
        cache_dir: Some(cache_dir.join("components")),
        ..EngineConfig::default()
    })?);
    let router = Arc::new(Router::new());
    let metrics = Arc::new(Metrics::new());
    let collector =
        Arc::new(Collector::start(ws.root().join("modeldata"), metrics.clone()).context("starting data collection")?);
    let control = ControlPlane::new(
        ws.clone(),
        router.clone(),
        engine,
        logs.clone(),
        metrics.clone(),
        ControlOptions {
            token_lifetime: Duration::from_secs(args.token_lifetime_secs),
            ort_library: args.ort_lib.clone(),
            cache_dir: Some(cache_dir),
            scale_down_after: Duration::from_secs(args.scale_down_window_secs),
            collector: Some(collector.clone()),
            cpu_oversubscription: args.cpu_oversubscription,
            gpus: args.gpus,
            gpu_memory_gb: args.gpu_memory_gb,
            declared: declared.as_ref().map(|d| d.manifest.name.clone()),
        },
    );
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let grpc_listener = match args.grpc_listen {
        Some(a) => Some(
            tokio::net::TcpListener::bind(a)
                .await
                .with_context(|| format!("listening for gRPC on {a}"))?,
        ),
        None => None,
    };
    let grpc_addr = grpc_listener.as_ref().map(|l| l.local_addr()).transpose()?;
    control.restore().await?;
    let declaring = declared.map(|d| (control.clone(), d));
    let host = Arc::new(
        Host::new(router)
            .with_auth(control.host_auth())
            .with_admin(control)
            .with_logs(logs)
            .with_metrics(metrics)
            .with_open_metrics(args.open_metrics)
            .with_max_body_bytes(args.max_body_bytes)
            .with_body_read_timeout(Duration::from_secs(args.body_read_timeout_secs.max(1))),
    );
    let scheme = if tls.is_some() { "https" } else { "http" };
    let grpc_text = grpc_addr.map(|a| format!(" and gRPC on {a}")).unwrap_or_default();
    match args.output {
        super::Output::Text | super::Output::Table => println!(
            "plinth listening on {scheme}://{addr} (workspace {}){grpc_text}",
            ws.root().display()
        ),
        super::Output::Json | super::Output::Yaml => println!(
            "{}",
            serde_json::json!({
                "listening": format!("{scheme}://{addr}"),
                "grpc": grpc_addr.map(|a| a.to_string()),
                "workspace": ws.root().display().to_string(),
            })
        ),
    }
    tracing::info!(%addr, scheme, grpc = ?grpc_addr, "listening");
    let options = plinth_router::ServeOptions {
        tls_handshake_timeout: Duration::from_secs(args.tls_handshake_timeout_secs.max(1)),
        header_read_timeout: Duration::from_secs(args.header_read_timeout_secs.max(1)),
        idle_timeout: Duration::from_secs(args.idle_timeout_secs.max(1)),
        max_connections: args.max_connections.unwrap_or_else(connection_cap).max(1),
    };
    tracing::debug!(max_connections = options.max_connections, "connection cap");
    // One signal stops both listeners; each drains its own requests.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let stop = Arc::new(stop);
    let on_signal = stop.clone();
    tokio::spawn(async move {
        plinth_router::shutdown_signal().await;
        let _ = on_signal.send(true);
    });
    // A declared service loads while the host answers health checks (not ready until it is loaded); if
    // it cannot load, the host stops with its error (its pod restarts, the error in its log).
    let failed = Arc::new(std::sync::Mutex::new(None::<String>));
    if let Some((control, declared)) = declaring {
        let (failed, stop) = (failed.clone(), stop.clone());
        let name = declared.manifest.name.clone();
        let exit_when_loaded = args.exit_when_loaded;
        // Counted as loading now, before the first request can ask /readyz.
        let serving = control.serve_declared(declared);
        tokio::spawn(async move {
            match serving.await {
                Ok(()) if exit_when_loaded => {
                    tracing::info!(service = %name, "declared service loaded; exiting (--exit-when-loaded)");
                    let _ = stop.send(true);
                }
                Ok(()) => tracing::info!(service = %name, "declared service ready"),
                Err(e) => {
                    tracing::error!(service = %name, error = %e, "the declared service cannot be served");
                    *failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(format!("service {name}: {e}"));
                    let _ = stop.send(true);
                }
            }
        });
    }
    let signal = move || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        }
    };
    let grpc = grpc_listener.map(|l| {
        let grpc = plinth_router::Grpc::new(host.clone());
        tokio::spawn(plinth_router::serve_grpc(l, grpc, grpc_tls, options.clone(), signal()))
    });
    plinth_router::serve_with(listener, host, tls, options, signal()).await?;
    if let Some(g) = grpc {
        g.await??;
    }
    // Every request has been answered: write what data collection accepted, then exit.
    tokio::task::spawn_blocking(move || collector.shutdown()).await?;
    tracing::info!("stopped");
    if let Some(e) = failed.lock().unwrap_or_else(|p| p.into_inner()).take() {
        anyhow::bail!(e);
    }
    Ok(())
}

/// The default connection cap: the soft descriptor limit, first raised to the hard one, less a quarter
/// (at least 64, at most 1,024) left for models, scripts, logs, data collection and the workspace.
fn connection_cap() -> usize {
    use rustix::process::{Resource, getrlimit, setrlimit};
    const MOST: u64 = 1 << 20;
    let mut limit = getrlimit(Resource::Nofile);
    let most = limit.maximum.unwrap_or(MOST).min(MOST);
    if limit.current.is_some_and(|c| c < most) {
        let raised = rustix::process::Rlimit {
            current: Some(most),
            maximum: limit.maximum,
        };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            limit = raised;
        }
    }
    let soft = limit.current.unwrap_or(MOST).min(MOST) as usize;
    let reserve = (soft / 4).clamp(64, 1024);
    soft.saturating_sub(reserve).max(16)
}
