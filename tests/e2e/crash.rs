//! The host stopped under load, the hard way and the soft way: `kill -9` during a deploy loses nothing
//! (services, keys, the database, blobs), SIGTERM with data collection on loses no record.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::json;

use crate::attack::{KEY_A, deploy_adversaries};
use crate::fixture::*;

#[test]
fn kill_9_during_a_deploy_and_under_load_loses_nothing() {
    let dir = temp_dir("kill9");
    let mut host = TestHost::start(&dir.join("ws"), &[]);
    host.register_diabetes();
    host.deploy("diabetes:1", "ridge", &Dc::test().keys(KEY_A).write(&dir, "ridge.json"));
    let dc = Dc::test().no_auth();
    deploy_adversaries(&host, &dir, &dc);

    // Load on ridge, and a deploy (Python: compile-cache lookup, load, init) under way: then SIGKILL.
    let served = Arc::new(AtomicU64::new(0));
    let load = {
        let (url, served) = (host.url.clone(), served.clone());
        std::thread::spawn(move || {
            let mut c = KeepAlive::connect(&url);
            let auth = format!("Bearer {KEY_A}");
            // Until the host dies: the client sees the connection drop.
            while let Ok(r) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                c.post(
                    "/api/v1/service/ridge/score",
                    &[("authorization", &auth)],
                    sample_body().as_bytes(),
                )
            })) {
                assert_eq!(r.status, 200);
                served.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let ic = dir.join("ic-pyadv.json");
    let deploy = host
        .cli()
        .args(["deploy", "-n", "midway", "--ic"])
        .arg(&ic)
        .arg("--dc")
        .arg(dir.join("dc-pyadv.json"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for(
        "the deploy to reach the host under load",
        Duration::from_secs(60),
        || {
            let list = host.run_json(&["service", "list"]);
            let known = list.as_array().is_some_and(|l| l.iter().any(|s| s["name"] == "midway"));
            match served.load(Ordering::Relaxed) {
                n if known && n > 0 => Ok(()),
                n => Err(format!("{n} requests served; services {list}")),
            }
        },
    );
    host.crash();
    load.join().unwrap();
    let served = served.load(Ordering::Relaxed);
    eprintln!("figure: kill -9 after {served} requests under load and a deploy under way");
    assert!(served > 0);
    let mut deploy = deploy;
    let _ = deploy.wait();

    // Restart: every service back with the same keys, the database whole, no half-written leftovers.
    let host = TestHost::start(&dir.join("ws"), &[]);
    // While deployments load, a request for one gets a 503 to retry, never a 404.
    let r = score(&host.score_url("pyadv"), None, "hello");
    assert!(r.status == 200 || r.status == 503, "{} {}", r.status, r.body);
    host.wait_ready();
    let r = score(&host.score_url("ridge"), Some(KEY_A), &sample_body());
    assert_eq!(r.status, 200, "{}", r.body);
    for s in ["adv", "pyadv"] {
        assert_eq!(score(&host.score_url(s), None, "hello").status, 200, "{s}");
    }
    let check = std::process::Command::new("python3")
        .args([
            "-c",
            "import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute('pragma integrity_check').fetchone()[0])",
        ])
        .arg(dir.join("ws/plinth.db"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&check.stdout).trim(), "ok");
    let leftovers: Vec<_> = std::fs::read_dir(dir.join("ws/blobs/sha256"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // The deploy cut off midway either landed whole or can simply be run again.
    host.deploy_script("midway", &ic, &dir.join("dc-pyadv.json"));
    assert_eq!(score(&host.score_url("midway"), None, "hello").status, 200);
}

#[test]
fn sigterm_under_load_with_data_collection_loses_no_record() {
    let dir = temp_dir("termload");
    let mut host = TestHost::start(&dir.join("ws"), &[]);
    host.register_diabetes();
    let dc = Dc::test()
        .no_auth()
        .replicas(2)
        .with("dataCollection", json!({"storageEnabled": true}));
    host.deploy("diabetes:1", "ridge", &dc.write(&dir, "dc.json"));
    let answered = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (url, answered) = (host.url.clone(), answered.clone());
            std::thread::spawn(move || {
                let mut c = KeepAlive::connect(&url);
                // Until the host goes: every 200 answered counts.
                while let Ok(r) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    c.post("/api/v1/service/ridge/score", &[], sample_body().as_bytes())
                })) {
                    assert_eq!(r.status, 200);
                    answered.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    wait_for(
        "50 requests answered under load",
        Duration::from_secs(60),
        || match answered.load(Ordering::Relaxed) {
            n if n > 50 => Ok(()),
            n => Err(format!("{n} answered")),
        },
    );
    let status = host.stop();
    assert!(status.success(), "{status}");
    for c in clients {
        c.join().unwrap();
    }
    let answered = answered.load(Ordering::Relaxed);
    assert!(answered > 50, "only {answered} answered");
    eprintln!("figure: SIGTERM under load: {answered} answered, as many records");
    let root = dir.join("ws/modeldata/ridge/diabetes/1");
    for kind in ["inputs", "predictions"] {
        let records: usize = crate::observe::walk(&root.join(kind))
            .iter()
            .map(|f| std::fs::read_to_string(f).unwrap().lines().count())
            .sum();
        assert_eq!(records as u64, answered, "{kind}: every answered request recorded");
    }
}
