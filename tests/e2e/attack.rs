//! The host tried as an attacker and an unlucky operator would: every credential against every route
//! family, unauthenticated and huge uploads, slow, idle and surplus connections under a low descriptor
//! limit, overload at ten times capacity, misbehaving scripts beside a healthy service (and, in
//! `crash.rs`, the host stopped under load).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use sha2::Digest;

use crate::fixture::*;

pub(crate) const KEY_A: &str = "key-a-0123456789abcdef";

fn addr(host: &TestHost) -> String {
    host.url.trim_start_matches("http://").to_string()
}

/// `curl` with an optional raw header line (`"Authorization: ..."`, or `"Authorization;"` for an empty one).
fn call(host: &TestHost, method: &str, path: &str, header: Option<&str>, body: Option<&str>) -> Reply {
    let mut args = vec!["-X", method];
    if let Some(h) = header {
        args.extend(["-H", h]);
    }
    if let Some(b) = body {
        args.extend(["--data-binary", b]);
    }
    curl(&format!("{}{path}", host.url), &args)
}

#[test]
fn the_auth_matrix_holds_on_every_route_family() {
    let dir = temp_dir("authmatrix");
    let host = TestHost::start(&dir.join("ws"), &[]);
    host.register_diabetes();
    host.deploy("diabetes:1", "a", &Dc::test().keys(KEY_A).write(&dir, "a.json"));
    let b = Dc::test()
        .with("authEnabled", false.into())
        .with("tokenAuthEnabled", true.into());
    host.deploy("diabetes:1", "b", &b.write(&dir, "b.json"));
    let admin = host.admin_token();
    let token_b = host.run_json(&["service", "token", "b"])["accessToken"]
        .as_str()
        .unwrap()
        .to_string();
    let (key_b, _) = host.keys("b");
    let mut tampered = token_b.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    let junk = "j".repeat(8 << 10);

    // 16 credential kinds.
    let bearer = |s: &str| format!("Authorization: Bearer {s}");
    let credentials: Vec<(&str, Option<String>)> = vec![
        ("none", None),
        ("empty header", Some("Authorization;".into())),
        ("scheme only", Some("Authorization: Bearer".into())),
        ("basic scheme", Some(format!("Authorization: Basic {KEY_A}"))),
        ("a's key", Some(bearer(KEY_A))),
        ("a's secondary key", Some(bearer(&format!("{KEY_A}-2")))),
        ("a's key + 1 char", Some(bearer(&format!("{KEY_A}x")))),
        ("a's key - 1 char", Some(bearer(&KEY_A[..KEY_A.len() - 1]))),
        ("a's key upper-cased", Some(bearer(&KEY_A.to_uppercase()))),
        ("b's key (b takes tokens)", Some(bearer(&key_b))),
        ("b's token", Some(bearer(&token_b))),
        ("b's token tampered", Some(bearer(&tampered))),
        (
            "unsigned token",
            Some(bearer(
                "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJiIiwiYXVkIjoiYiJ9.",
            )),
        ),
        ("admin token", Some(bearer(&admin))),
        ("admin token + 1 char", Some(bearer(&format!("{admin}x")))),
        ("8 KiB of junk", Some(bearer(&junk))),
    ];
    let sample = sample_body();
    let blob = format!("/api/v1/admin/blobs/{}", "0".repeat(64));
    // Route families, and who gets in.
    let a = ["a's key", "a's secondary key", "admin token"];
    let b = ["b's token", "admin token"];
    let admin_only = ["admin token"];
    let routes: Vec<(&str, &str, Option<&str>, &[&str])> = vec![
        ("POST", "/api/v1/service/a/score", Some(sample.as_str()), &a),
        ("GET", "/api/v1/service/a/swagger.json", None, &a),
        ("GET", "/v2/models/a", None, &a),
        ("GET", "/v2/models/a/versions/nope", None, &a),
        ("GET", "/v2/models/a/ready", None, &a),
        ("POST", "/v2/models/a/infer", Some("{}"), &a),
        ("POST", "/api/v1/service/b/score", Some(sample.as_str()), &b),
        ("GET", "/v2/models/b", None, &b),
        ("GET", "/api/v1/admin/services", None, &admin_only),
        ("PUT", &blob, Some("x"), &admin_only),
        ("GET", "/metrics", None, &admin_only),
    ];
    let mut checked = 0;
    for (method, path, body, allowed) in &routes {
        for (who, header) in &credentials {
            let r = call(&host, method, path, header.as_deref(), *body);
            if allowed.contains(who) {
                assert!(
                    r.status != 401 && r.status < 500,
                    "{who} on {method} {path}: {} {}",
                    r.status,
                    r.body
                );
            } else {
                assert_eq!(r.status, 401, "{who} got into {method} {path}: {}", r.body);
                let error = r.json()["error"].as_str().unwrap().to_string();
                assert!(!error.contains("nope") && !error.contains("versions:"), "{error}");
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 16 * 11);
}

/// Reads one HTTP response head from a raw socket (status code), within `limit`.
fn read_status(stream: &mut TcpStream, limit: Duration) -> Option<u16> {
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&got);
    text.split_whitespace().nth(1)?.parse().ok()
}

/// The host's resident memory at its highest while `during` runs, sampled every 20 ms.
fn peak_rss_during<T>(host: &TestHost, during: impl FnOnce() -> T) -> (T, u64) {
    let pid = host.pid();
    let done = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (done, peak) = (done.clone(), peak.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                if let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/status"))
                    && let Some(kib) = s
                        .lines()
                        .find_map(|l| l.strip_prefix("VmRSS:"))
                        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                {
                    peak.fetch_max(kib, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let out = during();
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    (out, peak.load(Ordering::Relaxed))
}

#[test]
fn uploads_are_refused_before_their_bodies_and_stream_to_disk() {
    let dir = temp_dir("uploads");
    let host = TestHost::start(&dir.join("ws"), &[]);
    let baseline = host.rss_kib();

    // Four unauthenticated 500 MB uploads: each is answered 401 at once, its body never read.
    let (statuses, peak) = peak_rss_during(&host, || {
        let clients: Vec<_> = (0..4)
            .map(|_| {
                let addr = addr(&host);
                std::thread::spawn(move || {
                    let started = Instant::now();
                    let mut s = TcpStream::connect(&addr).unwrap();
                    let head = format!(
                        "POST /api/v1/admin/models HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 500000000\r\n\r\n"
                    );
                    s.write_all(head.as_bytes()).unwrap();
                    // Push body bytes until the host stops taking them (it closes after answering).
                    let chunk = vec![0u8; 1 << 20];
                    let mut writer = s.try_clone().unwrap();
                    let pusher = std::thread::spawn(move || {
                        let mut sent = 0usize;
                        while sent < 500_000_000 && writer.write_all(&chunk).is_ok() {
                            sent += chunk.len();
                        }
                    });
                    let status = read_status(&mut s, Duration::from_secs(10));
                    let elapsed = started.elapsed();
                    drop(s);
                    let _ = pusher.join();
                    (status, elapsed)
                })
            })
            .collect();
        clients.into_iter().map(|c| c.join().unwrap()).collect::<Vec<_>>()
    });
    eprintln!(
        "figure: 4 unauthenticated 500 MB uploads: 401 in at most {:?}, RSS {baseline} -> {peak} KiB",
        statuses.iter().map(|s| s.1).max().unwrap()
    );
    for (status, elapsed) in &statuses {
        assert_eq!(*status, Some(401));
        assert!(*elapsed < Duration::from_secs(2), "401 took {elapsed:?}");
    }
    assert!(
        peak < baseline + (40 << 10),
        "RSS grew from {baseline} KiB to {peak} KiB on unauthenticated uploads"
    );

    // An authenticated 256 MiB upload streams to disk: memory stays flat, the blob is whole.
    let size = 256usize << 20;
    let chunk = vec![7u8; 1 << 20];
    let mut hasher = sha2::Sha256::new();
    for _ in 0..size / chunk.len() {
        hasher.update(&chunk);
    }
    let sha: String = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
    let admin = host.admin_token();
    let put = |sha: &str| {
        let mut s = TcpStream::connect(addr(&host)).unwrap();
        let head = format!(
            "PUT /api/v1/admin/blobs/{sha} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {admin}\r\n\
             Content-Length: {size}\r\n\r\n"
        );
        s.write_all(head.as_bytes()).unwrap();
        for _ in 0..size / chunk.len() {
            s.write_all(&chunk).unwrap();
        }
        read_status(&mut s, Duration::from_secs(60))
    };
    let baseline = host.rss_kib();
    let (status, peak) = peak_rss_during(&host, || put(&sha));
    assert_eq!(status, Some(201));
    eprintln!("figure: authenticated 256 MiB upload: RSS {baseline} -> {peak} KiB at most");
    assert!(
        peak < baseline + (64 << 10),
        "RSS grew from {baseline} KiB to {peak} KiB on a 256 MiB upload"
    );
    let blobs = dir.join("ws/blobs/sha256");
    assert_eq!(std::fs::metadata(blobs.join(&sha)).unwrap().len(), size as u64);
    // The wrong hash: refused, nothing left behind.
    assert_eq!(put(&"1".repeat(64)), Some(400));
    assert_eq!(std::fs::read_dir(&blobs).unwrap().count(), 1);
    std::fs::remove_file(blobs.join(&sha)).unwrap();

    // A JSON admin body over its 16 MiB limit: 413 before it is read.
    let mut s = TcpStream::connect(addr(&host)).unwrap();
    let head = format!(
        "POST /api/v1/admin/services HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {admin}\r\n\
         Content-Length: 20000000\r\n\r\n{{}}"
    );
    s.write_all(head.as_bytes()).unwrap();
    assert_eq!(read_status(&mut s, Duration::from_secs(5)), Some(413));
}

/// How long until the host closes `stream` (a read gives EOF or an error), writing `trickle` a byte at
/// a time every 200 ms meanwhile; `None` when it is still open after `limit`.
fn closed_after(stream: &mut TcpStream, trickle: &[u8], limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    stream.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut next = trickle.iter().cycle();
    let mut buf = [0u8; 1024];
    while started.elapsed() < limit {
        if !trickle.is_empty() && stream.write_all(&[*next.next().unwrap()]).is_err() {
            return Some(started.elapsed());
        }
        match stream.read(&mut buf) {
            Ok(0) => return Some(started.elapsed()),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return Some(started.elapsed()),
        }
    }
    None
}

#[test]
fn slow_idle_and_surplus_connections_are_closed_and_health_answers_at_the_cap() {
    let dir = temp_dir("conns");
    // 256 descriptors: the host keeps a quarter in reserve and caps connections at 192. Timeouts long
    // enough that only the cap closes anything here, however slowly a loaded machine accepts.
    let capped = TestHost::start_limited(
        &dir.join("ws-cap"),
        &["--header-read-timeout-secs", "60", "--idle-timeout-secs", "60"],
        Some(256),
    );

    // 300 sockets opened at once, more than the cap: the oldest idle ones are shed, health answers.
    let hoard: Vec<TcpStream> = (0..300).map(|_| TcpStream::connect(addr(&capped)).unwrap()).collect();
    let metrics = || {
        curl(
            &format!("{}/metrics", capped.url),
            &["-H", &format!("Authorization: Bearer {}", capped.admin_token())],
        )
        .body
    };
    let closed = |metrics: &str, reason: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(&format!("plinth_connections_closed_total{{reason=\"{reason}\"}}")))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0.0)
    };
    // The accept loop has taken every socket once the ones over the cap are closed.
    wait_for("the sockets over the cap to be closed", Duration::from_secs(30), || {
        let m = metrics();
        match closed(&m, "shed") + closed(&m, "turned_away") {
            n if n >= (300 - 192) as f64 => Ok(()),
            n => Err(format!("{n} closed")),
        }
    });
    let started = Instant::now();
    let r = curl(&format!("{}/healthz", capped.url), &["--max-time", "5"]);
    assert_eq!(r.status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "health took {:?}",
        started.elapsed()
    );
    let fds = std::fs::read_dir(format!("/proc/{}/fd", capped.pid())).unwrap().count();
    eprintln!(
        "figure: 300 sockets at cap 192: health in {:?}, {fds} descriptors",
        started.elapsed()
    );
    assert!(fds < 256, "{fds} descriptors open");
    let metrics = metrics();
    let counter = |reason: &str| closed(&metrics, reason);
    eprintln!(
        "figure: shed {}, turned away {}",
        counter("shed"),
        counter("turned_away")
    );
    assert!(counter("shed") >= 100.0, "{metrics}");
    assert_eq!(counter("header_timeout") + counter("idle"), 0.0, "{metrics}");
    drop(hoard);
    drop(capped);

    // The timeouts, on a host with short ones.
    let host = TestHost::start(
        &dir.join("ws"),
        &[
            "--header-read-timeout-secs",
            "1",
            "--idle-timeout-secs",
            "3",
            "--body-read-timeout-secs",
            "1",
        ],
    );
    let admin = host.admin_token();
    let health = format!("{}/healthz", host.url);

    // A connection that sends nothing: closed once the header-read timeout (1 s) passes.
    let mut silent = TcpStream::connect(addr(&host)).unwrap();
    let t = closed_after(&mut silent, b"", Duration::from_secs(5)).expect("silent connection left open");
    assert!(t >= Duration::from_millis(800) && t < Duration::from_secs(3), "{t:?}");
    eprintln!("figure: silent connection closed after {t:?} (header-read timeout 1 s)");

    // A head trickling in a byte every 200 ms: closed by the same timeout although bytes keep coming.
    let mut slow = TcpStream::connect(addr(&host)).unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").unwrap();
    let t = closed_after(&mut slow, b"X-Slow: yes\r\n", Duration::from_secs(6)).expect("slow head left open");
    assert!(t < Duration::from_secs(3), "{t:?}");
    eprintln!("figure: trickling head closed after {t:?} (header-read timeout 1 s)");

    // A keep-alive connection after its answer: open through the idle timeout (3 s), then closed.
    let mut kept = TcpStream::connect(addr(&host)).unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!(read_status(&mut kept, Duration::from_secs(5)), Some(200));
    let t = closed_after(&mut kept, b"", Duration::from_secs(8)).expect("idle connection left open");
    assert!(t >= Duration::from_millis(2500) && t < Duration::from_secs(5), "{t:?}");
    eprintln!("figure: idle keep-alive closed after {t:?} (idle timeout 3 s)");

    // A body trickled in after a whole head: its request is in flight, so the body-read timeout (1 s)
    // answers it, 408.
    let mut trickle = TcpStream::connect(addr(&host)).unwrap();
    let head = format!(
        "POST /api/v1/admin/services HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {admin}\r\nContent-Length: 100\r\n\r\n{{"
    );
    trickle.write_all(head.as_bytes()).unwrap();
    let started = Instant::now();
    let writer = {
        let mut w = trickle.try_clone().unwrap();
        std::thread::spawn(move || {
            for _ in 0..20 {
                // The client trickles on purpose: a byte every 200 ms, never the whole body in time.
                std::thread::sleep(Duration::from_millis(200));
                if w.write_all(b" ").is_err() {
                    break;
                }
            }
        })
    };
    assert_eq!(read_status(&mut trickle, Duration::from_secs(5)), Some(408));
    let t = started.elapsed();
    assert!(t >= Duration::from_millis(900) && t < Duration::from_secs(3), "{t:?}");
    eprintln!("figure: trickled body answered 408 after {t:?} (body-read timeout 1 s)");
    drop(trickle);
    let _ = writer.join();

    // The host serves on.
    assert_eq!(curl(&health, &[]).status, 200);
}

/// A host with the Rust adversary (`adv`) and the Python adversary (`pyadv`) deployed, open.
pub(crate) fn deploy_adversaries(host: &TestHost, dir: &std::path::Path, dc: &Dc) {
    let dc = dc.clone().no_auth();
    host.deploy_adversary(dir, "adv", &dc);
    let py = dir.join("py");
    std::fs::create_dir_all(&py).unwrap();
    std::fs::copy(
        crate::support::repo().join("plugins/test-scripts-python/adversary/score.py"),
        py.join("score.py"),
    )
    .unwrap();
    let ic = write_json(
        dir,
        "ic-pyadv.json",
        &json!({"entryScript": "score.py", "sourceDirectory": "py", "runtime": "python"}),
    );
    host.deploy_script("pyadv", &ic, &dc.write(dir, "dc-pyadv.json"));
}

#[test]
fn overload_at_ten_times_capacity_gets_only_200_and_503_and_recovers() {
    let dir = temp_dir("overload");
    let host = TestHost::start(&dir.join("ws"), &[]);
    // Capacity 2 (one replica, two slots), a 100 ms queue wait; each call takes 400 ms.
    let dc = Dc::test()
        .replicas(1)
        .concurrency(2)
        .with("maxQueueWaitMs", 100.into())
        .no_auth();
    host.deploy_adversary(&dir, "adv", &dc);
    let baseline = host.rss_kib();
    let (statuses, peak) = peak_rss_during(&host, || {
        let clients: Vec<_> = (0..20)
            .map(|_| {
                let url = host.url.clone();
                std::thread::spawn(move || {
                    let mut c = KeepAlive::connect(&url);
                    (0..5)
                        .map(|_| {
                            let r = c.post("/api/v1/service/adv/score", &[], b"sleep");
                            if r.status == 503 {
                                assert_eq!(r.header("retry-after"), Some("1"));
                            }
                            r.status
                        })
                        .collect::<Vec<u16>>()
                })
            })
            .collect();
        clients
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect::<Vec<u16>>()
    });
    let ok = statuses.iter().filter(|&&s| s == 200).count();
    let busy = statuses.iter().filter(|&&s| s == 503).count();
    assert_eq!(ok + busy, 100, "only 200 and 503: {statuses:?}");
    eprintln!("figure: overload 10x: {ok} x 200, {busy} x 503, RSS {baseline} -> {peak} KiB");
    assert!(ok >= 4 && busy >= 50, "{ok} × 200, {busy} × 503");
    assert!(
        peak < baseline + (64 << 10),
        "RSS grew from {baseline} KiB to {peak} KiB"
    );
    // Recovery: the next request is served at once.
    let started = Instant::now();
    assert_eq!(score(&host.score_url("adv"), None, "hello").status, 200);
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[test]
fn misbehaving_scripts_hurt_only_their_own_requests() {
    let dir = temp_dir("adversaries");
    let host = TestHost::start(&dir.join("ws"), &[]);
    host.register_diabetes();
    host.deploy("diabetes:1", "ridge", &Dc::test().no_auth().write(&dir, "ridge.json"));
    let dc = Dc::test()
        .replicas(1)
        .concurrency(2)
        .with("scoringTimeoutMs", 1500.into())
        .with("containerResourceRequirements", json!({"cpu": 0.5, "memoryInGB": 0.25}));
    deploy_adversaries(&host, &dir, &dc);

    // The healthy service is scored throughout, and must answer every time, promptly.
    let stop = Arc::new(AtomicBool::new(false));
    let healthy = {
        let (url, stop) = (host.url.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut c = KeepAlive::connect(&url);
            let mut worst = Duration::ZERO;
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let r = c.post("/api/v1/service/ridge/score", &[], sample_body().as_bytes());
                assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
                worst = worst.max(t.elapsed());
                n += 1;
            }
            (n, worst)
        })
    };

    let ask = |service: &str, body: &str| score(&host.score_url(service), None, body);
    let timed = |service: &str, body: &str| {
        let t = Instant::now();
        (ask(service, body), t.elapsed())
    };
    for service in ["adv", "pyadv"] {
        let (r, t) = timed(service, "loop");
        assert_eq!(r.status, 504, "{service}: {}", r.body);
        assert!(t < Duration::from_secs(4), "{service}: the 1.5 s deadline took {t:?}");
        eprintln!("figure: {service} loop: 504 after {t:?} (deadline 1.5 s)");
        let r = ask(service, "alloc");
        assert_eq!(r.status, 500, "{service}: {}", r.body);
        assert!(
            r.body.contains("memory") || r.body.contains("MemoryError"),
            "{service}: {}",
            r.body
        );
        let r = ask(service, "read-passwd");
        assert!(!r.body.contains("root:"), "{service}: {}", r.body);
        let r = ask(service, "huge-output");
        assert!(r.status >= 500 && r.body.len() < 4096, "{service}: {}", r.status);
        let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
        assert_eq!(ask(service, &deep).status, 400);
        // The same replica goes on serving.
        assert_eq!(ask(service, "hello").status, 200, "{service} after its misdeeds");
    }
    assert_ne!(ask("adv", "write-models").status, 200);
    let r = ask("pyadv", "write");
    assert_eq!(r.status, 500, "{}", r.body);
    let r = ask("pyadv", "recurse");
    assert_eq!(r.status, 500, "{}", r.body);
    assert!(
        r.body.contains("RecursionError") || r.body.contains("stack"),
        "{}",
        r.body
    );
    let r = ask("adv", "panic");
    assert_eq!(r.status, 500, "{}", r.body);

    // A script whose init() fails: the deploy says so, and nothing else is touched.
    let model = dir.join("failing-model");
    std::fs::create_dir_all(&model).unwrap();
    std::fs::write(model.join("fail-init"), "").unwrap();
    host.run(&[
        "model",
        "register",
        "--name",
        "failing",
        "--path",
        model.to_str().unwrap(),
    ]);
    let ic = write_json(
        &dir,
        "ic-fail.json",
        &json!({"entryScript": "score.py", "sourceDirectory": "py", "runtime": "python"}),
    );
    let dc = Dc::test().no_auth().write(&dir, "dc-fail.json");
    let out = host
        .cli()
        .args(["deploy", "-n", "broken", "-m", "failing:1", "--ic"])
        .arg(&ic)
        .arg("--dc")
        .arg(&dc)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("init failed on purpose"), "{err}");

    stop.store(true, Ordering::Relaxed);
    let (n, worst) = healthy.join().unwrap();
    assert!(n > 20, "only {n} healthy requests");
    eprintln!("figure: healthy service beside adversaries: {n} x 200, slowest {worst:?}");
    assert!(worst < Duration::from_secs(2), "a healthy request took {worst:?}");
    assert_eq!(ask("adv", "hello").status, 200);
}

#[test]
fn a_large_body_to_an_unknown_service_or_with_a_wrong_key_gets_its_status_not_a_reset() {
    let dir = temp_dir("refused-bodies");
    let host = TestHost::start(&dir.join("ws"), &[]);
    host.register_diabetes();
    let dc = Dc::test().keys("the-right-key-0123456789abcdef").write(&dir, "dc.json");
    host.deploy("diabetes:1", "ridge", &dc);
    // 8 MB: far more than the socket buffers hold, so a host that answered and closed without reading
    // would leave curl with a broken pipe or a reset instead of the status.
    let big = dir.join("big.json");
    std::fs::write(&big, vec![b' '; 8 << 20]).unwrap();
    let data = format!("@{}", big.display());
    let base = &host.url;
    let cases = [
        (format!("{base}/api/v1/service/nobody/score"), None, 404),
        (format!("{base}/v2/models/nobody/infer"), None, 404),
        (host.score_url("ridge"), Some("Authorization: Bearer a-wrong-key"), 401),
        (host.score_url("ridge"), None, 401),
        (
            format!("{base}/v2/models/ridge/infer"),
            Some("Authorization: Bearer a-wrong-key"),
            401,
        ),
    ];
    for (url, header, want) in cases {
        for _ in 0..3 {
            let mut args = vec!["-X", "POST", "--data-binary", data.as_str()];
            if let Some(h) = header {
                args.extend(["-H", h]);
            }
            // `curl` (the fixture) fails the test when curl itself fails (broken pipe, reset).
            let reply = curl(&url, &args);
            assert_eq!(reply.status, want, "{url}: {}", reply.body);
            assert!(reply.json()["error"].is_string(), "{}", reply.body);
        }
    }
}
