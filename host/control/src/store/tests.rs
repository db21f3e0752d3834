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
fn unreferenced_blobs_are_collected_and_modes_narrowed_at_start() {
    let (ws, dir) = ws();
    let put = |ws: &Workspace, bytes: &[u8]| {
        let sha = hex(&Sha256::digest(bytes));
        ws.put_blob(&sha, bytes).unwrap();
        sha
    };
    let used = put(&ws, b"a model's bytes");
    let file = FileRef {
        path: "model.onnx".into(),
        sha256: used.clone(),
        size: 15,
    };
    ws.register_model("m", None, BTreeMap::new(), vec![file]).unwrap();
    // An upload whose register never came, and a blob an interrupted host left.
    let orphan = put(&ws, b"uploaded, never registered");
    let stray = hex(&Sha256::digest(b"left behind"));
    std::fs::write(dir.join("blobs/sha256").join(&stray), b"left behind").unwrap();
    // This host spares what it uploaded within the hour: a register may follow.
    assert_eq!(ws.collect_blobs().unwrap(), (1, 11));
    assert!(ws.has_blob(&orphan).unwrap() && !ws.has_blob(&stray).unwrap());
    drop(ws);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let wide = |p: &Path, mode| std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
        wide(&dir.join("admin-token"), 0o644);
        wide(&dir.join("blobs"), 0o755);
        std::fs::create_dir_all(dir.join("deployments/svc")).unwrap();
        std::fs::write(dir.join("deployments/svc/model.onnx"), b"x").unwrap();
        wide(&dir.join("deployments"), 0o755);
        wide(&dir.join("deployments/svc/model.onnx"), 0o644);
    }
    // At start, nothing is spared but what is referred to.
    let ws = Workspace::open(&dir).unwrap();
    assert!(ws.has_blob(&used).unwrap());
    assert!(
        !ws.has_blob(&orphan).unwrap(),
        "an upload never registered goes at the next start"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &str| std::fs::metadata(dir.join(p)).unwrap().permissions().mode() & 0o777;
        for (path, want) in [
            ("admin-token", 0o600),
            ("blobs", 0o700),
            ("deployments", 0o700),
            ("deployments/svc", 0o700),
            ("deployments/svc/model.onnx", 0o600),
        ] {
            assert_eq!(mode(path), want, "{path}");
        }
    }
    // A deleted model's files go with it; a fresh upload stays.
    let fresh = put(&ws, b"a fresh upload");
    ws.delete_model("m:1").unwrap();
    assert!(!ws.has_blob(&used).unwrap());
    assert!(ws.has_blob(&fresh).unwrap());
    drop(ws);
    std::fs::remove_dir_all(dir).unwrap();
}
