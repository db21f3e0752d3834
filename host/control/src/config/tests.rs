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
    use plinth_runtime::onnx::ep::Provider;
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
