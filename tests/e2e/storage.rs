//! Packages in private storage, as Azure users keep artifacts: a SAS query on every package URI (from
//! `--base-uri`, or from a file so that it stays out of the manifest), an `Authorization` header from a
//! file, a size cap, and nothing of a credential in a message. Then what a walk from AKS asks of an
//! export and a render: the namespace and probes of Azure's deployment config, the control flag, a
//! disruption budget, pull secrets, and keys reused instead of made anew.

use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};

use serde_json::{Value, json};

use crate::fixture::{Dc, TestHost, plinth, self_signed_cert, temp_dir, write_json};
use crate::support::repo;

const SIG: &str = "sig=s3cr3t-signature";
const BEARER: &str = "Bearer t0ken-of-the-storage";

/// An https server (Python's, with the test certificate) that serves `root`'s files under `/sas/` only
/// with the SAS signature, under `/bearer/` only with the header, and logs each request's path and
/// `Authorization` to `log`.
fn storage_server(dir: &Path, root: &Path, log: &Path) -> (Child, u16) {
    let (cert, key) = self_signed_cert(dir);
    let script = r#"
import http.server, os, ssl, sys
root, cert, key, log, sig, bearer = sys.argv[1:7]
class Storage(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass
    def do_GET(self):
        path, _, query = self.path.partition("?")
        auth = self.headers.get("Authorization")
        with open(log, "a") as f:
            f.write(f"{self.path} {auth}\n")
        if path.startswith("/hop/"):
            self.send_response(302)
            self.send_header("Location", "/bearer/" + path[len("/hop/"):])
            self.end_headers()
            return
        kind, _, name = path.strip("/").partition("/")
        allowed = (kind == "sas" and sig in query.split("&")) or (kind == "bearer" and auth == bearer)
        file = os.path.join(root, name)
        if not allowed or not os.path.isfile(file):
            self.send_response(403)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = open(file, "rb").read()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
server = http.server.HTTPServer(("127.0.0.1", 0), Storage)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
server.socket = ctx.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;
    let mut server = std::process::Command::new(repo().join(".venv/bin/python"))
        .args(["-c", script])
        .arg(root)
        .arg(&cert)
        .arg(&key)
        .arg(log)
        .args([SIG, BEARER])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(server.stdout.take().unwrap()), &mut line).unwrap();
    (server, line.trim().parse().unwrap())
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn fetch(uri: &str, sha: &str, to: &Path, cacert: &Path, extra: &[&str]) -> Output {
    plinth()
        .args(["package", "fetch", uri, "--sha256", sha, "--to"])
        .arg(to)
        .arg("--cacert")
        .arg(cacert)
        .args(extra)
        .output()
        .unwrap()
}

fn said(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn package_fetch_takes_credentials_from_files_caps_the_size_and_never_shows_them() {
    let dir = temp_dir("storage");
    let root = dir.join("blobs");
    std::fs::create_dir_all(&root).unwrap();
    let bytes = b"a package in a private container ".repeat(2000);
    std::fs::write(root.join("p.tar"), &bytes).unwrap();
    let sha = sha256_hex(&bytes);
    let log = dir.join("requests.log");
    let (mut server, port) = storage_server(&dir, &root, &log);
    let cacert = dir.join("cert.pem");
    let base = format!("https://localhost:{port}");
    let to = dir.join("packages");
    let secrets = dir.join("secret");
    std::fs::create_dir_all(&secrets).unwrap();
    std::fs::write(secrets.join("query"), format!("?sv=2024-11-04&{SIG}\n")).unwrap();
    std::fs::write(secrets.join("authorization"), format!("{BEARER}\n")).unwrap();
    let query_file = secrets.join("query");
    let header_file = secrets.join("authorization");
    let got = || std::fs::read(to.join(format!("{sha}.tar"))).ok();
    let clear = || {
        let _ = std::fs::remove_dir_all(&to);
    };

    // Without the signature, the storage refuses, and the message says why in plain words.
    let refused = fetch(&format!("{base}/sas/p.tar"), &sha, &to, &cacert, &[]);
    assert!(!refused.status.success());
    assert!(said(&refused).contains("403"), "{}", said(&refused));

    // A killed fetch's leftover (of any package) goes with the next fetch.
    std::fs::create_dir_all(&to).unwrap();
    let stale = to.join(format!(".{}.part", "c".repeat(64)));
    std::fs::write(&stale, b"half").unwrap();
    // The SAS query from a file: fetched, and the signature in no line printed.
    let ok = fetch(
        &format!("{base}/sas/p.tar"),
        &sha,
        &to,
        &cacert,
        &["--query-file", query_file.to_str().unwrap()],
    );
    assert!(ok.status.success(), "{}", said(&ok));
    assert_eq!(got().as_deref(), Some(&bytes[..]));
    assert!(!stale.exists(), "the leftover .part is removed");
    assert!(!said(&ok).contains("s3cr3t"), "{}", said(&ok));
    clear();

    // A SAS kept on the URI itself (`--base-uri` with a query): a failure shows the URI without it.
    let signed = format!("{base}/sas/p.tar?sv=2024-11-04&{SIG}");
    let wrong = "ab".repeat(32);
    let out = fetch(&signed, &wrong, &to, &cacert, &[]);
    assert!(!out.status.success());
    assert!(said(&out).contains(&format!("has sha256 {sha}")), "{}", said(&out));
    assert!(!said(&out).contains("s3cr3t"), "{}", said(&out));
    let ok = fetch(&signed, &sha, &to, &cacert, &[]);
    assert!(ok.status.success(), "{}", said(&ok));
    clear();

    // The header from a file, sent to the storage; through a redirect on the same server too.
    for path in ["bearer/p.tar", "hop/p.tar"] {
        let ok = fetch(
            &format!("{base}/{path}"),
            &sha,
            &to,
            &cacert,
            &["--header-file", header_file.to_str().unwrap()],
        );
        assert!(ok.status.success(), "{path}: {}", said(&ok));
        assert!(!said(&ok).contains("t0ken"), "{}", said(&ok));
        clear();
    }
    let requests = std::fs::read_to_string(&log).unwrap();
    assert!(requests.contains(&format!("/bearer/p.tar {BEARER}")), "{requests}");

    // A size cap below the package's size: stopped, nothing left.
    let capped = fetch(
        &format!("{base}/bearer/p.tar"),
        &sha,
        &to,
        &cacert,
        &["--header-file", header_file.to_str().unwrap(), "--max-bytes", "1000"],
    );
    assert!(!capped.status.success());
    assert!(said(&capped).contains("larger than 1000"), "{}", said(&capped));
    assert!(got().is_none());
    let leftovers: Vec<_> = std::fs::read_dir(&to)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // The same cap over a file:// URI (no Content-Length to go by): stopped as it reads.
    let local = format!("file://{}", root.join("p.tar").display());
    let capped = plinth()
        .args(["package", "fetch", &local, "--sha256", &sha, "--to"])
        .arg(&to)
        .args(["--max-bytes", "4096"])
        .output()
        .unwrap();
    assert!(!capped.status.success());
    assert!(said(&capped).contains("larger than 4096"), "{}", said(&capped));
    // An empty credential file is named, not sent.
    std::fs::write(&header_file, "\n").unwrap();
    let empty = fetch(
        &format!("{base}/bearer/p.tar"),
        &sha,
        &to,
        &cacert,
        &["--header-file", header_file.to_str().unwrap()],
    );
    assert!(!empty.status.success());
    assert!(said(&empty).contains("is empty"), "{}", said(&empty));
    let _ = server.kill();
    let _ = server.wait();
}

/// `plinth controller render -f FILE --format json ARGS`: the List's items.
fn render(manifest: &Path, args: &[&str]) -> Vec<Value> {
    let out = plinth()
        .args(["controller", "render", "--format", "json", "-f"])
        .arg(manifest)
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    list["items"].as_array().unwrap().clone()
}

fn kind<'a>(items: &'a [Value], kind: &str) -> Option<&'a Value> {
    items.iter().find(|i| i["kind"] == kind)
}

#[test]
fn an_export_keeps_the_sas_size_namespace_probes_and_control_and_a_render_reuses_keys() {
    let dir = temp_dir("aks-walk");
    let host = TestHost::start(&dir.join("edge"), &[]);
    host.register_diabetes();
    // A name a cluster cannot take: served here, with a note.
    let dc_plain = Dc::test().write(&dir, "dc-plain.json");
    let out = host
        .cli()
        .args(["deploy", "-m", "diabetes:1", "-n", "Diabetes_Edge", "--dc"])
        .arg(&dc_plain)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", said(&out));
    assert!(
        said(&out).contains("'Diabetes_Edge' cannot name a Kubernetes Service"),
        "{}",
        said(&out)
    );
    // Azure's deployment config with a namespace and both probes' settings.
    let dc = Dc::test()
        .with("namespace", json!("ml-prod"))
        .with(
            "autoScaler",
            json!({"autoscaleEnabled": true, "minReplicas": 1, "maxReplicas": 3}),
        )
        .with(
            "livenessProbeRequirements",
            json!({"periodSeconds": 15, "initialDelaySeconds": 310, "failureThreshold": 4}),
        )
        .with(
            "readinessProbeRequirements",
            json!({"periodSeconds": 6, "timeoutSeconds": 3}),
        )
        .write(&dir, "dc.json");
    host.deploy("diabetes:1", "diabetes", &dc);
    host.wait_ready();
    // A second version, the control one.
    let out = host
        .cli()
        .args([
            "endpoint",
            "version",
            "add",
            "diabetes",
            "ctl",
            "-m",
            "diabetes:1",
            "--traffic",
            "10",
            "--control",
            "--dc",
        ])
        .arg(&dc)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", said(&out));
    let export = dir.join("export");
    let out = host.run(&[
        "service",
        "export",
        "diabetes",
        "-o",
        export.to_str().unwrap(),
        "--base-uri",
        &format!("https://acct.blob.core.windows.net/models/?sv=2024-11-04&{SIG}"),
    ]);
    assert!(out.contains("PlinthService diabetes"), "{out}");
    let manifest = export.join("diabetes.plinthservice.yaml");
    let ps: Value = serde_saphyr::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
    assert_eq!(ps["metadata"]["namespace"], "ml-prod", "{ps}");
    let versions = ps["spec"]["versions"].as_array().unwrap();
    for v in versions {
        let p = &v["package"];
        let sha = p["sha256"].as_str().unwrap();
        assert_eq!(
            p["uri"],
            format!("https://acct.blob.core.windows.net/models/{sha}.tar?sv=2024-11-04&{SIG}"),
            "the path joined, the query kept"
        );
        let tar = export.join(format!("{sha}.tar"));
        assert_eq!(p["size"], std::fs::metadata(&tar).unwrap().len());
    }
    let ctl = versions.iter().find(|v| v["name"] == "ctl").unwrap();
    assert_eq!(ctl["treatment"], false, "the control flag is kept: {ctl}");

    // The render: the namespace, the probes, the disruption budget, the size cap on the fetch.
    let items = render(&manifest, &[]);
    let deployment = kind(&items, "Deployment").unwrap();
    assert_eq!(deployment["metadata"]["namespace"], "ml-prod");
    let pod = &deployment["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(c["livenessProbe"]["periodSeconds"], 15);
    assert_eq!(c["livenessProbe"]["initialDelaySeconds"], 310);
    assert_eq!(c["livenessProbe"]["failureThreshold"], 4);
    assert_eq!(c["readinessProbe"]["periodSeconds"], 6);
    assert_eq!(c["readinessProbe"]["timeoutSeconds"], 3);
    let fetches: Vec<&Value> = pod["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["name"].as_str().unwrap().starts_with("fetch-"))
        .collect();
    assert!(!fetches.is_empty());
    for f in &fetches {
        let args = f["args"].as_array().unwrap();
        assert!(args.contains(&json!("--max-bytes")), "{args:?}");
    }
    let pdb = kind(&items, "PodDisruptionBudget").expect("up to 3 pods: a disruption budget");
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    // A manifest that names no namespace: the config's, unless `-n` names one.
    let mut no_ns = ps.clone();
    no_ns["metadata"].as_object_mut().unwrap().remove("namespace");
    let no_ns = write_json(&dir, "no-namespace.json", &no_ns);
    let namespace = |args: &[&str]| kind(&render(&no_ns, args), "Deployment").unwrap()["metadata"]["namespace"].clone();
    assert_eq!(namespace(&[]), "ml-prod");
    assert_eq!(namespace(&["-n", "other"]), "other");

    // Keys reused: from an earlier render's output (YAML), and from `plinth service keys -o json`.
    let first = kind(&items, "Secret").unwrap()["stringData"].clone();
    let earlier = dir.join("earlier.yaml");
    let yaml = plinth()
        .args(["controller", "render", "-f"])
        .arg(&manifest)
        .output()
        .unwrap();
    assert!(yaml.status.success());
    std::fs::write(&earlier, &yaml.stdout).unwrap();
    let text = String::from_utf8_lossy(&yaml.stdout).into_owned();
    let again = render(&manifest, &["--keys-from", earlier.to_str().unwrap()]);
    let reused = &kind(&again, "Secret").unwrap()["stringData"];
    assert!(
        text.contains(reused["primaryKey"].as_str().unwrap()),
        "the earlier render's keys"
    );
    assert_ne!(reused, &first, "a render without --keys-from makes new keys");
    let keys: PathBuf = dir.join("keys.json");
    std::fs::write(&keys, host.run(&["service", "keys", "diabetes", "-o", "json"])).unwrap();
    let (edge_primary, _) = host.keys("diabetes");
    let from_edge = render(&manifest, &["--keys-from", keys.to_str().unwrap()]);
    assert_eq!(
        kind(&from_edge, "Secret").unwrap()["stringData"]["primaryKey"],
        edge_primary.as_str()
    );
    let bad = write_json(&dir, "bad.json", &json!({"primaryKey": "short"}));
    let out = plinth()
        .args(["controller", "render", "-f"])
        .arg(&manifest)
        .args(["--keys-from", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(said(&out).contains("no primaryKey and secondaryKey"), "{}", said(&out));

    // Pull secrets and package credentials from the spec reach the pod.
    let mut with_secrets = ps.clone();
    with_secrets["spec"]["imagePullSecrets"] = json!([{"name": "acr-pull"}]);
    with_secrets["spec"]["packageCredentials"] = json!({"secretName": "models-sas", "queryKey": "sas"});
    let file = write_json(&dir, "with-secrets.json", &with_secrets);
    let items = render(&file, &[]);
    let pod = &kind(&items, "Deployment").unwrap()["spec"]["template"]["spec"];
    assert_eq!(pod["imagePullSecrets"], json!([{"name": "acr-pull"}]));
    let fetch = pod["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "fetch-0")
        .unwrap();
    assert!(
        fetch["args"]
            .as_array()
            .unwrap()
            .contains(&json!("/etc/plinth/package-credentials/query")),
        "{fetch}"
    );
}
