//! `plinth deploy`: Azure's `az ml model deploy` / `Model.deploy` + `wait_for_deployment(show_output=True)`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use http::Method;
use plinth_control::api::{DeployRequest, DeployState, ServiceView};
use plinth_control::config::{DeploymentConfig, InferenceConfig};
use serde_json::{Value, json};

use crate::client::Client;

use super::{HostArgs, block_on, pack, typed, upload};

#[derive(clap::Args)]
pub struct Args {
    /// A registered model as NAME:VERSION (or NAME for the latest); repeatable.
    #[arg(short = 'm', long = "model", value_name = "NAME:VERSION")]
    models: Vec<String>,
    /// The service name.
    #[arg(short = 'n', long = "name")]
    name: String,
    /// inferenceconfig.json (entryScript, sourceDirectory, ...). Without it the model is served directly.
    #[arg(long = "ic", visible_aliases = ["inference-config-file"], alias = "inference-config", value_name = "FILE")]
    inference_config: Option<PathBuf>,
    /// deploymentconfig.json (auth, autoscaler, timeouts, ...). Without it, Azure's defaults.
    #[arg(long = "dc", visible_aliases = ["deploy-config-file"], alias = "deployment-config", value_name = "FILE")]
    deployment_config: Option<PathBuf>,
    /// Return as soon as the host has accepted the deployment.
    #[arg(long)]
    no_wait: bool,
    /// Replace a service of the same name (what a deploy does anyway; accepted as Azure spells it).
    #[arg(long)]
    overwrite: bool,
    /// Give up waiting after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout_secs: u64,
}

/// A config file's bytes (`{}` when there is none) and its JSON.
fn read_json(path: Option<&Path>) -> anyhow::Result<(Vec<u8>, Value)> {
    let Some(path) = path else {
        return Ok((b"{}".to_vec(), json!({})));
    };
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let value = serde_json::from_slice(&bytes).with_context(|| format!("{} is not valid JSON", path.display()))?;
    Ok((bytes, value))
}

/// What a deployment uploads: the two configs as JSON and the entry script's files.
pub struct Content {
    pub ic: Value,
    pub dc: Value,
    pub files: Vec<(String, PathBuf)>,
    pub entry_script: Option<String>,
}

/// Reads and checks the configs locally (a typo is reported before anything is uploaded) and packs the
/// source folder.
pub fn content(inference_config: Option<&Path>, deployment_config: Option<&Path>) -> anyhow::Result<Content> {
    let (ic_bytes, ic_value) = read_json(inference_config)?;
    let (dc_bytes, dc_value) = read_json(deployment_config)?;
    let ic_name = inference_config
        .map(|p| p.display().to_string())
        .unwrap_or("inferenceconfig.json".into());
    let dc_name = deployment_config
        .map(|p| p.display().to_string())
        .unwrap_or("deploymentconfig.json".into());
    // Checked from the file's own bytes, so that a mistake's line and column are the file's.
    let (ic, ic_ignored) = InferenceConfig::from_json(&ic_name, &ic_bytes)?;
    let (_, dc_ignored) = DeploymentConfig::from_json(&dc_name, &dc_bytes)?;
    for note in ic_ignored.iter().chain(&dc_ignored) {
        eprintln!("note: ignored on a Plinth host: {note}");
    }
    let base = inference_config
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let (files, entry_script) = match ic.entry_script_path(&base) {
        None => (Vec::new(), None),
        Some(script) => match ic.source_dir(&base) {
            Some(src) => {
                let files = pack(&src).with_context(|| format!("sourceDirectory {}", src.display()))?;
                let rel = ic.entry_script.clone().unwrap_or_default();
                if !files.iter().any(|(p, _)| p == &rel) {
                    bail!(
                        "entryScript {rel} is not in sourceDirectory {} (or an ignore file leaves it out)",
                        src.display()
                    );
                }
                (files, Some(rel))
            }
            None => {
                let files = pack(&script).with_context(|| format!("entryScript {}", script.display()))?;
                let rel = files[0].0.clone();
                (files, Some(rel))
            }
        },
    };
    Ok(Content {
        ic: ic_value,
        dc: dc_value,
        files,
        entry_script,
    })
}

/// Polls until `version` of `service` (or every version) is Healthy or Failed, printing dots.
pub async fn wait(
    client: &Client,
    host: &HostArgs,
    service: &str,
    version: Option<&str>,
    timeout: Duration,
) -> anyhow::Result<Value> {
    let started = Instant::now();
    let text = host.output == super::Output::Text;
    if text {
        eprint!("Running");
    }
    let (status, state, error) = loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let status = client
            .json(Method::GET, &format!("/api/v1/admin/services/{service}"), None)
            .await?;
        let view: ServiceView = typed(&status)?;
        let (state, error) = match version {
            None => (Some(view.state), view.error),
            Some(v) => match view.versions.unwrap_or_default().into_iter().find(|x| x.name == v) {
                Some(x) => (Some(x.state), x.error),
                None => (None, None),
            },
        };
        match state {
            Some(DeployState::Healthy | DeployState::Failed) => break (status, state, error),
            _ if started.elapsed() > timeout => {
                bail!("service {service} is still not ready after {} s", timeout.as_secs())
            }
            _ => {
                if text && started.elapsed().as_millis() % 1000 < 100 {
                    eprint!(".");
                    let _ = std::io::stderr().flush();
                }
            }
        }
    };
    if text {
        eprintln!();
    }
    if state == Some(DeployState::Failed) {
        let view: ServiceView = typed(&status)?;
        let still = if view.serving_previous {
            format!(
                "; it still serves its previous deployment ({})",
                models_text(&view.models)
            )
        } else {
            String::new()
        };
        bail!(
            "service {service} failed to deploy: {}{still}",
            error.as_deref().unwrap_or("unknown error")
        );
    }
    Ok(status)
}

pub fn run(args: Args, host: &HostArgs) -> anyhow::Result<()> {
    let content = content(args.inference_config.as_deref(), args.deployment_config.as_deref())?;
    let client = host.client()?;
    let _ = args.overwrite;
    block_on(async {
        // A service of this name already there is updated in place: say so, with what it served.
        let before = client
            .json(Method::GET, &format!("/api/v1/admin/services/{}", args.name), None)
            .await
            .ok()
            .and_then(|v| typed::<ServiceView>(&v).ok())
            .map(|v| v.models);
        let source = upload(&client, &content.files).await?;
        let body = DeployRequest {
            name: args.name.clone(),
            models: args.models.clone(),
            inference_config: content.ic,
            deployment_config: content.dc,
            source,
            entry_script: content.entry_script,
            ..DeployRequest::default()
        };
        let accepted = client
            .json(
                Method::POST,
                "/api/v1/admin/services",
                Some(&serde_json::to_value(&body)?),
            )
            .await?;
        let uri = format!("{}/api/v1/service/{}/score", host.host.trim_end_matches('/'), args.name);
        if args.no_wait {
            host.print(&accepted, |_| format!("Transitioning\nScoring URI: {uri}"));
            return Ok(());
        }
        let started = Instant::now();
        let status = wait(&client, host, &args.name, None, Duration::from_secs(args.timeout_secs)).await?;
        let elapsed = started.elapsed().as_secs_f64();
        let now = typed::<ServiceView>(&status).map(|v| v.models).unwrap_or_default();
        let update = match &before {
            Some(was) => format!(
                "\nUpdated service {} (it was already deployed): {} → {}",
                args.name,
                models_text(was),
                models_text(&now)
            ),
            None => String::new(),
        };
        host.print(
            &json!({"state": "Healthy", "scoringUri": uri, "service": status, "updated": before.is_some(),
                    "previousModels": before}),
            |_| format!("Healthy ({elapsed:.1} s){update}\nScoring URI: {uri}"),
        );
        Ok(())
    })
}

fn models_text(models: &[String]) -> String {
    if models.is_empty() {
        "an entry script alone".into()
    } else {
        models.join(", ")
    }
}
