//! `plinth controller run|crd|render`: the Kubernetes controller (crate `plinth-controller`), its CRD, and
//! the manifests it would apply, for `kubectl apply` without a controller.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use plinth_controller::PlinthService;
use plinth_controller::plan;
use plinth_controller::render::{self, DEFAULT_GPU_IMAGE, DEFAULT_IMAGE, RenderOptions};
use serde_json::Value;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Watch PlinthServices and place, update and scale their host pods.
    Run(RunArgs),
    /// Print the PlinthService CRD (YAML) for `kubectl apply -f -`.
    Crd,
    /// Print what a PlinthService runs on (Secret, ConfigMap, Deployment with minReplicas, Service, and a
    /// PodDisruptionBudget when more than one pod may run), for `kubectl apply -f -` without a controller.
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
    /// The namespace when the manifest names none. Default: the default version's deployment config's
    /// `namespace` (Azure's field), else `default`.
    #[arg(long, short = 'n')]
    namespace: Option<String>,
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
    #[arg(long, conflicts_with = "keys_from")]
    no_secret: bool,
    /// Reuse keys instead of making new ones: a Secret (YAML or JSON, e.g. `kubectl get secret NAME-keys
    /// -o yaml`, or an earlier render's output) or `plinth service keys NAME -o json`'s output.
    #[arg(long, value_name = "FILE")]
    keys_from: Option<PathBuf>,
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
    let plan = plan::plan(&ps).map_err(|e| anyhow::anyhow!("{}: {e}", args.file.display()))?;
    if ps.metadata.namespace.is_none() {
        let from_config = plan.configs.get(plan.default).and_then(|c| c.namespace.clone());
        ps.metadata.namespace = Some(args.namespace.clone().or(from_config).unwrap_or("default".into()));
    }
    let objects = render::render(
        &ps,
        &plan,
        &RenderOptions {
            image: args.image,
            gpu_image: args.gpu_image,
            with_replicas: true,
        },
    );
    let mut docs = Vec::with_capacity(5);
    match &args.keys_from {
        Some(file) => {
            let (primary, secondary) = read_keys(file)?;
            docs.push(serde_json::to_value(render::secret_with_keys(&ps, primary, secondary))?);
        }
        None if !args.no_secret => docs.push(serde_json::to_value(render::secret(&ps, &plan))?),
        None => {}
    }
    docs.extend([
        serde_json::to_value(&objects.config_map)?,
        serde_json::to_value(&objects.deployment)?,
        serde_json::to_value(&objects.service)?,
    ]);
    if let Some(budget) = &objects.disruption_budget {
        docs.push(serde_json::to_value(budget)?);
    }
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

/// The keys in a Secret (its `stringData`, or its `data` in base64) or in `plinth service keys -o json`'s
/// output; the file may hold several documents (an earlier render), of which the Secret is taken.
fn read_keys(file: &std::path::Path) -> anyhow::Result<(String, String)> {
    use k8s_openapi::api::core::v1::Secret;
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let mut docs: Vec<Value> = Vec::new();
    for doc in text.split("\n---").map(|d| d.trim_start_matches("---")) {
        if doc.trim().is_empty() {
            continue;
        }
        let v: Value = serde_saphyr::from_str(doc).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        match v["kind"].as_str() {
            Some("List") => docs.extend(v["items"].as_array().cloned().unwrap_or_default()),
            _ => docs.push(v),
        }
    }
    let pick = |map: &serde_json::Map<String, Value>| -> Option<(String, String)> {
        Some((
            map.get("primaryKey")?.as_str()?.to_string(),
            map.get("secondaryKey")?.as_str()?.to_string(),
        ))
    };
    for doc in &docs {
        if doc["kind"] == "Secret" {
            let secret: Secret =
                serde_json::from_value(doc.clone()).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            let mut keys = serde_json::Map::new();
            for (k, v) in secret.data.iter().flatten() {
                keys.insert(k.clone(), Value::String(String::from_utf8_lossy(&v.0).into_owned()));
            }
            for (k, v) in secret.string_data.iter().flatten() {
                keys.insert(k.clone(), Value::String(v.clone()));
            }
            if let Some(found) = pick(&keys) {
                return check_keys(file, found);
            }
        } else if let Some(found) = doc.as_object().and_then(pick) {
            return check_keys(file, found);
        }
    }
    bail!(
        "{}: no primaryKey and secondaryKey found (a Secret, or `plinth service keys NAME -o json`'s output)",
        file.display()
    )
}

fn check_keys(file: &std::path::Path, (primary, secondary): (String, String)) -> anyhow::Result<(String, String)> {
    let (primary, secondary) = (primary.trim().to_string(), secondary.trim().to_string());
    if primary.len() < 16 || secondary.len() < 16 {
        bail!("{}: keys must be at least 16 characters", file.display());
    }
    Ok((primary, secondary))
}

/// Writes to standard output; a reader that closed early (`| head`) is not an error.
fn out(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}
