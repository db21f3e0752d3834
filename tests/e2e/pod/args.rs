//! A rendered container as podman's arguments: image, command, env, mounts, security and resources.

use super::*;

impl Pod {
    /// `podman run -d ...` for one container, as the kubelet would start it.
    pub(super) fn run_args(&self, c: &Value) -> Vec<String> {
        let name = c["name"].as_str().expect("a container's name");
        // The kubelet runs its own probes, never the image's HEALTHCHECK.
        let mut a: Vec<String> = [
            "run",
            "-d",
            "--no-healthcheck",
            "--pod",
            &self.name,
            "--name",
            &self.container(name),
        ]
        .map(String::from)
        .into();
        if let Some(grace) = self.spec["terminationGracePeriodSeconds"].as_u64() {
            a.extend(["--stop-timeout".into(), grace.to_string()]);
        }
        self.security_args(c, &mut a);
        resource_args(c, &mut a);
        for e in c["env"].as_array().into_iter().flatten() {
            a.extend([
                "--env".into(),
                format!("{}={}", e["name"].as_str().unwrap(), self.env_value(name, e)),
            ]);
        }
        for m in c["volumeMounts"].as_array().into_iter().flatten() {
            a.extend(["--volume".into(), self.mount(name, m)]);
        }
        if let Some(dir) = c["workingDir"].as_str() {
            a.extend(["--workdir".into(), dir.into()]);
        }
        let words = |field: &str| -> Option<Vec<String>> {
            let list = c[field].as_array()?;
            Some(
                list.iter()
                    .map(|w| {
                        let w = w.as_str().unwrap();
                        assert!(!w.contains("$("), "{name}: $(VAR) expansion is not done here: {w}");
                        w.to_string()
                    })
                    .collect(),
            )
        };
        let command = words("command");
        if let Some(command) = &command {
            a.extend(["--entrypoint".into(), serde_json::to_string(command).unwrap()]);
        }
        a.push(self.image.clone());
        // Without args, a command drops the image's CMD, in podman as in the kubelet.
        a.extend(words("args").unwrap_or_default());
        a
    }

    /// runAsUser/Group (the container's over the pod's), fsGroup and supplementalGroups, runAsNonRoot as the
    /// kubelet checks it, readOnlyRootFilesystem, capabilities, allowPrivilegeEscalation, seccomp.
    pub(super) fn security_args(&self, c: &Value, a: &mut Vec<String>) {
        let name = c["name"].as_str().unwrap();
        let pod = &self.spec["securityContext"];
        let own = &c["securityContext"];
        let pick = |field: &str| if own[field].is_null() { &pod[field] } else { &own[field] };
        let image_user = podman_ok(&["image", "inspect", "--format", "{{.Config.User}}", &self.image]);
        let (image_uid, image_gid) = match image_user.trim().split_once(':') {
            Some((u, g)) => (u.to_string(), Some(g.to_string())),
            None => (image_user.trim().to_string(), None),
        };
        let uid = pick("runAsUser").as_u64().map(|u| u.to_string()).unwrap_or(image_uid);
        if pick("runAsNonRoot") == true {
            let numeric: u64 = uid
                .parse()
                .unwrap_or_else(|_| panic!("{name}: runAsNonRoot with the image's non-numeric user '{uid}'"));
            assert_ne!(numeric, 0, "{name}: runAsNonRoot, and it would run as root");
        }
        let gid = pick("runAsGroup").as_u64().map(|g| g.to_string()).or(image_gid);
        a.extend(["--user".into(), gid.map_or(uid.clone(), |g| format!("{uid}:{g}"))]);
        for g in pod["fsGroup"].as_u64().into_iter().chain(
            pod["supplementalGroups"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_u64),
        ) {
            a.extend(["--group-add".into(), g.to_string()]);
        }
        if own["readOnlyRootFilesystem"] == true {
            // No tmpfs on /tmp, /run, /var/tmp behind the kubelet's back: only the pod's volumes are writable.
            a.extend(["--read-only".into(), "--read-only-tmpfs=false".into()]);
        }
        if own["privileged"] == true {
            a.push("--privileged".into());
        }
        if own["allowPrivilegeEscalation"] == false {
            a.extend(["--security-opt".into(), "no-new-privileges".into()]);
        }
        let caps = &own["capabilities"];
        for (field, flag) in [("drop", "--cap-drop"), ("add", "--cap-add")] {
            for cap in caps[field].as_array().into_iter().flatten() {
                a.extend([flag.into(), cap.as_str().unwrap().to_string()]);
            }
        }
        match pick("seccompProfile")["type"].as_str() {
            // podman's default profile is the runtime's default.
            None | Some("RuntimeDefault") => {}
            Some("Unconfined") => a.extend(["--security-opt".into(), "seccomp=unconfined".into()]),
            Some(other) => panic!("{name}: seccompProfile {other} is not run here"),
        }
    }

    pub(super) fn env_value(&self, container: &str, e: &Value) -> String {
        if let Some(v) = e["value"].as_str() {
            assert!(!v.contains("$("), "{container}: $(VAR) expansion is not done here: {v}");
            return v.to_string();
        }
        let from = &e["valueFrom"];
        for (reference, kind) in [("secretKeyRef", "Secret"), ("configMapKeyRef", "ConfigMap")] {
            let r = &from[reference];
            if r.is_object() {
                let object = self
                    .object(kind, r["name"].as_str().unwrap())
                    .unwrap_or_else(|| panic!("{container}: env from {kind} {} which is not here", r["name"]));
                let data = payload(object);
                return String::from_utf8(data[r["key"].as_str().unwrap()].clone()).unwrap();
            }
        }
        if from["fieldRef"]["fieldPath"] == "metadata.namespace" {
            return self.namespace.clone();
        }
        panic!("{container}: the pod runner cannot give env {e}");
    }

    pub(super) fn mount(&self, container: &str, m: &Value) -> String {
        let volume_name = m["name"].as_str().unwrap();
        let volume = self
            .volumes
            .get(volume_name)
            .unwrap_or_else(|| panic!("{container} mounts {volume_name}, which the pod does not have"));
        let mut host = volume.host.clone();
        if let Some(sub) = m["subPath"].as_str() {
            host = host.join(sub);
            std::fs::create_dir_all(&host).unwrap();
        }
        // ConfigMaps and Secrets are always mounted read-only.
        let read_only = m["readOnly"] == true || matches!(volume.source, Source::Projected { .. });
        format!(
            "{}:{}:{}",
            host.display(),
            m["mountPath"].as_str().unwrap(),
            if read_only { "ro" } else { "rw" }
        )
    }
}

/// A Kubernetes quantity (`1536Mi`, `4Gi`, `500m`, `0.5`, `2`) as a number of its unit.
pub fn quantity(q: &str) -> f64 {
    let suffixes: [(&str, f64); 13] = [
        ("Ki", 1024f64),
        ("Mi", 1024f64.powi(2)),
        ("Gi", 1024f64.powi(3)),
        ("Ti", 1024f64.powi(4)),
        ("Pi", 1024f64.powi(5)),
        ("Ei", 1024f64.powi(6)),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    let (number, scale) = suffixes
        .iter()
        .find_map(|(s, f)| q.strip_suffix(s).map(|n| (n, *f)))
        .unwrap_or((q, 1.0));
    number.parse::<f64>().unwrap_or_else(|_| panic!("not a quantity: {q}")) * scale
}

/// Memory limits enforced by the kernel (no swap beyond them, as on a node), CPU limits as a CFS quota, CPU
/// requests as shares (the kubelet's 1024 per core). Ephemeral storage is the kubelet's to evict on, not a
/// runtime limit: `assert_within_size_limits` checks the emptyDirs instead.
pub(super) fn resource_args(c: &Value, a: &mut Vec<String>) {
    let name = c["name"].as_str().unwrap();
    for (kind, list) in c["resources"].as_object().into_iter().flatten() {
        assert!(kind == "limits" || kind == "requests", "{name}: resources.{kind}");
        for (resource, value) in list.as_object().unwrap() {
            let q = quantity(value.as_str().unwrap_or(&value.to_string()));
            match (kind.as_str(), resource.as_str()) {
                ("limits", "memory") => {
                    let bytes = (q as u64).to_string();
                    a.extend(["--memory".into(), bytes.clone(), "--memory-swap".into(), bytes]);
                }
                ("limits", "cpu") => a.extend(["--cpus".into(), q.to_string()]),
                ("requests", "cpu") => a.extend(["--cpu-shares".into(), ((q * 1024.0) as u64).max(2).to_string()]),
                (_, "memory" | "ephemeral-storage") => {}
                (_, other) => panic!("{name}: the pod runner cannot give the resource {other}"),
            }
        }
    }
}
