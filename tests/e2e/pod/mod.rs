//! A rendered Deployment's pod, run in podman as the kubelet runs it: one podman pod (one network namespace,
//! the pod's ports published on 127.0.0.1), the init containers one after another, each to a zero exit,
//! then the containers; volumes laid out as the kubelet lays them out (an emptyDir a shared folder, a
//! ConfigMap or Secret read-only files behind the kubelet's `..data` link, swapped atomically when the
//! object changes), and each container's image, command, args, env, mounts, securityContext and resources
//! as rendered. Containers and volumes are found by name; a field this runner cannot honour fails the test
//! with its name, so a renderer that grows never runs here half-understood.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::image::{Cgroup, Memory, cgroup_memory, podman, podman_ok, published_url, unique_name};

mod args;
#[cfg(test)]
mod tests;
mod volumes;

pub use self::args::quantity;
use self::args::resource_args;
use self::volumes::{decode_base64, payload, source_of};

/// Pod-level fields that mean nothing to one machine running a local image: scheduling and registries.
const POD_IGNORED: &[&str] = &[
    "affinity",
    "imagePullSecrets",
    "nodeSelector",
    "priorityClassName",
    "schedulerName",
    "serviceAccountName",
    "automountServiceAccountToken",
    "tolerations",
    "topologySpreadConstraints",
    "dnsPolicy",
    // A Deployment's is Always: a container that stops fails the test instead.
    "restartPolicy",
];

/// Container fields read by `wait_ready` or irrelevant to a local image.
const CONTAINER_IGNORED: &[&str] = &[
    "name",
    "image",
    "imagePullPolicy",
    "ports",
    "livenessProbe",
    "readinessProbe",
    "startupProbe",
    "terminationMessagePath",
    "terminationMessagePolicy",
];

/// What an init container cost.
pub struct InitRun {
    pub name: String,
    pub took: Duration,
    /// The most memory its cgroup held (the page cache among it), as the kernel counted it.
    pub peak: u64,
    /// The most anonymous memory its processes held, as sampled every 200 ms.
    pub peak_rss: u64,
    pub logs: String,
}

enum Source {
    EmptyDir {
        size_limit: Option<u64>,
    },
    /// A ConfigMap or Secret: (kind, name, its volume spec).
    Projected {
        kind: &'static str,
        name: String,
        spec: Value,
    },
}

struct Volume {
    host: PathBuf,
    source: Source,
}

pub struct Pod {
    /// The podman pod's name.
    pub name: String,
    image: String,
    spec: Value,
    namespace: String,
    objects: Vec<Value>,
    volumes: BTreeMap<String, Volume>,
    started: Option<Instant>,
    /// The init containers run so far, in order.
    pub init: Vec<InitRun>,
}

impl Pod {
    /// The pod of the one Deployment among `objects` (a rendered List's items, plus any object its volumes
    /// name that the render does not make), every container running `image`; its volumes under `dir`.
    pub fn new(objects: &[Value], image: &str, dir: &Path) -> Pod {
        let deployments: Vec<&Value> = objects.iter().filter(|o| o["kind"] == "Deployment").collect();
        assert_eq!(deployments.len(), 1, "one Deployment among the objects");
        let deployment = deployments[0];
        let spec = deployment["spec"]["template"]["spec"].clone();
        let fields = spec.as_object().expect("a pod spec");
        for field in fields.keys() {
            let known = [
                "containers",
                "initContainers",
                "volumes",
                "securityContext",
                "terminationGracePeriodSeconds",
            ];
            assert!(
                known.contains(&field.as_str()) || POD_IGNORED.contains(&field.as_str()),
                "the pod runner does not know the pod field `{field}`: teach it, or it runs the pod wrongly"
            );
        }
        let mut pod = Pod {
            name: unique_name("pod"),
            image: image.to_string(),
            namespace: deployment["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_string(),
            spec,
            objects: objects.to_vec(),
            volumes: BTreeMap::new(),
            started: None,
            init: Vec::new(),
        };
        for volume in pod.spec["volumes"].as_array().cloned().unwrap_or_default() {
            let name = volume["name"].as_str().expect("a volume's name").to_string();
            let host = dir.join("volumes").join(&name);
            let source = source_of(&volume);
            std::fs::create_dir_all(&host).unwrap();
            pod.volumes.insert(name, Volume { host, source });
        }
        for list in ["initContainers", "containers"] {
            for c in pod.containers(list) {
                pod.check(&c, list == "initContainers");
            }
        }
        for name in pod.volumes.keys().cloned().collect::<Vec<_>>() {
            pod.lay_out(&name);
        }
        pod
    }

    /// Fails the test, before anything runs, on any field of container `c` this runner cannot honour.
    fn check(&self, c: &Value, init: bool) {
        let name = c["name"].as_str().expect("a container's name");
        let unknown = |what: &str, fields: &Value, known: &[&str]| {
            for field in fields.as_object().into_iter().flatten().map(|(k, _)| k) {
                assert!(
                    known.contains(&field.as_str()),
                    "the pod runner does not know {what}.{field} (container {name}): teach it"
                );
            }
        };
        let mut known = vec![
            "command",
            "args",
            "env",
            "volumeMounts",
            "securityContext",
            "resources",
            "workingDir",
        ];
        known.extend(CONTAINER_IGNORED);
        unknown("a container", c, &known);
        assert!(
            !init || c["ports"].is_null() && c["readinessProbe"].is_null(),
            "init container {name} with ports or probes"
        );
        let pod_security = [
            "runAsUser",
            "runAsGroup",
            "runAsNonRoot",
            "fsGroup",
            "supplementalGroups",
            "seccompProfile",
        ];
        unknown(
            "the pod's securityContext",
            &self.spec["securityContext"],
            &pod_security,
        );
        let security = [
            "runAsUser",
            "runAsGroup",
            "runAsNonRoot",
            "seccompProfile",
            "readOnlyRootFilesystem",
            "allowPrivilegeEscalation",
            "capabilities",
            "privileged",
        ];
        unknown("securityContext", &c["securityContext"], &security);
        unknown(
            "securityContext.capabilities",
            &c["securityContext"]["capabilities"],
            &["drop", "add"],
        );
        for m in c["volumeMounts"].as_array().into_iter().flatten() {
            unknown("volumeMounts[]", m, &["name", "mountPath", "readOnly", "subPath"]);
            let volume = m["name"].as_str().unwrap();
            assert!(
                self.volumes.contains_key(volume),
                "{name} mounts {volume}, which the pod does not have"
            );
        }
        for e in c["env"].as_array().into_iter().flatten() {
            unknown("env[]", e, &["name", "value", "valueFrom"]);
        }
        resource_args(c, &mut Vec::new());
    }

    /// The folder on this machine that holds volume `name`.
    pub fn volume(&self, name: &str) -> &Path {
        &self
            .volumes
            .get(name)
            .unwrap_or_else(|| panic!("no volume {name}"))
            .host
    }

    /// Runs the init containers in order, each to a zero exit, then starts the containers.
    pub fn start(&mut self) {
        let mut create = vec!["pod".to_string(), "create".into(), "--name".into(), self.name.clone()];
        for c in self.containers("containers") {
            for p in c["ports"].as_array().into_iter().flatten() {
                create.extend(["-p".into(), format!("127.0.0.1::{}", p["containerPort"])]);
            }
        }
        podman_ok(&create.iter().map(String::as_str).collect::<Vec<_>>());
        self.started = Some(Instant::now());
        for c in self.containers("initContainers") {
            let name = c["name"].as_str().unwrap().to_string();
            let started = Instant::now();
            podman_ok(&self.run_args(&c).iter().map(String::as_str).collect::<Vec<_>>());
            let (exit, peak, peak_rss) = wait_exit(&self.container(&name), Duration::from_secs(600));
            let logs = self.logs(&name);
            let state = podman_ok(&[
                "inspect",
                "--type",
                "container",
                "--format",
                "{{.State.OOMKilled}}",
                &self.container(&name),
            ]);
            assert!(
                exit == Some(0),
                "init container {name} exited with {exit:?} (OOMKilled: {}, peak {} MiB, limit {:?}): {logs}",
                state.trim(),
                peak >> 20,
                c["resources"]["limits"]["memory"]
            );
            self.init.push(InitRun {
                name,
                took: started.elapsed(),
                peak,
                peak_rss,
                logs,
            });
        }
        for c in self.containers("containers") {
            podman_ok(&self.run_args(&c).iter().map(String::as_str).collect::<Vec<_>>());
        }
    }

    /// Waits for container `name`'s startup probe, then its readiness probe, and returns the time since the
    /// pod started.
    pub fn wait_ready(&self, name: &str, within: Duration) -> Duration {
        let c = self.spec_of(name);
        for probe in ["startupProbe", "readinessProbe"] {
            let p = &c[probe];
            if p.is_null() {
                continue;
            }
            let get = &p["httpGet"];
            assert!(get.is_object(), "{name}: only httpGet probes are run here: {p}");
            let url = format!(
                "{}{}",
                self.url(name, &get["port"]),
                get["path"].as_str().unwrap_or("/")
            );
            let started = Instant::now();
            loop {
                let running = podman_ok(&[
                    "inspect",
                    "--type",
                    "container",
                    "--format",
                    "{{.State.Running}}",
                    &self.container(name),
                ]);
                assert_eq!(running.trim(), "true", "{name} stopped: {}", self.logs(name));
                if crate::image::probe(&url) == Some(200) {
                    break;
                }
                assert!(
                    started.elapsed() < within,
                    "{name}: {probe} {url} never passed: {}",
                    self.logs(name)
                );
                std::thread::sleep(Duration::from_millis(500));
            }
        }
        self.started.expect("the pod has not started").elapsed()
    }

    /// `http://127.0.0.1:PORT` for container `name`'s port (its number, or its name as a probe gives it).
    pub fn url(&self, name: &str, port: &Value) -> String {
        let c = self.spec_of(name);
        let number = match port {
            Value::Number(n) => n.as_u64().unwrap(),
            Value::String(named) => c["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|p| p["name"] == *named)
                .unwrap_or_else(|| panic!("{name} has no port named {named}"))["containerPort"]
                .as_u64()
                .unwrap(),
            other => panic!("{name}: a port is a number or a name, not {other}"),
        };
        let infra = podman_ok(&["pod", "inspect", "--format", "{{.InfraContainerID}}", &self.name]);
        published_url(infra.trim(), number as u16)
    }

    /// A ConfigMap or Secret changed in the cluster: every volume that shows it gets the new files, swapped
    /// in at once as the kubelet swaps them.
    pub fn update(&mut self, object: Value) {
        let (kind, name) = (object["kind"].clone(), object["metadata"]["name"].clone());
        self.objects
            .retain(|o| !(o["kind"] == kind && o["metadata"]["name"] == name));
        self.objects.push(object);
        let shown: Vec<String> = self
            .volumes
            .iter()
            .filter(|(_, v)| matches!(&v.source, Source::Projected { kind: k, name: n, .. } if kind == *k && name == *n.as_str()))
            .map(|(v, _)| v.clone())
            .collect();
        assert!(!shown.is_empty(), "no volume shows {kind} {name}");
        for volume in shown {
            self.lay_out(&volume);
        }
    }

    /// Container `name`'s memory now, from its cgroup.
    pub fn memory(&self, name: &str) -> Memory {
        cgroup_memory(&self.container(name))
    }

    /// Container `name`'s memory limit as podman set it, in bytes.
    pub fn memory_limit(&self, name: &str) -> u64 {
        let limit = podman_ok(&[
            "inspect",
            "--type",
            "container",
            "--format",
            "{{.HostConfig.Memory}}",
            &self.container(name),
        ]);
        limit.trim().parse().unwrap()
    }

    /// Container `name`'s output so far.
    pub fn logs(&self, name: &str) -> String {
        let out = podman().args(["logs", &self.container(name)]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    }

    /// The kubelet evicts a pod whose emptyDir outgrows its sizeLimit: fails the test where it would.
    pub fn assert_within_size_limits(&self) {
        for (name, v) in &self.volumes {
            if let Source::EmptyDir {
                size_limit: Some(limit),
            } = v.source
            {
                let used = disk_usage(&v.host);
                assert!(
                    used <= limit,
                    "emptyDir {name} holds {used} bytes, over its sizeLimit of {limit}"
                );
            }
        }
    }

    /// The podman container that runs container `name`.
    pub fn container(&self, name: &str) -> String {
        format!("{}-{name}", self.name)
    }

    fn containers(&self, list: &str) -> Vec<Value> {
        self.spec[list].as_array().cloned().unwrap_or_default()
    }

    fn spec_of(&self, name: &str) -> Value {
        ["initContainers", "containers"]
            .iter()
            .flat_map(|l| self.containers(l))
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no container {name}"))
    }

    fn object(&self, kind: &str, name: &str) -> Option<&Value> {
        self.objects
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
    }
}

impl Drop for Pod {
    /// The pod goes, and its volumes with it (an emptyDir lives as long as its pod).
    fn drop(&mut self) {
        let _ = podman().args(["pod", "rm", "-f", "-t", "2", &self.name]).output();
        for v in self.volumes.values() {
            let _ = std::fs::remove_dir_all(&v.host);
        }
    }
}

/// Waits up to `within` for a container to exit, sampling its memory cgroup; its exit code (`None` if it
/// was killed for running too long), the cgroup's peak, and the peak of its anonymous memory.
fn wait_exit(container: &str, within: Duration) -> (Option<i32>, u64, u64) {
    let mut wait: Child = podman()
        .args(["wait", container])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    // Sampled from the cgroup's files: a podman call per sample would take CPU from the container.
    let cgroup = Cgroup::of(container);
    let started = Instant::now();
    let (mut peak, mut peak_rss) = (0, 0);
    loop {
        if wait.try_wait().unwrap().is_some() {
            let mut out = String::new();
            std::io::Read::read_to_string(&mut wait.stdout.take().unwrap(), &mut out).unwrap();
            return (out.trim().parse().ok(), peak, peak_rss);
        }
        if let Some(m) = cgroup.as_ref().and_then(Cgroup::read) {
            peak = peak.max(m.peak);
            peak_rss = peak_rss.max(m.rss);
        }
        if started.elapsed() > within {
            let _ = podman().args(["kill", container]).output();
            let _ = wait.wait();
            return (None, peak, peak_rss);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Bytes a folder's files take on disk.
fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let meta = entry.path().symlink_metadata().unwrap();
        total += meta.blocks() * 512;
        if meta.is_dir() {
            total += disk_usage(&entry.path());
        }
    }
    total
}
