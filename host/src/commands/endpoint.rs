//! `plinth endpoint create|show|version add|update|delete`: Azure ML's AksEndpoint, up to six versions
//! behind one endpoint, with traffic percentages, a default, control and treatments; plus mirroring and
//! automatic rollback.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use http::Method;
use plinth_control::api::{DeployRequest, RollbackPolicy, ServiceView, UpdateRequest, VersionSettings};
use serde_json::Value;

use super::deploy::{content, log_mark, wait};
use super::{HostArgs, block_on, typed, upload};

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
    /// A description of the version.
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
    fn to_api(&self) -> anyhow::Result<VersionSettings> {
        let mut tags = BTreeMap::new();
        for t in &self.tags {
            let (k, v) = t
                .split_once('=')
                .with_context(|| format!("tag '{t}' is not KEY=VALUE"))?;
            tags.insert(k.to_string(), v.to_string());
        }
        let rollback =
            (self.rollback_error_rate.is_some() || self.rollback_p99_ms.is_some()).then_some(RollbackPolicy {
                max_error_rate: self.rollback_error_rate,
                max_p99_ms: self.rollback_p99_ms,
                window_secs: self.rollback_window_secs,
                min_requests: self.rollback_min_requests,
            });
        Ok(VersionSettings {
            traffic: self.traffic,
            is_default: self.is_default.then_some(true),
            control: if self.control {
                Some(true)
            } else if self.treatment {
                Some(false)
            } else {
                None
            },
            mirror: self.mirror,
            description: self.description.clone(),
            tags: (!tags.is_empty()).then_some(tags),
            rollback,
        })
    }
}

/// What a version runs.
#[derive(clap::Args, Default)]
pub struct Content {
    /// A registered model as NAME:VERSION (repeatable).
    #[arg(short = 'm', long = "model", value_name = "NAME:VERSION")]
    models: Vec<String>,
    /// -ic/--ic FILE: the version's inferenceconfig.json.
    #[arg(long = "ic", visible_aliases = ["inference-config-file"], alias = "inference-config", value_name = "FILE")]
    inference_config: Option<PathBuf>,
    /// -dc/--dc FILE: the version's deploymentconfig.json.
    #[arg(long = "dc", visible_aliases = ["deploy-config-file"], alias = "deployment-config", value_name = "FILE")]
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
        /// The endpoint's (service's) name.
        name: String,
        /// The first version's name.
        #[arg(long)]
        version_name: String,
        #[command(flatten)]
        content: Content,
        #[command(flatten)]
        settings: Settings,
    },
    /// Show an endpoint: versions, traffic, state, statistics and rollout events.
    Show {
        /// The endpoint's name.
        name: String,
    },
    /// Set several versions' traffic in one command (`plinth endpoint traffic NAME blue=50 green=50`):
    /// lowered shares are applied before raised ones, so no step claims more than 100%.
    Traffic {
        /// The endpoint's name.
        name: String,
        /// VERSION=PERCENT, one per version to change.
        #[arg(value_name = "VERSION=PERCENT", required = true)]
        shares: Vec<String>,
    },
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
        /// The endpoint's name.
        name: String,
        /// The version's name.
        version: String,
        #[command(flatten)]
        content: Content,
        #[command(flatten)]
        settings: Settings,
    },
    /// Change a version's traffic, default, type, mirror, description, tags or rollback policy (live);
    /// with -m/--ic/--dc, redeploy it.
    Update {
        /// The endpoint's name.
        name: String,
        /// The version's name.
        version: String,
        #[command(flatten)]
        content: Content,
        #[command(flatten)]
        settings: Settings,
    },
    /// Delete a version (not the default).
    Delete {
        /// The endpoint's name.
        name: String,
        /// The version to delete.
        version: String,
    },
}

pub fn run(cmd: Command, host: &HostArgs) -> anyhow::Result<()> {
    let client = host.client()?;
    block_on(async {
        let (name, version, result, mark) = match cmd {
            Command::Show { name } => {
                let s = client
                    .json(Method::GET, &format!("/api/v1/admin/services/{name}"), None)
                    .await?;
                host.print(&s, show);
                return Ok(());
            }
            Command::Traffic { name, shares } => {
                let s = set_traffic(&client, &name, &shares).await?;
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
                let mark = log_mark(&client, &name).await;
                let r = client
                    .json(
                        Method::POST,
                        "/api/v1/admin/services",
                        Some(&serde_json::to_value(&body)?),
                    )
                    .await?;
                (name, version_name, r, mark)
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
                let mark = log_mark(&client, &name).await;
                let r = client
                    .json(
                        Method::POST,
                        &format!("/api/v1/admin/services/{name}/versions"),
                        Some(&serde_json::to_value(&body)?),
                    )
                    .await?;
                (name, version, r, mark)
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
                let mut body = UpdateRequest {
                    settings: settings.to_api()?,
                    ..UpdateRequest::default()
                };
                if c.given() {
                    let full = deploy_body(&client, &c, &Settings::default(), None, &version, false).await?;
                    body.models = Some(full.models);
                    body.inference_config = Some(full.inference_config);
                    body.deployment_config = Some(full.deployment_config);
                    body.source = Some(full.source);
                    body.entry_script = full.entry_script;
                }
                let path = format!("/api/v1/admin/services/{name}/versions/{version}");
                let mark = log_mark(&client, &name).await;
                let r = client
                    .json(Method::PATCH, &path, Some(&serde_json::to_value(&body)?))
                    .await?;
                if !c.given() {
                    host.print(&r, show);
                    return Ok(());
                }
                (name, version, r, mark)
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
        wait(&client, host, &name, Some(&version), Duration::from_secs(600), mark).await?;
        let s = client
            .json(Method::GET, &format!("/api/v1/admin/services/{name}"), None)
            .await?;
        host.print(&s, show);
        Ok(())
    })
}

/// Applies `VERSION=PERCENT` shares to `name`'s versions, every lowered share before any raised one
/// (each step is a live update the host checks, so the sum stays within 100% throughout); the service as
/// it is after.
async fn set_traffic(client: &crate::client::Client, name: &str, shares: &[String]) -> anyhow::Result<Value> {
    let service: ServiceView = typed(
        &client
            .json(Method::GET, &format!("/api/v1/admin/services/{name}"), None)
            .await?,
    )?;
    let versions = service.versions.unwrap_or_default();
    let mut changes = Vec::new();
    for share in shares {
        let (version, percent) = share
            .split_once('=')
            .with_context(|| format!("'{share}' is not VERSION=PERCENT (e.g. blue=50)"))?;
        let percent: u32 = percent
            .trim_end_matches('%')
            .parse()
            .ok()
            .filter(|p| *p <= 100)
            .with_context(|| format!("'{share}': the percent must be a whole number 0..100"))?;
        let Some(now) = versions.iter().find(|v| v.name == version) else {
            let known: Vec<&str> = versions.iter().map(|v| v.name.as_str()).collect();
            anyhow::bail!(
                "service {name} has no version {version} (versions: {})",
                known.join(", ")
            );
        };
        changes.push((version.to_string(), now.traffic, percent));
    }
    let total: u32 = versions
        .iter()
        .map(|v| {
            changes
                .iter()
                .find(|(n, ..)| *n == v.name)
                .map_or(v.traffic, |(.., to)| *to)
        })
        .sum();
    if total > 100 {
        anyhow::bail!("the versions would claim {total}% of the traffic together (at most 100)");
    }
    // Lowered first, then raised: no step claims more than the end state or the start does.
    changes.sort_by_key(|(_, from, to)| i64::from(*to) - i64::from(*from));
    for (version, from, to) in changes {
        if from == to {
            continue;
        }
        let body = UpdateRequest {
            settings: VersionSettings {
                traffic: Some(to),
                ..VersionSettings::default()
            },
            ..UpdateRequest::default()
        };
        client
            .json(
                Method::PATCH,
                &format!("/api/v1/admin/services/{name}/versions/{version}"),
                Some(&serde_json::to_value(&body)?),
            )
            .await?;
    }
    client
        .json(Method::GET, &format!("/api/v1/admin/services/{name}"), None)
        .await
}

async fn deploy_body(
    client: &crate::client::Client,
    c: &Content,
    settings: &Settings,
    name: Option<&str>,
    version: &str,
    create: bool,
) -> anyhow::Result<DeployRequest> {
    let content = content(c.inference_config.as_deref(), c.deployment_config.as_deref())?;
    let source = upload(client, &content.files).await?;
    Ok(DeployRequest {
        name: name.unwrap_or_default().to_string(),
        version: Some(version.to_string()),
        models: c.models.clone(),
        inference_config: content.ic,
        deployment_config: content.dc,
        source,
        entry_script: content.entry_script,
        create,
        settings: settings.to_api()?,
    })
}

/// A table of versions, then the rollout events.
fn show(s: &Value) -> String {
    let s: ServiceView = match typed(s) {
        Ok(s) => s,
        Err(e) => return format!("{e:#}"),
    };
    let mut out = format!("{}  {:?}\n", s.name, s.state);
    let rows = s
        .versions
        .unwrap_or_default()
        .into_iter()
        .map(|v| {
            let (requests, failures) = v.stats.as_ref().map(|s| (s.requests, s.failures)).unwrap_or((0, 0));
            vec![
                v.name,
                format!("{:?}", v.state),
                format!("{}%", v.traffic),
                format!("{}%", v.effective_traffic),
                format!("{}%", v.mirror),
                v.kind,
                if v.is_default { "yes" } else { "" }.into(),
                requests.to_string(),
                failures.to_string(),
                v.models.join(","),
            ]
        })
        .collect();
    let header = [
        "VERSION",
        "STATE",
        "TRAFFIC",
        "EFFECTIVE",
        "MIRROR",
        "TYPE",
        "DEFAULT",
        "REQUESTS",
        "FAILED",
        "MODELS",
    ];
    out.push_str(&super::table(&header, rows, &[2, 3, 4, 7, 8]));
    let events = s.events.unwrap_or_default();
    if !events.is_empty() {
        out.push_str("\nevents:");
        for e in events {
            out.push_str(&format!("\n  {e}"));
        }
    }
    out
}
