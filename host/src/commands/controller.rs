//! `plinth controller run|crd|render`: the Kubernetes controller (crate `plinth-controller`), its CRD, and
//! the manifests it would apply, for `kubectl apply` without a controller.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use plinth_controller::PlinthService;
use plinth_controller::render::{self, DEFAULT_GPU_IMAGE, DEFAULT_IMAGE, RenderOptions};
use serde_json::Value;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Watch PlinthServices and place, update and scale their host pods.
    Run(RunArgs),
    /// Print the PlinthService CRD (YAML) for `kubectl apply -f -`.
    Crd,
    /// Print what a PlinthService runs on (Secret, ConfigMap, Deployment with minReplicas, Service), for
    /// `kubectl apply -f -` without a controller.
    Render(RenderArgs),
}

#[derive(clap::Args)]
pub struct RunArgs {
    /// A kubeconfig file (default: in-cluster, then $KUBECONFIG, then ~/.kube/config).
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Watch this namespace only (default: every namespace).
    #[arg(long, short = 'n')]
    namespace: Option<String>,
    /// The host image of pods whose spec names none.
    #[arg(long, env = "PLINTH_IMAGE", default_value = DEFAULT_IMAGE)]
    image: String,
    /// The host image (built with the GPU ONNX Runtime) of pods that run on GPUs.
    #[arg(long, env = "PLINTH_GPU_IMAGE", default_value = DEFAULT_GPU_IMAGE)]
    gpu_image: String,
    /// Where the controller serves its /metrics and /healthz.
    #[arg(long, default_value = "0.0.0.0:9090")]
    listen: SocketAddr,
    /// Sustained low utilization, in seconds, before a pod is removed.
    #[arg(long, env = "PLINTH_SCALE_DOWN_WINDOW_SECS", default_value_t = 60)]
    scale_down_window_secs: u64,
}

#[derive(clap::Args)]
pub struct RenderArgs {
    /// The PlinthService (YAML or JSON; `-` for standard input).
    #[arg(long, short = 'f')]
    file: PathBuf,
    /// The namespace when the manifest names none.
    #[arg(long, short = 'n', default_value = "default")]
    namespace: String,
    /// The host image when the spec names none.
    #[arg(long, env = "PLINTH_IMAGE", default_value = DEFAULT_IMAGE)]
    image: String,
    /// The host image of pods that run on GPUs.
    #[arg(long, env = "PLINTH_GPU_IMAGE", default_value = DEFAULT_GPU_IMAGE)]
    gpu_image: String,
    /// `yaml` (documents separated by ---) or `json` (a v1 List).
    #[arg(long, default_value = "yaml")]
    format: Format,
    /// Leave the keys' Secret out: it exists already, and applying a new one would replace the keys
    /// (the hosts follow their Secret) under every client that holds them.
    #[arg(long)]
    no_secret: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    Yaml,
    Json,
}

pub fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Crd => out(&plinth_controller::crd::crd_yaml()),
        Command::Render(args) => render_cmd(args),
        Command::Run(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            runtime.block_on(plinth_controller::run::run(plinth_controller::run::RunOptions {
                kubeconfig: args.kubeconfig,
                namespace: args.namespace,
                image: args.image,
                gpu_image: args.gpu_image,
                listen: args.listen,
                scale_down_after: Duration::from_secs(args.scale_down_window_secs),
            }))
        }
    }
}

/// Reads a PlinthService from YAML or JSON.
pub fn read_service(file: &std::path::Path) -> anyhow::Result<PlinthService> {
    let text = if file == std::path::Path::new("-") {
        std::io::read_to_string(std::io::stdin())?
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?
    };
    let value: Value = serde_saphyr::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    if value["kind"] != "PlinthService" {
        bail!("{}: kind is {}, not PlinthService", file.display(), value["kind"]);
    }
    serde_json::from_value(value).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))
}

fn render_cmd(args: RenderArgs) -> anyhow::Result<()> {
    let mut ps = read_service(&args.file)?;
    if ps.metadata.namespace.is_none() {
        ps.metadata.namespace = Some(args.namespace.clone());
    }
    let plan = render::plan(&ps).map_err(|e| anyhow::anyhow!("{}: {e}", args.file.display()))?;
    let objects = render::render(
        &ps,
        &plan,
        &RenderOptions {
            image: args.image,
            gpu_image: args.gpu_image,
            with_replicas: true,
        },
    );
    let mut docs = Vec::with_capacity(4);
    if !args.no_secret {
        docs.push(serde_json::to_value(render::secret(&ps, &plan))?);
    }
    docs.extend([
        serde_json::to_value(&objects.config_map)?,
        serde_json::to_value(&objects.deployment)?,
        serde_json::to_value(&objects.service)?,
    ]);
    let text = match args.format {
        Format::Json => {
            serde_json::to_string_pretty(&serde_json::json!({"apiVersion": "v1", "kind": "List", "items": docs}))?
                + "\n"
        }
        Format::Yaml => {
            let mut text = String::new();
            for d in docs {
                text.push_str("---\n");
                text.push_str(&serde_saphyr::to_string(&d)?);
            }
            text
        }
    };
    out(&text)
}

/// Writes to standard output; a reader that closed early (`| head`) is not an error.
fn out(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}
