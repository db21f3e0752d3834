use serde_json::{Value, json};

use super::*;
use crate::crd::PlinthServiceSpec;
use crate::plan::plan;

/// A rendered pod's init container, by name.
fn init<'a>(pod: &'a Value, name: &str) -> &'a Value {
    pod["initContainers"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no init container {name} in {pod}"))
}

const SHA: &str = "3f2a3f2a3f2a3f2a3f2a3f2a3f2a3f2a3f2a3f2a3f2a3f2a3f2a3f2a3f2a3f2a";

fn service(spec: Value) -> PlinthService {
    let spec: PlinthServiceSpec = serde_json::from_value(spec).unwrap();
    let mut ps = PlinthService::new("diabetes", spec);
    ps.metadata.namespace = Some("ml".into());
    ps
}

#[test]
fn a_share_of_a_gpu_asks_for_one_gpu_per_pod() {
    let ps = service(json!({
        "package": {"uri": "https://models.example.com/diabetes.tar", "sha256": SHA},
        "deploymentConfig": {"gpuMemoryGb": 4},
    }));
    let plan = plan(&ps).unwrap();
    assert!(plan.wants_gpu);
    assert_eq!(plan.gpus, 1);
}

#[test]
fn a_gpu_spec_asks_for_gpus_tolerates_their_taint_and_sizes_the_pod() {
    let ps = service(json!({
        "package": {"uri": "https://models.example.com/diabetes.tar", "sha256": SHA},
        "inferenceConfig": {"entryScript": "score.py"},
        "deploymentConfig": {
            "containerResourceRequirements": {"cpu": 0.5, "memoryInGB": 1.5},
            "gpuCores": 1,
            "autoScaler": {"autoscaleEnabled": true, "minReplicas": 2, "maxReplicas": 6, "targetUtilization": 70},
        },
        "nodeSelector": {"pool": "gpu"},
    }));
    let plan = plan(&ps).unwrap();
    assert_eq!((plan.min_replicas, plan.max_replicas, plan.gpus), (2, 6, 1));
    let r = render(&ps, &plan, &RenderOptions::default());
    let d = serde_json::to_value(&r.deployment).unwrap();
    let pod = &d["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(c["resources"]["requests"]["cpu"], "500m");
    assert_eq!(c["resources"]["requests"]["memory"], "1536Mi");
    assert_eq!(c["resources"]["limits"]["nvidia.com/gpu"], "1");
    assert_eq!(c["image"], DEFAULT_GPU_IMAGE, "a GPU pod runs the GPU image");
    assert_eq!(pod["tolerations"][0]["key"], "nvidia.com/gpu");
    assert_eq!(pod["nodeSelector"]["pool"], "gpu");
    assert!(d["spec"].get("replicas").is_none(), "the scaler owns replicas");
    assert_eq!(
        init(pod, "fetch-0")["args"][2],
        "https://models.example.com/diabetes.tar"
    );
    // A Python entry script: the `warm` init container loads the service first, with room to
    // compile (and the GPU its models load on), then exits.
    let warm = init(pod, "warm");
    let args: Vec<&str> = warm["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(&args[..3], ["serve", "--listen", "127.0.0.1:0"]);
    assert_eq!(args.last(), Some(&"--exit-when-loaded"));
    assert!(
        !args.contains(&"--keys-dir") && !args.contains(&"--cache-dir"),
        "{args:?}"
    );
    assert_eq!(warm["resources"]["limits"]["memory"], "4608Mi");
    assert_eq!(warm["resources"]["limits"]["nvidia.com/gpu"], "1");
    assert_eq!(warm["resources"]["requests"], c["resources"]["requests"]);
    let mounts = warm["volumeMounts"].as_array().unwrap();
    assert!(mounts.iter().all(|m| m["name"] != "keys"), "{mounts:?}");
    // The host's own arguments, but for its address, its keys and the flag.
    let mut host_args = args[..args.len() - 1].to_vec();
    host_args[2] = "0.0.0.0:8080";
    host_args.extend(["--keys-dir", KEYS_DIR]);
    assert_eq!(c["args"], json!(host_args));
}

#[test]
fn a_scratch_size_bounds_the_volume_and_is_requested() {
    let ps = service(json!({
        "package": {"uri": "https://models.example.com/diabetes.tar", "sha256": SHA},
        "inferenceConfig": {"entryScript": "score.py"},
        "scratchSize": "20Gi",
    }));
    let r = render(&ps, &plan(&ps).unwrap(), &RenderOptions::default());
    let d = serde_json::to_value(&r.deployment).unwrap();
    let pod = &d["spec"]["template"]["spec"];
    let vols = pod["volumes"].as_array().unwrap();
    assert!(vols.contains(&json!({"name": "data", "emptyDir": {"sizeLimit": "20Gi"}})));
    for c in [init(pod, "warm"), &pod["containers"][0]] {
        assert_eq!(c["resources"]["requests"]["ephemeral-storage"], "20Gi");
        assert_eq!(c["resources"]["limits"]["ephemeral-storage"], "20Gi");
    }
    let bad = service(json!({
        "package": {"uri": "https://models.example.com/diabetes.tar", "sha256": SHA},
        "scratchSize": "lots",
    }));
    let e = plan(&bad).unwrap_err();
    assert!(e.starts_with("spec.scratchSize: 'lots'"), "{e}");
}

#[test]
fn a_cache_claim_is_shared_by_the_warm_container_and_the_host() {
    let ps = service(json!({
        "package": {"uri": "https://models.example.com/diabetes.tar", "sha256": SHA},
        "inferenceConfig": {"entryScript": "score.py"},
        "cacheClaim": "plinth-cache",
    }));
    let r = render(&ps, &plan(&ps).unwrap(), &RenderOptions::default());
    let d = serde_json::to_value(&r.deployment).unwrap();
    let pod = &d["spec"]["template"]["spec"];
    let vols = pod["volumes"].as_array().unwrap();
    assert!(vols.contains(&json!({"name": "cache", "persistentVolumeClaim": {"claimName": "plinth-cache"}})));
    for c in [init(pod, "warm"), &pod["containers"][0]] {
        let args = c["args"].as_array().unwrap();
        let at = args.iter().position(|a| a == "--cache-dir").expect("--cache-dir");
        assert_eq!(args[at + 1], CACHE_DIR);
        let mounts = c["volumeMounts"].as_array().unwrap();
        assert!(mounts.contains(&json!({"name": "cache", "mountPath": CACHE_DIR})));
    }
    let bad = service(json!({
        "package": {"uri": "https://models.example.com/diabetes.tar", "sha256": SHA},
        "cacheClaim": "Not_A_Claim",
    }));
    let e = plan(&bad).unwrap_err();
    assert!(e.starts_with("spec.cacheClaim: 'Not_A_Claim'"), "{e}");
}

#[test]
fn a_bad_config_names_its_field() {
    let ps = service(json!({
        "package": {"uri": "https://x/p.tar", "sha256": SHA},
        "deploymentConfig": {"autoScaler": {"targetUtilization": 300}},
    }));
    let e = plan(&ps).unwrap_err();
    assert!(
        e.starts_with("spec.deploymentConfig: autoScaler.targetUtilization"),
        "{e}"
    );
    let ps = service(json!({"package": {"uri": "http://x/p.tar", "sha256": SHA}}));
    assert!(plan(&ps).unwrap_err().contains("spec.package.uri"));
    let ps = service(json!({"package": {"uri": "https://x/p.tar", "sha256": "abc"}}));
    assert!(plan(&ps).unwrap_err().contains("spec.package.sha256"));
    let mut ps = service(json!({"package": {"uri": "https://x/p.tar", "sha256": SHA}}));
    ps.metadata.name = Some("Diabetes.v2".into());
    assert!(plan(&ps).unwrap_err().starts_with("metadata.name:"));
    let ps = service(
        json!({"package": {"uri": "https://x/p.tar", "sha256": SHA}, "extendedResources": {"amd.com/fpga": "one"}}),
    );
    assert!(plan(&ps).unwrap_err().contains("spec.extendedResources.amd.com/fpga"));
    // Keys stay out of the ConfigMap.
    let ps = service(json!({"package": {"uri": "https://x/p.tar", "sha256": SHA},
                            "deploymentConfig": {"keys": {"primaryKey": "a-very-secret-key-123"}}}));
    let p = plan(&ps).unwrap();
    let r = render(&ps, &p, &RenderOptions::default());
    let cm = serde_json::to_string(&r.config_map).unwrap();
    assert!(
        !cm.contains("a-very-secret-key-123") && !cm.contains("primaryKey"),
        "{cm}"
    );
    let secret = serde_json::to_value(secret(&ps, &p)).unwrap();
    assert_eq!(secret["stringData"]["primaryKey"], "a-very-secret-key-123");
}

#[test]
fn versions_follow_the_endpoint_rules() {
    let v = |name: &str, traffic: u32, default: bool| json!({"name": name, "traffic": traffic, "default": default, "package": {"uri": "https://x/p.tar", "sha256": SHA}});
    let ps = service(json!({"versions": [v("a", 80, true), v("b", 30, false)]}));
    assert!(plan(&ps).unwrap_err().contains("traffic adds up to 110%"));
    let ps = service(json!({"versions": [v("a", 80, false), v("b", 20, false)]}));
    assert!(plan(&ps).unwrap_err().contains("exactly one default"));
    let ps = service(json!({"versions": [v("a", 80, true), v("b", 20, false)]}));
    let p = plan(&ps).unwrap();
    assert_eq!(p.traffic, vec![("a".into(), 80, true), ("b".into(), 20, false)]);
    // One package for both: fetched once (then warmed: the inference configs are the package's).
    let r = render(&ps, &p, &RenderOptions::default());
    let d = serde_json::to_value(&r.deployment).unwrap();
    let names: Vec<&str> = d["spec"]["template"]["spec"]["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["fetch-0", "warm"]);
}

#[test]
fn a_claim_is_mounted_read_only_instead_of_fetched() {
    // No entry script: nothing to compile, nothing to fetch, no init container.
    let ps = service(json!({"package": {"uri": "pvc://models/diabetes/p.tar", "sha256": SHA}, "inferenceConfig": {}}));
    let p = plan(&ps).unwrap();
    let r = render(&ps, &p, &RenderOptions::default());
    let d = serde_json::to_value(&r.deployment).unwrap();
    let pod = &d["spec"]["template"]["spec"];
    assert!(pod.get("initContainers").is_none());
    let vols = pod["volumes"].as_array().unwrap();
    let claim = vols.iter().find(|v| v.get("persistentVolumeClaim").is_some()).unwrap();
    assert_eq!(
        claim["persistentVolumeClaim"],
        json!({"claimName": "models", "readOnly": true})
    );
    let mounts = pod["containers"][0]["volumeMounts"].as_array().unwrap();
    assert!(
        mounts
            .iter()
            .any(|m| m["mountPath"] == "/var/lib/plinth/claims/models" && m["readOnly"] == true)
    );
}

#[test]
fn private_packages_pull_secrets_probes_and_a_disruption_budget() {
    let ps = service(json!({
        "package": {"uri": "https://acct.blob.core.windows.net/models/p.tar", "sha256": SHA, "size": 4096},
        "inferenceConfig": {},
        "imagePullSecrets": [{"name": "registry"}],
        "packageCredentials": {"secretName": "models-sas", "queryKey": "sas", "caKey": "ca.crt"},
        "deploymentConfig": {
            "autoScaler": {"minReplicas": 1, "maxReplicas": 4},
            "livenessProbeRequirements": {"periodSeconds": 20, "initialDelaySeconds": 310, "failureThreshold": 5},
            "readinessProbeRequirements": {"period_seconds": 7, "timeout_seconds": 4, "success_threshold": 2},
        },
    }));
    let p = plan(&ps).unwrap();
    let r = render(&ps, &p, &RenderOptions::default());
    let d = serde_json::to_value(&r.deployment).unwrap();
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["imagePullSecrets"], json!([{"name": "registry"}]));
    // The credentials reach the fetching container only, as a file; the URI stays as it was.
    let fetch = init(pod, "fetch-0");
    let args: Vec<&str> = fetch["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args[2], "https://acct.blob.core.windows.net/models/p.tar");
    let flag = |f: &str| args.iter().position(|a| *a == f).map(|i| args[i + 1]);
    assert_eq!(flag("--max-bytes"), Some("4096"));
    assert_eq!(flag("--query-file"), Some("/etc/plinth/package-credentials/query"));
    assert_eq!(flag("--header-file"), None);
    assert_eq!(flag("--cacert"), Some("/etc/plinth/package-credentials/ca.pem"));
    assert!(
        fetch["volumeMounts"]
            .as_array()
            .unwrap()
            .contains(&json!({"name": "package-credentials", "mountPath": CREDENTIALS_DIR, "readOnly": true}))
    );
    let host_mounts = pod["containers"][0]["volumeMounts"].as_array().unwrap();
    assert!(
        host_mounts.iter().all(|m| m["name"] != "package-credentials"),
        "{host_mounts:?}"
    );
    let vols = pod["volumes"].as_array().unwrap();
    let creds = vols.iter().find(|v| v["name"] == "package-credentials").unwrap();
    assert_eq!(
        creds["secret"],
        json!({"secretName": "models-sas", "defaultMode": 0o440,
               "items": [{"key": "sas", "path": "query"}, {"key": "ca.crt", "path": "ca.pem"}]})
    );
    let cm = serde_json::to_string(&r.config_map).unwrap();
    assert!(!cm.contains("models-sas"), "{cm}");
    // Azure's probe settings, over the host's defaults.
    let c = &pod["containers"][0];
    assert_eq!(c["livenessProbe"]["periodSeconds"], 20);
    assert_eq!(c["livenessProbe"]["initialDelaySeconds"], 310);
    assert_eq!(c["livenessProbe"]["failureThreshold"], 5);
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["periodSeconds"], 7);
    assert_eq!(c["readinessProbe"]["timeoutSeconds"], 4);
    assert_eq!(c["readinessProbe"]["successThreshold"], 2);
    assert_eq!(c["readinessProbe"]["failureThreshold"], 3);
    // Up to four pods: evicted one at a time.
    let pdb = serde_json::to_value(r.disruption_budget.expect("a disruption budget")).unwrap();
    assert_eq!(pdb["apiVersion"], "policy/v1");
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    assert_eq!(pdb["spec"]["selector"]["matchLabels"][SERVICE_LABEL], "diabetes");
    // One pod at most: no budget.
    let one =
        service(json!({"package": {"uri": "https://x/p.tar", "sha256": SHA}, "deploymentConfig": {"numReplicas": 1}}));
    assert!(
        render(&one, &plan(&one).unwrap(), &RenderOptions::default())
            .disruption_budget
            .is_none()
    );
    // Refused with the field named.
    for (spec, field) in [
        (
            json!({"packageCredentials": {"secretName": "s"}}),
            "spec.packageCredentials",
        ),
        (
            json!({"packageCredentials": {"secretName": "s", "queryKey": "a/b"}}),
            "spec.packageCredentials.queryKey",
        ),
        (
            json!({"imagePullSecrets": [{"name": "Not_A_Secret"}]}),
            "spec.imagePullSecrets[0].name",
        ),
        (
            json!({"deploymentConfig": {"livenessProbeRequirements": {"successThreshold": 2}}}),
            "livenessProbeRequirements.successThreshold must be 1",
        ),
    ] {
        let mut spec = spec;
        spec["package"] = json!({"uri": "https://x/p.tar", "sha256": SHA});
        let e = plan(&service(spec)).unwrap_err();
        assert!(e.contains(field), "{field}: {e}");
    }
}
