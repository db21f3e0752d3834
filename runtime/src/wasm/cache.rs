//! Compiled components on disk, keyed by the component's content hash and the engine's settings, so a
//! restart or a second deployment of the same script skips compilation (seconds for a Python script).

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::{Error, Result};

/// Where a component with these bytes, compiled by this engine, is cached.
pub(crate) fn cache_path(dir: &Path, engine: &Engine, wasm: &[u8]) -> PathBuf {
    let mut h = Sha256::new();
    h.update(wasm);
    let mut settings = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut settings);
    h.update(settings.finish().to_le_bytes());
    let digest = h.finalize();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    dir.join(format!("{hex}.cwasm"))
}

/// Returns the compiled component and whether it came from the cache.
pub(crate) fn load(engine: &Engine, cache_dir: Option<&Path>, script: &str, wasm: &[u8]) -> Result<(Component, bool)> {
    let compile = || {
        Component::new(engine, wasm).map_err(|e| Error::ScriptLoad {
            script: script.to_string(),
            message: format!("not a valid component: {e:#}"),
        })
    };
    let Some(dir) = cache_dir else {
        return Ok((compile()?, false));
    };
    let path = cache_path(dir, engine, wasm);
    if let Some(component) = cached(engine, &path) {
        return Ok((component, true));
    }
    // One compile at a time in this process: replicas or versions of one script loading together
    // compile it once (the others find it cached), and never write the same cache file at once.
    static COMPILING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = COMPILING.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(component) = cached(engine, &path) {
        return Ok((component, true));
    }
    let component = compile()?;
    if let Err(e) = store(dir, &path, &component) {
        tracing::warn!(path = %path.display(), error = %e, "could not cache compiled component");
    }
    Ok((component, false))
}

/// The compiled component at `path`, if there is a usable one.
fn cached(engine: &Engine, path: &Path) -> Option<Component> {
    if !path.is_file() {
        return None;
    }
    match deserialize(engine, path) {
        Ok(component) => Some(component),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "ignoring unusable compiled component");
            None
        }
    }
}

#[allow(unsafe_code)]
fn deserialize(engine: &Engine, path: &Path) -> wasmtime::Result<Component> {
    // SAFETY: the file was written by `store` below from `Component::serialize` of an engine with the same
    // compatibility hash (part of the file name), into a cache directory owned by this host; wasmtime also
    // checks the header and engine settings before using it.
    unsafe { Component::deserialize_file(engine, path) }
}

fn store(dir: &Path, path: &Path, component: &Component) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let bytes = component
        .serialize()
        .map_err(|e| Error::Config(format!("serializing component: {e:#}")))?;
    // Write then rename, so a crash or a concurrent writer never leaves a half-written file under the final name.
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, &bytes).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}
