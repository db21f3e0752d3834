//! Replicas and autoscaling under real load, Prometheus metrics checked by promtool, request logs, and
//! model data collection that loses nothing on SIGTERM.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::fixture::*;

const KEY: &str = "observe-key-0123456789abcdef";

fn replicas(host: &TestHost, service: &str) -> u64 {
    host.run_json(&["service", "show", service])["versions"][0]["replicas"]
        .as_u64()
        .unwrap_or(0)
}

fn adversary(host: &TestHost, dir: &std::path::Path, name: &str, dc: Dc) {
    host.deploy_adversary(dir, name, &dc.keys(KEY));
}

#[test]
fn replicas_grow_under_load_and_shrink_when_idle() {
    let dir = temp_dir("autoscale");
    let host = TestHost::start(&dir.join("ws"), &["--scale-down-window-secs", "2"]);
    let dc = Dc::test()
        .with(
            "autoScaler",
            json!({"autoscaleEnabled": true, "minReplicas": 1, "maxReplicas": 4, "targetUtilization": 70, "refreshPeriodInSeconds": 1}),
        )
        .concurrency(1)
        .with("maxQueueWaitMs", 5000.into())
        .with("containerResourceRequirements", json!({"cpu": 0.1, "memoryInGB": 0.25}));
    adversary(&host, &dir, "adv", dc);
    assert_eq!(replicas(&host, "adv"), 1);

    let stop = Arc::new(AtomicBool::new(false));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let stop = stop.clone();
            let url = host.url.clone();
            std::thread::spawn(move || {
                let mut c = KeepAlive::connect(&url);
                let auth = format!("Bearer {KEY}");
                let mut failures = 0;
                while !stop.load(Ordering::Relaxed) {
                    if c.post("/api/v1/service/adv/score", &[("Authorization", &auth)], b"sleep")
                        .status
                        != 200
                    {
                        failures += 1;
                    }
                }
                failures
            })
        })
        .collect();
    let started = Instant::now();
    let mut peak = 1;
    while started.elapsed() < Duration::from_secs(15) {
        peak = peak.max(replicas(&host, "adv"));
        if peak >= 3 {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let grew_in = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let failures: u32 = load.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(
        peak >= 3,
        "replicas reached only {peak} under 4 concurrent slow clients"
    );
    assert!(grew_in < Duration::from_secs(10), "took {grew_in:?} to scale up");
    assert_eq!(failures, 0, "no request failed while scaling up");

    // Idle: back to minReplicas after the (2 s) window.
    let started = Instant::now();
    while replicas(&host, "adv") > 1 && started.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(replicas(&host, "adv"), 1, "replicas shrink after the idle window");
    let logs = host.run(&["service", "logs", "adv"]);
    assert!(logs.contains("REQ"), "request log lines: {logs}");
    assert!(
        logs.contains("scale up: version 1 from 1 to"),
        "scaling decisions with their inputs: {logs}"
    );
    assert!(logs.contains("scale down: version 1"), "{logs}");
    let show = host.run_json(&["service", "show", "adv"]);
    assert!(show["versions"][0]["utilization"].is_number(), "{show}");
}

#[test]
fn scale_to_zero_buffers_the_first_request() {
    let dir = temp_dir("zero");
    let host = TestHost::start(&dir.join("ws"), &["--scale-down-window-secs", "1"]);
    let dc = Dc::test().with(
        "autoScaler",
        json!({"autoscaleEnabled": true, "minReplicas": 0, "maxReplicas": 2}),
    );
    adversary(&host, &dir, "adv", dc);
    let started = Instant::now();
    while replicas(&host, "adv") > 0 && started.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(replicas(&host, "adv"), 0, "idle version scales to zero");
    let r = score(&host.score_url("adv"), Some(KEY), "wake");
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, "1:wake"),
        "the first request waits for a fresh replica"
    );
    assert_eq!(replicas(&host, "adv"), 1);
}

#[test]
fn metrics_pass_promtool_and_count_requests() {
    let dir = temp_dir("metrics");
    let host = TestHost::start(&dir.join("ws"), &[]);
    adversary(
        &host,
        &dir,
        "adv",
        Dc::test().replicas(2).with("scoringTimeoutMs", 500.into()),
    );
    for body in ["a", "b", "panic", "loop"] {
        score(&host.score_url("adv"), Some(KEY), body);
    }
    // Refused before reaching a version: counted as the service's, with version "-" (an unknown
    // service's name never becomes a label).
    assert_eq!(score(&host.score_url("adv"), Some("not-the-key"), "a").status, 401);
    assert_eq!(score(&host.score_url("nosuch"), Some(KEY), "a").status, 404);
    let infer = format!("{}/v2/models/adv/infer", host.url);
    assert_eq!(score(&infer, Some(KEY), "{not json").status, 400);
    assert_eq!(score(&infer, None, "{}").status, 401);
    let admin = std::fs::read_to_string(dir.join("ws/admin-token")).unwrap();
    assert_eq!(
        curl(&format!("{}/metrics", host.url), &[]).status,
        401,
        "metrics need the admin token"
    );
    let r = curl(
        &format!("{}/metrics", host.url),
        &["-H", &format!("Authorization: Bearer {}", admin.trim())],
    );
    assert_eq!(r.status, 200);
    for want in [
        r#"plinth_requests_total{service="adv",status="200",version="1"} 2"#,
        r#"plinth_requests_total{service="adv",status="500",version="1"} 1"#,
        r#"plinth_requests_total{service="adv",status="504",version="1"} 1"#,
        r#"plinth_requests_total{service="adv",status="401",version="-"} 2"#,
        r#"plinth_requests_total{service="adv",status="400",version="-"} 1"#,
        r#"plinth_script_traps_total{kind="trap",service="adv",version="1"} 1"#,
        r#"plinth_script_traps_total{kind="deadline",service="adv",version="1"} 1"#,
        r#"plinth_replicas{service="adv",version="1"} 2"#,
        // Per version, and back to zero once every request has ended.
        r#"plinth_in_flight_requests{service="adv",version="1"} 0"#,
        "plinth_request_duration_seconds_bucket",
        "plinth_queue_wait_seconds_count",
        "plinth_model_load_seconds_count",
    ] {
        assert!(r.body.contains(want), "missing {want} in\n{}", r.body);
    }
    assert!(!r.body.contains("nosuch"), "{}", r.body);
    let logs = host.run(&["service", "logs", "adv"]);
    assert!(
        logs.contains("401"),
        "refusals are in the service's request log too:\n{logs}"
    );
    let metrics = dir.join("metrics.txt");
    std::fs::write(&metrics, &r.body).unwrap();
    let out = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&metrics).unwrap())
        .output()
        .expect("promtool (Debian package prometheus) must be installed");
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn data_collection_writes_every_accepted_record_before_exit() {
    let dir = temp_dir("collect");
    let mut host = TestHost::start(&dir.join("ws"), &[]);
    host.register_diabetes();
    let dc = write_json(
        &dir,
        "dc.json",
        &Dc::test()
            .no_auth()
            .replicas(2)
            .with("dataCollection", json!({"storageEnabled": true}))
            .value(),
    );
    host.deploy("diabetes:1", "ridge", &dc);
    let n_threads = 4;
    let per_thread = 150;
    let threads: Vec<_> = (0..n_threads)
        .map(|t| {
            let url = host.url.clone();
            std::thread::spawn(move || {
                let mut c = KeepAlive::connect(&url);
                for i in 0..per_thread {
                    let id = format!("req-{t}-{i}");
                    let r = c.post(
                        "/api/v1/service/ridge/score",
                        &[("x-request-id", &id)],
                        sample_body().as_bytes(),
                    );
                    assert_eq!(r.status, 200);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let status = host.stop();
    assert!(status.success());
    let count = |kind: &str| -> usize {
        let mut n = 0;
        let root = dir.join("ws/modeldata/ridge/diabetes/1").join(kind);
        for entry in walk(&root) {
            let text = std::fs::read_to_string(&entry).unwrap();
            for line in text.lines() {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                assert!(v["request_id"].as_str().unwrap().starts_with("req-"));
                assert_eq!(v["service"], "ridge");
                n += 1;
            }
        }
        n
    };
    assert_eq!(count("inputs"), n_threads * per_thread);
    assert_eq!(count("predictions"), n_threads * per_thread);
}

pub(crate) fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.path().is_dir() {
                out.extend(walk(&e.path()));
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

#[test]
fn capacity_follows_the_azure_sizing_rule() {
    let out = plinth()
        .args([
            "capacity",
            "--rps",
            "20",
            "--request-seconds",
            "10",
            "--max-concurrent",
            "1",
            "--target-utilization",
            "0.7",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "286");
}
