//! Config files as Azure's Python side reads them: a boolean written as text (`"True"`, `"false"`) and a
//! number written as text (`"2"`, `"0.5"`) are taken where a boolean or a number is read, as Python's
//! loader takes them; and the Python SDK's parameter names (`cpu_cores`, `auth_enabled`, ...), which the
//! JSON files spell otherwise, are refused naming the file's own field rather than deployed at defaults.

use serde_json::Value;

/// `AksWebservice.deploy_configuration(...)`'s parameters (and `LocalWebservice`'s, `AciWebservice`'s)
/// and the deploymentconfig.json field each one is.
const DEPLOYMENT_SDK: &[(&str, &str)] = &[
    ("cpu_cores", "containerResourceRequirements.cpu"),
    ("memory_gb", "containerResourceRequirements.memoryInGB"),
    ("cpu_cores_limit", "containerResourceRequirements.cpuLimit"),
    ("memory_gb_limit", "containerResourceRequirements.memoryInGBLimit"),
    ("gpu_cores", "gpuCores"),
    ("auth_enabled", "authEnabled"),
    ("token_auth_enabled", "tokenAuthEnabled"),
    ("autoscale_enabled", "autoScaler.autoscaleEnabled"),
    ("autoscale_min_replicas", "autoScaler.minReplicas"),
    ("autoscale_max_replicas", "autoScaler.maxReplicas"),
    ("autoscale_refresh_seconds", "autoScaler.refreshPeriodInSeconds"),
    ("autoscale_target_utilization", "autoScaler.targetUtilization"),
    ("num_replicas", "numReplicas"),
    ("scoring_timeout_ms", "scoringTimeoutMs"),
    ("replica_max_concurrent_requests", "maxConcurrentRequestsPerContainer"),
    ("max_request_wait_time", "maxQueueWaitMs"),
    ("collect_model_data", "dataCollection.storageEnabled"),
    ("enable_app_insights", "appInsightsEnabled"),
    ("primary_key", "keys.primaryKey"),
    ("secondary_key", "keys.secondaryKey"),
    ("compute_target_name", "computeTargetName"),
    ("period_seconds", "livenessProbeRequirements.periodSeconds"),
    ("initial_delay_seconds", "livenessProbeRequirements.initialDelaySeconds"),
    ("timeout_seconds", "livenessProbeRequirements.timeoutSeconds"),
    ("success_threshold", "livenessProbeRequirements.successThreshold"),
    ("failure_threshold", "livenessProbeRequirements.failureThreshold"),
    ("dns_name_label", "dnsNameLabel"),
    ("ssl_enabled", "sslEnabled"),
    ("ssl_cert_pem_file", "sslCertificate"),
    ("ssl_key_pem_file", "sslKey"),
    ("ssl_cname", "sslCname"),
];

/// `InferenceConfig(...)`'s parameters and the inferenceconfig.json field each one is.
const INFERENCE_SDK: &[(&str, &str)] = &[
    ("entry_script", "entryScript"),
    ("source_directory", "sourceDirectory"),
    ("conda_file", "condaFile"),
    ("extra_docker_file_steps", "extraDockerfileSteps"),
    ("base_image", "baseImage"),
    ("base_image_registry", "baseImageRegistry"),
    ("cuda_version", "cudaVersion"),
    ("enable_gpu", "enableGpu"),
    ("schema_file", "schemaFile"),
    ("docker_file", "dockerFile"),
];

/// Which file a check is for.
#[derive(Clone, Copy)]
pub(crate) enum File {
    Deployment,
    Inference,
}

/// The first top-level field of `value` spelt as the Python SDK spells a parameter, with the field the
/// file spells it as: `"cpu_cores is the Python SDK's name; did you mean containerResourceRequirements.cpu?"`.
pub(crate) fn sdk_spelling(file: File, value: &Value) -> Option<String> {
    let table = match file {
        File::Deployment => DEPLOYMENT_SDK,
        File::Inference => INFERENCE_SDK,
    };
    let fields = value.as_object()?;
    table
        .iter()
        .find(|(sdk, _)| fields.contains_key(*sdk))
        .map(|(sdk, field)| {
            format!("{sdk} is the Python SDK's parameter name, not a field of this file: did you mean {field}?")
        })
}

/// Replaces the text at `path` in `value` by the boolean or number it spells, when `message` (serde's)
/// says text was found where that was expected; whether it did.
pub(crate) fn coerce(value: &mut Value, path: &serde_path_to_error::Path, message: &str) -> bool {
    let Some(rest) = message.strip_prefix("invalid type: string \"") else {
        return false;
    };
    let Some((text, expected)) = rest.split_once("\", expected ") else {
        return false;
    };
    let replacement = if expected.starts_with("a boolean") {
        match text.trim().to_ascii_lowercase().as_str() {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => return false,
        }
    } else if is_number(expected) {
        let text = text.trim();
        match (text.parse::<i64>(), text.parse::<f64>()) {
            (Ok(i), _) => Value::from(i),
            (_, Ok(f)) if f.is_finite() => Value::from(f),
            _ => return false,
        }
    } else {
        return false;
    };
    let Some(slot) = at(value, path) else {
        return false;
    };
    if !slot.is_string() {
        return false;
    }
    *slot = replacement;
    true
}

fn is_number(expected: &str) -> bool {
    const NUMBERS: &[&str] = &["f64", "f32", "u64", "u32", "u16", "u8", "i64", "i32", "usize"];
    NUMBERS.iter().any(|n| expected.starts_with(n))
}

fn at<'v>(value: &'v mut Value, path: &serde_path_to_error::Path) -> Option<&'v mut Value> {
    use serde_path_to_error::Segment;
    path.iter().try_fold(value, |v, segment| match segment {
        Segment::Seq { index } => v.get_mut(*index),
        Segment::Map { key } => v.get_mut(key.as_str()),
        Segment::Enum { .. } | Segment::Unknown => None,
    })
}
