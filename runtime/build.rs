//! Lists Plinth's Python modules for the scientific runtime (`python/science/`, and the modules it shares
//! with the componentize-py SDK in `plugins/sdk-python/`), so that the binary carries them
//! (`include_str!`) and needs no files beside it.

use std::path::{Path, PathBuf};

/// The SDK's modules that the scientific runtime's `plinth` imports as they are: one source, so a change
/// reaches both runtimes.
const SHARED: &[&str] = &["_plinth_tensors.py"];

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest.join("python").join("science");
    println!("cargo:rerun-if-changed={}", root.display());
    let mut files = Vec::new();
    walk(&root, &root, &mut files);
    let sdk = manifest.join("..").join("plugins").join("sdk-python");
    for name in SHARED {
        assert!(
            files.iter().all(|(rel, _)| rel != name),
            "python/science/{name} would hide the SDK's shared {name}"
        );
        files.push((name.to_string(), sdk.join(name)));
    }
    files.sort();
    let mut out = String::from("&[\n");
    for (rel, abs) in &files {
        println!("cargo:rerun-if-changed={}", abs.display());
        out.push_str(&format!(
            "    ({rel:?}, include_str!({:?})),\n",
            abs.display().to_string()
        ));
    }
    out.push_str("]\n");
    let dest = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("science_lib.rs");
    std::fs::write(dest, out).unwrap();
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.is_dir() {
            if e.file_name() != "__pycache__" {
                println!("cargo:rerun-if-changed={}", path.display());
                walk(root, &path, out);
            }
        } else if path.extension().is_some_and(|x| x == "py") {
            let rel = path.strip_prefix(root).unwrap().to_string_lossy().replace('\\', "/");
            out.push((rel, path));
        }
    }
}
