//! The workspace: everything a host keeps, in one folder with no server. SQLite (`plinth.db`) holds
//! models and services; `blobs/sha256/<hex>` holds file contents, immutable and addressed by hash;
//! `admin-token` and `jwt-secret` are created at first start with mode 0600.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use plinth_router::generate_key;
use plinth_router::time::unix_seconds as now;

use crate::config::{DeploymentConfig, InferenceConfig};
use crate::{Error, Result};

/// A file of a model or a source folder: where it goes and what it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRef {
    /// Relative path with `/` separators.
    pub path: String,
    pub sha256: String,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelRecord {
    pub name: String,
    pub version: u32,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    pub files: Vec<FileRef>,
    pub created: u64,
}

impl ModelRecord {
    pub fn id(&self) -> String {
        format!("{}:{}", self.name, self.version)
    }
}

/// A service (an endpoint) as stored: its versions, credentials and rollout events.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceRecord {
    pub name: String,
    pub versions: Vec<VersionRecord>,
    pub auth_enabled: bool,
    pub token_auth_enabled: bool,
    pub primary_key: String,
    pub secondary_key: String,
    /// The service's part of its token signing key (see `plinth_router::TokenIssuer`); a new one revokes
    /// every token issued before. Records from before it existed have none until it is rotated.
    #[serde(default)]
    pub token_secret: String,
    pub created: u64,
    pub updated: u64,
    /// Rollout events (automatic rollbacks), newest last.
    #[serde(default)]
    pub events: Vec<String>,
}

impl ServiceRecord {
    pub fn version(&self, name: &str) -> Result<&VersionRecord> {
        self.versions
            .iter()
            .find(|v| v.name == name)
            .ok_or_else(|| Error::NotFound(format!("service {} has no version {name}", self.name)))
    }

    pub fn version_mut(&mut self, name: &str) -> Result<&mut VersionRecord> {
        let service = self.name.clone();
        self.versions
            .iter_mut()
            .find(|v| v.name == name)
            .ok_or_else(|| Error::NotFound(format!("service {service} has no version {name}")))
    }

    /// Azure's rules for an endpoint: at most six versions, exactly one default, at most one control,
    /// and claimed traffic adding up to at most 100%.
    pub fn validate(&self) -> Result<()> {
        if self.versions.is_empty() {
            return Err(Error::BadRequest(format!("service {} has no version", self.name)));
        }
        if self.versions.len() > MAX_VERSIONS {
            return Err(Error::BadRequest(format!(
                "an endpoint holds at most {MAX_VERSIONS} versions"
            )));
        }
        let defaults = self.versions.iter().filter(|v| v.is_default).count();
        if defaults != 1 {
            return Err(Error::BadRequest(format!(
                "an endpoint needs exactly one default version, {} has {defaults}",
                self.name
            )));
        }
        if self.versions.iter().filter(|v| v.control).count() > 1 {
            return Err(Error::BadRequest("an endpoint has at most one control version".into()));
        }
        for v in &self.versions {
            if v.traffic > 100 || v.mirror > 100 {
                return Err(Error::BadRequest(format!(
                    "version {}: percentages must be 0..100",
                    v.name
                )));
            }
        }
        let total: u32 = self.versions.iter().map(|v| v.traffic).sum();
        if total > 100 {
            let parts: Vec<String> = self
                .versions
                .iter()
                .map(|v| format!("{} {}%", v.name, v.traffic))
                .collect();
            return Err(Error::BadRequest(format!(
                "traffic adds up to {total}% ({}), more than 100%",
                parts.join(", ")
            )));
        }
        Ok(())
    }
}

/// At most this many versions per endpoint (as Azure ML allows).
pub const MAX_VERSIONS: usize = 6;

/// One version of a service: what it runs and how much traffic it takes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VersionRecord {
    pub name: String,
    /// `name:version` of each model.
    pub models: Vec<String>,
    pub inference_config: InferenceConfig,
    pub deployment_config: DeploymentConfig,
    /// The packed source folder (or just the entry script).
    pub source: Vec<FileRef>,
    /// The entry script's path inside `source`.
    pub entry_script: Option<String>,
    /// Percent of traffic claimed; the default version also gets what nobody claims.
    pub traffic: u32,
    pub is_default: bool,
    /// A control version (at most one per endpoint); otherwise a treatment.
    #[serde(default)]
    pub control: bool,
    /// Percent of traffic copied to this version; its answers are never returned.
    #[serde(default)]
    pub mirror: u32,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default)]
    pub rollback: Option<RollbackPolicy>,
    pub created: u64,
    pub updated: u64,
}

impl VersionRecord {
    /// A new version of this content: the default, claiming all traffic, no settings yet.
    pub fn new(
        name: &str,
        models: Vec<String>,
        inference_config: InferenceConfig,
        deployment_config: DeploymentConfig,
        source: Vec<FileRef>,
        entry_script: Option<String>,
    ) -> Self {
        VersionRecord {
            name: name.to_string(),
            models,
            inference_config,
            deployment_config,
            source,
            entry_script,
            traffic: 100,
            is_default: true,
            control: false,
            mirror: 0,
            description: None,
            tags: BTreeMap::new(),
            rollback: None,
            created: now(),
            updated: now(),
        }
    }
}

/// When a treatment's traffic is automatically set to 0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackPolicy {
    /// Roll back when the share of failed (5xx) requests in the window is above this (0..1).
    #[serde(default)]
    pub max_error_rate: Option<f64>,
    /// Roll back when the window's p99 latency is above this many milliseconds.
    #[serde(default)]
    pub max_p99_ms: Option<f64>,
    /// The window, in seconds. Default 60.
    #[serde(default = "default_window")]
    pub window_secs: u64,
    /// No decision on fewer requests than this in the window. Default 20.
    #[serde(default = "default_min_requests")]
    pub min_requests: usize,
}

fn default_window() -> u64 {
    60
}

fn default_min_requests() -> usize {
    20
}

pub struct Workspace {
    root: PathBuf,
    /// Held for the workspace's life: one host per workspace (none for a read-only look).
    _lock: Option<std::fs::File>,
    db: Mutex<Connection>,
    admin_token: String,
    jwt_secret: Vec<u8>,
}

impl std::fmt::Debug for Workspace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workspace")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

impl Workspace {
    /// Opens (or creates) the workspace at `root` and locks it for this process: a second host on the
    /// same workspace is refused (it would redeploy everything and remove what the first one serves).
    pub fn open(root: &Path) -> Result<Self> {
        private_dir(&root.join("blobs/sha256"))?;
        private_dir(root)?;
        let lock = lock(root)?;
        remove_partial_blobs(&root.join("blobs/sha256"));
        let db = Connection::open(root.join("plinth.db")).map_err(Error::db("opening plinth.db"))?;
        for file in ["plinth.db", "plinth.db-wal", "plinth.db-shm"] {
            private_file(&root.join(file))?;
        }
        db.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;
             CREATE TABLE IF NOT EXISTS models (
                 name TEXT NOT NULL, version INTEGER NOT NULL, record TEXT NOT NULL,
                 PRIMARY KEY (name, version));
             CREATE TABLE IF NOT EXISTS services (name TEXT PRIMARY KEY, record TEXT NOT NULL);",
        )
        .map_err(Error::db("creating the tables"))?;
        let admin_token = secret_file(&root.join("admin-token"))?;
        let jwt_secret = secret_file(&root.join("jwt-secret"))?.into_bytes();
        Ok(Workspace {
            root: root.to_path_buf(),
            _lock: Some(lock),
            db: Mutex::new(db),
            admin_token,
            jwt_secret,
        })
    }

    /// Opens an existing workspace to read it while its host may run (`plinth service export`): no lock,
    /// nothing created, the database read-only.
    pub fn open_read_only(root: &Path) -> Result<Self> {
        let db_path = root.join("plinth.db");
        if !db_path.is_file() {
            return Err(Error::NotFound(format!(
                "{} is not a Plinth workspace (no plinth.db; set --workspace or PLINTH_WORKSPACE)",
                root.display()
            )));
        }
        let db = Connection::open_with_flags(&db_path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(Error::db("opening plinth.db"))?;
        Ok(Workspace {
            root: root.to_path_buf(),
            _lock: None,
            db: Mutex::new(db),
            admin_token: String::new(),
            jwt_secret: Vec::new(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    pub fn jwt_secret(&self) -> &[u8] {
        &self.jwt_secret
    }

    fn db(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.db.lock().unwrap_or_else(|p| p.into_inner())
    }

    // --- blobs

    pub fn blob_path(&self, sha256: &str) -> Result<PathBuf> {
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) {
            return Err(Error::BadRequest(format!("'{sha256}' is not a lowercase hex sha256")));
        }
        Ok(self.root.join("blobs/sha256").join(sha256))
    }

    pub fn has_blob(&self, sha256: &str) -> Result<bool> {
        Ok(self.blob_path(sha256)?.is_file())
    }

    /// Stores `bytes` if they hash to `sha256`.
    pub fn put_blob(&self, sha256: &str, bytes: &[u8]) -> Result<()> {
        let mut w = self.blob_writer(sha256)?;
        w.write(bytes)?;
        w.finish()
    }

    /// A blob written a piece at a time (an upload as it arrives), hashed as it goes; it takes its place
    /// only when [`BlobWriter::finish`] finds the hash right, and a writer dropped before leaves nothing.
    pub fn blob_writer(&self, sha256: &str) -> Result<BlobWriter> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let path = self.blob_path(sha256)?;
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = path.with_extension(format!("tmp{}-{n}", std::process::id()));
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let file = opts.open(&tmp).map_err(Error::io(tmp.clone()))?;
        Ok(BlobWriter {
            sha256: sha256.to_string(),
            path,
            tmp: Some(tmp),
            file: std::io::BufWriter::with_capacity(1 << 20, file),
            hasher: Sha256::new(),
        })
    }

    /// Checks that every file is a stored blob with a safe relative path.
    pub fn check_files(&self, files: &[FileRef]) -> Result<()> {
        for f in files {
            check_relative(&f.path)?;
            if !self.has_blob(&f.sha256)? {
                return Err(Error::BadRequest(format!(
                    "file {}: blob {} was not uploaded",
                    f.path, f.sha256
                )));
            }
        }
        Ok(())
    }

    // --- models

    pub fn register_model(
        &self,
        name: &str,
        description: Option<String>,
        tags: BTreeMap<String, String>,
        files: Vec<FileRef>,
    ) -> Result<ModelRecord> {
        check_name("model", name)?;
        if files.is_empty() {
            return Err(Error::BadRequest(format!("model {name}: no files")));
        }
        self.check_files(&files)?;
        let mut db = self.db();
        let tx = db.transaction().map_err(Error::db("registering a model"))?;
        let version: u32 = tx
            .query_row(
                "SELECT COALESCE(MAX(version), 0) + 1 FROM models WHERE name = ?1",
                params![name],
                |r| r.get(0),
            )
            .map_err(Error::db("registering a model"))?;
        let record = ModelRecord {
            name: name.into(),
            version,
            description,
            tags,
            files,
            created: now(),
        };
        tx.execute(
            "INSERT INTO models (name, version, record) VALUES (?1, ?2, ?3)",
            params![name, version, serde_json::to_string(&record).map_err(Error::Corrupt)?],
        )
        .map_err(Error::db("registering a model"))?;
        tx.commit().map_err(Error::db("registering a model"))?;
        Ok(record)
    }

    pub fn models(&self) -> Result<Vec<ModelRecord>> {
        let db = self.db();
        let mut stmt = db
            .prepare("SELECT record FROM models ORDER BY name, version")
            .map_err(Error::db("listing models"))?;
        let rows = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(Error::db("listing models"))?;
        rows.map(|r| decode(&r.map_err(Error::db("listing models"))?)).collect()
    }

    /// `name:version`, or `name` for the latest version.
    pub fn model(&self, id: &str) -> Result<ModelRecord> {
        let (name, version) = parse_model_id(id)?;
        let db = self.db();
        let record: Option<String> = match version {
            Some(v) => db
                .query_row(
                    "SELECT record FROM models WHERE name = ?1 AND version = ?2",
                    params![name, v],
                    |r| r.get(0),
                )
                .optional()
                .map_err(Error::db("reading a model"))?,
            None => db
                .query_row(
                    "SELECT record FROM models WHERE name = ?1 ORDER BY version DESC LIMIT 1",
                    params![name],
                    |r| r.get(0),
                )
                .optional()
                .map_err(Error::db("reading a model"))?,
        };
        match record {
            Some(r) => decode(&r),
            None => Err(Error::NotFound(format!("model {id} not found"))),
        }
    }

    pub fn delete_model(&self, id: &str) -> Result<()> {
        let model = self.model(id)?;
        let full = model.id();
        if let Some(svc) = self
            .services()?
            .into_iter()
            .find(|s| s.versions.iter().any(|v| v.models.contains(&full)))
        {
            return Err(Error::Conflict(format!(
                "model {full} is used by service {}; delete the service first",
                svc.name
            )));
        }
        self.db()
            .execute(
                "DELETE FROM models WHERE name = ?1 AND version = ?2",
                params![model.name, model.version],
            )
            .map_err(Error::db("deleting a model"))?;
        Ok(())
    }

    // --- services

    pub fn put_service(&self, record: &ServiceRecord) -> Result<()> {
        let json = serde_json::to_string(record).map_err(Error::Corrupt)?;
        self.db().execute(
            "INSERT INTO services (name, record) VALUES (?1, ?2) ON CONFLICT(name) DO UPDATE SET record = excluded.record",
            params![record.name, json],
        )
        .map_err(Error::db("storing a service"))?;
        Ok(())
    }

    pub fn services(&self) -> Result<Vec<ServiceRecord>> {
        let db = self.db();
        let mut stmt = db
            .prepare("SELECT record FROM services ORDER BY name")
            .map_err(Error::db("listing services"))?;
        let rows = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(Error::db("listing services"))?;
        rows.map(|r| decode(&r.map_err(Error::db("listing services"))?))
            .collect()
    }

    pub fn service(&self, name: &str) -> Result<ServiceRecord> {
        let record: Option<String> = self
            .db()
            .query_row("SELECT record FROM services WHERE name = ?1", params![name], |r| {
                r.get(0)
            })
            .optional()
            .map_err(Error::db("reading a service"))?;
        match record {
            Some(r) => decode(&r),
            None => Err(Error::NotFound(format!("service {name} not found"))),
        }
    }

    pub fn delete_service(&self, name: &str) -> Result<()> {
        let n = self
            .db()
            .execute("DELETE FROM services WHERE name = ?1", params![name])
            .map_err(Error::db("deleting a service"))?;
        if n == 0 {
            return Err(Error::NotFound(format!("service {name} not found")));
        }
        Ok(())
    }
}

/// Creates `dir` (and what is above it) readable by its owner alone, and narrows it if it was wider.
fn private_dir(dir: &Path) -> Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(Error::io(dir))?;
    narrow(dir, 0o700)
}

/// Narrows an existing file to its owner alone (0600); a missing one is fine.
fn private_file(path: &Path) -> Result<()> {
    if path.exists() { narrow(path, 0o600) } else { Ok(()) }
}

#[cfg(unix)]
fn narrow(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let current = std::fs::metadata(path).map_err(Error::io(path))?.permissions().mode() & 0o777;
    if current & !mode != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(current & mode)).map_err(Error::io(path))?;
    }
    Ok(())
}

#[cfg(not(unix))]
fn narrow(_: &Path, _: u32) -> Result<()> {
    Ok(())
}

/// A blob being written (see [`Workspace::blob_writer`]).
pub struct BlobWriter {
    sha256: String,
    path: PathBuf,
    /// The file being written; `None` once it has taken its place.
    tmp: Option<PathBuf>,
    file: std::io::BufWriter<std::fs::File>,
    hasher: Sha256,
}

impl BlobWriter {
    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.hasher.update(bytes);
        let tmp = self.tmp.as_deref().unwrap_or(&self.path);
        self.file.write_all(bytes).map_err(Error::io(tmp.to_path_buf()))
    }

    /// Checks the hash, makes the bytes durable and moves the blob into place.
    pub fn finish(mut self) -> Result<()> {
        let actual = hex(&std::mem::take(&mut self.hasher).finalize());
        if actual != self.sha256 {
            return Err(Error::BadRequest(format!(
                "content hashes to {actual}, not {}",
                self.sha256
            )));
        }
        let Some(tmp) = self.tmp.clone() else { return Ok(()) };
        let mut done = || -> std::io::Result<()> {
            self.file.flush()?;
            self.file.get_ref().sync_all()?;
            if !self.path.is_file() {
                std::fs::rename(&tmp, &self.path)?;
            }
            Ok(())
        };
        done().map_err(Error::io(self.path.clone()))?;
        Ok(())
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        // Unfinished, refused, or already in place under another writer: the temporary file goes.
        if let Some(tmp) = self.tmp.take() {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

/// Removes blobs a crash left half-written (`<sha>.tmp<pid>`); whole blobs are renamed into place.
fn remove_partial_blobs(dir: &Path) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_name().to_string_lossy().contains(".tmp") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Takes `<root>/lock` (an advisory lock the OS drops when the process ends, however it ends) and
/// writes this process's id into it.
fn lock(root: &Path) -> Result<std::fs::File> {
    use std::io::{Read, Seek};
    let path = root.join("lock");
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut file = opts.open(&path).map_err(Error::io(&path))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            return Err(Error::Locked {
                root: root.to_path_buf(),
                holder: holder.trim().to_string(),
            });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(&path)(e)),
    }
    file.set_len(0).map_err(Error::io(&path))?;
    file.rewind().map_err(Error::io(&path))?;
    writeln!(file, "{}", std::process::id()).map_err(Error::io(&path))?;
    Ok(file)
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode<T: serde::de::DeserializeOwned>(json: &str) -> Result<T> {
    serde_json::from_str(json).map_err(Error::Corrupt)
}

/// Reads a secret file, creating it (mode 0600) with a fresh key the first time.
fn secret_file(path: &Path) -> Result<String> {
    if let Ok(s) = std::fs::read_to_string(path) {
        let s = s.trim().to_string();
        if !s.is_empty() {
            return Ok(s);
        }
    }
    let key = generate_key();
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path).map_err(Error::io(path))?;
    writeln!(f, "{key}").map_err(Error::io(path))?;
    Ok(key)
}

/// Names of models and services: letters, digits, `-`, `_`, `.`; 1..=64 characters; a letter or digit first.
pub fn check_name(what: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Error::BadRequest(format!(
            "{what} name '{name}' is invalid: use 1 to 64 letters, digits, '-', '_' or '.', starting with a letter or digit"
        )))
    }
}

/// `name` or `name:version`.
pub fn parse_model_id(id: &str) -> Result<(&str, Option<u32>)> {
    match id.split_once(':') {
        None => Ok((id, None)),
        Some((name, v)) => {
            let v = v
                .parse()
                .map_err(|_| Error::BadRequest(format!("model '{id}': the version must be a number")))?;
            Ok((name, Some(v)))
        }
    }
}

/// A relative path with no `..`, no root and no empty parts.
pub fn check_relative(path: &str) -> Result<()> {
    let bad = path.is_empty()
        || path.starts_with('/')
        || path.contains('\\')
        || path.split('/').any(|p| p.is_empty() || p == "." || p == "..");
    if bad {
        return Err(Error::BadRequest(format!(
            "file path '{path}' must be relative, without '..'"
        )));
    }
    Ok(())
}

/// Records for tests, built up from a plain one-version service.
#[cfg(test)]
impl ServiceRecord {
    /// `name` with one version, `blue`: the default, keys `name-primary-key…`.
    pub(crate) fn test(name: &str) -> Self {
        ServiceRecord {
            name: name.into(),
            versions: vec![VersionRecord::test("blue")],
            auth_enabled: true,
            token_auth_enabled: false,
            primary_key: format!("{name}-primary-key-0123456789"),
            secondary_key: format!("{name}-secondary-key-0123456789"),
            token_secret: format!("{name}-token-secret"),
            created: 1,
            updated: 1,
            events: Vec::new(),
        }
    }

    /// Blue claims `blue`%, and a treatment `green` claims `green`%.
    pub(crate) fn with_split(mut self, blue: u32, green: u32) -> Self {
        self.versions[0].traffic = blue;
        let mut v = VersionRecord::test("green");
        v.is_default = false;
        v.traffic = green;
        self.versions.push(v);
        self
    }
}

#[cfg(test)]
impl VersionRecord {
    pub(crate) fn test(name: &str) -> Self {
        VersionRecord::new(
            name,
            Vec::new(),
            InferenceConfig::default(),
            DeploymentConfig::default(),
            Vec::new(),
            None,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ws() -> (Workspace, PathBuf) {
        let dir = std::env::temp_dir().join(format!("plinth-ws-{}-{}", std::process::id(), generate_key()));
        (Workspace::open(&dir).unwrap(), dir)
    }

    #[test]
    fn models_count_up_and_blobs_are_checked() {
        let (ws, dir) = ws();
        let bytes = b"model bytes";
        let sha = hex(&Sha256::digest(bytes));
        assert!(ws.put_blob(&"0".repeat(64), bytes).is_err(), "hash mismatch refused");
        // An upload cut off half-way leaves nothing behind.
        let mut cut = ws.blob_writer(&sha).unwrap();
        cut.write(&bytes[..4]).unwrap();
        drop(cut);
        let blobs = || std::fs::read_dir(dir.join("blobs/sha256")).unwrap().count();
        assert_eq!(blobs(), 0);
        // Written in pieces, hashed as it goes.
        let mut w = ws.blob_writer(&sha).unwrap();
        w.write(&bytes[..4]).unwrap();
        w.write(&bytes[4..]).unwrap();
        w.finish().unwrap();
        assert_eq!(std::fs::read(ws.blob_path(&sha).unwrap()).unwrap(), bytes);
        ws.put_blob(&sha, bytes).unwrap();
        assert_eq!(blobs(), 1, "stored once, no temporary file left");
        let file = FileRef {
            path: "model.onnx".into(),
            sha256: sha,
            size: 11,
        };
        let a = ws
            .register_model("m", None, BTreeMap::new(), vec![file.clone()])
            .unwrap();
        let b = ws.register_model("m", None, BTreeMap::new(), vec![file]).unwrap();
        assert_eq!((a.version, b.version), (1, 2));
        assert_eq!(ws.model("m").unwrap().version, 2);
        assert_eq!(ws.model("m:1").unwrap().version, 1);
        assert!(matches!(ws.model("m:9"), Err(Error::NotFound(_))));
        let missing = FileRef {
            path: "x".into(),
            sha256: "a".repeat(64),
            size: 1,
        };
        assert!(ws.register_model("m", None, BTreeMap::new(), vec![missing]).is_err());
        // One holder at a time; reopening keeps everything, secrets included.
        let second = Workspace::open(&dir).unwrap_err().to_string();
        assert!(
            second.contains("in use by another plinth host") && second.contains(&std::process::id().to_string()),
            "{second}"
        );
        let token = ws.admin_token().to_string();
        let partial = dir.join("blobs/sha256").join(format!("{}.tmp4242", "b".repeat(64)));
        std::fs::write(&partial, b"half").unwrap();
        drop(ws);
        let again = Workspace::open(&dir).unwrap();
        assert!(!partial.exists(), "a half-written blob is cleaned at start");
        assert_eq!(again.admin_token(), token);
        assert_eq!(again.models().unwrap().len(), 2);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &str| std::fs::metadata(dir.join(p)).unwrap().permissions().mode() & 0o777;
            for file in ["admin-token", "jwt-secret", "plinth.db", "lock"] {
                assert_eq!(mode(file), 0o600, "{file}");
            }
            assert_eq!(mode(&format!("blobs/sha256/{}", hex(&Sha256::digest(bytes)))), 0o600);
            assert_eq!(mode(""), 0o700);
            assert_eq!(mode("blobs"), 0o700);
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn endpoint_rules() {
        ServiceRecord::test("ep").with_split(80, 20).validate().unwrap();
        let over = ServiceRecord::test("ep").with_split(90, 20);
        assert!(over.validate().unwrap_err().to_string().contains("adds up to 110%"));
        let mut two_defaults = ServiceRecord::test("ep").with_split(80, 20);
        two_defaults.versions[1].is_default = true;
        assert!(two_defaults.validate().is_err());
    }

    #[test]
    fn names_and_paths_are_checked() {
        assert!(check_name("service", "my-svc_1.0").is_ok());
        for bad in ["", "-x", "a/b", "a b", &"x".repeat(65)] {
            assert!(check_name("service", bad).is_err(), "{bad}");
        }
        assert!(check_relative("a/b.txt").is_ok());
        for bad in ["/etc/passwd", "../x", "a/../b", "a//b", ""] {
            assert!(check_relative(bad).is_err(), "{bad}");
        }
    }
}
