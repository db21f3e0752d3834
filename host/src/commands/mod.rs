//! One module per `plinth` subcommand, and what they share: how to find the host and its credential.

pub mod answer;
pub mod capacity;
pub mod controller;
pub mod deploy;
pub mod endpoint;
pub mod info;
pub mod model;
pub mod package;
pub mod prepare;
pub mod score;
pub mod serve;
pub mod service;

use std::path::{Path, PathBuf};

use anyhow::Context;
use plinth_control::api::FileRef;
use serde_json::Value;

use crate::client::Client;
use sha2::{Digest, Sha256};

/// Options every command that talks to a host takes.
#[derive(clap::Args, Clone)]
pub struct HostArgs {
    /// The host's address.
    #[arg(
        long = "host",
        env = "PLINTH_HOST",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub host: String,
    /// The workspace whose admin-token file authenticates the CLI.
    #[arg(long, env = "PLINTH_WORKSPACE", default_value = ".plinth", global = true)]
    pub workspace: PathBuf,
    /// The admin credential (default: read from the workspace).
    #[arg(long, env = "PLINTH_ADMIN_TOKEN", hide_env_values = true, global = true)]
    pub admin_token: Option<String>,
    /// PEM certificate that signed an https host (trusted beside the system's authorities).
    #[arg(long, env = "PLINTH_CACERT", global = true)]
    pub cacert: Option<PathBuf>,
    /// `text` (or `table`), `json` or `yaml`.
    #[arg(long, short = 'o', default_value = "text", global = true)]
    pub output: Output,
}

/// The name a command acts on: positional, or `-n NAME`/`--name NAME` as `az ml` spells it.
#[derive(clap::Args, Clone, Debug)]
pub struct Name {
    /// The name (or `-n NAME`).
    #[arg(value_name = "NAME", required_unless_present = "flag")]
    positional: Option<String>,
    /// The name, as `az ml` takes it.
    #[arg(short = 'n', long = "name", value_name = "NAME", conflicts_with = "positional")]
    flag: Option<String>,
}

impl std::ops::Deref for Name {
    type Target = str;

    fn deref(&self) -> &str {
        self.positional.as_deref().or(self.flag.as_deref()).unwrap_or_default()
    }
}

impl std::fmt::Display for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self)
    }
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Short text: aligned tables and summaries.
    Text,
    /// JSON in the CLI's one schema.
    Json,
    /// The same as text (tables), as `az` spells it.
    Table,
    /// The JSON schema's value as YAML.
    Yaml,
}

impl HostArgs {
    pub fn client(&self) -> anyhow::Result<Client> {
        let token = match &self.admin_token {
            Some(t) => t.clone(),
            None => {
                let path = self.workspace.join("admin-token");
                std::fs::read_to_string(&path)
                    .with_context(|| {
                        format!(
                            "no admin credential: {} is unreadable (set --workspace/PLINTH_WORKSPACE or PLINTH_ADMIN_TOKEN)",
                            path.display()
                        )
                    })?
                    .trim()
                    .to_string()
            }
        };
        Client::new(self.host.trim_end_matches('/'), Some(token), self.cacert.as_deref())
    }

    /// Prints `value` as JSON in the CLI's one schema (see [`json_schema`]), or as the text `text`
    /// renders.
    pub fn print(&self, value: &Value, text: impl FnOnce(&Value) -> String) {
        match self.output {
            Output::Json => {
                let mut v = value.clone();
                json_schema(&mut v, self.host.trim_end_matches('/'));
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default())
            }
            Output::Yaml => {
                let mut v = value.clone();
                json_schema(&mut v, self.host.trim_end_matches('/'));
                print!("{}", serde_saphyr::to_string(&v).unwrap_or_default())
            }
            Output::Text | Output::Table => {
                let t = text(value);
                if !t.is_empty() {
                    println!("{t}");
                }
            }
        }
    }
}

/// The CLI's JSON output, one schema for every command (README, "JSON output"): keys in camelCase only
/// (a snake_case key is renamed), no null fields (absent means none), times also as RFC
/// 3339 (`created` → `createdAt`, `expiryOn` → `expiresAt`, `refreshAfter` → `refreshAt`), and `scoringUri`/`swaggerUri` absolute. The configurations inside
/// (`deploymentConfig`, `inferenceConfig`) are left as Azure spells them.
pub fn json_schema(v: &mut Value, host: &str) {
    match v {
        Value::Array(items) => items.iter_mut().for_each(|i| json_schema(i, host)),
        Value::Object(fields) => {
            fields.retain(|_, field| !field.is_null());
            let mut extra = Vec::new();
            let mut renamed = Vec::new();
            for (k, field) in fields.iter_mut() {
                match k.as_str() {
                    "deploymentConfig" | "inferenceConfig" => continue,
                    "deployment_config" | "inference_config" => {
                        renamed.push(k.clone());
                        continue;
                    }
                    "scoringUri" | "swaggerUri" => {
                        if let Some(path) = field.as_str().filter(|p| p.starts_with('/')) {
                            *field = Value::String(format!("{host}{path}"));
                        }
                    }
                    "created" | "updated" | "expiryOn" | "refreshAfter" => {
                        let twin = match k.as_str() {
                            "expiryOn" => "expiresAt".to_string(),
                            "refreshAfter" => "refreshAt".to_string(),
                            other => format!("{other}At"),
                        };
                        if let Some(secs) = field.as_u64() {
                            extra.push((twin, Value::String(plinth_spec::time::format_timestamp(secs))));
                        }
                    }
                    _ => json_schema(field, host),
                }
                if k.contains('_') {
                    renamed.push(k.clone());
                }
            }
            for k in renamed {
                if let Some(field) = fields.remove(&k) {
                    fields.entry(camel_case(&k)).or_insert(field);
                }
            }
            for (k, field) in extra {
                fields.entry(k).or_insert(field);
            }
        }
        _ => {}
    }
}

fn camel_case(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    let mut upper = false;
    for c in key.chars() {
        match c {
            '_' => upper = true,
            c if upper => {
                out.extend(c.to_uppercase());
                upper = false;
            }
            c => out.push(c),
        }
    }
    out
}

/// A host's answer as the admin API type it is (see `plinth_control::api`).
pub fn typed<T: serde::de::DeserializeOwned>(v: &Value) -> anyhow::Result<T> {
    T::deserialize(v).context("the host answered in a shape this CLI does not know (a different version?)")
}

/// The strings of a JSON array (anything else, and non-strings in it, count as none).
pub fn strings(v: &Value) -> Vec<&str> {
    v.as_array().into_iter().flatten().filter_map(Value::as_str).collect()
}

/// A single-threaded runtime for a command.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(f)
}

/// An aligned table without borders, each column as wide as its widest cell (`right`: the columns of
/// numbers, aligned right).
pub fn table(header: &[&str], rows: Vec<Vec<String>>, right: &[usize]) -> String {
    use comfy_table::{CellAlignment, Table, presets};
    let mut t = Table::new();
    t.load_preset(presets::NOTHING).set_header(header.to_vec());
    for row in rows {
        t.add_row(row);
    }
    for (i, column) in t.column_iter_mut().enumerate() {
        column.set_padding((0, 2));
        if right.contains(&i) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    t.lines()
        .map(|l| l.trim_end().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Whether `path` is a Rust entry script's crate (a folder with a `Cargo.toml`).
pub fn is_rust_crate(path: &Path) -> bool {
    path.join("Cargo.toml").is_file()
}

/// Builds a Rust entry script's crate for `wasm32-wasip2` (release) and returns its component: what
/// `cargo build --release --target wasm32-wasip2 --manifest-path DIR/Cargo.toml` writes, found from
/// cargo's own report. Cargo's progress goes to stderr as it comes.
pub fn build_rust_script(dir: &Path) -> anyhow::Result<PathBuf> {
    eprintln!(
        "building the Rust entry script in {} (cargo build --release --target wasm32-wasip2)...",
        dir.display()
    );
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--message-format=json-render-diagnostics",
            "--manifest-path",
        ])
        .arg(dir.join("Cargo.toml"))
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running cargo (is Rust installed? `rustup target add wasm32-wasip2` adds the target)")?;
    if !out.status.success() {
        anyhow::bail!(
            "cargo could not build the entry script in {} (its errors are above)",
            dir.display()
        );
    }
    let mut component = None;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] == "compiler-artifact" {
            for f in msg["filenames"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|f| f.as_str())
            {
                if f.ends_with(".wasm") {
                    component = Some(PathBuf::from(f));
                }
            }
        }
    }
    component.with_context(|| {
        format!(
            "cargo built {} but no .wasm came out: is it a `cdylib` using plinth-plugin?",
            dir.display()
        )
    })
}

/// Uploads `files` (relative path → local path) as blobs the host does not have yet; returns the refs.
pub async fn upload(client: &Client, files: &[(String, PathBuf)]) -> anyhow::Result<Vec<FileRef>> {
    let mut refs = Vec::with_capacity(files.len());
    for (rel, path) in files {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let sha = plinth_spec::record::hex(&Sha256::digest(&bytes));
        let (status, _) = client
            .request(http::Method::GET, &format!("/api/v1/admin/blobs/{sha}"), None)
            .await?;
        if status == http::StatusCode::NOT_FOUND {
            let (status, body) = client
                .request(
                    http::Method::PUT,
                    &format!("/api/v1/admin/blobs/{sha}"),
                    Some(bytes.clone()),
                )
                .await?;
            if !status.is_success() {
                anyhow::bail!(
                    "uploading {}: HTTP {}: {}",
                    path.display(),
                    status.as_u16(),
                    String::from_utf8_lossy(&body)
                );
            }
        } else if !status.is_success() {
            anyhow::bail!("checking {} on the host: HTTP {}", path.display(), status.as_u16());
        }
        refs.push(FileRef {
            path: rel.clone(),
            sha256: sha,
            size: bytes.len() as u64,
        });
    }
    Ok(refs)
}

/// Every file under `dir` (or `dir` itself, if a file), with `/`-separated relative paths, leaving out
/// what `.gitignore`, `.amlignore` or `.plinthignore` there name (as Azure ML packs a project folder).
pub fn pack(dir: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
    if dir.is_file() {
        let name = dir
            .file_name()
            .context("file has no name")?
            .to_string_lossy()
            .into_owned();
        return Ok(vec![(name, dir.to_path_buf())]);
    }
    if !dir.is_dir() {
        anyhow::bail!("{} does not exist", dir.display());
    }
    let mut out = Vec::new();
    let walker = ignore::WalkBuilder::new(dir)
        .require_git(false)
        .add_custom_ignore_filename(".amlignore")
        .add_custom_ignore_filename(".plinthignore")
        .build();
    for entry in walker {
        let entry = entry?;
        if entry.file_type().is_some_and(|t| t.is_file()) {
            let rel = entry.path().strip_prefix(dir)?;
            let rel: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            out.push((rel.join("/"), entry.path().to_path_buf()));
        }
    }
    out.sort();
    Ok(out)
}
