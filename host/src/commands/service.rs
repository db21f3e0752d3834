//! `plinth service list|show|delete|logs|keys|regen-key|token|run` (Azure's Webservice methods).

use std::time::Duration;

use http::Method;
use plinth_control::api::{Keys, RegenKey, ServiceView, Token};
use serde_json::Value;

use super::{HostArgs, Name, block_on, typed};

/// Lines fetched per poll with --follow.
const FOLLOW_WINDOW: usize = 500;

#[derive(clap::Subcommand)]
pub enum Command {
    /// List services with their state.
    List,
    /// Show a service: state, models, configuration, scoring URI.
    Show {
        #[command(flatten)]
        name: Name,
    },
    /// Delete a service.
    Delete {
        #[command(flatten)]
        name: Name,
    },
    /// Print the service's log: deployment events and entry-script output (Azure's get_logs).
    Logs {
        #[command(flatten)]
        name: Name,
        /// Only the last N lines.
        #[arg(long)]
        tail: Option<usize>,
        /// Keep printing new lines.
        #[arg(long, short = 'f')]
        follow: bool,
    },
    /// Print the primary and secondary keys (Azure's get_keys).
    Keys {
        #[command(flatten)]
        name: Name,
    },
    /// Regenerate one key; the other keeps working (Azure's regen_key).
    RegenKey {
        #[command(flatten)]
        name: Name,
        /// `primary` or `secondary` (any case: Azure spells them `Primary`, `Secondary`); `token` rotates the
        /// service's token secret: every token issued before is refused at once.
        #[arg(long, ignore_case = true, value_parser = ["primary", "secondary", "token"])]
        key: String,
    },
    /// Print a token and its refresh-by time (Azure's get_token).
    Token {
        #[command(flatten)]
        name: Name,
    },
    /// Write each version as a package (`<sha256>.tar`) and a PlinthService manifest for a cluster
    /// (`kubectl apply`). Reads the workspace itself (on the machine that holds it); `-o DIR` is the folder.
    Export {
        #[command(flatten)]
        name: Name,
        /// The folder to write into (`-o DIR`).
        #[arg(long = "out-dir", value_name = "DIR")]
        dir: std::path::PathBuf,
        /// Where the packages will be served from (`https://...`, or `pvc://claim/folder`); the manifest's
        /// package URIs are `<base-uri>/<sha256>.tar`, with the base's query string (an Azure Blob SAS
        /// token) kept on each (or keep it out of the manifest: `spec.packageCredentials`).
        #[arg(long, default_value = "pvc://plinth-packages")]
        base_uri: String,
    },
    /// Score one request on a deployed service with its own key or token (Azure's `az ml service run`).
    Run {
        #[command(flatten)]
        name: Name,
        /// The request body: JSON text, `@FILE` for a file's contents, or `-` for standard input.
        #[arg(short = 'd', long = "input-data", value_name = "DATA")]
        data: String,
        /// Re-indent a JSON answer (its numbers and keys stay exactly as the service wrote them).
        #[arg(long)]
        pretty: bool,
    },
}

pub fn run(cmd: Command, host: &HostArgs) -> anyhow::Result<()> {
    if let Command::Export { name, dir, base_uri } = &cmd {
        return export(name, dir, base_uri, &host.workspace);
    }
    let client = host.client()?;
    block_on(async {
        match cmd {
            Command::List => {
                let list = client.json(Method::GET, "/api/v1/admin/services", None).await?;
                host.print(&list, |l| {
                    let services: Vec<ServiceView> = match typed(l) {
                        Ok(s) => s,
                        Err(e) => return format!("{e:#}"),
                    };
                    let rows = services
                        .into_iter()
                        .map(|s| {
                            let state = match s.serving_previous {
                                true => format!("{:?} (serving previous)", s.state),
                                false => format!("{:?}", s.state),
                            };
                            let uri = format!("{}{}", host.host.trim_end_matches('/'), s.scoring_uri);
                            vec![s.name, state, s.models.join(","), uri]
                        })
                        .collect();
                    super::table(&["NAME", "STATE", "MODELS", "SCORING URI"], rows, &[])
                });
            }
            Command::Show { name } => {
                let s = client
                    .json(Method::GET, &format!("/api/v1/admin/services/{name}"), None)
                    .await?;
                let base = host.host.trim_end_matches('/').to_string();
                host.print(&s, |s| match typed::<ServiceView>(s) {
                    Ok(s) => service_summary(&s, &base),
                    Err(e) => format!("{e:#}"),
                });
            }
            Command::Delete { name } => {
                let r = client
                    .json(Method::DELETE, &format!("/api/v1/admin/services/{name}"), None)
                    .await?;
                host.print(&r, |_| format!("deleted service {name}"));
            }
            Command::Logs { name, tail, follow } => {
                let path = |tail: Option<usize>| match tail {
                    Some(t) => format!("/api/v1/admin/services/{name}/logs?tail={t}"),
                    None => format!("/api/v1/admin/services/{name}/logs"),
                };
                let mut first = client.json(Method::GET, &path(tail), None).await?;
                let mut last: Vec<String> = lines(&first);
                if let Some(fields) = first.as_object_mut() {
                    fields.insert(
                        "records".into(),
                        Value::Array(last.iter().map(|l| log_record(l)).collect()),
                    );
                }
                host.print(&first, |_| last.join("\n"));
                if follow {
                    loop {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        let now = lines(&client.json(Method::GET, &path(Some(FOLLOW_WINDOW)), None).await?);
                        // Print what follows the last line we printed.
                        let start = last
                            .last()
                            .and_then(|l| now.iter().rposition(|n| n == l))
                            .map(|i| i + 1)
                            .unwrap_or(0);
                        for line in &now[start..] {
                            println!("{line}");
                        }
                        if !now.is_empty() {
                            last = now;
                        }
                    }
                }
            }
            Command::Keys { name } => {
                let k = client
                    .json(Method::GET, &format!("/api/v1/admin/services/{name}/keys"), None)
                    .await?;
                host.print(&k, |k| match typed::<Keys>(k) {
                    Ok(k) => format!("primary:   {}\nsecondary: {}", k.primary_key, k.secondary_key),
                    Err(e) => format!("{e:#}"),
                });
            }
            Command::RegenKey { name, key } => {
                let key = key.to_ascii_lowercase();
                let body = serde_json::to_value(RegenKey { key: key.clone() })?;
                let k = client
                    .json(
                        Method::POST,
                        &format!("/api/v1/admin/services/{name}/regen-key"),
                        Some(&body),
                    )
                    .await?;
                host.print(&k, |k| match typed::<Keys>(k) {
                    Ok(_) if key == "token" => "token secret rotated: every earlier token is refused".into(),
                    Ok(k) if key == "primary" => format!("{key}: {}", k.primary_key),
                    Ok(k) => format!("{key}: {}", k.secondary_key),
                    Err(e) => format!("{e:#}"),
                });
            }
            Command::Export { .. } => unreachable!("export is answered above"),
            Command::Run { name, data, pretty } => {
                let body = input_data(&data)?;
                let answer = score(&client, &name, body).await?;
                // The service's body as it came (under -o json too: a JSON answer is printed as it is, any
                // other as a JSON string).
                match host.output {
                    super::Output::Json if super::answer::json_text(&answer).is_none() => {
                        let text = Value::String(String::from_utf8_lossy(&answer).into_owned());
                        super::answer::print(text.to_string().as_bytes(), false)?
                    }
                    _ => super::answer::print(&answer, pretty)?,
                }
            }
            Command::Token { name } => {
                let t = client
                    .json(Method::POST, &format!("/api/v1/admin/services/{name}/token"), None)
                    .await?;
                host.print(&t, |t| match typed::<Token>(t) {
                    Ok(t) => format!("token: {}\nrefresh after: {}", t.access_token, t.refresh_after),
                    Err(e) => format!("{e:#}"),
                });
            }
        }
        Ok(())
    })
}

/// `-d`'s value: JSON text, `@FILE`, or `-` for standard input.
fn input_data(data: &str) -> anyhow::Result<Vec<u8>> {
    use anyhow::Context;
    match data {
        "-" => {
            let mut buf = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf).context("reading standard input")?;
            Ok(buf)
        }
        d => match d.strip_prefix('@') {
            Some(path) => std::fs::read(path).with_context(|| format!("reading {path}")),
            None => Ok(d.as_bytes().to_vec()),
        },
    }
}

/// Scores `body` on `name` with the service's primary key, or a fresh token when the service takes
/// tokens; the answer's body as it came.
async fn score(client: &crate::client::Client, name: &str, body: Vec<u8>) -> anyhow::Result<Vec<u8>> {
    let show: ServiceView = typed(
        &client
            .json(Method::GET, &format!("/api/v1/admin/services/{name}"), None)
            .await?,
    )?;
    let credential = if show.token_auth_enabled {
        typed::<Token>(
            &client
                .json(Method::POST, &format!("/api/v1/admin/services/{name}/token"), None)
                .await?,
        )?
        .access_token
    } else {
        typed::<Keys>(
            &client
                .json(Method::GET, &format!("/api/v1/admin/services/{name}/keys"), None)
                .await?,
        )?
        .primary_key
    };
    let (status, bytes) = client
        .with_token(credential)
        .request(Method::POST, &format!("/api/v1/service/{name}/score"), Some(body))
        .await?;
    if !status.is_success() {
        let value = serde_json::from_slice::<Value>(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        let message = value
            .get("error")
            .and_then(Value::as_str)
            .map_or_else(|| value.to_string(), str::to_string);
        anyhow::bail!("service {name} answered {}: {message}", status.as_u16());
    }
    Ok(bytes.to_vec())
}

/// A log line as a record: `time`, `level` (`REQ` for a request), `message`; a request's line also has
/// `requestId`, `version`, `status`, `latencyUs` and, when it failed, `error`.
fn log_record(line: &str) -> Value {
    let mut parts = line.splitn(2, ' ');
    let time = parts.next().unwrap_or_default();
    let rest = parts.next().unwrap_or_default();
    let (level, message) = rest.split_once(' ').unwrap_or((rest, ""));
    let message = message.trim_start();
    let mut record = serde_json::json!({"time": time, "level": level, "message": message});
    if level == "REQ"
        && let Some((id, fields)) = message.strip_prefix('[').and_then(|m| m.split_once("] "))
    {
        record["requestId"] = id.into();
        let (fields, error) = match fields.split_once(" error=") {
            Some((f, e)) => (
                f,
                Some(serde_json::from_str::<String>(e).unwrap_or_else(|_| e.to_string())),
            ),
            None => (fields, None),
        };
        for kv in fields.split(' ') {
            match kv.split_once('=') {
                Some(("version", v)) => record["version"] = v.into(),
                Some(("status", v)) => record["status"] = v.parse::<u16>().map(Value::from).unwrap_or(v.into()),
                Some(("latency_us", v)) => record["latencyUs"] = v.parse::<u64>().map(Value::from).unwrap_or(v.into()),
                _ => {}
            }
        }
        if let Some(e) = error {
            record["error"] = e.into();
        }
    }
    record
}

fn lines(v: &Value) -> Vec<String> {
    super::strings(&v["lines"]).into_iter().map(str::to_string).collect()
}

/// `service show` as text: state, where to call it, versions with traffic and replicas, the last events
/// (`-o json` for everything, configurations included).
/// The provider column: `cpu` for one model, `ridge=cuda,tok=cpu` for several; `(fallback)` marks one
/// that serves in place of a preferred provider.
fn providers(v: &plinth_control::api::VersionView) -> String {
    let one = |p: &plinth_control::api::ModelProvider| match &p.fallback {
        Some(_) => format!("{} (fallback)", p.provider),
        None => p.provider.clone(),
    };
    match v.providers.as_slice() {
        [] => String::new(),
        [p] => one(p),
        many => many
            .iter()
            .map(|p| format!("{}={}", p.model, one(p)))
            .collect::<Vec<_>>()
            .join(","),
    }
}

fn service_summary(s: &ServiceView, base: &str) -> String {
    let state = match s.serving_previous {
        true => format!("{:?} (serving its previous deployment)", s.state),
        false => format!("{:?}", s.state),
    };
    let auth = match (s.auth_enabled, s.token_auth_enabled) {
        (true, true) => "keys or tokens",
        (true, false) => "keys",
        (false, true) => "tokens",
        (false, false) => "none",
    };
    let mut out = format!("{}  {state}", s.name);
    if let Some(e) = &s.error {
        out.push_str(&format!("\nerror:       {e}"));
    }
    out.push_str(&format!("\nscoring URI: {base}{}", s.scoring_uri));
    out.push_str(&format!("\nswagger:     {base}{}", s.swagger_uri));
    out.push_str(&format!("\nauth:        {auth}"));
    if let Some(r) = s.replicas {
        out.push_str(&format!("\nreplicas:    {r}"));
    }
    if let Some(ratio) = s.host_cpu_subscription.filter(|r| *r > 1.0) {
        out.push_str(&format!(
            "\nhost CPU:    {ratio:.2}× subscribed (CPU requests share cores; memory is reserved)"
        ));
    }
    let rows: Vec<Vec<String>> = s
        .versions
        .iter()
        .flatten()
        .map(|v| {
            vec![
                v.name.clone(),
                format!("{:?}", v.state),
                format!("{}%", v.effective_traffic),
                v.replicas.map(|r| r.to_string()).unwrap_or_default(),
                v.models.join(","),
                v.entry_script.clone().unwrap_or_default(),
                v.runtime.clone().unwrap_or_default(),
                providers(v),
            ]
        })
        .collect();
    if !rows.is_empty() {
        out.push('\n');
        out.push_str(&super::table(
            &[
                "VERSION",
                "STATE",
                "TRAFFIC",
                "REPLICAS",
                "MODELS",
                "ENTRY SCRIPT",
                "RUNTIME",
                "PROVIDER",
            ],
            rows,
            &[2, 3],
        ));
    }
    for v in s.versions.iter().flatten() {
        if !v.gpus.is_empty() {
            let places: Vec<String> = v
                .gpus
                .iter()
                .map(|g| match g.memory_gb {
                    Some(gb) => format!("GPU {} ({gb:.1} GB)", g.gpu),
                    None => format!("GPU {} (whole)", g.gpu),
                })
                .collect();
            out.push_str(&format!("\nGPUs:        version {}: {}", v.name, places.join(", ")));
        }
        for p in &v.providers {
            if let Some(f) = &p.fallback {
                out.push_str(&format!("\nfallback:    {} model {}: {f}", v.name, p.model));
            }
        }
    }
    let events = s.events.as_deref().unwrap_or_default();
    if !events.is_empty() {
        out.push_str("\nlast events:");
        for e in &events[events.len().saturating_sub(5)..] {
            out.push_str(&format!("\n  {e}"));
        }
    }
    out
}

/// `plinth service export NAME -o DIR`: one package per version and the `PlinthService` that serves them.
fn export(name: &str, dir: &std::path::Path, base_uri: &str, workspace: &std::path::Path) -> anyhow::Result<()> {
    use plinth_controller::crd::{PackageRef, PlinthServiceSpec, VersionSpec};
    use plinth_spec::manifest::VersionSettings;
    let ws = plinth_control::Workspace::open_read_only(workspace)?;
    let record = ws.service(name)?;
    // A query string (an Azure Blob SAS token) stays on every package's URI; the path is joined.
    let (base, query) = match base_uri.split_once('?') {
        Some((base, query)) => (base.trim_end_matches('/'), Some(query)),
        None => (base_uri.trim_end_matches('/'), None),
    };
    if !(base.starts_with("https://") || base.starts_with("file:///") || base.starts_with("pvc://")) {
        anyhow::bail!("--base-uri '{base_uri}' must start with https://, file:/// or pvc://");
    }
    if query.is_some() && !base.starts_with("https://") {
        anyhow::bail!("--base-uri '{base_uri}': a query string (a SAS token) is for https:// storage");
    }
    if !plinth_spec::record::is_dns_label(name) {
        eprintln!(
            "warning: '{name}' cannot name a Kubernetes Service (at most 63 lowercase letters, digits and '-', \
             starting with a letter): rename the PlinthService's metadata.name before applying it"
        );
    }
    // The configs as deployed, without the keys (they stay in a Secret) and without empty fields.
    let mut versions = Vec::new();
    for v in &record.versions {
        let (sha, path) = plinth_control::package::write(&ws, &record, v, dir)?;
        let size = std::fs::metadata(&path)?.len();
        println!("{}  version {} ({size} bytes)", path.display(), v.name);
        let uri = match query {
            Some(q) => format!("{base}/{sha}.tar?{q}"),
            None => format!("{base}/{sha}.tar"),
        };
        versions.push(VersionSpec {
            name: v.name.clone(),
            package: Some(PackageRef {
                uri,
                sha256: sha,
                size: Some(size),
            }),
            settings: VersionSettings {
                deployment_config: Some(config(&v.deployment_config)?),
                inference_config: Some(config(&v.inference_config)?),
                traffic: Some(v.traffic),
                default: Some(v.is_default),
                treatment: Some(!v.control),
                mirror: (v.mirror > 0).then_some(v.mirror),
            },
        });
    }
    let spec = match versions.as_slice() {
        // One treatment version named as `plinth deploy` names it: the short form.
        [only] if only.name == "1" && only.settings.treatment != Some(false) => PlinthServiceSpec {
            package: only.package.clone(),
            deployment_config: only.settings.deployment_config.clone(),
            inference_config: only.settings.inference_config.clone(),
            ..Default::default()
        },
        _ => PlinthServiceSpec {
            versions,
            ..Default::default()
        },
    };
    let mut ps = plinth_controller::PlinthService::new(name, spec);
    // Azure's deployment config names the namespace (as `az ml model deploy` used it).
    ps.metadata.namespace = record
        .versions
        .iter()
        .find(|v| v.is_default)
        .and_then(|v| v.deployment_config.namespace.clone());
    let manifest = dir.join(format!("{name}.plinthservice.yaml"));
    std::fs::write(&manifest, serde_saphyr::to_string(&ps)?)?;
    println!("{}  PlinthService {name}", manifest.display());
    if base.starts_with("pvc://") {
        println!(
            "copy the .tar files into the claim's folder ({base}/), then: kubectl apply -f {}",
            manifest.display()
        );
    } else {
        println!(
            "upload the .tar files to {base}/, then: kubectl apply -f {}",
            manifest.display()
        );
    }
    Ok(())
}

/// A config as deployed, without the keys (they stay in a Secret) and without empty fields.
fn config(v: &impl serde::Serialize) -> anyhow::Result<Value> {
    let mut value = serde_json::to_value(v)?;
    strip_nulls(&mut value);
    plinth_spec::manifest::redact(&mut value);
    Ok(value)
}

fn strip_nulls(v: &mut Value) {
    match v {
        Value::Object(o) => {
            o.retain(|_, x| !x.is_null());
            o.values_mut().for_each(strip_nulls);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}
