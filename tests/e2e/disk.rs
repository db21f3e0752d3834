//! Bounded disks and no silent data loss: model data collection on a disk that fills up under load.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use crate::fixture::{Dc, KeepAlive, TestHost, curl, sample_body, temp_dir, wait_for};

/// A small tmpfs mounted at a folder for the test's life (root only); unmounted when dropped.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(at: &Path, size: &str) -> Option<SmallDisk> {
        std::fs::create_dir_all(at).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| SmallDisk(at.to_path_buf()))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazily: the host may still hold a file open.
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn metric(metrics: &str, name: &str, labels: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(name) && labels.split(',').all(|x| l.contains(x)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Every `data.jsonl` under `dir`, with its lines.
fn jsonl_files(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().is_some_and(|n| n == "data.jsonl") {
                out.push((p.clone(), std::fs::read_to_string(&p).unwrap()));
            }
        }
    }
    out
}

#[test]
fn collection_on_a_full_disk_counts_every_lost_record_and_leaves_no_torn_line() {
    let dir = temp_dir("full-disk");
    let ws = dir.join("ws");
    // The collected data's own disk: room for a few hundred records, not 500.
    let Some(_disk) = SmallDisk::mount(&ws.join("modeldata"), "192k") else {
        eprintln!("SKIPPED: mounting a small tmpfs needs root; the full-disk behaviour was NOT tested");
        return;
    };
    let host = TestHost::start(&ws, &["--open-metrics"]);
    host.register_diabetes();
    let dc = Dc::test()
        .no_auth()
        .with("dataCollection", json!({"storageEnabled": true, "sampleRate": 1.0}))
        .write(&dir, "dc.json");
    host.deploy("diabetes:1", "full", &dc);
    host.wait_ready();
    let body = sample_body();
    let mut conn = KeepAlive::connect(&host.url);
    for i in 0..500 {
        let r = conn.post("/api/v1/service/full/score", &[], body.as_bytes());
        assert_eq!(r.status, 200, "request {i}: scoring goes on when the disk is full");
    }
    // Every record accounted for: written, or counted as not written.
    let (written, failed) = wait_for("every record written or counted", Duration::from_secs(20), || {
        let m = curl(&format!("{}/metrics", host.url), &[]).body;
        let written = metric(&m, "plinth_collected_records_total", "service=\"full\"");
        let failed = metric(
            &m,
            "plinth_collection_dropped_total",
            "service=\"full\",reason=\"write_failed\"",
        );
        if written + failed == 500.0 {
            Ok((written, failed))
        } else {
            Err(format!("{written} written + {failed} failed"))
        }
    });
    assert!(
        failed > 0.0 && written > 0.0,
        "{written} written, {failed} failed: the disk did fill"
    );
    // Whole lines only, and an input for every prediction.
    let files = jsonl_files(&ws.join("modeldata"));
    assert_eq!(files.len(), 2, "{:?}", files.iter().map(|f| &f.0).collect::<Vec<_>>());
    for (path, text) in &files {
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "{}: a torn last line",
            path.display()
        );
        for line in text.lines() {
            let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{}: {e}: {line}", path.display()));
            assert!(v["request_id"].is_string());
        }
        assert_eq!(text.lines().count() as f64, written, "{}", path.display());
    }
    let logs = host.run(&["service", "logs", "full"]);
    assert!(!logs.contains("panicked"), "{logs}");
}

#[test]
fn a_workspace_is_its_owners_alone_and_a_deleted_models_files_go() {
    let dir = temp_dir("ws-modes");
    let ws = dir.join("ws");
    let host = TestHost::start(&ws, &[]);
    host.register_diabetes();
    let dc = Dc::test()
        .with("dataCollection", json!({"storageEnabled": true, "sampleRate": 1.0}))
        .write(&dir, "dc.json");
    host.deploy("diabetes:1", "owned", &dc);
    host.wait_ready();
    let (key, _) = host.keys("owned");
    for _ in 0..3 {
        assert_eq!(
            crate::fixture::score(&host.score_url("owned"), Some(&key), &sample_body()).status,
            200
        );
    }
    wait_for("the records collected", Duration::from_secs(10), || {
        let files = jsonl_files(&ws.join("modeldata"));
        match files.iter().map(|(_, t)| t.lines().count()).sum::<usize>() {
            6 => Ok(()),
            n => Err(format!("{n} lines")),
        }
    });
    // Everything the host made: folders 0700, files 0600 (this test runs with the usual umask 022).
    use std::os::unix::fs::PermissionsExt;
    let mut stack = vec![ws.clone()];
    let mut seen = 0;
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let meta = e.metadata().unwrap();
            let mode = meta.permissions().mode() & 0o777;
            if meta.is_dir() {
                assert_eq!(mode & 0o077, 0, "{} is {mode:o}", e.path().display());
                stack.push(e.path());
            } else {
                assert_eq!(mode & 0o077, 0, "{} is {mode:o}", e.path().display());
            }
            seen += 1;
        }
    }
    assert!(seen > 10, "{seen} entries");
    // A deleted model's files go from the blob store (once no service uses it).
    let blobs = || std::fs::read_dir(ws.join("blobs/sha256")).unwrap().count();
    assert_eq!(blobs(), 1);
    host.run(&["service", "delete", "owned"]);
    host.run(&["model", "delete", "diabetes:1"]);
    assert_eq!(blobs(), 0, "the model's file is collected");
}

#[test]
fn a_script_that_fills_its_tmp_meets_a_full_disk_of_its_own() {
    let dir = temp_dir("tmp-fill");
    let host = TestHost::start(&dir.join("ws"), &[]);
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(
        src.join("score.py"),
        "import json\nimport numpy as np\n\n\ndef init():\n    pass\n\n\ndef run(raw):\n    \
         if json.loads(raw).get('small'):\n        np.save('/tmp/small.npy', np.zeros(1000))\n        \
         return 'saved'\n    with open('/tmp/fill', 'wb') as f:\n        while True:\n            \
         f.write(np.zeros(1 << 20, dtype=np.uint8).tobytes())\n",
    )
    .unwrap();
    let ic = crate::fixture::write_json(&dir, "ic.json", &json!({"entryScript": "src/score.py"}));
    let dc = Dc::test()
        .no_auth()
        .with("scriptTmpMb", json!(8))
        .write(&dir, "dc.json");
    host.deploy_script("filler", &ic, &dc);
    let url = host.score_url("filler");
    let r = crate::fixture::score(&url, None, r#"{"small": true}"#);
    assert_eq!((r.status, r.body.as_str()), (200, r#""saved""#));
    // The endless writer meets a full disk of its own: a 500 naming the cap, not a full host disk.
    for _ in 0..2 {
        let r = crate::fixture::score(&url, None, "{}");
        assert_eq!(r.status, 500, "{}", r.body);
        assert!(
            r.body.contains("No space left on device") && r.body.contains("at most 8 MiB: scriptTmpMb"),
            "{}",
            r.body
        );
    }
    // What this host's interpreters hold on disk stays under the cap (each folder is one interpreter's).
    let scratch = crate::fixture::cache_dir().join("components/science/tmp");
    let mut folders = 0;
    for e in std::fs::read_dir(&scratch).unwrap().flatten() {
        if !e.file_name().to_string_lossy().starts_with(&format!("{}-", host.pid())) {
            continue;
        }
        folders += 1;
        let out = std::process::Command::new("du")
            .arg("-sb")
            .arg(e.path())
            .output()
            .unwrap();
        let bytes: u64 = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(u64::MAX);
        assert!(bytes <= 8 << 20, "{} holds {bytes} bytes", e.path().display());
    }
    assert!(
        folders > 0,
        "no interpreter folder of pid {} under {}",
        host.pid(),
        scratch.display()
    );
    // The script still serves what fits.
    let r = crate::fixture::score(&url, None, r#"{"small": true}"#);
    assert_eq!(r.status, 200, "{}", r.body);
}
