//! Dynamic batching: batched answers equal unbatched ones bit for bit, and a bad request fails alone.

use std::sync::Arc;

use serde_json::json;

use crate::fixture::*;

fn row(seed: usize) -> Vec<f32> {
    (0..16).map(|i| ((seed * 31 + i * 7) as f32 * 0.173).sin()).collect()
}

fn body(rows: &[Vec<f32>]) -> String {
    json!({"data": rows}).to_string()
}

#[test]
fn batched_results_equal_unbatched_bit_for_bit_and_a_bad_request_fails_alone() {
    let dir = temp_dir("batch");
    let host = TestHost::start(&dir.join("ws"), &["--open-metrics"]);
    host.run(&["model", "register", "--name", "mlp", "--path", "tests/models/small_mlp"]);
    let plain = Dc::test()
        .no_auth()
        .replicas(1)
        .concurrency(4)
        .write(&dir, "plain.json");
    let batched = Dc::test()
        .no_auth()
        .replicas(1)
        .concurrency(1)
        .with("maxBatchSize", 32.into())
        .with("maxBatchDelayMicros", 20000.into())
        .with("maxQueueWaitMs", 10000.into())
        .write(&dir, "batched.json");
    host.deploy("mlp:1", "plain", &plain);
    host.deploy("mlp:1", "batched", &batched);
    let logs = host.run(&["service", "logs", "batched"]);
    assert!(logs.contains("dynamic batching on"), "{logs}");

    // The reference: each request alone, unbatched.
    let requests: Vec<Vec<Vec<f32>>> = (0..48)
        .map(|i| (0..(1 + i % 3)).map(|r| row(i * 3 + r)).collect())
        .collect();
    let mut c = KeepAlive::connect(&host.url);
    let want: Vec<String> = requests
        .iter()
        .map(|rows| {
            let r = c.post("/api/v1/service/plain/score", &[], body(rows).as_bytes());
            assert_eq!(r.status, 200);
            String::from_utf8(r.body).unwrap()
        })
        .collect();

    // The same requests, concurrently, through the batching queue, with a malformed one among them.
    let requests = Arc::new(requests);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let url = host.url.clone();
            let requests = requests.clone();
            std::thread::spawn(move || {
                let mut c = KeepAlive::connect(&url);
                let mut got = Vec::new();
                for i in (t..requests.len()).step_by(8) {
                    let r = c.post("/api/v1/service/batched/score", &[], body(&requests[i]).as_bytes());
                    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
                    got.push((i, String::from_utf8(r.body).unwrap()));
                    if t == 3 && i == 3 {
                        let bad = c.post("/api/v1/service/batched/score", &[], br#"{"data": [[1, 2, 3]]}"#);
                        assert_eq!(bad.status, 400, "{}", String::from_utf8_lossy(&bad.body));
                    }
                }
                got
            })
        })
        .collect();
    for t in threads {
        for (i, got) in t.join().unwrap() {
            assert_eq!(got, want[i], "request {i}: batched answer differs");
        }
    }

    // Batches really formed: more rows than batches.
    let metrics = curl(&format!("{}/metrics", host.url), &[]).body;
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name) && l.contains("service=\"batched\""))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing in\n{metrics}"))
    };
    let (rows, batches) = (value("plinth_batch_size_sum"), value("plinth_batch_size_count"));
    assert_eq!(rows, 96.0, "every row went through the batching queue once");
    assert!(batches < 48.0, "{batches} batches for 48 requests: nothing was batched");

    // Statistics count requests, whatever batch they ran in; the malformed one was refused, not failed.
    let stats = &host.run_json(&["service", "show", "batched"])["versions"][0]["stats"];
    assert_eq!(
        (&stats["requests"], &stats["rejected"], &stats["failures"]),
        (&json!(49), &json!(1), &json!(0)),
        "{stats}"
    );
}
