//! `plinth endpoint create|show|version add|update|delete`: Azure ML's AksEndpoint, up to six versions
//! behind one endpoint, with traffic percentages, a default, control and treatments; plus mirroring and
//! automatic rollback.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use http::Method;
use serde_json::{Map, Value, json};

use super::deploy::{content, wait};
use super::{HostArgs, block_on, upload};

/// Where a version stands in the rollout.
#[derive(clap::Args, Default)]
pub struct Settings {
    /// Percent of traffic this version claims (what nobody claims goes to the default version).
    #[arg(long)]
    traffic: Option<u32>,
    /// Make this the default version.
    #[arg(long = "default")]
    is_default: bool,
    /// Make this the control version (at most one).
    #[arg(long, conflicts_with = "treatment")]
    control: bool,
    /// Make this a treatment version.
    #[arg(long)]
    treatment: bool,
    /// Percent of traffic copied to this version; its answers are recorded, never returned.
    #[arg(long)]
    mirror: Option<u32>,
    #[arg(long, short = 'd')]
    description: Option<String>,
    /// A tag as key=value (repeatable).
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    tags: Vec<String>,
    /// Roll back (traffic to 0) when more than this share of requests fail (0..1) over the window.
    #[arg(long)]
    rollback_error_rate: Option<f64>,
    /// Roll back when the p99 latency over the window exceeds this many milliseconds.
    #[arg(long)]
    rollback_p99_ms: Option<f64>,
    /// The rollback window, in seconds.
    #[arg(long, default_value_t = 60)]
    rollback_window_secs: u64,
    /// No rollback decision on fewer requests than this in the window.
    #[arg(long, default_value_t = 20)]
    rollback_min_requests: usize,
}

impl Settings {
    fn to_json(&self) -> anyhow::Result<Map<String, Value>> {
        let mut m = Map::new();
        if let Some(t) = self.traffic {
            m.insert("traffic".into(), json!(t));
        }
        if self.is_default {
            m.insert("is_default".into(), json!(true));
        }
        if self.control {
            m.insert("control".into(), json!(true));
        }
        if self.treatment {
            m.insert("control".into(), json!(false));
        }
        if let Some(p) = self.mirror {
            m.insert("mirror".into(), json!(p));
        }
        if let Some(d) = &self.description {
            m.insert("description".into(), json!(d));
        }
        if !self.tags.is_empty() {
            let mut tags = BTreeMap::new();
            for t in &self.tags {
                let (k, v) = t
                    .split_once('=')
                    .with_context(|| format!("tag '{t}' is not KEY=VALUE"))?;
                tags.insert(k.to_string(), v.to_string());
            }
            m.insert("tags".into(), json!(tags));
        }
        if self.rollback_error_rate.is_some() || self.rollback_p99_ms.is_some() {
            m.insert(
                "rollback".into(),
                json!({
                    "max_error_rate": self.rollback_error_rate,
                    "max_p99_ms": self.rollback_p99_ms,
                    "window_secs": self.rollback_window_secs,
                    "min_requests": self.rollback_min_requests,
                }),
            );
        }
        Ok(m)
    }
}

/// What a version runs.
#[derive(clap::Args, Default)]
pub struct Content {
    /// A registered model as NAME:VERSION (repeatable).
    #[arg(short = 'm', long = "model", value_name = "NAME:VERSION")]
    models: Vec<String>,
    #[arg(long = "ic", alias = "inference-config", value_name = "FILE")]
    inference_config: Option<PathBuf>,
    #[arg(long = "dc", alias = "deployment-config", value_name = "FILE")]
    deployment_config: Option<PathBuf>,
}

impl Content {
    fn given(&self) -> bool {
        !self.models.is_empty() || self.inference_config.is_some() || self.deployment_config.is_some()
    }
}

#[derive(clap::Subcommand)]
pub enum Command {
    /// Create an endpoint with its first version.
    Create {
        name: String,
        #[arg(long)]
        version_name: String,
        #[command(flatten)]
        content: Content,
        #[command(flatten)]
        settings: Settings,
    },
    /// Show an endpoint: versions, traffic, state, statistics and rollout events.
    Show { name: String },
    /// Add, update or delete versions.
    Version {
        #[command(subcommand)]
        command: VersionCommand,
    },
}

#[derive(clap::Subcommand)]
pub enum VersionCommand {
    /// Add a version.
    Add {
        name: String,
        version: String,
        #[command(flatten)]
        content: Content,
        #[command(flatten)]
        settings: Settings,
    },
    /// Change a version's traffic, default, type, mirror, description, tags or rollback policy (live);
    /// with -m/--ic/--dc, redeploy it.
    Update {
        name: String,
        version: String,
        #[command(flatten)]
        content: Content,
        #[command(flatten)]
        settings: Settings,
    },
    /// Delete a version (not the default).
    Delete { name: String, version: String },
}

pub fn run(cmd: Command, host: &HostArgs) -> anyhow::Result<()> {
    let client = host.client()?;
    block_on(async {
        let (name, version, result) = match cmd {
            Command::Show { name } => {
                let s = client
                    .json(Method::GET, &format!("/api/v1/admin/services/{name}"), None)
                    .await?;
                host.print(&s, show);
                return Ok(());
            }
            Command::Create {
                name,
                version_name,
                content: c,
                settings,
            } => {
                let body = deploy_body(&client, &c, &settings, Some(&name), &version_name, true).await?;
                let r = client.json(Method::POST, "/api/v1/admin/services", Some(&body)).await?;
                (name, version_name, r)
            }
            Command::Version {
                command:
                    VersionCommand::Add {
                        name,
                        version,
                        content: c,
                        settings,
                    },
            } => {
                let body = deploy_body(&client, &c, &settings, None, &version, false).await?;
                let r = client
                    .json(
                        Method::POST,
                        &format!("/api/v1/admin/services/{name}/versions"),
                        Some(&body),
                    )
                    .await?;
                (name, version, r)
            }
            Command::Version {
                command:
                    VersionCommand::Update {
                        name,
                        version,
                        content: c,
                        settings,
                    },
            } => {
                let mut body = settings.to_json()?;
                if c.given() {
                    let full = deploy_body(&client, &c, &Settings::default(), None, &version, false).await?;
                    for key in [
                        "models",
                        "inference_config",
                        "deployment_config",
                        "source",
                        "entry_script",
                    ] {
                        body.insert(key.into(), full[key].clone());
                    }
                }
                let path = format!("/api/v1/admin/services/{name}/versions/{version}");
                let r = client.json(Method::PATCH, &path, Some(&Value::Object(body))).await?;
                if !c.given() {
                    host.print(&r, show);
                    return Ok(());
                }
                (name, version, r)
            }
            Command::Version {
                command: VersionCommand::Delete { name, version },
            } => {
                let path = format!("/api/v1/admin/services/{name}/versions/{version}");
                let r = client.json(Method::DELETE, &path, None).await?;
                host.print(&r, show);
                return Ok(());
            }
        };
        let _ = result;
        wait(&client, host, &name, Some(&version), Duration::from_secs(600)).await?;
        let s = client
            .json(Method::GET, &format!("/api/v1/admin/services/{name}"), None)
            .await?;
        host.print(&s, show);
        Ok(())
    })
}

async fn deploy_body(
    client: &plinth::client::Client,
    c: &Content,
    settings: &Settings,
    name: Option<&str>,
    version: &str,
    create: bool,
) -> anyhow::Result<Value> {
    let content = content(c.inference_config.as_deref(), c.deployment_config.as_deref())?;
    let source = upload(client, &content.files).await?;
    let mut body = settings.to_json()?;
    body.insert("version".into(), json!(version));
    body.insert("models".into(), json!(c.models));
    body.insert("inference_config".into(), content.ic);
    body.insert("deployment_config".into(), content.dc);
    body.insert("source".into(), json!(source));
    body.insert("entry_script".into(), json!(content.entry_script));
    if let Some(n) = name {
        body.insert("name".into(), json!(n));
    }
    if create {
        body.insert("create".into(), json!(true));
    }
    Ok(Value::Object(body))
}

/// A table of versions, then the rollout events.
fn show(s: &Value) -> String {
    let mut out = format!(
        "{}  {}\n",
        s["name"].as_str().unwrap_or(""),
        s["state"].as_str().unwrap_or("")
    );
    out.push_str(&format!(
        "{:<16} {:<12} {:>7} {:>9} {:>7} {:<10} {:<8} {:>9} {:>8}  MODELS",
        "VERSION", "STATE", "TRAFFIC", "EFFECTIVE", "MIRROR", "TYPE", "DEFAULT", "REQUESTS", "FAILED"
    ));
    for v in s["versions"].as_array().into_iter().flatten() {
        let models = super::strings(&v["models"]);
        out.push_str(&format!(
            "\n{:<16} {:<12} {:>6}% {:>8}% {:>6}% {:<10} {:<8} {:>9} {:>8}  {}",
            v["name"].as_str().unwrap_or(""),
            v["state"].as_str().unwrap_or(""),
            v["traffic"],
            v["effectiveTraffic"],
            v["mirror"],
            v["type"].as_str().unwrap_or(""),
            if v["isDefault"] == true { "yes" } else { "" },
            v["stats"]["requests"].as_u64().unwrap_or(0),
            v["stats"]["failures"].as_u64().unwrap_or(0),
            models.join(",")
        ));
    }
    let events = super::strings(&s["events"]);
    if !events.is_empty() {
        out.push_str("\nevents:");
        for e in events {
            out.push_str(&format!("\n  {e}"));
        }
    }
    out
}
