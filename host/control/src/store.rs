//! The workspace: everything a host keeps, in one folder with no server. SQLite (`plinth.db`) holds
//! models and services; `blobs/sha256/<hex>` holds file contents, immutable and addressed by hash;
//! `admin-token` and `jwt-secret` are created at first start with mode 0600. Everything under the workspace
//! is its owner's alone: folders 0700 and files 0600, narrowed at every start.
//!
//! Blobs no model and no service refers to are removed: at start (what an interrupted upload or a deleted
//! model left) and after a model or a service is deleted, sparing blobs uploaded in the last hour that
//! nothing refers to yet (an upload whose register or deploy is still to come).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use plinth_spec::record::{
    FileRef, ModelRecord, ServiceRecord, check_name, check_relative, generate_key, hex, parse_model_id,
};
use plinth_spec::time::unix_seconds as now;
use rusqlite::{Connection, OptionalExtension, params};
use sha2::{Digest, Sha256};

use crate::{Error, Result};

pub struct Workspace {
    root: PathBuf,
    /// Held for the workspace's life: one host per workspace (none for a read-only look).
    _lock: Option<std::fs::File>,
    db: Mutex<Connection>,
    admin_token: String,
    jwt_secret: Vec<u8>,
    /// Blobs this host stored, and when: spared by a collection for [`UPLOAD_GRACE`].
    uploaded: Mutex<HashMap<String, Instant>>,
}

/// How long a blob nothing refers to yet is kept after its upload (its register or deploy may follow).
pub const UPLOAD_GRACE: Duration = Duration::from_secs(3600);

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
        narrow_tree(root);
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
        let ws = Workspace {
            root: root.to_path_buf(),
            _lock: Some(lock),
            db: Mutex::new(db),
            admin_token,
            jwt_secret,
            uploaded: Mutex::new(HashMap::new()),
        };
        let (n, bytes) = ws.collect_blobs()?;
        if n > 0 {
            tracing::info!(blobs = n, bytes, "removed blobs no model or service refers to");
        }
        Ok(ws)
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
            uploaded: Mutex::new(HashMap::new()),
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

    /// Removes the blobs no model and no service refers to, but those uploaded within [`UPLOAD_GRACE`];
    /// returns how many went and their bytes.
    pub fn collect_blobs(&self) -> Result<(usize, u64)> {
        let mut used: HashSet<String> = HashSet::new();
        for m in self.models()? {
            used.extend(m.files.into_iter().map(|f| f.sha256));
        }
        for s in self.services()? {
            for v in s.versions {
                used.extend(v.source.into_iter().map(|f| f.sha256));
            }
        }
        let mut uploaded = self.uploaded.lock().unwrap_or_else(|p| p.into_inner());
        uploaded.retain(|_, at| at.elapsed() < UPLOAD_GRACE);
        let dir = self.root.join("blobs/sha256");
        let (mut n, mut bytes) = (0, 0);
        for entry in std::fs::read_dir(&dir).map_err(Error::io(&dir))?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.len() != 64 || used.contains(&name) || uploaded.contains_key(&name) {
                continue;
            }
            let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
            if std::fs::remove_file(entry.path()).is_ok() {
                n += 1;
                bytes += size;
            }
        }
        Ok((n, bytes))
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
        self.uploaded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(sha256.to_string(), Instant::now());
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
        self.referred_to(&record.files);
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
            // Which versions there are (or that the name has none), so the next try is right.
            None => Err(Error::NotFound(match self.versions_of(&db, name)?.as_str() {
                "" => format!("model {id} not found (no model is registered as {name})"),
                known => format!("model {id} not found (registered: {known})"),
            })),
        }
    }

    /// Up to ten of a model's versions, as `name:version` joined by commas.
    fn versions_of(&self, db: &rusqlite::Connection, name: &str) -> Result<String> {
        let mut query = db
            .prepare("SELECT version FROM models WHERE name = ?1 ORDER BY version LIMIT 10")
            .map_err(Error::db("listing a model's versions"))?;
        let versions = query
            .query_map(params![name], |r| r.get::<_, i64>(0))
            .and_then(|rows| {
                rows.map(|v| v.map(|v| format!("{name}:{v}")))
                    .collect::<std::result::Result<Vec<_>, _>>()
            })
            .map_err(Error::db("listing a model's versions"))?;
        Ok(versions.join(", "))
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
        self.collect_after_delete();
        Ok(())
    }

    // --- services

    pub fn put_service(&self, record: &ServiceRecord) -> Result<()> {
        for v in &record.versions {
            self.referred_to(&v.source);
        }
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
        self.collect_after_delete();
        Ok(())
    }

    /// Uploads a record now refers to need no grace any more: once nothing refers to them, they go.
    fn referred_to(&self, files: &[FileRef]) {
        let mut uploaded = self.uploaded.lock().unwrap_or_else(|p| p.into_inner());
        if !uploaded.is_empty() {
            for f in files {
                uploaded.remove(&f.sha256);
            }
        }
    }

    fn collect_after_delete(&self) {
        match self.collect_blobs() {
            Ok((0, _)) => {}
            Ok((n, bytes)) => tracing::info!(blobs = n, bytes, "removed blobs nothing refers to any more"),
            Err(e) => tracing::warn!(error = %e, "collecting unreferenced blobs"),
        }
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

/// Narrows everything under `root` to its owner (folders 0700, files 0600): what an older host, another
/// tool or a wider umask left. Best effort: a file that cannot be narrowed is logged, never fatal.
fn narrow_tree(root: &Path) {
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else { continue };
            let path = entry.path();
            let result = if kind.is_dir() {
                stack.push(path.clone());
                narrow(&path, 0o700)
            } else if kind.is_file() {
                narrow(&path, 0o600)
            } else {
                continue;
            };
            if let Err(e) = result {
                tracing::warn!(path = %path.display(), error = %e, "could not narrow to the owner alone");
            }
        }
    }
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

#[cfg(test)]
mod tests;
