//! What an interpreter sees of the host: a private writable `/` and `/tmp` of its own (removed with the
//! instance), the standard library, Plinth's Python modules, the script's folder and the model files
//! read-only, and an environment of a few fixed variables. Nothing else: no other folder, no network.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use crate::wasm::call::{LogPipe, MODEL_DIR};
use crate::{Error, Result};

/// Where the script's own folder appears in the sandbox.
pub const APP_DIR: &str = "/app";
/// Where Plinth's Python modules (the driver, `plinth`, Azure's helpers) appear.
pub(super) const LIB_DIR: &str = "/plinth";

/// The folder under which instances' private folders are made.
pub(super) struct Scratch(PathBuf);

impl Scratch {
    /// `root/tmp`, rid of the folders of instances whose host was killed: their process is gone, or the
    /// pid now belongs to this process (a restarted container's pid 1) under another start token.
    pub(super) fn new(root: &Path) -> Result<Scratch> {
        let scratch = root.join("tmp");
        std::fs::create_dir_all(&scratch).map_err(|e| Error::io(&scratch, e))?;
        let token = start_token();
        for entry in std::fs::read_dir(&scratch).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let mut parts = name.split('-');
            let pid = parts.next().and_then(|p| p.parse::<u32>().ok());
            let theirs = parts.next().unwrap_or_default();
            let gone = pid.is_some_and(|pid| {
                if pid == std::process::id() {
                    theirs != token
                } else {
                    !Path::new(&format!("/proc/{pid}")).exists()
                }
            });
            if gone {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        Ok(Scratch(scratch))
    }
}

/// The host folders one script's instances see.
pub(super) struct Folders<'a> {
    pub(super) scratch: &'a Scratch,
    pub(super) stdlib: &'a Path,
    pub(super) lib: &'a Path,
    pub(super) app: &'a Path,
    pub(super) models: Option<&'a Path>,
}

/// A private folder removed with its instance.
pub(super) struct TempDir(PathBuf);

impl TempDir {
    pub(super) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fresh sandbox for one instance of `script`: its WASI context (stdout and stderr into `stdio`) and
/// the private folder behind its `/` and `/tmp`.
pub(super) fn sandbox(script: &str, folders: &Folders<'_>, stdio: &LogPipe) -> Result<(WasiP1Ctx, TempDir)> {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let path = folders.scratch.0.join(format!(
        "{}-{}-{}",
        std::process::id(),
        start_token(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    // A fresh folder or none: never one that another instance (or a crashed host) left.
    std::fs::create_dir(&path).map_err(|e| Error::io(&path, e))?;
    let tmp = TempDir(path);
    std::fs::create_dir_all(tmp.0.join("tmp")).map_err(|e| Error::io(&tmp.0, e))?;
    std::fs::create_dir_all(tmp.0.join("usr/local/lib")).map_err(|e| Error::io(&tmp.0, e))?;
    let mut wasi = WasiCtxBuilder::new();
    wasi.stdout(stdio.clone())
        .stderr(stdio.clone())
        .allow_blocking_current_thread(true)
        .args(&["/usr/local/bin/python.wasm"])
        .env("TMPDIR", "/tmp")
        .env("HOME", "/tmp")
        .env("PYTHONTZPATH", "");
    let dir = |w: &mut WasiCtxBuilder, host: &Path, guest: &str, writable: bool| {
        let perms = match writable {
            true => FsPerms::ReadWrite,
            false => FsPerms::ReadOnly,
        };
        w.preopened_dir(host, guest, perms)
            .map(drop)
            .map_err(|source| Error::ScriptLoad {
                script: script.to_string(),
                message: format!("{} as {guest}", host.display()),
                source: Some(source),
            })
    };
    dir(&mut wasi, &tmp.0, "/", true)?;
    dir(&mut wasi, &tmp.0.join("tmp"), "/tmp", true)?;
    dir(&mut wasi, folders.stdlib, "/usr/local/lib", false)?;
    dir(&mut wasi, folders.lib, LIB_DIR, false)?;
    dir(&mut wasi, folders.app, APP_DIR, false)?;
    if let Some(models) = folders.models {
        dir(&mut wasi, models, MODEL_DIR, false)?;
        wasi.env("AZUREML_MODEL_DIR", MODEL_DIR);
    }
    Ok((wasi.build_p1(), tmp))
}

/// A token for this process's start (its start time in nanoseconds), telling its folders apart from those
/// of an earlier process that had the same pid.
pub(super) fn start_token() -> &'static str {
    static TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TOKEN.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        format!("{nanos:x}")
    })
}
