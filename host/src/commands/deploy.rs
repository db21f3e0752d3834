//! `plinth deploy`: Azure's `az ml model deploy` / `Model.deploy` + `wait_for_deployment(show_output=True)`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use http::Method;
use plinth_control::api::{DeployRequest, DeployState, ServiceView};
use plinth_spec::config::{DeploymentConfig, InferenceConfig};
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
    /// -ic/--ic FILE, as az ml spells it: inferenceconfig.json (entryScript, sourceDirectory, ...). Without
    /// it the model is served directly.
    #[arg(long = "ic", visible_aliases = ["inference-config-file"], alias = "inference-config", value_name = "FILE")]
    inference_config: Option<PathBuf>,
    /// -dc/--dc FILE, as az ml spells it: deploymentconfig.json (auth, autoscaler, timeouts, ...). Without
    /// it, Azure's defaults.
    #[arg(long = "dc", visible_aliases = ["deploy-config-file"], alias = "deployment-config", value_name = "FILE")]
    deployment_config: Option<PathBuf>,
    /// Return as soon as the host has accepted the deployment.
    #[arg(long)]
    no_wait: bool,
    /// Replace a service of the same name (without it, a deploy onto an existing name is refused, as
    /// `az ml model deploy` refuses it).
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
    /// The folder of vendored packages, removed when the content (and its upload) is done with.
    _vendored: Option<Scratch>,
}

/// A temporary folder removed on drop.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Reads and checks the configs locally (a typo is reported before anything is uploaded) and packs the
/// source folder.
pub fn content(inference_config: Option<&Path>, deployment_config: Option<&Path>) -> anyhow::Result<Content> {
    let (mut ic_bytes, mut ic_value) = read_json(inference_config)?;
    // An entryScript naming a Rust crate: built here, and the component it makes is what deploys.
    let base_dir = inference_config.and_then(Path::parent).unwrap_or(Path::new(""));
    if let Some(entry) = ic_value["entryScript"].as_str() {
        let src = ic_value["sourceDirectory"]
            .as_str()
            .map_or(base_dir.to_path_buf(), |d| base_dir.join(d));
        let crate_dir = src.join(entry);
        if super::is_rust_crate(&crate_dir) {
            let wasm = super::build_rust_script(&crate_dir)?;
            ic_value["entryScript"] = json!(wasm.to_string_lossy());
            ic_value["runtime"] = json!("wasm");
            if let Some(fields) = ic_value.as_object_mut() {
                fields.remove("sourceDirectory");
            }
            ic_bytes = serde_json::to_vec_pretty(&ic_value)?;
        }
    }
    let (dc_bytes, dc_value) = read_json(deployment_config)?;
    let ic_name = inference_config
        .map(|p| p.display().to_string())
        .unwrap_or("inferenceconfig.json".into());
    let dc_name = deployment_config
        .map(|p| p.display().to_string())
        .unwrap_or("deploymentconfig.json".into());
    // Checked from the file's own bytes, so that a mistake's line and column are the file's.
    let (ic, _) = InferenceConfig::from_json(&ic_name, &ic_bytes)?;
    DeploymentConfig::from_json(&dc_name, &dc_bytes)?;
    // Ignored fields are the host's to report (once per version, in the service log and the deploy's
    // progress); the conda file's packages are the CLI's, which can read it.
    // Only a script for the scientific runtime gets packages vendored (the component runtime compiles
    // its source folder alone).
    let base_for_check = inference_config.and_then(Path::parent).unwrap_or(Path::new(""));
    let python_script = ic
        .entry_script_path(base_for_check)
        .filter(|p| p.extension().is_some_and(|e| e == "py") && p.is_file())
        .is_some_and(|p| {
            plinth_control::scripts::python_runtime(&p) == plinth_control::scripts::PythonRuntime::Scientific
        });
    let mut to_vendor = Vec::new();
    if let Some(conda) = ic.conda_file.as_deref() {
        let path = inference_config
            .and_then(Path::parent)
            .unwrap_or(Path::new("."))
            .join(conda);
        if let Ok(text) = std::fs::read_to_string(&path) {
            let (carried, missing): (Vec<String>, Vec<String>) =
                conda_packages(&text).into_iter().partition(|p| carried_package(p));
            // A score.py gets the others vendored (pure Python only), below.
            if python_script {
                to_vendor = conda_specs(&text)
                    .into_iter()
                    .filter(|(name, _)| missing.contains(name))
                    .collect();
            }
            let missing = if python_script { Vec::new() } else { missing };
            if !carried.is_empty() {
                eprintln!(
                    "note: {conda}: {} come with the scientific Python runtime, which serves a score.py importing them",
                    carried.join(", ")
                );
            }
            if !missing.is_empty() {
                eprintln!(
                    "note: {conda} is not installed on a Plinth host: {} will not be importable unless pure-Python \
                     and in the source folder (the standard library is there)",
                    missing.join(", ")
                );
            }
        }
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
    let mut files = files;
    let mut vendored = None;
    if !to_vendor.is_empty()
        && let Some(rel) = &entry_script
    {
        let conda = ic.conda_file.as_deref().unwrap_or("condaFile");
        let beside = Path::new(rel)
            .parent()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (scratch, vendored_files) = vendor(conda, &to_vendor)?;
        vendored = Some(scratch);
        for (path_in, host_path) in vendored_files {
            let rel = match beside.as_str() {
                "" => format!("{}/{path_in}", plinth_control::scripts::VENDOR_DIR),
                dir => format!("{dir}/{}/{path_in}", plinth_control::scripts::VENDOR_DIR),
            };
            files.push((rel, host_path));
        }
    }
    Ok(Content {
        ic: ic_value,
        dc: dc_value,
        files,
        entry_script,
        _vendored: vendored,
    })
}

/// Downloads the pure-Python wheels (`py3-none-any`) of `specs` from PyPI and unpacks them; returns the
/// files, relative to the vendor folder. A package without one has native code the scientific runtime
/// does not carry: an error naming it.
fn vendor(conda: &str, specs: &[(String, String)]) -> anyhow::Result<(Scratch, Vec<(String, PathBuf)>)> {
    let python = plinth_control::scripts::venv_python()
        .context("vendoring the condaFile's packages needs the project's .venv (scripts/setup)")?;
    let names: Vec<&str> = specs.iter().map(|(n, _)| n.as_str()).collect();
    eprintln!(
        "vendoring {} (pure Python, from PyPI) for the scientific Python runtime",
        names.join(", ")
    );
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let root = std::env::temp_dir().join(format!("plinth-vendor-{}-{nanos:x}", std::process::id()));
    // A fresh folder of this command's own, never one found waiting; removed when done (or on an error).
    std::fs::create_dir(&root).with_context(|| format!("creating {}", root.display()))?;
    let scratch = Scratch(root.clone());
    let site = root.join("site");
    std::fs::create_dir_all(&site)?;
    for (name, spec) in specs {
        let wheels = root.join("wheels").join(name);
        let out = std::process::Command::new(&python)
            .args([
                "-m",
                "pip",
                "download",
                "--quiet",
                "--disable-pip-version-check",
                "--no-deps",
            ])
            .args(["--only-binary=:all:", "--platform", "any", "--python-version", "3.15"])
            .args(["--implementation", "py", "--abi", "none", "-d"])
            .arg(&wheels)
            .arg(spec)
            .output()
            .context("running pip")?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let why = stderr
                .lines()
                .rfind(|l| !l.trim().is_empty())
                .unwrap_or("no output")
                .trim()
                .to_string();
            // Only "nothing matches a pure-Python wheel" means native code; anything else is pip's story.
            if !stderr.contains("No matching distribution") && !stderr.contains("from versions: none") {
                bail!("{conda}: could not download {spec} from PyPI to vendor it: {why}");
            }
            bail!(
                "{conda}: {name} cannot be vendored: PyPI has no pure-Python wheel of {spec}, so it has native code \
                 the scientific Python runtime does not carry (it carries numpy, pandas, scipy, scikit-learn, \
                 joblib, statsmodels, matplotlib, ...); remove it from {conda} (pip: {why})"
            );
        }
        for wheel in std::fs::read_dir(&wheels)?.flatten().map(|e| e.path()) {
            let ok = std::process::Command::new(&python)
                .args(["-m", "zipfile", "-e"])
                .arg(&wheel)
                .arg(&site)
                .status()?;
            if !ok.success() {
                bail!("{conda}: could not unpack {}", wheel.display());
            }
        }
    }
    let files = super::pack(&site)?;
    Ok((scratch, files))
}

/// The condaFile's packages as pip specs (`numpy=1.21` → `numpy==1.21`), by name.
fn conda_specs(text: &str) -> Vec<(String, String)> {
    let names = conda_packages(text);
    let items = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- "))
        .map(|p| p.trim().trim_matches(['"', '\'']).to_string());
    let mut out = Vec::new();
    for item in items {
        let name = item
            .split(['=', '<', '>', '!', '~', ' ', '['])
            .next()
            .unwrap_or(&item)
            .to_string();
        if !names.contains(&name) || out.iter().any(|(n, _): &(String, String)| *n == name) {
            continue;
        }
        let spec = match item.split_once('=') {
            // conda's `name=1.2` (and `name=1.2=build`) is pip's `name==1.2`.
            Some((n, rest)) if !rest.starts_with('=') && !n.ends_with(['<', '>', '!', '~']) => {
                format!("{n}=={}", rest.split('=').next().unwrap_or(rest))
            }
            _ => item.clone(),
        };
        out.push((name, spec));
    }
    out
}

/// Where the service's log stands now (none for a service not there yet): [`wait`] shows what follows.
pub async fn log_mark(client: &Client, service: &str) -> Option<String> {
    let logs = client
        .json(
            Method::GET,
            &format!("/api/v1/admin/services/{service}/logs?tail=1"),
            None,
        )
        .await
        .ok()?;
    logs["cursor"].as_str().map(str::to_string)
}

/// Polls until `version` of `service` (or every version) is Healthy or Failed. In text output it shows
/// the deployment's events as the host logs them (compiling, loading, ...) after `mark`, under a spinner
/// with the elapsed time when stderr is a terminal, as plain lines when it is not.
pub async fn wait(
    client: &Client,
    host: &HostArgs,
    service: &str,
    version: Option<&str>,
    timeout: Duration,
    mark: Option<String>,
) -> anyhow::Result<Value> {
    let started = Instant::now();
    let text = matches!(host.output, super::Output::Text | super::Output::Table);
    let spinner = (text && std::io::IsTerminal::is_terminal(&std::io::stderr())).then(|| {
        let pb = indicatif::ProgressBar::new_spinner();
        if let Ok(style) = indicatif::ProgressStyle::with_template("{spinner} {msg} [{elapsed}]") {
            pb.set_style(style);
        }
        pb.enable_steady_tick(Duration::from_millis(120));
        pb.set_message(format!("deploying {service}"));
        pb
    });
    let say = |line: &str| match &spinner {
        Some(pb) => {
            pb.println(line);
            pb.set_message(line.trim().to_string());
        }
        None => eprintln!("{line}"),
    };
    let mut last = mark;
    let (status, state, error) = loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if text {
            show_events(client, service, &mut last, &say).await;
        }
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
            _ => {}
        }
    };
    if text {
        // What was logged between the last look and the end.
        show_events(client, service, &mut last, &say).await;
    }
    if let Some(pb) = spinner {
        pb.finish_and_clear();
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

/// Shows the service's event lines logged after the `cursor` (request lines left out), without their
/// date, and moves the cursor past them.
async fn show_events(client: &Client, service: &str, cursor: &mut Option<String>, say: &dyn Fn(&str)) {
    let path = match cursor.as_deref() {
        Some(c) => format!("/api/v1/admin/services/{service}/logs?after={c}"),
        None => format!("/api/v1/admin/services/{service}/logs"),
    };
    let Ok(logs) = client.json(Method::GET, &path, None).await else {
        return;
    };
    for line in super::strings(&logs["lines"]) {
        // `2026-11-28T19:49:41Z INFO  deploying version 1 ...`: the level stays only when it is news.
        let Some((_, rest)) = line.split_once(' ') else {
            continue;
        };
        if rest.starts_with("REQ") {
            continue;
        }
        let rest = rest.strip_prefix("INFO").map(str::trim_start).unwrap_or(rest);
        say(&format!("  {rest}"));
    }
    if let Some(c) = logs["cursor"].as_str() {
        *cursor = Some(c.to_string());
    }
}

pub fn run(args: Args, host: &HostArgs) -> anyhow::Result<()> {
    let content = content(args.inference_config.as_deref(), args.deployment_config.as_deref())?;
    if !plinth_spec::record::is_dns_label(&args.name) {
        eprintln!(
            "note: '{}' cannot name a Kubernetes Service (at most 63 lowercase letters, digits and '-', starting \
             with a letter): this host serves it, and `plinth controller render` would refuse it",
            args.name
        );
    }
    let client = host.client()?;
    block_on(async {
        // A service of this name already there is updated in place: say so, with what it served.
        let before = client
            .json(Method::GET, &format!("/api/v1/admin/services/{}", args.name), None)
            .await
            .ok()
            .and_then(|v| typed::<ServiceView>(&v).ok())
            .map(|v| v.models);
        if let Some(was) = before.as_deref().filter(|_| !args.overwrite) {
            anyhow::bail!(
                "service {} is already deployed (serving {}); add --overwrite to replace it, as az ml model deploy asks",
                args.name,
                models_text(was)
            );
        }
        let source = upload(&client, &content.files).await?;
        let mark = log_mark(&client, &args.name).await;
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
        let status = wait(
            &client,
            host,
            &args.name,
            None,
            Duration::from_secs(args.timeout_secs),
            mark,
        )
        .await?;
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
        // Under -o json, the service as `service show` gives it, and whether this deploy replaced one.
        let mut summary = status;
        if let Some(fields) = summary.as_object_mut() {
            fields.insert("updatedExisting".into(), json!(before.is_some()));
            fields.insert("previousModels".into(), json!(before));
            fields.insert("deploySeconds".into(), json!((elapsed * 10.0).round() / 10.0));
        }
        host.print(&summary, |_| {
            format!("Healthy ({elapsed:.1} s){update}\nScoring URI: {uri}")
        });
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

/// The packages a conda environment file lists (`- name=1.2` and pip's `- name==1.2`), Python itself left out.
/// Packages (by their PyPI or conda names) the scientific runtime carries, and Azure's packages whose
/// parts a score.py uses there (`azureml-defaults`, `inference-schema`).
fn carried_package(name: &str) -> bool {
    const CARRIED: &[&str] = &[
        "numpy",
        "pandas",
        "scipy",
        "scikit-learn",
        "sklearn",
        "joblib",
        "statsmodels",
        "matplotlib",
        "seaborn",
        "pillow",
        "lxml",
        "openpyxl",
        "xlsxwriter",
        "xlrd",
        "pypdf",
        "beautifulsoup4",
        "html5lib",
        "pyyaml",
        "jinja2",
        "markupsafe",
        "tabulate",
        "networkx",
        "patsy",
        "sympy",
        "mpmath",
        "attrs",
        "toolz",
        "tqdm",
        "typing-extensions",
        "cloudpickle",
        "threadpoolctl",
        "python-dateutil",
        "tzdata",
        "six",
        "regex",
        "packaging",
        "inference-schema",
        "azureml-defaults",
        "azureml-core",
        "azureml-inference-server-http",
    ];
    let n = name.to_ascii_lowercase().replace('_', "-");
    CARRIED.contains(&n.as_str())
}

fn conda_packages(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("- "))
        .map(|p| p.trim().trim_matches(['"', '\'']))
        .filter(|p| !p.is_empty() && !p.ends_with(':') && !p.contains("://"))
        .map(|p| {
            p.split(['=', '<', '>', '!', '~', ' ', '['])
                .next()
                .unwrap_or(p)
                .to_string()
        })
        .filter(|name| !name.is_empty() && name != "python" && name != "pip")
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn conda_specs_are_pip_specs() {
        let env = "dependencies:\n  - python=3.8\n  - humanize=4.9\n  - pip:\n    - tabulate>=0.9\n    - six==1.16\n";
        assert_eq!(
            super::conda_specs(env),
            vec![
                ("humanize".to_string(), "humanize==4.9".to_string()),
                ("tabulate".to_string(), "tabulate>=0.9".to_string()),
                ("six".to_string(), "six==1.16".to_string()),
            ]
        );
    }

    #[test]
    fn conda_packages_are_named() {
        let env = "name: project_environment\ndependencies:\n  - python=3.8\n  - numpy=1.21\n  - pip:\n    - scikit-learn==1.0\n    - azureml-defaults>=1.40\n  - pip\n";
        assert_eq!(
            super::conda_packages(env),
            vec!["numpy", "scikit-learn", "azureml-defaults"]
        );
    }
}
