//! The control plane as the host holds it: its settings, what its parts share, and the handle that
//! starts the deployments actor and talks to it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use plinth_router::{Capacity, LogHub, Metrics, Router, TokenIssuer};
use plinth_runtime::wasm::WasmEngine;
use plinth_spec::time::unix_seconds as now;
use tokio::sync::{mpsc, oneshot};

use crate::context::{Context, ControlOptions};
use crate::deployments::{Actor, COMMANDS, Command};
use crate::store::Workspace;
use crate::{Error, Result};

/// The control plane: the admin API's handlers talk to it, and it owns the deployments actor.
pub struct ControlPlane {
    pub(crate) cx: Arc<Context>,
    tx: mpsc::Sender<Command>,
    /// Deployments still loading, as the actor last left them (for readiness).
    loading: Arc<AtomicUsize>,
    /// A declared service not yet loaded (`serve_declared` under way): the host is not ready.
    pub(crate) declaring: AtomicUsize,
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
        crate::scripts::remove_stale_builds(&options.cache_dir.clone().unwrap_or_else(|| ws.root().join("cache")));
        let found = plinth_runtime::onnx::Gpus::of_host();
        let gpus = options.gpus.unwrap_or_else(|| found.count());
        let gpu_memory: Vec<u64> = match options.gpu_memory_gb {
            Some(gb) => vec![(gb * f64::from(1u32 << 30)) as u64; gpus as usize],
            None => found.memory.iter().map(|m| m.0).collect(),
        };
        let capacity =
            Arc::new(Capacity::of_host_with_gpus(gpus).with_cpu_oversubscription(options.cpu_oversubscription));
        let cx = Arc::new(Context {
            ws,
            router,
            engine,
            tokens,
            logs,
            metrics,
            gpus: crate::gpus::GpuPlacer::new(gpus, &gpu_memory),
            capacity,
            options,
        });
        let (tx, rx) = mpsc::channel(COMMANDS);
        let loading = Arc::new(AtomicUsize::new(0));
        let actor = Actor::new(cx.clone(), now() * 1000, tx.downgrade(), loading.clone());
        tokio::spawn(actor.run(rx));
        Arc::new(ControlPlane {
            cx,
            tx,
            loading,
            declaring: AtomicUsize::new(0),
        })
    }

    /// The credentials a host checks requests against: the workspace's admin token and this control
    /// plane's token issuer.
    pub fn host_auth(&self) -> plinth_router::HostAuth {
        plinth_router::HostAuth::new(Some(self.cx.ws.admin_token().to_string()), Some(self.cx.tokens.clone()))
    }

    /// Deployments still loading.
    pub fn loading(&self) -> usize {
        self.loading.load(Ordering::Relaxed) + self.declaring.load(Ordering::Relaxed)
    }

    /// Deploys every stored service (at start-up) and starts the rollback monitor.
    pub async fn restore(self: &Arc<Self>) -> Result<()> {
        for record in self.cx.ws.services()? {
            self.send(Command::Restore { service: record.name }).await?;
        }
        // The actor takes commands in order: once this is answered every restore has begun and counts
        // as loading, so a request for a service not back yet gets a 503 to retry, not a 404.
        self.ask(|reply| Command::Describe { name: None, reply }).await?;
        crate::rollback::start(self.cx.clone(), self.tx.downgrade());
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
