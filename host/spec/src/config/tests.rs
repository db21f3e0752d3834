use super::*;

#[test]
fn azure_defaults() {
    let (c, ignored) = DeploymentConfig::from_json("dc.json", b"{}").unwrap();
    assert!(c.auth_enabled && !c.token_auth_enabled);
    assert_eq!(c.scoring_timeout_ms, 60_000);
    assert_eq!(c.max_concurrent_requests_per_container, 1);
    assert_eq!(c.max_queue_wait_ms, 500);
    assert_eq!(c.auto_scaler.target_utilization, 70);
    assert!(c.autoscale());
    assert_eq!(c.initial_replicas(), 1);
    assert!(ignored.is_empty());
}

#[test]
fn an_azure_file_as_it_is() {
    let json = br#"{
        "computeType": "aks",
        "containerResourceRequirements": {"cpu": 0.5, "memoryInGB": 1.0},
        "autoScaler": {"autoscaleEnabled": true, "minReplicas": 1, "maxReplicas": 3, "refreshPeriodInSeconds": 10, "targetUtilization": 70},
        "authEnabled": true,
        "appInsightsEnabled": true,
        "namespace": "default",
        "scoringTimeoutMs": 20000
    }"#;
    let (c, ignored) = DeploymentConfig::from_json("dc.json", json).unwrap();
    assert_eq!(c.auto_scaler.max_replicas, 3);
    assert_eq!(c.scoring_timeout_ms, 20_000);
    assert_eq!(ignored, vec!["computeType", "appInsightsEnabled", "namespace"]);
}

#[test]
fn errors_name_the_field() {
    let err = |json: &str| {
        DeploymentConfig::from_json("dc.json", json.as_bytes())
            .unwrap_err()
            .to_string()
    };
    assert!(err(r#"{"autoScaler": {"minReplicas": "two"}}"#).contains("autoScaler.minReplicas: invalid type"));
    assert!(err(r#"{"autoScaler": {"minReplicas": 5, "maxReplicas": 2}}"#).contains("minReplicas (5) is above"));
    assert!(err(r#"{"autoScaler": {"targetUtilization": 150}}"#).contains("targetUtilization must be 1..100"));
    assert!(err(r#"{"maxConcurrentRequestsPerContainer": 0}"#).contains("maxConcurrentRequestsPerContainer"));
    assert!(err(r#"{"keys": {"primaryKey": "short"}}"#).contains("keys.primaryKey must be at least 16"));
    assert!(err(r#"{"scriptTmpMb": 0}"#).contains("scriptTmpMb must be at least 1"));
    let (c, _) = DeploymentConfig::from_json("dc.json", br#"{"scriptTmpMb": "16"}"#).unwrap();
    assert_eq!(c.script_tmp_mb, Some(16));
    let top = err("[1]");
    assert!(top.starts_with("dc.json: ") && top.contains("invalid type"), "{top}");
}

#[test]
fn num_replicas_without_autoscale_pins_the_count() {
    let (c, _) = DeploymentConfig::from_json("dc.json", br#"{"numReplicas": 3}"#).unwrap();
    assert!(!c.autoscale());
    assert_eq!(c.initial_replicas(), 3);
}

#[test]
fn inference_config() {
    let (c, ignored) = InferenceConfig::from_json(
        "ic.json",
        br#"{"entryScript": "score.py", "sourceDirectory": "src", "runtime": "python", "condaFile": "env.yml"}"#,
    )
    .unwrap();
    assert_eq!(
        c.entry_script_path(Path::new("/p")),
        Some(PathBuf::from("/p/src/score.py"))
    );
    assert_eq!(ignored, vec!["condaFile"]);
    let err = InferenceConfig::from_json("ic.json", br#"{"entryScript": "score.R"}"#).unwrap_err();
    assert!(err.to_string().contains("entryScript must be a .py file"), "{err}");
}

#[test]
fn execution_providers_and_azure_gpu_switches() {
    use crate::provider::Provider;
    let dc = |json: &str| DeploymentConfig::from_json("dc.json", json.as_bytes());
    let names = |c: &DeploymentConfig, gpu: bool| -> Vec<Provider> {
        c.providers(gpu).unwrap().iter().map(|s| s.provider()).collect()
    };
    let (c, ignored) = dc(r#"{"executionProviders": ["TensorrtExecutionProvider", "cuda", "cpu"]}"#).unwrap();
    assert!(ignored.is_empty(), "{ignored:?}");
    assert_eq!(names(&c, false), [Provider::TensorRt, Provider::Cuda, Provider::Cpu]);
    // Azure's switches: gpuCores (no longer ignored) and the inference config's enableGpu.
    let (c, ignored) = dc(r#"{"gpuCores": 1}"#).unwrap();
    assert!(ignored.is_empty(), "{ignored:?}");
    assert_eq!(names(&c, false), [Provider::Cuda]);
    assert_eq!(
        c.replica_gpus(&c.providers(false).unwrap(), 0),
        1,
        "asked for, even where there is none"
    );
    let (c, _) = dc("{}").unwrap();
    assert_eq!(names(&c, false), []);
    assert_eq!(names(&c, true), [Provider::Cuda]);
    let (_, ignored) = InferenceConfig::from_json("ic.json", br#"{"enableGpu": true}"#).unwrap();
    assert!(ignored.is_empty(), "{ignored:?}");
    // A GPU provider listed first takes a GPU only where the host has one; gpuCores 0 takes none.
    let (c, _) = dc(r#"{"executionProviders": ["cuda", "cpu"]}"#).unwrap();
    let list = c.providers(false).unwrap();
    assert_eq!((c.replica_gpus(&list, 0), c.replica_gpus(&list, 2)), (0, 1));
    let (c, _) = dc(r#"{"executionProviders": ["cuda"], "gpuCores": 0}"#).unwrap();
    assert_eq!(c.replica_gpus(&c.providers(false).unwrap(), 2), 0);
    // gpuMemoryGb: a share of a GPU (cuda unless listed otherwise), never a whole one.
    let (c, ignored) = dc(r#"{"gpuMemoryGb": 2.5}"#).unwrap();
    assert!(ignored.is_empty(), "{ignored:?}");
    assert_eq!(names(&c, false), [Provider::Cuda]);
    assert_eq!(c.replica_gpus(&c.providers(false).unwrap(), 2), 0);
    assert_eq!(c.gpu_share_bytes(), Some(5 << 29));
    let err = dc(r#"{"gpuMemoryGb": 4, "gpuCores": 1}"#).unwrap_err().to_string();
    assert!(
        err.contains("gpuCores (whole GPUs per replica) or gpuMemoryGb"),
        "{err}"
    );
    let err = dc(r#"{"gpuMemoryGb": 0}"#).unwrap_err().to_string();
    assert!(err.contains("gpuMemoryGb must be above 0"), "{err}");
    // Mistakes name the field.
    let err = dc(r#"{"executionProviders": ["cuda", "rocm"]}"#)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("executionProviders[1]: unknown execution provider \"rocm\""),
        "{err}"
    );
    let err = dc(r#"{"executionProviders": "cuda"}"#).unwrap_err().to_string();
    assert!(err.contains("executionProviders: invalid type"), "{err}");
}

#[test]
fn real_files_spellings_and_unknown_keys_never_fail() {
    // As found in public repositories: older top-level sizes, Azure's other spellings, keys nobody defines.
    let (c, ignored) = DeploymentConfig::from_json(
        "dc.json",
        br#"{"computeType": "ACI", "cpuCores": 1, "memoryInGb": 2, "enableAppInsights": true,
             "autoScalr": {"x": 1}, "containerResourceRequirements": {"gpu": 0, "shmSize": "2g"}}"#,
    )
    .unwrap();
    assert_eq!(c.container_resource_requirements.cpu, 1.0);
    assert_eq!(c.container_resource_requirements.memory_in_gb, 2.0);
    assert_eq!(c.app_insights_enabled, Some(true));
    for want in [
        "computeType",
        "appInsightsEnabled",
        "autoScalr (not a field of this file)",
        "containerResourceRequirements.shmSize (not a field of this file)",
    ] {
        assert!(ignored.iter().any(|i| i == want), "no {want} in {ignored:?}");
    }
    let (c, _) = DeploymentConfig::from_json(
        "dc.json",
        br#"{"containerResourceRequirements": {"cpuCores": 0.5, "memoryInGB": 1.5}}"#,
    )
    .unwrap();
    assert_eq!(c.container_resource_requirements.cpu, 0.5);
    // A known key with a wrong type still fails, naming it.
    let err = DeploymentConfig::from_json("dc.json", br#"{"cpuCores": "one"}"#)
        .unwrap_err()
        .to_string();
    assert!(err.contains("cpuCores: invalid type"), "{err}");
    let (ic, ignored) = InferenceConfig::from_json(
        "ic.json",
        br#"{"entryScript": "score.py", "extraDockerfileSteps": "RUN true", "enableGpu": false, "weird": 1}"#,
    )
    .unwrap();
    assert_eq!(ic.extra_docker_file_steps.as_deref(), Some("RUN true"));
    assert!(ignored.contains(&"extraDockerfileSteps".to_string()), "{ignored:?}");
    assert!(
        ignored.contains(&"weird (not a field of this file)".to_string()),
        "{ignored:?}"
    );
}

#[test]
fn probe_requirements_in_both_spellings_and_the_older_top_level_fields() {
    let dc = |json: &str| DeploymentConfig::from_json("dc.json", json.as_bytes());
    let (c, ignored) = dc(
        r#"{"livenessProbeRequirements": {"periodSeconds": 20, "failure_threshold": 5},
                               "readinessProbeRequirements": {"initial_delay_seconds": 3, "timeoutSeconds": 4}}"#,
    )
    .unwrap();
    assert_eq!(
        (c.liveness().period_seconds, c.liveness().failure_threshold),
        (Some(20), Some(5))
    );
    assert_eq!(
        (c.readiness().initial_delay_seconds, c.readiness().timeout_seconds),
        (Some(3), Some(4))
    );
    assert!(
        ignored.iter().all(|i| i.contains("the probes of pods on Kubernetes")),
        "{ignored:?}"
    );
    // Older files put the liveness probe's fields at the top level; the object wins where both speak.
    let (c, _) =
        dc(r#"{"periodSeconds": 7, "initialDelaySeconds": 310, "livenessProbeRequirements": {"periodSeconds": 9}}"#)
            .unwrap();
    assert_eq!(
        (c.liveness().period_seconds, c.liveness().initial_delay_seconds),
        (Some(9), Some(310))
    );
    let err = dc(r#"{"readinessProbeRequirements": {"periodSeconds": 0}}"#)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("readinessProbeRequirements.periodSeconds must be at least 1"),
        "{err}"
    );
    let err = dc(r#"{"livenessProbeRequirements": {"successThreshold": 3}}"#)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("livenessProbeRequirements.successThreshold must be 1"),
        "{err}"
    );
    let err = dc(r#"{"livenessProbeRequirements": {"periodSeconds": "often"}}"#)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("livenessProbeRequirements.periodSeconds: invalid type"),
        "{err}"
    );
}

#[test]
fn text_for_a_boolean_or_a_number_is_read_as_python_reads_it() {
    let json = br#"{
        "authEnabled": "False",
        "tokenAuthEnabled": "true",
        "containerResourceRequirements": {"cpu": "0.5", "memoryInGB": "2"},
        "autoScaler": {"autoscaleEnabled": "True", "maxReplicas": "4"},
        "scoringTimeoutMs": " 20000 ",
        "description": "7"
    }"#;
    let (c, ignored) = DeploymentConfig::from_json("dc.json", json).unwrap();
    assert!(!c.auth_enabled && c.token_auth_enabled);
    assert_eq!(c.container_resource_requirements.cpu, 0.5);
    assert_eq!(c.container_resource_requirements.memory_in_gb, 2.0);
    assert_eq!(
        (c.auto_scaler.autoscale_enabled, c.auto_scaler.max_replicas),
        (Some(true), 4)
    );
    assert_eq!(c.scoring_timeout_ms, 20_000);
    assert_eq!(c.description.as_deref(), Some("7"));
    assert!(ignored.is_empty(), "{ignored:?}");
    // Text that spells neither is still an error naming the field.
    let err = DeploymentConfig::from_json("dc.json", br#"{"authEnabled": "yes please"}"#).unwrap_err();
    assert!(err.to_string().contains("authEnabled: invalid type"), "{err}");
    let (ic, _) = InferenceConfig::from_json("ic.json", br#"{"enableGpu": "TRUE"}"#).unwrap();
    assert_eq!(ic.enable_gpu, Some(true));
}

#[test]
fn the_python_sdks_parameter_names_are_refused_naming_the_field() {
    let err = |json: &str| {
        DeploymentConfig::from_json("dc.json", json.as_bytes())
            .unwrap_err()
            .to_string()
    };
    assert!(
        err(r#"{"cpu_cores": 2}"#).contains("cpu_cores is the Python SDK's parameter name, not a field of this file: did you mean containerResourceRequirements.cpu?"),
        "{}",
        err(r#"{"cpu_cores": 2}"#)
    );
    assert!(err(r#"{"autoscale_max_replicas": 2}"#).contains("did you mean autoScaler.maxReplicas?"));
    assert!(err(r#"{"auth_enabled": false}"#).contains("did you mean authEnabled?"));
    let ic = InferenceConfig::from_json("ic.json", br#"{"entry_script": "score.py"}"#).unwrap_err();
    assert!(ic.to_string().contains("did you mean entryScript?"), "{ic}");
}
