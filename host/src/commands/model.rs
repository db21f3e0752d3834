//! `plinth model register|list|show|delete`: the model registry (Azure's `Model.register`).

use std::path::PathBuf;

use anyhow::{Context, bail};
use http::Method;
use plinth_control::api::RegisterModel;
use plinth_spec::record::ModelRecord;

use super::{HostArgs, Name, block_on, pack, typed, upload};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Register a file or folder as the next version of a model; prints NAME:VERSION.
    Register {
        /// The model's name (each register makes its next version).
        #[arg(long, short = 'n')]
        name: String,
        /// A model file (.onnx) or a folder of files.
        #[arg(long, short = 'p')]
        path: PathBuf,
        /// A description of this version.
        #[arg(long, short = 'd')]
        description: Option<String>,
        /// A tag as key=value (repeatable).
        #[arg(long = "tag", short = 't', value_name = "KEY=VALUE")]
        tags: Vec<String>,
    },
    /// List registered models.
    List,
    /// Show one model (NAME:VERSION, or NAME for the latest; or `-n NAME`).
    Show {
        #[command(flatten)]
        id: Name,
    },
    /// Delete one model version (refused while a service uses it; NAME:VERSION or `-n NAME:VERSION`).
    Delete {
        #[command(flatten)]
        id: Name,
    },
}

pub fn run(cmd: Command, host: &HostArgs) -> anyhow::Result<()> {
    let client = host.client()?;
    block_on(async {
        match cmd {
            Command::Register {
                name,
                path,
                description,
                tags,
            } => {
                let mut tag_map = std::collections::BTreeMap::new();
                for t in &tags {
                    let (k, v) = t
                        .split_once('=')
                        .with_context(|| format!("tag '{t}' is not KEY=VALUE"))?;
                    tag_map.insert(k.to_string(), v.to_string());
                }
                let files = pack(&path).with_context(|| format!("model path {}", path.display()))?;
                if files.is_empty() {
                    bail!("model path {} holds no files", path.display());
                }
                let refs = upload(&client, &files).await?;
                let body = RegisterModel {
                    name,
                    description,
                    tags: tag_map,
                    files: refs,
                };
                let record = client
                    .json(
                        Method::POST,
                        "/api/v1/admin/models",
                        Some(&serde_json::to_value(&body)?),
                    )
                    .await?;
                host.print(&record, |r| match typed::<ModelRecord>(r) {
                    Ok(r) => r.id(),
                    Err(e) => format!("{e:#}"),
                });
            }
            Command::List => {
                let list = client.json(Method::GET, "/api/v1/admin/models", None).await?;
                host.print(&list, |l| {
                    let models: Vec<ModelRecord> = match typed(l) {
                        Ok(m) => m,
                        Err(e) => return format!("{e:#}"),
                    };
                    let rows = models
                        .into_iter()
                        .map(|m| {
                            vec![
                                m.name,
                                m.version.to_string(),
                                m.files.len().to_string(),
                                m.description.unwrap_or_default(),
                            ]
                        })
                        .collect();
                    super::table(&["NAME", "VERSION", "FILES", "DESCRIPTION"], rows, &[1, 2])
                });
            }
            Command::Show { id } => {
                let m = client
                    .json(Method::GET, &format!("/api/v1/admin/models/{id}"), None)
                    .await?;
                host.print(&m, |m| match typed::<ModelRecord>(m) {
                    Ok(m) => model_summary(&m),
                    Err(e) => format!("{e:#}"),
                });
            }
            Command::Delete { id } => {
                let r = client
                    .json(Method::DELETE, &format!("/api/v1/admin/models/{id}"), None)
                    .await?;
                host.print(&r, |_| format!("deleted model {id}"));
            }
        }
        Ok(())
    })
}

/// `model show` as text: the model, its tags and files (`-o json` for the record).
fn model_summary(m: &ModelRecord) -> String {
    let mut out = format!(
        "{}  registered {}",
        m.id(),
        plinth_spec::time::format_timestamp(m.created)
    );
    if let Some(d) = &m.description {
        out.push_str(&format!("\n{d}"));
    }
    if !m.tags.is_empty() {
        let tags: Vec<String> = m.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
        out.push_str(&format!("\ntags: {}", tags.join(", ")));
    }
    let rows = m
        .files
        .iter()
        .map(|f| vec![f.path.clone(), f.size.to_string(), f.sha256[..12].to_string()])
        .collect();
    out.push('\n');
    out.push_str(&super::table(&["FILE", "BYTES", "SHA-256"], rows, &[1]));
    out
}
