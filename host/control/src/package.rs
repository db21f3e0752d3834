//! Packages: one version of a service as a single tarball addressed by its sha256, so it can move from an
//! edge host to a cluster unchanged (`plinth service export`, `plinth package fetch`, the declarative
//! `plinth serve --service-manifest`).
//!
//! A package is an uncompressed tar holding `plinth-package.json` ([`PackageManifest`]: the models, the
//! source files and entry script, both Azure configs) and each file's bytes once, at
//! `blobs/sha256/<hex>`, as the workspace keeps them. Headers carry no time, owner or mode of their own,
//! so the same content always makes the same bytes and the same address.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use plinth_spec::manifest::{FORMAT, MANIFEST_ENTRY, PackageManifest, is_sha256, redact};
use plinth_spec::record::{ServiceRecord, VersionRecord, check_relative, hex};
use sha2::{Digest, Sha256};

use crate::store::Workspace;
use crate::{Error, Result};

/// The most a manifest entry may hold.
const MAX_MANIFEST_BYTES: u64 = 16 << 20;

/// Writes one version of `service` as a package into `dir`, named `<sha256>.tar`; returns its sha256 and
/// path. The file appears whole or not at all.
pub fn write(
    ws: &Workspace,
    service: &ServiceRecord,
    version: &VersionRecord,
    dir: &Path,
) -> Result<(String, PathBuf)> {
    let models = version
        .models
        .iter()
        .map(|id| ws.model(id))
        .collect::<Result<Vec<_>>>()?;
    let manifest = PackageManifest {
        format: FORMAT.into(),
        service: service.name.clone(),
        version: version.name.clone(),
        models,
        source: version.source.clone(),
        entry_script: version.entry_script.clone(),
        inference_config: serde_json::to_value(&version.inference_config).map_err(Error::Corrupt)?,
        deployment_config: {
            let mut dc = serde_json::to_value(&version.deployment_config).map_err(Error::Corrupt)?;
            redact(&mut dc);
            dc
        },
    };
    let blobs: BTreeSet<&str> = manifest
        .models
        .iter()
        .flat_map(|m| m.files.iter())
        .chain(manifest.source.iter())
        .map(|f| f.sha256.as_str())
        .collect();
    std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
    let tmp = dir.join(format!(".{}-{}.tar.part", service.name, std::process::id()));
    let file = std::fs::File::create(&tmp).map_err(Error::io(&tmp))?;
    let mut out = HashingWriter {
        inner: std::io::BufWriter::with_capacity(1 << 20, file),
        hasher: Sha256::new(),
    };
    let result = (|| -> std::io::Result<()> {
        let mut tar = tar::Builder::new(&mut out);
        let json = serde_json::to_vec_pretty(&manifest).map_err(std::io::Error::other)?;
        tar.append(&header(MANIFEST_ENTRY, json.len() as u64)?, json.as_slice())?;
        for sha in &blobs {
            let path = ws.blob_path(sha).map_err(std::io::Error::other)?;
            let f = std::fs::File::open(&path)?;
            let len = f.metadata()?.len();
            tar.append(&header(&format!("blobs/sha256/{sha}"), len)?, f)?;
        }
        tar.finish()
    })();
    if let Err(e) = result.and_then(|()| out.inner.flush()) {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(&tmp)(e));
    }
    let sha = hex(&out.hasher.finalize());
    let path = dir.join(format!("{sha}.tar"));
    std::fs::rename(&tmp, &path).map_err(Error::io(&path))?;
    Ok((sha, path))
}

/// A tar header with nothing but the path and size (mode 0644, owner 0, time 0).
fn header(path: &str, size: u64) -> std::io::Result<tar::Header> {
    let mut h = tar::Header::new_ustar();
    h.set_path(path)?;
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    Ok(h)
}

struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The sha256 of a file, read in 1 MiB pieces.
pub fn file_sha256(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(Error::io(path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(Error::io(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// Checks that the package at `path` hashes to `sha256`, then stores its files in the workspace's blob
/// store (each checked against its own hash) and returns its manifest.
pub fn import(ws: &Workspace, path: &Path, sha256: &str) -> Result<PackageManifest> {
    let actual = file_sha256(path)?;
    if actual != sha256 {
        return Err(Error::BadRequest(format!(
            "package {}: its sha256 is {actual}, not the {sha256} asked for",
            path.display()
        )));
    }
    let bad = |why: String| Error::BadRequest(format!("package {}: {why}", path.display()));
    let file = std::fs::File::open(path).map_err(Error::io(path))?;
    let mut archive = tar::Archive::new(std::io::BufReader::with_capacity(1 << 20, file));
    let mut manifest: Option<PackageManifest> = None;
    let mut stored = BTreeSet::new();
    for entry in archive.entries().map_err(|e| bad(format!("not a tar archive: {e}")))? {
        let mut entry = entry.map_err(|e| bad(format!("unreadable entry: {e}")))?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            return Err(bad("holds something other than plain files".into()));
        }
        let name = entry
            .path()
            .map_err(|e| bad(format!("bad entry name: {e}")))?
            .to_string_lossy()
            .into_owned();
        if name == MANIFEST_ENTRY {
            if entry.size() > MAX_MANIFEST_BYTES {
                return Err(bad(format!("{MANIFEST_ENTRY} is larger than 16 MiB")));
            }
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).map_err(Error::io(path))?;
            let m: PackageManifest =
                serde_json::from_slice(&bytes).map_err(|e| bad(format!("{MANIFEST_ENTRY}: {e}")))?;
            if m.format != FORMAT {
                return Err(bad(format!("format '{}' is not {FORMAT}", m.format)));
            }
            manifest = Some(m);
        } else if let Some(sha) = name.strip_prefix("blobs/sha256/").filter(|s| is_sha256(s)) {
            if !ws.has_blob(sha)? {
                let mut w = ws.blob_writer(sha)?;
                let mut buf = vec![0u8; 1 << 20];
                loop {
                    let n = entry.read(&mut buf).map_err(Error::io(path))?;
                    if n == 0 {
                        break;
                    }
                    w.write(&buf[..n])?;
                }
                w.finish().map_err(|e| bad(format!("{name}: {e}")))?;
            }
            stored.insert(sha.to_string());
        } else {
            return Err(bad(format!("unexpected entry '{name}'")));
        }
    }
    let manifest = manifest.ok_or_else(|| bad(format!("no {MANIFEST_ENTRY}")))?;
    for f in manifest
        .models
        .iter()
        .flat_map(|m| m.files.iter())
        .chain(&manifest.source)
    {
        check_relative(&f.path)?;
        if !stored.contains(&f.sha256) {
            return Err(bad(format!("file {} (blob {}) is missing", f.path, f.sha256)));
        }
    }
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use plinth_spec::record::FileRef;

    use super::*;

    fn workspace() -> (tempdir::Dir, Workspace) {
        let dir = tempdir::Dir::new();
        let ws = Workspace::open(&dir.0).unwrap();
        (dir, ws)
    }

    mod tempdir {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Self {
                static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
                let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let p = std::env::temp_dir().join(format!("plinth-package-test-{}-{n}", std::process::id()));
                let _ = std::fs::remove_dir_all(&p);
                std::fs::create_dir_all(&p).unwrap();
                Dir(p)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    fn put(ws: &Workspace, path: &str, bytes: &[u8]) -> FileRef {
        let sha = hex(&Sha256::digest(bytes));
        ws.put_blob(&sha, bytes).unwrap();
        FileRef {
            path: path.into(),
            sha256: sha,
            size: bytes.len() as u64,
        }
    }

    fn service(ws: &Workspace) -> ServiceRecord {
        let model = put(ws, "model.onnx", b"not really onnx");
        let m = ws.register_model("m", None, BTreeMap::new(), vec![model]).unwrap();
        let script = put(ws, "score.py", b"def init(): pass\ndef run(x): return x\n");
        let mut dc = plinth_spec::config::DeploymentConfig::default();
        dc.keys.primary_key = Some("a-secret-key-of-the-edge".into());
        let v = VersionRecord::new(
            "blue",
            vec![m.id()],
            Default::default(),
            dc,
            vec![script],
            Some("score.py".into()),
        );
        ServiceRecord {
            name: "svc".into(),
            versions: vec![v],
            auth_enabled: true,
            token_auth_enabled: false,
            primary_key: "p".into(),
            secondary_key: "s".into(),
            token_secret: String::new(),
            created: 0,
            updated: 0,
            events: vec![],
        }
    }

    #[test]
    fn a_package_round_trips_and_is_addressed_by_its_content() {
        let (_d, ws) = workspace();
        let svc = service(&ws);
        let out = tempdir::Dir::new();
        let (sha, path) = write(&ws, &svc, &svc.versions[0], &out.0).unwrap();
        assert_eq!(path.file_name().unwrap().to_string_lossy(), format!("{sha}.tar"));
        assert_eq!(file_sha256(&path).unwrap(), sha);
        // The same content makes the same bytes.
        let again = tempdir::Dir::new();
        let (sha2, _) = write(&ws, &svc, &svc.versions[0], &again.0).unwrap();
        assert_eq!(sha, sha2);
        let bytes = std::fs::read(&path).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains("primaryKey") && !text.contains("a-secret-key-of-the-edge"),
            "keys stay out"
        );
        let (_d2, other) = workspace();
        let m = import(&other, &path, &sha).unwrap();
        assert_eq!(m.version, "blue");
        assert_eq!(m.entry_script.as_deref(), Some("score.py"));
        assert_eq!(m.models[0].files[0].path, "model.onnx");
        assert!(other.has_blob(&m.models[0].files[0].sha256).unwrap());
        assert!(other.has_blob(&m.source[0].sha256).unwrap());
    }

    #[test]
    fn a_package_with_another_hash_or_a_stray_entry_is_refused() {
        let (_d, ws) = workspace();
        let svc = service(&ws);
        let out = tempdir::Dir::new();
        let (sha, path) = write(&ws, &svc, &svc.versions[0], &out.0).unwrap();
        let wrong = "0".repeat(64);
        let e = import(&ws, &path, &wrong).unwrap_err().to_string();
        assert!(e.contains(&format!("its sha256 is {sha}, not the {wrong}")), "{e}");
        // A tar with an entry outside the format.
        let stray = out.0.join("stray.tar");
        let mut b = tar::Builder::new(std::fs::File::create(&stray).unwrap());
        b.append(&header("etc/passwd", 1).unwrap(), &b"x"[..]).unwrap();
        b.finish().unwrap();
        drop(b);
        let sha = file_sha256(&stray).unwrap();
        let e = import(&ws, &stray, &sha).unwrap_err().to_string();
        assert!(e.contains("unexpected entry 'etc/passwd'"), "{e}");
    }
}
