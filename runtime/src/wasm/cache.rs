//! Compiled code on disk, keyed by the wasm's content hash and the engine's settings, so that a restart, a
//! second deployment of the same script or another host sharing the cache skips compilation (seconds for
//! a Python component, a minute and 2 GB for the scientific interpreter). Entry-script components and the
//! interpreter's core module go through the same cache; only how each compiles and loads differs
//! ([`Code`]).

use std::fs::File;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::{Error, Result};

/// Code that wasmtime compiles ahead of time and can load back from a file.
pub(crate) trait Code: Sized {
    /// What log lines call it.
    const NOUN: &'static str;
    /// wasmtime's loader for this kind of code. Calling it is unsafe: wasmtime maps the file and runs
    /// what it holds, trusting it to be its own output (see [`deserialize`], its one caller).
    const DESERIALIZE_FILE: unsafe fn(&Engine, PathBuf) -> wasmtime::Result<Self>;
    fn compile(engine: &Engine, wasm: &[u8]) -> wasmtime::Result<Self>;
    fn serialize(&self) -> wasmtime::Result<Vec<u8>>;
}

impl Code for Component {
    const NOUN: &'static str = "component";
    const DESERIALIZE_FILE: unsafe fn(&Engine, PathBuf) -> wasmtime::Result<Self> = Component::deserialize_file;

    fn compile(engine: &Engine, wasm: &[u8]) -> wasmtime::Result<Self> {
        Component::new(engine, wasm)
    }

    fn serialize(&self) -> wasmtime::Result<Vec<u8>> {
        Component::serialize(self)
    }
}

impl Code for wasmtime::Module {
    const NOUN: &'static str = "module";
    const DESERIALIZE_FILE: unsafe fn(&Engine, PathBuf) -> wasmtime::Result<Self> = wasmtime::Module::deserialize_file;

    fn compile(engine: &Engine, wasm: &[u8]) -> wasmtime::Result<Self> {
        wasmtime::Module::new(engine, wasm)
    }

    fn serialize(&self) -> wasmtime::Result<Vec<u8>> {
        wasmtime::Module::serialize(self)
    }
}

/// One folder of compiled code: `<prefix><key>.cwasm` files, each beside the `<prefix><key>.lock` that a
/// compile of its key holds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CodeCache<'a> {
    dir: &'a Path,
    prefix: &'a str,
}

/// Code from [`CodeCache::load`].
pub(crate) struct Compiled<T> {
    pub(crate) code: T,
    /// Whether it was read from the cache rather than compiled now.
    pub(crate) from_cache: bool,
    /// Its key: the SHA-256 of the wasm and the engine's settings, in hex.
    pub(crate) key: String,
}

impl<'a> CodeCache<'a> {
    pub(crate) fn new(dir: &'a Path, prefix: &'a str) -> Self {
        CodeCache { dir, prefix }
    }

    /// `wasm` compiled by `engine`: read from the cache, or compiled now and stored. `compile_err` says
    /// what a failed compile means to the caller.
    pub(crate) fn load<T: Code>(
        &self,
        engine: &Engine,
        wasm: &[u8],
        compile_err: impl FnOnce(wasmtime::Error) -> Error,
    ) -> Result<Compiled<T>> {
        self.load_or(&[], engine, wasm, || {}, compile_err)
    }

    /// As [`load`](Self::load), reading `also` (other caches of the same code, say a machine-wide one)
    /// before compiling; `compiling` is called just before a compile starts.
    pub(crate) fn load_or<T: Code>(
        &self,
        also: &[CodeCache<'_>],
        engine: &Engine,
        wasm: &[u8],
        compiling: impl FnOnce(),
        compile_err: impl FnOnce(wasmtime::Error) -> Error,
    ) -> Result<Compiled<T>> {
        let key = key(engine, wasm);
        let path = self.file(&key, "cwasm");
        let elsewhere = also.iter().map(|c| c.file(&key, "cwasm"));
        if let Some(code) = std::iter::once(path.clone())
            .chain(elsewhere)
            .find_map(|p| cached(engine, &p))
        {
            return Ok(Compiled {
                code,
                from_cache: true,
                key,
            });
        }
        // One compile of a key at a time on the machine: replicas or versions of one script loading
        // together, and hosts starting together on one cache, wait for the first and then load what it
        // stored, and never write the same file at once.
        let _lock = self.lock(&key);
        if let Some(code) = cached(engine, &path) {
            return Ok(Compiled {
                code,
                from_cache: true,
                key,
            });
        }
        compiling();
        let code = T::compile(engine, wasm).map_err(compile_err)?;
        store(&path, &code);
        Ok(Compiled {
            code,
            from_cache: false,
            key,
        })
    }

    fn file(&self, key: &str, extension: &str) -> PathBuf {
        self.dir.join(format!("{}{key}.{extension}", self.prefix))
    }

    /// The lock on compiling `key`, held until the returned file is dropped. Without one (a folder that
    /// cannot be written), the code is still compiled, only not shared.
    fn lock(&self, key: &str) -> Option<File> {
        let path = self.file(key, "lock");
        let locked = std::fs::create_dir_all(self.dir)
            .and_then(|()| File::create(&path))
            .and_then(|file| file.lock().map(|()| file));
        match locked {
            Ok(file) => Some(file),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "compiling without the cache's lock");
                None
            }
        }
    }
}

/// The key of `wasm` compiled by `engine`.
fn key(engine: &Engine, wasm: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(wasm);
    let mut settings = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut settings);
    h.update(settings.finish().to_le_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The compiled code at `path`, if there is a usable one.
fn cached<T: Code>(engine: &Engine, path: &Path) -> Option<T> {
    if !path.is_file() {
        return None;
    }
    match deserialize(engine, path) {
        Ok(code) => Some(code),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "ignoring unusable compiled {}", T::NOUN);
            None
        }
    }
}

#[allow(unsafe_code)]
fn deserialize<T: Code>(engine: &Engine, path: &Path) -> wasmtime::Result<T> {
    // SAFETY: the file was written by `store` below from `T::serialize` of an engine with the same
    // compatibility hash (part of the file name), into a cache folder owned by this host; wasmtime also
    // checks the header and the engine's settings before using it.
    unsafe { (T::DESERIALIZE_FILE)(engine, path.to_path_buf()) }
}

/// Writes `code` to `path`; a failure costs only a later compile, so it is logged, not returned.
fn store<T: Code>(path: &Path, code: &T) {
    let bytes = match code.serialize() {
        Ok(bytes) => bytes,
        Err(e) => {
            tracing::warn!(error = %e, "could not serialize the compiled {}", T::NOUN);
            return;
        }
    };
    // Written under a name of its own, then renamed: a crash or a concurrent writer never leaves a
    // half-written file under the final name.
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let tmp = path.with_extension(format!(
        "tmp{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let written = std::fs::write(&tmp, &bytes).and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        tracing::warn!(path = %path.display(), error = %e, "could not cache the compiled {}", T::NOUN);
    }
}
