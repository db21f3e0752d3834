//! The rendered pods run in containers, as a cluster would run them: the edge service exported, its
//! manifest rendered, and the pod spec run in podman by the pod runner (`pod/`) on the built image
//! (`image.rs`): the diabetes pod scores with its Secret's key and follows its rotation; a scientific
//! score.py's pod compiles its interpreter in the `warm` container and serves from it.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::cluster::{edge_host, item, render, venv_tool};
use crate::fixture::{TestHost, sample_body, score, temp_dir};
use crate::pod::Pod;
use crate::support::repo;

/// Where a pod finds the exported packages: inside its image, as `file:///opt/packages/SHA.tar`.
const PACKAGES_IN_IMAGE: &str = "/opt/packages";

/// `plinth service export NAME` from `edge` for pods whose image holds the packages, rendered; the items
/// and that image (the test image with the export's packages added, removed when dropped).
fn export_for_pods(edge: &TestHost, service: &str, dir: &Path, image: &str) -> (Vec<Value>, PackagedImage) {
    let export = dir.join("export");
    let out = edge.run(&[
        "service",
        "export",
        service,
        "-o",
        export.to_str().unwrap(),
        "--base-uri",
        &format!("file://{PACKAGES_IN_IMAGE}"),
    ]);
    assert!(out.contains(&format!("PlinthService {service}")), "{out}");
    let containerfile = dir.join("Containerfile");
    std::fs::write(
        &containerfile,
        format!("FROM {image}\nCOPY --chmod=0444 *.tar {PACKAGES_IN_IMAGE}/\n"),
    )
    .unwrap();
    let tag = format!("{}-packages", crate::image::unique_name(service));
    crate::image::podman_ok(&[
        "build",
        "-q",
        "-f",
        containerfile.to_str().unwrap(),
        "-t",
        &tag,
        export.to_str().unwrap(),
    ]);
    let items = render(&export.join(format!("{service}.plinthservice.yaml")));
    (items, PackagedImage(tag))
}

struct PackagedImage(String);

impl Drop for PackagedImage {
    fn drop(&mut self) {
        let _ = crate::image::podman().args(["rmi", "-f", &self.0]).output();
    }
}

/// The serving container's process, seen from inside: the rendered user, no capabilities, no new
/// privileges, a root filesystem it cannot write.
fn assert_locked_down(pod: &Pod, container: &str) {
    use crate::image::{main_process_status, podman};
    let name = pod.container(container);
    assert_eq!(main_process_status(&name, "Uid"), "10001 10001 10001 10001");
    assert_eq!(main_process_status(&name, "Gid"), "10001 10001 10001 10001");
    assert_eq!(main_process_status(&name, "CapEff"), "0000000000000000");
    assert_eq!(main_process_status(&name, "CapBnd"), "0000000000000000");
    assert_eq!(main_process_status(&name, "NoNewPrivs"), "1");
    let write = podman().args(["exec", &name, "touch", "/opt/x"]).output().unwrap();
    assert!(
        String::from_utf8_lossy(&write.stderr).contains("Read-only file system"),
        "{write:?}"
    );
}

/// The rendered limit of container `name`, in bytes.
fn memory_limit(pod_spec: &Value, name: &str) -> u64 {
    let c = ["initContainers", "containers"]
        .iter()
        .flat_map(|l| pod_spec[l].as_array().cloned().unwrap_or_default())
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name}"));
    crate::pod::quantity(c["resources"]["limits"]["memory"].as_str().unwrap()) as u64
}

#[test]
fn the_rendered_pod_runs_in_containers_scores_with_the_secrets_key_and_follows_its_rotation() {
    let Some(image) = crate::image::image() else { return };
    let dir = temp_dir("kube-podman");
    let edge = edge_host(&dir);
    let (edge_key, _) = edge.keys("diabetes");
    let expected = score(&edge.score_url("diabetes"), Some(&edge_key), &sample_body());
    assert_eq!(expected.status, 200, "{}", expected.body);
    let (items, packaged) = export_for_pods(&edge, "diabetes", &dir, &image.tag);

    let mut pod = Pod::new(&items, &packaged.0, &dir.join("pod"));
    pod.start();
    let ready = pod.wait_ready("plinth", Duration::from_secs(600));
    let warm = pod
        .init
        .iter()
        .find(|i| i.name == "warm")
        .expect("a warm init container");
    assert!(warm.logs.contains("declared service loaded; exiting"), "{}", warm.logs);
    assert!(
        pod.init.iter().any(|i| i.name.starts_with("fetch")),
        "a fetch init container"
    );
    for i in &pod.init {
        eprintln!(
            "pod diabetes: init container {} took {:.1} s, peak {} MiB anonymous, {} MiB with the page cache",
            i.name,
            i.took.as_secs_f64(),
            i.peak_rss >> 20,
            i.peak >> 20
        );
    }

    let url = format!("{}/api/v1/service/diabetes/score", pod.url("plinth", &json!("http")));
    let secret = item(&items, "Secret");
    let key = secret["stringData"]["primaryKey"].as_str().unwrap();
    let secondary = secret["stringData"]["secondaryKey"].as_str().unwrap();
    let scored = score(&url, Some(key), &sample_body());
    assert_eq!(scored.status, 200, "{}", scored.body);
    assert_eq!(scored.json(), expected.json(), "the pod answers as the edge host did");
    assert_eq!(score(&url, Some(secondary), &sample_body()).status, 200);
    assert_eq!(score(&url, Some(&edge_key), &sample_body()).status, 401);
    assert_locked_down(&pod, "plinth");
    let pod_spec = &item(&items, "Deployment")["spec"]["template"]["spec"];
    assert_eq!(pod.memory_limit("plinth"), memory_limit(pod_spec, "plinth"));
    let memory = pod.memory("plinth");
    assert_eq!(
        memory.limit,
        memory_limit(pod_spec, "plinth"),
        "the limit is the kernel's"
    );
    eprintln!(
        "pod diabetes: ready {:.1} s after the pod started; the host holds {} MiB anonymous, working set {} MiB, {} MiB with the page cache (peak {} MiB), of {} MiB",
        ready.as_secs_f64(),
        memory.rss >> 20,
        memory.working_set >> 20,
        memory.current >> 20,
        memory.peak >> 20,
        memory.limit >> 20
    );

    // The Secret edited in the cluster: the kubelet swaps the volume's `..data` link; the host follows.
    let rotated = "rotated-primary-key-0123456789abcdef";
    let mut edited = secret.clone();
    edited["stringData"]["primaryKey"] = json!(rotated);
    pod.update(edited);
    let started = Instant::now();
    while score(&url, Some(rotated), &sample_body()).status != 200 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the rotated key was not taken: {}",
            pod.logs("plinth")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(score(&url, Some(key), &sample_body()).status, 401);
    assert_eq!(score(&url, Some(secondary), &sample_body()).status, 200);
    assert!(
        pod.logs("plinth").contains("keys replaced by the mounted ones"),
        "{}",
        pod.logs("plinth")
    );
    pod.assert_within_size_limits();
}

#[test]
fn a_scientific_score_py_pod_compiles_its_interpreter_in_the_warm_container_and_serves_from_it() {
    let Some(image) = crate::image::image() else { return };
    let dir = temp_dir("kube-podman-science");
    // The Azure example on an edge host: score.py with numpy and joblib around a scikit-learn Ridge.
    let edge = TestHost::start(&dir.join("edge"), &[]);
    let model = dir.join("model");
    let made = std::process::Command::new(venv_tool("python"))
        .arg(repo().join("examples/azure-sklearn/make_model.py"))
        .arg(&model)
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    edge.run(&[
        "model",
        "register",
        "--name",
        "ridge",
        "--path",
        model.to_str().unwrap(),
    ]);
    edge.run(&[
        "deploy",
        "-m",
        "ridge:1",
        "-n",
        "ridge",
        "--ic",
        "examples/azure-sklearn/inferenceconfig.json",
        "--dc",
        "examples/azure-sklearn/deploymentconfig.json",
    ]);
    edge.wait_ready();
    let sample = std::fs::read_to_string(repo().join("examples/azure-sklearn/sample.json")).unwrap();
    let (edge_key, _) = edge.keys("ridge");
    let expected = score(&edge.score_url("ridge"), Some(&edge_key), &sample);
    assert_eq!(expected.status, 200, "{}", expected.body);
    let (items, packaged) = export_for_pods(&edge, "ridge", &dir, &image.tag);
    drop(edge);

    let mut pod = Pod::new(&items, &packaged.0, &dir.join("pod"));
    pod.start();
    let ready = pod.wait_ready("plinth", Duration::from_secs(600));
    let pod_spec = &item(&items, "Deployment")["spec"]["template"]["spec"];
    let warm = pod
        .init
        .iter()
        .find(|i| i.name == "warm")
        .expect("a warm init container");
    assert!(warm.logs.contains("declared service loaded; exiting"), "{}", warm.logs);
    // The interpreter compiled within the warm container's own limit, into the pod's volume.
    assert!(
        warm.peak_rss < memory_limit(pod_spec, "warm"),
        "{} bytes",
        warm.peak_rss
    );
    let data = pod_spec["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "plinth")
        .unwrap()["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == "/var/lib/plinth")
        .expect("a volume at /var/lib/plinth")["name"]
        .as_str()
        .unwrap()
        .to_string();
    let science = pod.volume(&data).join("workspace/cache/components/science");
    let interpreter = std::fs::read_dir(&science)
        .unwrap_or_else(|e| panic!("{}: {e}", science.display()))
        .flatten()
        .find(|e| e.file_name().to_string_lossy().ends_with(".cwasm"))
        .expect("the compiled interpreter in the pod's volume");
    assert!(interpreter.metadata().unwrap().len() > 100 << 20, "{interpreter:?}");
    let url = format!("{}/api/v1/service/ridge/score", pod.url("plinth", &json!("http")));
    let key = item(&items, "Secret")["stringData"]["primaryKey"]
        .as_str()
        .unwrap()
        .to_string();
    let scored = score(&url, Some(&key), &sample);
    assert_eq!(scored.status, 200, "{}", scored.body);
    assert_eq!(scored.json(), expected.json(), "the pod answers as the edge host did");
    assert_locked_down(&pod, "plinth");
    let memory = pod.memory("plinth");
    assert_eq!(memory.limit, memory_limit(pod_spec, "plinth"));
    for i in &pod.init {
        eprintln!(
            "pod ridge: init container {} took {:.1} s, peak {} MiB anonymous, {} MiB with the page cache (limit {} MiB)",
            i.name,
            i.took.as_secs_f64(),
            i.peak_rss >> 20,
            i.peak >> 20,
            memory_limit(pod_spec, &i.name) >> 20
        );
    }
    eprintln!(
        "pod ridge: ready {:.1} s after the pod started; the host holds {} MiB anonymous, working set {} MiB, {} MiB with the page cache (peak {} MiB), of {} MiB",
        ready.as_secs_f64(),
        memory.rss >> 20,
        memory.working_set >> 20,
        memory.current >> 20,
        memory.peak >> 20,
        memory.limit >> 20
    );
    pod.assert_within_size_limits();
}
