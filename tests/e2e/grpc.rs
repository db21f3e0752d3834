//! The Open Inference Protocol over gRPC with the real Python tritonclient.grpc, plain and over TLS.

use std::process::Command;

use serde_json::json;

use crate::fixture::*;
use crate::support::python;

const KEY: &str = "grpc-test-key-0123456789abcdef";

/// A host serving gRPC too, with `diabetes`, `alltypes` (key auth) and the adversary script `adv` (open).
fn grpc_host(tag: &str, extra: &[&str], cacert: Option<&std::path::Path>) -> (TestHost, std::path::PathBuf) {
    let dir = temp_dir(tag);
    let mut args = vec!["--grpc-listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let mut host = TestHost::start(&dir.join("ws"), &args);
    if let Some(c) = cacert {
        host = host.with_cacert(c);
    }
    host.register_diabetes();
    host.register_all_types();
    let dc = Dc::test()
        .keys(KEY)
        .replicas(2)
        .with("dataCollection", json!({"storageEnabled": true}))
        .write(&dir, "dc.json");
    for m in ["diabetes", "alltypes"] {
        host.run(&["deploy", "-m", &format!("{m}:1"), "-n", m, "--dc", dc.to_str().unwrap()]);
    }
    host.deploy_adversary(&dir, "adv", &Dc::test().no_auth());
    (host, dir)
}

#[test]
fn tritonclient_grpc_health_metadata_infer_every_datatype_and_errors() {
    let (mut host, dir) = grpc_host("grpc", &[], None);
    let addr = host.grpc.clone().expect("the gRPC address is printed");
    python_client("grpc_client.py", &[&addr, KEY]);

    // The same router underneath: counted in metrics, logged, collected.
    let metrics = curl(
        &format!("{}/metrics", host.url),
        &["-H", &format!("Authorization: Bearer {}", host.admin_token())],
    )
    .body;
    let line = metrics
        .lines()
        .find(|l| {
            l.starts_with("plinth_requests_total{")
                && l.contains("service=\"diabetes\"")
                && l.contains("status=\"200\"")
        })
        .unwrap_or_else(|| panic!("no diabetes 200s in {metrics}"));
    let count: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(count >= 3.0, "{line}");
    // Refused before a version: the two calls without the right key, the unknown version.
    for want in [
        r#"plinth_requests_total{service="diabetes",status="401",version="-"} 2"#,
        r#"plinth_requests_total{service="diabetes",status="404",version="-"} 1"#,
    ] {
        assert!(metrics.contains(want), "missing {want} in\n{metrics}");
    }
    let logs = host.run(&["service", "logs", "diabetes"]);
    assert!(logs.contains("req-7"), "{logs}");
    assert!(host.stop().success());
    let inputs = crate::observe::walk(&dir.join("ws/modeldata/diabetes/diabetes/1/inputs"));
    let recorded: Vec<serde_json::Value> = inputs
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(
        recorded.iter().any(|r| r["request_id"] == "req-7"),
        "gRPC requests are collected: {recorded:?}"
    );
}

#[test]
fn grpc_over_tls_with_tritonclient_and_openssl() {
    let dir = temp_dir("grpc-tls");
    let (cert, key) = self_signed_cert(&dir);
    let (host, _) = grpc_host(
        "grpc-tls-host",
        &["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()],
        Some(&cert),
    );
    let addr = host.grpc.clone().unwrap();
    let port = addr.rsplit(':').next().unwrap();
    let script = format!(
        r#"
import numpy as np, tritonclient.grpc as g
c = g.InferenceServerClient(url="localhost:{port}", ssl=True, root_certificates="{cert}")
assert c.is_server_live()
x = g.InferInput("X", [1, 10], "FP32")
x.set_data_from_numpy(np.full((1, 10), 0.01, dtype=np.float32))
r = c.infer("diabetes", [x], headers={{"authorization": "Bearer {KEY}"}})
print("prediction", float(r.as_numpy("variable")[0][0]))
"#,
        cert = cert.display()
    );
    let out = Command::new(python()).arg("-c").arg(&script).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("prediction"), "{stdout}");
    // The gRPC listener negotiates HTTP/2 by ALPN; the HTTPS one keeps HTTP/1.1.
    let alpn = |port: &str, proto: &str| {
        let out = Command::new("openssl")
            .args([
                "s_client",
                "-connect",
                &format!("127.0.0.1:{port}"),
                "-alpn",
                proto,
                "-CAfile",
            ])
            .arg(&cert)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let text = alpn(port, "h2");
    assert!(
        text.contains("ALPN protocol: h2") && text.contains("Verify return code: 0 (ok)"),
        "{text}"
    );
    let text = alpn(&host.port().to_string(), "http/1.1");
    assert!(text.contains("ALPN protocol: http/1.1"), "{text}");
}

/// A body that sends one frame and then nothing, ever: a client that stopped halfway through a message.
struct Stalled(Option<bytes::Bytes>);

impl hyper::body::Body for Stalled {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, Self::Error>>> {
        match self.0.take() {
            Some(data) => std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(data)))),
            None => std::task::Poll::Pending,
        }
    }
}

/// Sends a ModelInfer call whose message (announced at `announced` bytes) stops after its first 10 bytes,
/// with `authorization: Bearer <credential>` when given; the answer's grpc-status, decoded grpc-message,
/// and how long it took.
fn stalled_call(addr: &str, credential: Option<&str>, announced: u32) -> (String, String, std::time::Duration) {
    use http_body_util::BodyExt;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let io = hyper_util::rt::TokioIo::new(stream);
        let (mut sender, conn) = hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
            .await
            .unwrap();
        tokio::spawn(conn);
        // The gRPC prefix announces the message's length; 10 bytes of it come, the rest never does.
        let mut first = vec![0u8];
        first.extend_from_slice(&announced.to_be_bytes());
        first.extend_from_slice(&[0x0a; 10]);
        let mut request = http::Request::post(format!("http://{addr}/inference.GRPCInferenceService/ModelInfer"))
            .header("content-type", "application/grpc")
            .header("te", "trailers");
        if let Some(c) = credential {
            request = request.header("authorization", format!("Bearer {c}"));
        }
        let request = request.body(Stalled(Some(first.into()))).unwrap();
        let started = std::time::Instant::now();
        let response = tokio::time::timeout(std::time::Duration::from_secs(10), sender.send_request(request))
            .await
            .expect("an answer before the client gives up")
            .unwrap();
        let took = started.elapsed();
        // A status before any message comes in the headers (trailers-only), otherwise in the trailers.
        let (parts, body) = response.into_parts();
        let mut fields = parts.headers;
        if !fields.contains_key("grpc-status") {
            let collected = body.collect().await.unwrap();
            fields = collected.trailers().cloned().unwrap_or_default();
        }
        let text = |name: &str| {
            fields
                .get(name)
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default()
        };
        (text("grpc-status"), urlencoding_decode(&text("grpc-message")), took)
    })
}

#[test]
fn a_grpc_message_sent_too_slowly_is_refused_at_the_body_read_timeout() {
    let dir = temp_dir("grpc-trickle");
    let host = TestHost::start(
        &dir.join("ws"),
        &["--grpc-listen", "127.0.0.1:0", "--body-read-timeout-secs", "1"],
    );
    let addr = host.grpc.clone().expect("the gRPC address is printed");
    // With a credential the host accepts (its admin token), the message is waited for.
    let (status, message, took) = stalled_call(&addr, Some(&host.admin_token()), 100);
    assert_eq!(status, "4", "DEADLINE_EXCEEDED; message: {message}");
    assert!(message.contains("did not arrive within 1 s"), "{message}");
    assert!(
        took >= std::time::Duration::from_millis(900) && took < std::time::Duration::from_secs(5),
        "{took:?}"
    );
    eprintln!("figure: trickled gRPC message refused after {took:?} (body-read timeout 1 s)");
    // The host serves on.
    assert_eq!(curl(&format!("{}/healthz", host.url), &[]).status, 200);
}

#[test]
fn a_grpc_call_without_an_accepted_credential_is_refused_before_its_message_is_read() {
    let dir = temp_dir("grpc-preauth");
    let host = TestHost::start(
        &dir.join("ws"),
        &["--grpc-listen", "127.0.0.1:0", "--body-read-timeout-secs", "3"],
    );
    host.register_diabetes();
    let dc = Dc::test().keys(KEY).write(&dir, "dc.json");
    host.run(&[
        "deploy",
        "-m",
        "diabetes:1",
        "-n",
        "diabetes",
        "--dc",
        dc.to_str().unwrap(),
    ]);
    let addr = host.grpc.clone().expect("the gRPC address is printed");
    let baseline = host.rss_kib();
    // A 99 MB message announced, none of it read: UNAUTHENTICATED at once, not after the read timeout.
    for (credential, says) in [
        (None, "need an 'authorization: Bearer"),
        (Some("a-wrong-key-0123456789abcdef"), "not accepted by any model"),
    ] {
        let (status, message, took) = stalled_call(&addr, credential, 99 << 20);
        assert_eq!(status, "16", "UNAUTHENTICATED; message: {message}");
        assert!(message.contains(says), "{message}");
        assert!(took < std::time::Duration::from_secs(2), "{took:?}");
        eprintln!("figure: unauthenticated 99 MB gRPC call refused after {took:?}, its message unread");
    }
    // The service's own key lets the call through to the message (which never comes).
    let (status, message, _) = stalled_call(&addr, Some(KEY), 99 << 20);
    assert_eq!(status, "4", "DEADLINE_EXCEEDED; message: {message}");
    let grown = host.rss_kib().saturating_sub(baseline);
    assert!(grown < 64 << 10, "the host grew by {grown} KiB");
    // The health calls need no credential.
    assert_eq!(curl(&format!("{}/healthz", host.url), &[]).status, 200);
}

/// `grpc-message` is percent-encoded.
fn urlencoding_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(b) = s.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
