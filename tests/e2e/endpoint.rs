//! Controlled rollout: endpoint versions, exact traffic split, live changes, mirroring, automatic rollback.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::json;

use crate::fixture::*;
use crate::support::component;

const KEY: &str = "rollout-key-0123456789abcdef";

struct Rollout {
    host: TestHost,
    dir: std::path::PathBuf,
}

impl Rollout {
    /// A host with the adversary script beside an inference config, and "healthy"/"broken" models.
    fn new(tag: &str) -> Rollout {
        let dir = temp_dir(tag);
        let host = TestHost::start(&dir.join("ws"), &[]);
        std::fs::copy(component("adversary"), dir.join("adversary.wasm")).unwrap();
        write_json(&dir, "ic.json", &json!({"entryScript": "adversary.wasm"}));
        Dc::test().keys(KEY).replicas(2).write(&dir, "dc.json");
        for (model, file) in [("healthy", "ok.txt"), ("broken", "fail")] {
            let m = dir.join(model);
            std::fs::create_dir_all(&m).unwrap();
            std::fs::write(m.join(file), b"x").unwrap();
            host.run(&["model", "register", "--name", model, "--path", m.to_str().unwrap()]);
        }
        Rollout { host, dir }
    }

    fn file(&self, name: &str) -> String {
        self.dir.join(name).to_str().unwrap().to_string()
    }

    fn endpoint(&self, args: &[&str]) -> String {
        let mut all = vec!["endpoint"];
        all.extend(args);
        self.host.run(&all)
    }

    fn add(&self, version: &str, model: &str, settings: &[&str]) {
        let (ic, dc) = (self.file("ic.json"), self.file("dc.json"));
        let mut args = vec!["version", "add", "ep", version, "-m", model, "--ic", &ic, "--dc", &dc];
        args.extend(settings);
        self.endpoint(&args);
    }

    fn create(&self, version: &str, settings: &[&str]) {
        let (ic, dc) = (self.file("ic.json"), self.file("dc.json"));
        let mut args = vec![
            "create",
            "ep",
            "--version-name",
            version,
            "-m",
            "healthy:1",
            "--ic",
            &ic,
            "--dc",
            &dc,
        ];
        args.extend(settings);
        self.endpoint(&args);
    }

    fn show(&self) -> serde_json::Value {
        self.host.run_json(&["endpoint", "show", "ep"])
    }

    /// Sends `n` requests and counts them by the version that served them.
    fn spread(&self, n: usize, body: &str) -> HashMap<String, usize> {
        let mut client = KeepAlive::connect(&self.host.url);
        let auth = format!("Bearer {KEY}");
        let mut counts = HashMap::new();
        for _ in 0..n {
            let r = client.post("/api/v1/service/ep/score", &[("Authorization", &auth)], body.as_bytes());
            assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
            *counts
                .entry(r.header("x-plinth-version").unwrap().to_string())
                .or_insert(0) += 1;
        }
        counts
    }
}

fn share(counts: &HashMap<String, usize>, version: &str) -> f64 {
    let total: usize = counts.values().sum();
    100.0 * *counts.get(version).unwrap_or(&0) as f64 / total as f64
}

fn assert_share(counts: &HashMap<String, usize>, version: &str, want: f64) {
    let got = share(counts, version);
    assert!(
        (got - want).abs() <= 3.0,
        "{version}: {got:.1}% of {counts:?}, want {want}% ± 3"
    );
}

#[test]
fn traffic_split_follows_azure_rules_exactly() {
    let r = Rollout::new("split");
    // A first version at 20% gets 100%.
    r.create("v1", &["--traffic", "20"]);
    let counts = r.spread(2000, "x");
    assert_share(&counts, "v1", 100.0);
    // Add one at 10%: 90/10.
    r.add("v2", "healthy:1", &["--traffic", "10"]);
    let counts = r.spread(2000, "x");
    assert_share(&counts, "v1", 90.0);
    assert_share(&counts, "v2", 10.0);
    // Raise the second to 40% and make it default: the first keeps 20%, the second gets 80%.
    r.endpoint(&["version", "update", "ep", "v2", "--traffic", "40", "--default"]);
    let counts = r.spread(2000, "x");
    assert_share(&counts, "v1", 20.0);
    assert_share(&counts, "v2", 80.0);
    let show = r.show();
    assert_eq!(show["versions"][1]["effectiveTraffic"], 80);
    assert_eq!(show["versions"][1]["isDefault"], true);

    // More than 100% is refused, and nothing changes.
    let out = r
        .host
        .cli()
        .args(["endpoint", "version", "update", "ep", "v1", "--traffic", "70"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("traffic adds up to 110%"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Both changed in one command (one at a time, v1=70 first, would pass 100%): 70/30.
    r.endpoint(&["traffic", "ep", "v1=70", "v2=30"]);
    let show = r.show();
    assert_eq!(show["versions"][0]["traffic"], 70, "{show}");
    assert_eq!(show["versions"][1]["traffic"], 30, "{show}");
    let counts = r.spread(2000, "x");
    assert_share(&counts, "v1", 70.0);
    assert_share(&counts, "v2", 30.0);
    r.endpoint(&["traffic", "ep", "v1=20", "v2=40"]);
    let out = r
        .host
        .cli()
        .args(["endpoint", "traffic", "ep", "v1=90", "v2=20"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("would claim 110%"), "{err}");
    assert_eq!(r.show()["versions"][0]["traffic"], 20);

    // Pinning a version: by header, and by the OIP versions path.
    let mut client = KeepAlive::connect(&r.host.url);
    let auth = format!("Bearer {KEY}");
    for _ in 0..20 {
        let resp = client.post(
            "/api/v1/service/ep/score",
            &[("Authorization", &auth), ("x-plinth-version", "v1")],
            b"x",
        );
        assert_eq!(resp.header("x-plinth-version"), Some("v1"));
    }
    let oip = br#"{"inputs": [{"name": "t", "shape": [1], "datatype": "INT32", "data": [1]}]}"#;
    let resp = client.post("/v2/models/ep/versions/v1/infer", &[("Authorization", &auth)], oip);
    assert_eq!((resp.status, resp.header("x-plinth-version")), (200, Some("v1")));
    let resp = client.post(
        "/api/v1/service/ep/score",
        &[("Authorization", &auth), ("x-plinth-version", "v9")],
        b"x",
    );
    assert_eq!(resp.status, 404);

    // At most one control, at most six versions, exactly one default.
    r.endpoint(&["version", "update", "ep", "v1", "--control"]);
    r.add("v3", "healthy:1", &["--control"]);
    let show = r.show();
    let controls: Vec<&str> = show["versions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["type"] == "control")
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(controls, vec!["v3"]);
    for v in ["v4", "v5", "v6"] {
        r.add(v, "healthy:1", &[]);
    }
    let out = r
        .host
        .cli()
        .args([
            "endpoint",
            "version",
            "add",
            "ep",
            "v7",
            "-m",
            "healthy:1",
            "--ic",
            &r.file("ic.json"),
        ])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("at most 6 versions"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The endpoint as `show` gives it once the copies sent to its mirror (the second version) have
/// landed: at least `least` of them, and none more between two looks. Copies run after the answers.
fn after_copies(show: impl Fn() -> serde_json::Value, least: u64) -> serde_json::Value {
    let mut last = None;
    wait_for("the mirror's copies to land", Duration::from_secs(30), || {
        let show = show();
        let seen = show["versions"][1]["stats"]["requests"].as_u64();
        let settled = seen.is_some_and(|n| n >= least) && seen == last;
        last = seen;
        if settled { Ok(show) } else { Err(show) }
    })
}

#[test]
fn live_changes_under_load_fail_no_request() {
    let r = Rollout::new("live");
    r.create("v1", &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let url = r.host.url.clone();
    let workers: Vec<_> = (0..3)
        .map(|_| {
            let (stop, sent) = (stop.clone(), sent.clone());
            let url = url.clone();
            std::thread::spawn(move || {
                let mut client = KeepAlive::connect(&url);
                let auth = format!("Bearer {KEY}");
                let mut statuses = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    statuses.push(
                        client
                            .post("/api/v1/service/ep/score", &[("Authorization", &auth)], b"x")
                            .status,
                    );
                    sent.fetch_add(1, Ordering::Relaxed);
                }
                statuses
            })
        })
        .collect();
    r.add("v2", "healthy:1", &["--traffic", "30"]);
    r.endpoint(&["version", "update", "ep", "v2", "--traffic", "60", "--mirror", "0"]);
    r.add("v3", "healthy:1", &["--traffic", "20"]);
    r.endpoint(&["version", "update", "ep", "v3", "--default"]);
    r.endpoint(&[
        "version",
        "update",
        "ep",
        "v1",
        "--ic",
        &r.file("ic.json"),
        "--dc",
        &r.file("dc.json"),
    ]);
    r.endpoint(&["version", "update", "ep", "v2", "--traffic", "0"]);
    r.endpoint(&["version", "delete", "ep", "v2"]);
    // Requests after the last change too.
    let before = sent.load(Ordering::Relaxed);
    wait_for("requests after the last change", Duration::from_secs(30), || {
        match sent.load(Ordering::Relaxed) - before {
            n if n >= 10 => Ok(()),
            n => Err(format!("{n} answered since")),
        }
    });
    stop.store(true, Ordering::Relaxed);
    let statuses: Vec<u16> = workers.into_iter().flat_map(|w| w.join().unwrap()).collect();
    let bad: Vec<&u16> = statuses.iter().filter(|&&s| s != 200).collect();
    assert!(statuses.len() > 50, "only {} requests", statuses.len());
    assert!(
        bad.is_empty(),
        "{} of {} requests failed: {bad:?}",
        bad.len(),
        statuses.len()
    );
}

#[test]
fn a_mirror_sees_traffic_but_never_answers() {
    let r = Rollout::new("mirror");
    r.create("v1", &[]);
    // The mirror answers "fine" where v1 echoes; none of its answers may reach a caller.
    r.add("v2", "healthy:1", &["--traffic", "0", "--mirror", "50"]);
    let mut client = KeepAlive::connect(&r.host.url);
    let auth = format!("Bearer {KEY}");
    for i in 0..200 {
        let resp = client.post("/api/v1/service/ep/score", &[("Authorization", &auth)], b"echo-me");
        assert_eq!(resp.status, 200);
        assert_eq!(resp.header("x-plinth-version"), Some("v1"), "request {i}");
        assert!(String::from_utf8_lossy(&resp.body).ends_with(":echo-me"));
    }
    let show = after_copies(|| r.show(), 50);
    let mirrored = show["versions"][1]["stats"]["requests"].as_u64().unwrap();
    assert!(
        (50..=100).contains(&mirrored),
        "the mirror saw {mirrored} of 200 requests (50% asked; copies only run on a free slot)"
    );
}

#[test]
fn a_failing_treatment_is_rolled_back_and_a_healthy_one_is_not() {
    let r = Rollout::new("rollback");
    r.create("v1", &[]);
    let policy = [
        "--rollback-error-rate",
        "0.2",
        "--rollback-min-requests",
        "10",
        "--rollback-window-secs",
        "60",
    ];
    let mut bad = vec!["--traffic", "40", "--treatment"];
    bad.extend(policy);
    r.add("broken", "broken:1", &bad);
    let mut good = vec!["--traffic", "30", "--treatment"];
    good.extend(policy);
    r.add("fine", "healthy:1", &good);

    let mut client = KeepAlive::connect(&r.host.url);
    let auth = format!("Bearer {KEY}");
    let mut statuses = HashMap::new();
    for _ in 0..100 {
        let resp = client.post("/api/v1/service/ep/score", &[("Authorization", &auth)], b"maybe-fail");
        *statuses
            .entry((resp.header("x-plinth-version").unwrap_or("-").to_string(), resp.status))
            .or_insert(0) += 1;
    }
    assert!(statuses.contains_key(&("broken".to_string(), 500)), "{statuses:?}");
    // The monitor checks twice a second.
    let mut show = r.show();
    for _ in 0..40 {
        if show["versions"][1]["traffic"] == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        show = r.show();
    }
    assert_eq!(show["versions"][1]["traffic"], 0, "{show}");
    assert_eq!(
        show["versions"][2]["traffic"], 30,
        "the healthy treatment keeps its traffic"
    );
    let events = show["events"].to_string();
    assert!(
        events.contains("automatic rollback: version broken traffic 40%"),
        "{events}"
    );
    let logs = r.host.run(&["service", "logs", "ep"]);
    assert!(logs.contains("automatic rollback"), "{logs}");
    // After the rollback nothing reaches the broken version.
    let counts = r.spread(200, "maybe-fail");
    assert!(!counts.contains_key("broken"), "{counts:?}");
}

#[test]
fn a_model_mirror_gets_copies_of_oip_and_json_requests_it_can_score() {
    let dir = temp_dir("mirror-oip");
    let host = TestHost::start(&dir.join("ws"), &[]);
    host.register_diabetes();
    let dc = Dc::test().keys(KEY).concurrency(4).write(&dir, "dc.json");
    let dc = dc.to_str().unwrap();
    host.run(&[
        "endpoint",
        "create",
        "ep",
        "--version-name",
        "v1",
        "-m",
        "diabetes:1",
        "--dc",
        dc,
    ]);
    host.run(&[
        "endpoint",
        "version",
        "add",
        "ep",
        "v2",
        "-m",
        "diabetes:1",
        "--dc",
        dc,
        "--traffic",
        "0",
        "--mirror",
        "100",
    ]);
    let mut client = KeepAlive::connect(&host.url);
    let auth = format!("Bearer {KEY}");
    let row = "[0.03, 0.05, 0.06, 0.02, -0.04, -0.03, -0.04, -0.002, 0.02, -0.01]";
    let oip = format!(r#"{{"inputs": [{{"name": "X", "shape": [1, 10], "datatype": "FP32", "data": {row}}}]}}"#);
    let plain = format!(r#"{{"data": [{row}]}}"#);
    for _ in 0..50 {
        let r = client.post("/v2/models/ep/infer", &[("Authorization", &auth)], oip.as_bytes());
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.header("x-plinth-version"), Some("v1"));
        let r = client.post(
            "/api/v1/service/ep/score",
            &[("Authorization", &auth)],
            plain.as_bytes(),
        );
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }
    let show = after_copies(|| host.run_json(&["endpoint", "show", "ep"]), 50);
    let stats = &show["versions"][1]["stats"];
    assert_eq!(show["versions"][1]["name"], "v2");
    assert!(stats["requests"].as_u64().unwrap() >= 50, "{stats}");
    // Copies of OIP requests reach the model as the tensors they carry, not as JSON it cannot read.
    assert_eq!(stats["rejected"], 0, "{stats}");
    assert_eq!(stats["failures"], 0, "{stats}");
}

#[test]
fn a_regenerated_key_survives_a_concurrent_rollback_and_a_redeploy_that_names_no_keys() {
    let r = Rollout::new("keys");
    r.create("v1", &[]);
    r.add(
        "broken",
        "broken:1",
        &[
            "--traffic",
            "50",
            "--treatment",
            "--rollback-error-rate",
            "0.2",
            "--rollback-min-requests",
            "10",
        ],
    );
    // Failing requests make the monitor roll the treatment back while the secondary key is regenerated
    // again and again: every regeneration is its own write, none is undone by the rollback's.
    let stop = Arc::new(AtomicBool::new(false));
    let url = r.host.url.clone();
    let load = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut client = KeepAlive::connect(&url);
            let auth = format!("Bearer {KEY}");
            while !stop.load(Ordering::Relaxed) {
                client.post("/api/v1/service/ep/score", &[("Authorization", &auth)], b"maybe-fail");
            }
        })
    };
    let mut last = String::new();
    let mut rolled_back = false;
    for _ in 0..200 {
        let keys = r.host.run_json(&["service", "regen-key", "ep", "--key", "secondary"]);
        last = keys["secondaryKey"].as_str().unwrap().to_string();
        if r.show()["versions"][1]["traffic"] == 0 {
            rolled_back = true;
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    assert!(rolled_back, "the broken treatment was never rolled back");
    let stored = r.host.run_json(&["service", "keys", "ep"]);
    assert_eq!(
        stored["secondaryKey"],
        last.as_str(),
        "the last regenerated key is the stored one"
    );
    assert_eq!(stored["primaryKey"], KEY);
    let url = r.host.score_url("ep");
    assert_eq!(score(&url, Some(&last), "ok").status, 200, "the router takes it");
    assert_eq!(score(&url, Some(&format!("{KEY}-2")), "ok").status, 401);

    // Redeploying the default version with a config that names no keys keeps them all.
    let dc = Dc::test().replicas(2).write(&r.dir, "dc-nokeys.json");
    let ic = r.file("ic.json");
    r.endpoint(&[
        "version",
        "add",
        "ep",
        "v1",
        "-m",
        "healthy:1",
        "--ic",
        &ic,
        "--dc",
        dc.to_str().unwrap(),
    ]);
    let after = r.host.run_json(&["service", "keys", "ep"]);
    assert_eq!(after, stored, "a redeploy without keys keeps the keys");
    assert_eq!(score(&url, Some(&last), "ok").status, 200);
    assert_eq!(score(&url, Some(KEY), "ok").status, 200);
}

/// A host with a busy version and an idle one reports the busy one's utilization on `/api/v1/load`, not
/// the mean (a pod holds one replica of each version, so it is as saturated as its busiest), and every
/// version's replicas.
#[test]
fn the_load_a_cluster_reads_is_the_busiest_versions() {
    let r = Rollout::new("load-versions");
    Dc::test().keys(KEY).one_pod().write(&r.dir, "dc.json");
    r.create("busy", &[]);
    r.add("idle", "healthy:1", &["--traffic", "0"]);
    // Four clients after one another on the busy version (400 ms a request, one at a time): about one
    // busy replica and three waiting requests, 400% of it; the idle version stays at 0.
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (url, stop) = (r.host.score_url("ep"), stop.clone());
            std::thread::spawn(move || {
                let auth = format!("Authorization: Bearer {KEY}");
                while !stop.load(Ordering::Relaxed) {
                    curl(
                        &url,
                        &[
                            "-X",
                            "POST",
                            "--data-binary",
                            "sleep",
                            "-H",
                            &auth,
                            "-H",
                            "x-plinth-version: busy",
                        ],
                    );
                }
            })
        })
        .collect();
    let started = std::time::Instant::now();
    let load = loop {
        let load = curl(&format!("{}/api/v1/load", r.host.url), &[]).json();
        // The mean of the two versions could not pass 2.
        if load["utilization"].as_f64().unwrap_or(0.0) > 2.5 {
            break load;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the busy version's utilization never showed: {load}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    eprintln!("figure: /api/v1/load with a busy and an idle version: {load}");
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    assert_eq!(
        (load["versions"].as_u64(), load["replicas"].as_u64()),
        (Some(2), Some(2)),
        "{load}"
    );
    assert!(
        load.as_object().unwrap().values().all(|v| v.is_number()),
        "figures only, no names: {load}"
    );
}
