//! Volumes as the kubelet lays them out: emptyDirs as folders, ConfigMaps and Secrets as read-only files.

use super::*;

impl Pod {
    /// Writes volume `name` as the kubelet does: an emptyDir is an empty folder, writable by all and owned by
    /// the pod's fsGroup; a ConfigMap or Secret is its keys as files (the volume's defaultMode, or an item's
    /// mode, plus group read for the fsGroup) in a `..TIMESTAMP` folder, `..data` a link to it swapped by a
    /// rename, and each key a link through `..data`.
    pub(super) fn lay_out(&self, name: &str) {
        let v = &self.volumes[name];
        let fs_group = self.spec["securityContext"]["fsGroup"].as_u64().map(|g| g as u32);
        // The kubelet's ownership for an fsGroup: the group, its read (and, on a writable volume, write)
        // bits, and setgid on folders so what is made in them stays the group's.
        let own = |p: &Path, mode: u32, writable: bool| {
            let Some(g) = fs_group else {
                std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
                return;
            };
            std::os::unix::fs::lchown(p, None, Some(g)).unwrap();
            let mut mode = mode | if writable { 0o660 } else { 0o440 };
            if p.is_dir() {
                mode |= 0o2110;
            }
            std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
        };
        let Source::Projected {
            kind,
            name: object_name,
            spec,
        } = &v.source
        else {
            own(&v.host, 0o777, true);
            return;
        };
        let data = match self.object(kind, object_name) {
            Some(object) => payload(object),
            None if spec["optional"] == true => BTreeMap::new(),
            None => panic!("volume {name}: {kind} {object_name} is neither rendered nor given to the pod"),
        };
        let default_mode = spec["defaultMode"].as_u64().unwrap_or(0o644) as u32;
        // (path in the volume, bytes, mode)
        let files: Vec<(String, Vec<u8>, u32)> = match spec["items"].as_array() {
            Some(items) => items
                .iter()
                .map(|i| {
                    let key = i["key"].as_str().unwrap();
                    let bytes = data
                        .get(key)
                        .unwrap_or_else(|| panic!("volume {name}: {kind} {object_name} has no key {key}"))
                        .clone();
                    let mode = i["mode"].as_u64().map_or(default_mode, |m| m as u32);
                    (i["path"].as_str().unwrap().to_string(), bytes, mode)
                })
                .collect(),
            None => data.into_iter().map(|(k, b)| (k, b, default_mode)).collect(),
        };
        own(&v.host, 0o777, false);
        let stamp = format!(
            "..{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        );
        let fresh = v.host.join(&stamp);
        std::fs::create_dir(&fresh).unwrap();
        for (path, bytes, mode) in &files {
            let file = fresh.join(path);
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(&file, bytes).unwrap();
            own(&file, *mode, false);
        }
        own(&fresh, 0o755, false);
        let old = std::fs::read_link(v.host.join("..data")).ok();
        let tmp = v.host.join("..data_tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&stamp, &tmp).unwrap();
        std::fs::rename(&tmp, v.host.join("..data")).unwrap();
        let top: Vec<String> = files
            .iter()
            .map(|(p, _, _)| p.split('/').next().unwrap().to_string())
            .collect();
        for t in &top {
            let link = v.host.join(t);
            if std::fs::symlink_metadata(&link).is_err() {
                std::os::unix::fs::symlink(Path::new("..data").join(t), &link).unwrap();
            }
        }
        for entry in std::fs::read_dir(&v.host).unwrap().flatten() {
            let n = entry.file_name().to_string_lossy().into_owned();
            if !n.starts_with("..") && !top.contains(&n) {
                std::fs::remove_file(entry.path()).unwrap();
            }
        }
        if let Some(old) = old {
            std::fs::remove_dir_all(v.host.join(old)).unwrap();
        }
    }
}

pub(super) fn source_of(volume: &Value) -> Source {
    let name = volume["name"].as_str().unwrap();
    let kinds: Vec<&String> = volume.as_object().unwrap().keys().filter(|k| *k != "name").collect();
    assert_eq!(kinds.len(), 1, "volume {name}: {volume}");
    let spec = &volume[kinds[0].as_str()];
    match kinds[0].as_str() {
        "emptyDir" => {
            let medium = spec["medium"].as_str().unwrap_or("");
            assert!(
                medium.is_empty(),
                "volume {name}: an emptyDir on medium {medium} is not run here"
            );
            Source::EmptyDir {
                size_limit: spec["sizeLimit"].as_str().map(quantity).map(|q| q as u64),
            }
        }
        "configMap" => Source::Projected {
            kind: "ConfigMap",
            name: spec["name"].as_str().unwrap().to_string(),
            spec: spec.clone(),
        },
        "secret" => Source::Projected {
            kind: "Secret",
            name: spec["secretName"].as_str().unwrap().to_string(),
            spec: spec.clone(),
        },
        other => panic!("volume {name}: the pod runner does not run {other} volumes: teach it ({volume})"),
    }
}

/// A ConfigMap's or Secret's keys and bytes (`data`, `binaryData`, `stringData`, as the API server merges them).
pub(super) fn payload(object: &Value) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let secret = object["kind"] == "Secret";
    for (field, base64) in [("data", secret), ("binaryData", true), ("stringData", false)] {
        for (k, v) in object[field].as_object().into_iter().flatten() {
            let text = v.as_str().unwrap();
            out.insert(
                k.clone(),
                if base64 {
                    decode_base64(text)
                } else {
                    text.as_bytes().to_vec()
                },
            );
        }
    }
    out
}

pub(super) fn decode_base64(text: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a' + 26) as u32,
            b'0'..=b'9' => (c - b'0' + 52) as u32,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {text}"),
        }
    };
    let digits: Vec<u8> = text
        .bytes()
        .filter(|c| *c != b'=' && !c.is_ascii_whitespace())
        .collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let n = chunk.iter().fold(0u32, |n, c| n << 6 | value(*c)) << (6 * (4 - chunk.len()));
        out.extend(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}
