//! `plinth serve` and the CLI against it: the path a user walks, register → deploy → keys → score.

use std::time::Duration;

use serde_json::json;

use crate::fixture::*;
use crate::support::{assert_close, reference, repo};

fn predictions_of_no_code(r: &Reply) -> Vec<f64> {
    r.json()["variable"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row[0].as_f64().unwrap())
        .collect()
}

fn register_diabetes(host: &TestHost) {
    let out = host.run(&[
        "model",
        "register",
        "--name",
        "diabetes",
        "--path",
        "examples/diabetes/model",
        "--tag",
        "task=regression",
    ]);
    assert_eq!(out.trim(), "diabetes:1");
}

#[test]
fn register_deploy_keys_score_regen_token_restart() {
    let dir = temp_dir("flow");
    let mut host = TestHost::start(&dir.join("ws"), &[]);
    register_diabetes(&host);
    let dc = Dc::test()
        .with("authEnabled", true.into())
        .with("tokenAuthEnabled", true.into())
        .write(&dir, "deploymentconfig.json");
    let out = host.deploy("diabetes:1", "ridge", &dc);
    assert!(
        out.contains("Healthy") && out.contains("/api/v1/service/ridge/score"),
        "{out}"
    );

    let url = host.score_url("ridge");
    let (primary, secondary) = host.keys("ridge");
    let ok = score(&url, Some(&primary), &sample_body());
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_close(
        &predictions_of_no_code(&ok),
        &reference(&repo().join("examples/diabetes/sample.json")).0,
        1e-4,
    );
    assert!(ok.header("x-request-id").is_some_and(|id| !id.is_empty()));

    assert_eq!(score(&url, None, &sample_body()).status, 401);
    let wrong = score(&url, Some("not-a-key"), &sample_body());
    assert_eq!(wrong.status, 401);
    assert!(wrong.json()["error"].as_str().unwrap().contains("invalid credentials"));

    // Regenerating the primary key (spelt as Azure spells it): the old one stops working at once, the
    // secondary never does.
    host.run(&["service", "regen-key", "ridge", "--key", "Primary"]);
    let (new_primary, same_secondary) = host.keys("ridge");
    assert_ne!(new_primary, primary);
    assert_eq!(same_secondary, secondary);
    assert_eq!(score(&url, Some(&primary), &sample_body()).status, 401);
    assert_eq!(score(&url, Some(&secondary), &sample_body()).status, 200);
    assert_eq!(score(&url, Some(&new_primary), &sample_body()).status, 200);

    // Tokens: a valid one scores, a tampered one does not.
    let token = host.run_json(&["service", "token", "ridge"]);
    let access = token["accessToken"].as_str().unwrap().to_string();
    assert!(token["refreshAfter"].as_u64().unwrap() < token["expiryOn"].as_u64().unwrap());
    assert_eq!(score(&url, Some(&access), &sample_body()).status, 200);
    let mut tampered = access.clone().into_bytes();
    let last = tampered.len() - 3;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    assert_eq!(score(&url, Some(&tampered), &sample_body()).status, 401);
    let tampered_body = score(&url, Some(&tampered), &sample_body()).body;
    assert!(
        tampered_body.contains("invalid token: its signature does not match"),
        "{tampered_body}"
    );

    // Rotating the token secret revokes every token issued before, at once.
    host.run(&["service", "regen-key", "ridge", "--key", "token"]);
    assert_eq!(score(&url, Some(&access), &sample_body()).status, 401);
    let fresh = host.run_json(&["service", "token", "ridge"])["accessToken"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(score(&url, Some(&fresh), &sample_body()).status, 200);

    // A restart brings back the service, its model and its keys.
    host = host.restart();
    wait_healthy(&host, "ridge");
    assert_eq!(
        score(
            &url.replace(&url_port(&url), &host.port().to_string()),
            Some(&new_primary),
            &sample_body()
        )
        .status,
        200
    );
    let list = host.run_json(&["service", "list"]);
    assert_eq!(list[0]["name"], "ridge");
    assert_eq!(list[0]["state"], "Healthy");
    let models = host.run_json(&["model", "list"]);
    assert_eq!(models[0]["tags"]["task"], "regression");
    let url = host.score_url("ridge");
    assert_eq!(
        score(&url, Some(&fresh), &sample_body()).status,
        200,
        "tokens survive a restart"
    );

    // A service deleted and created again under the same name takes none of the old one's tokens.
    host.run(&["service", "delete", "ridge"]);
    host.deploy("diabetes:1", "ridge", &dc);
    assert_eq!(score(&url, Some(&fresh), &sample_body()).status, 401);
    let newer = host.run_json(&["service", "token", "ridge"])["accessToken"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(score(&url, Some(&newer), &sample_body()).status, 200);
}

fn url_port(url: &str) -> String {
    url.rsplit(':').next().unwrap().split('/').next().unwrap().to_string()
}

fn wait_healthy(host: &TestHost, service: &str) {
    for _ in 0..600 {
        let s = host.run_json(&["service", "show", service]);
        match s["state"].as_str() {
            Some("Healthy") => return,
            Some("Failed") => panic!("service {service} failed: {}", s["error"]),
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    panic!("service {service} never became healthy");
}

#[test]
fn python_score_py_deployed_from_azure_configs() {
    let dir = temp_dir("python");
    let host = TestHost::start(&dir.join("ws"), &[]);
    register_diabetes(&host);
    let out = host.run(&[
        "deploy",
        "-m",
        "diabetes:1",
        "-n",
        "diabetes-py",
        "--ic",
        "examples/diabetes/inferenceconfig.json",
        "--dc",
        "examples/diabetes/deploymentconfig.json",
    ]);
    assert!(out.contains("Healthy"), "{out}");
    let (key, _) = host.keys("diabetes-py");
    let url = host.score_url("diabetes-py");
    let r = score(&url, Some(&key), &sample_body());
    assert_eq!(r.status, 200, "{}", r.body);
    let got: Vec<f64> = r.json()["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert_close(&got, &reference(&repo().join("examples/diabetes/sample.json")).0, 1e-4);
    let bad = score(&url, Some(&key), r#"{"data": [[1, 2]]}"#);
    assert_eq!(bad.status, 400);
    assert!(
        bad.json()["error"].as_str().unwrap().contains("row 0 has 2 features"),
        "{}",
        bad.body
    );
    // JSON nested 2,000 deep would exhaust the script's stack: refused before it reaches the script.
    let deep = format!("{}{}", "[".repeat(2000), "]".repeat(2000));
    let r = score(&url, Some(&key), &deep);
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("more than 64 levels"), "{}", r.body);
    assert_eq!(score(&url, Some(&key), &sample_body()).status, 200);
    let logs = host.run(&["service", "logs", "diabetes-py"]);
    assert!(logs.contains("diabetes model ready"), "{logs}");
    assert!(logs.contains("ignored on a Plinth host: computeType"), "{logs}");
    let show = host.run_json(&["service", "show", "diabetes-py"]);
    assert_eq!(show["deploymentConfig"]["maxConcurrentRequestsPerContainer"], 2);
}

/// A host with the adversary script deployed as `adv`, with the given deployment config.
fn adversary_host(tag: &str, dc: Dc, extra: &[&str]) -> (TestHost, String) {
    let dir = temp_dir(tag);
    let host = TestHost::start(&dir.join("ws"), extra);
    host.deploy_adversary(&dir, "adv", &dc);
    let (key, _) = host.keys("adv");
    (host, key)
}

#[test]
fn limits_and_client_mistakes_get_clear_answers() {
    let dc = Dc::test()
        .with("scoringTimeoutMs", 1000.into())
        .concurrency(1)
        .with("maxQueueWaitMs", 50.into())
        .replicas(1);
    let (host, key) = adversary_host("limits", dc, &["--max-body-bytes", "1000"]);
    let url = host.score_url("adv");

    assert_eq!(
        curl(&format!("{}/healthz", host.url), &[]).status,
        200,
        "health is open"
    );
    let r = score(&url, Some(&key), "hello");
    assert_eq!((r.status, r.body.as_str()), (200, "1:hello"));

    let big = "x".repeat(5000);
    let r = score(&url, Some(&key), &big);
    assert_eq!(r.status, 413);
    assert!(r.json()["error"].as_str().unwrap().contains("limit of 1000 bytes"));

    let r = score(&format!("{}/api/v1/service/nope/score", host.url), Some(&key), "{}");
    assert_eq!(r.status, 404);
    assert!(r.json()["error"].as_str().unwrap().contains("service nope not found"));

    let r = score(&url, Some(&key), "bad-request");
    assert_eq!(r.status, 400, "{}", r.body);

    // The deadline: a runaway script is stopped and the caller gets a 504, then the service goes on.
    let r = score(&url, Some(&key), "loop");
    assert_eq!(r.status, 504, "{}", r.body);
    assert!(
        r.json()["error"].as_str().unwrap().contains("deadline exceeded"),
        "{}",
        r.body
    );
    assert_eq!(score(&url, Some(&key), "after").status, 200);

    // Back-pressure: one slot, a 50 ms queue wait, a request holding the slot → 503 with Retry-After.
    let slow_url = url.clone();
    let slow_key = key.clone();
    let slow = std::thread::spawn(move || score(&slow_url, Some(&slow_key), "sleep"));
    host.wait_busy("the slow request to hold the slot");
    let r = score(&url, Some(&key), "hello");
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.header("retry-after").as_deref(), Some("1"));
    assert_eq!(slow.join().unwrap().status, 200);

    // Request ids are echoed.
    let r = curl(
        &url,
        &[
            "-X",
            "POST",
            "--data-binary",
            "x",
            "-H",
            &format!("Authorization: Bearer {key}"),
            "-H",
            "x-request-id: my-id-42",
        ],
    );
    assert_eq!(r.header("x-request-id").as_deref(), Some("my-id-42"));

    // The OpenAPI document needs a credential.
    let swagger = format!("{}/api/v1/service/adv/swagger.json", host.url);
    assert_eq!(curl(&swagger, &[]).status, 401);
    let r = curl(&swagger, &["-H", &format!("Authorization: Bearer {key}")]);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["openapi"], "3.0.1");

    // The admin API needs the admin credential.
    assert_eq!(curl(&format!("{}/api/v1/admin/services", host.url), &[]).status, 401);
}

#[test]
fn bad_configs_fail_before_anything_is_deployed() {
    let dir = temp_dir("badcfg");
    let host = TestHost::start(&dir.join("ws"), &[]);
    register_diabetes(&host);
    let dc = write_json(&dir, "dc.json", &json!({"autoScaler": {"minReplicas": "two"}}));
    let out = host
        .cli()
        .args(["deploy", "-m", "diabetes:1", "-n", "x", "--dc", dc.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("autoScaler.minReplicas: invalid type"), "{err}");
    // The file's own line (the value is on line 3 of the pretty-printed file), in a reader's words.
    assert!(err.contains("expected a number at line 3 column"), "{err}");
    let out = host
        .cli()
        .args(["deploy", "-m", "nosuch:3", "-n", "x"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("model nosuch:3 not found (no model is registered as nosuch)"),
        "{err}"
    );
    // A wrong version names the versions there are.
    let out = host
        .cli()
        .args(["deploy", "-m", "diabetes:7", "-n", "x"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("model diabetes:7 not found (registered: diabetes:1)"),
        "{err}"
    );
    let out = host
        .cli()
        .args(["deploy", "-m", "diabetes:1", "-n", "bad name"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("service name 'bad name' is invalid"));
    assert_eq!(host.run_json(&["service", "list"]), json!([]));
}

#[test]
fn sigterm_drains_requests_in_flight_and_exits_zero() {
    let (mut host, key) = adversary_host("drain", Dc::test().replicas(1), &[]);
    let url = host.score_url("adv");
    let slow = std::thread::spawn(move || score(&url, Some(&key), "sleep"));
    host.wait_busy("the slow request to be in flight");
    let status = host.stop();
    let r = slow.join().unwrap();
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, "1:slept"),
        "the request in flight finished"
    );
    assert!(status.success(), "exit status {status}");
}

#[test]
fn redeploying_under_load_fails_no_request() {
    let dir = temp_dir("redeploy");
    let host = TestHost::start(&dir.join("ws"), &[]);
    register_diabetes(&host);
    let dc = Dc::test().no_auth().replicas(2).write(&dir, "dc.json");
    host.deploy("diabetes:1", "ridge", &dc);
    let url = host.score_url("ridge");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let url = url.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut statuses = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && statuses.len() < 2000 {
                    statuses.push(score(&url, None, &sample_body()).status);
                }
                statuses
            })
        })
        .collect();
    for _ in 0..3 {
        host.deploy("diabetes:1", "ridge", &dc);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let statuses: Vec<u16> = workers.into_iter().flat_map(|w| w.join().unwrap()).collect();
    assert!(statuses.len() > 10, "only {} requests", statuses.len());
    assert!(
        statuses.iter().all(|&s| s == 200),
        "non-200 during redeploys: {statuses:?}"
    );
}

#[test]
fn tls_with_curl_openssl_and_the_cli() {
    let dir = temp_dir("tls");
    let (cert, key) = self_signed_cert(&dir);
    let host = TestHost::start(
        &dir.join("ws"),
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
            "--tls-handshake-timeout-secs",
            "1",
        ],
    )
    .with_cacert(&cert);
    assert!(host.url.starts_with("https://"), "{}", host.url);
    let url = host.url.replace("127.0.0.1", "localhost");
    let r = curl(&format!("{url}/healthz"), &["--cacert", cert.to_str().unwrap()]);
    assert_eq!(r.status, 200);

    let out = std::process::Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{}", host.port()),
            "-servername",
            "localhost",
            "-CAfile",
        ])
        .arg(&cert)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Verify return code: 0 (ok)"), "{text}");
    assert!(text.contains("TLSv1.3") || text.contains("TLSv1.2"), "{text}");

    // The CLI speaks HTTPS too, trusting the given certificate.
    register_diabetes(&host);
    host.run(&["deploy", "-m", "diabetes:1", "-n", "ridge"]);
    let (k, _) = host.keys("ridge");
    // Without --cacert it trusts the system's authorities: a self-signed host is refused in one line
    // naming the flag; with the certificate among the system's (SSL_CERT_FILE), no flag is needed.
    let out = host
        .cli()
        .env_remove("PLINTH_CACERT")
        .args(["service", "list"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("--cacert") && err.trim().lines().count() == 1,
        "{err}"
    );
    let out = host
        .cli()
        .env_remove("PLINTH_CACERT")
        .env("SSL_CERT_FILE", &cert)
        .args(["service", "list"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("ridge"));
    let r = curl(
        &format!("{url}/api/v1/service/ridge/score"),
        &[
            "--cacert",
            cert.to_str().unwrap(),
            "-H",
            &format!("Authorization: Bearer {k}"),
            "--data-binary",
            &sample_body(),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    // Plain HTTP to the TLS port is refused, not served.
    let out = std::process::Command::new("curl")
        .args(["-s", "-m", "5", &format!("http://127.0.0.1:{}/healthz", host.port())])
        .output()
        .unwrap();
    assert!(!out.status.success() || out.stdout.is_empty());
    // A client that connects and never starts the handshake is disconnected after the timeout.
    let mut silent = std::net::TcpStream::connect(("127.0.0.1", host.port())).unwrap();
    silent.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let started = std::time::Instant::now();
    let mut buf = [0u8; 16];
    let n = std::io::Read::read(&mut silent, &mut buf).unwrap_or(0);
    assert_eq!(n, 0, "the host closes the connection");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "closed after {:?}",
        started.elapsed()
    );
}

#[test]
fn a_spinning_script_holds_up_only_its_own_request() {
    let dc = Dc::test()
        .with("scoringTimeoutMs", 3000.into())
        .concurrency(2)
        .replicas(2);
    let (host, key) = adversary_host("spin", dc, &[]);
    let url = host.score_url("adv");
    // Warm both replicas first, so the timings below are only about the spinning call.
    for _ in 0..4 {
        assert_eq!(score(&url, Some(&key), "warm").status, 200);
    }
    let (spin_url, spin_key) = (url.clone(), key.clone());
    let spinning = std::thread::spawn(move || score(&spin_url, Some(&spin_key), "loop"));
    host.wait_busy("the spinning call to reach a replica");
    // The spinning call runs until its 3 s deadline; meanwhile every other request is answered at once.
    let started = std::time::Instant::now();
    for i in 0..20 {
        let t = std::time::Instant::now();
        let r = score(&url, Some(&key), &format!("hello-{i}"));
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(
            t.elapsed() < Duration::from_millis(1000),
            "request {i} took {:?}",
            t.elapsed()
        );
        assert_eq!(curl(&format!("{}/healthz", host.url), &[]).status, 200);
    }
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "{:?}",
        started.elapsed()
    );
    let r = spinning.join().unwrap();
    assert_eq!(r.status, 504, "{}", r.body);
}

#[test]
fn a_second_host_on_the_same_workspace_is_refused_naming_the_first() {
    let dir = temp_dir("lock");
    let host = TestHost::start(&dir.join("ws"), &[]);
    let second = plinth()
        .args(["serve", "--listen", "127.0.0.1:0", "--workspace"])
        .arg(dir.join("ws"))
        .output()
        .unwrap();
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        err.contains("in use by another plinth host") && err.contains(&format!("PID {}", host.pid())),
        "{err}"
    );
    assert_eq!(
        curl(&format!("{}/healthz", host.url), &[]).status,
        200,
        "the first host serves on"
    );
}

#[test]
fn an_exception_escaping_run_is_the_scripts_500_with_its_line() {
    let dir = temp_dir("py-errors");
    let host = TestHost::start(&dir.join("ws"), &[]);
    let script = repo().join("plugins/test-scripts-python/adversary");
    let ic = write_json(
        &dir,
        "ic.json",
        &json!({"entryScript": "score.py", "sourceDirectory": script.to_str().unwrap()}),
    );
    let dc = Dc::test().replicas(1).write(&dir, "dc.json");
    host.run(&[
        "deploy",
        "-n",
        "py",
        "--ic",
        ic.to_str().unwrap(),
        "--dc",
        dc.to_str().unwrap(),
    ]);
    let (key, _) = host.keys("py");
    let url = host.score_url("py");
    assert_eq!(score(&url, Some(&key), "hello").status, 200);
    // A ValueError (bad JSON inside the script) is the script's bug, as in Azure ML: not a 400.
    let r = score(&url, Some(&key), "bad-json");
    assert_eq!(r.status, 500, "{}", r.body);
    let err = r.json()["error"].as_str().unwrap().to_string();
    assert!(err.contains("JSONDecodeError") && err.contains("score.py:"), "{err}");
    let r = score(&url, Some(&key), "raise");
    assert_eq!(r.status, 500, "{}", r.body);
    assert!(
        r.body.contains("RuntimeError: the adversary failed on purpose"),
        "{}",
        r.body
    );
    let stats = &host.run_json(&["service", "show", "py"])["versions"][0]["stats"];
    assert_eq!(
        (&stats["failures"], &stats["rejected"]),
        (&json!(2), &json!(0)),
        "{stats}"
    );
    // The service's log carries the exception with its line, as Azure's get_logs() shows it.
    let logs = host.run(&["service", "logs", "py"]);
    assert!(
        logs.lines()
            .any(|l| l.contains("status=500") && l.contains("RuntimeError: the adversary failed on purpose")),
        "{logs}"
    );
}
