//! Turning what an admin request asks for into a checked version record: the Azure configs parsed with
//! the errors naming the field, models resolved, files present, the settings applied.

use plinth_runtime::MAX_MODELS;
use serde_json::Value;

use crate::api::VersionSettings;
use plinth_spec::config::{DeploymentConfig, InferenceConfig};
use plinth_spec::record::{FileRef, VersionRecord, check_relative};

use crate::store::Workspace;
use crate::{Error, Result};

/// Validates a version's content (configs, models, files) into a record.
pub(crate) fn version_record(
    ws: &Workspace,
    name: &str,
    models: &[String],
    ic: &Value,
    dc: &Value,
    source: Vec<FileRef>,
    entry_script: Option<String>,
) -> Result<(VersionRecord, Vec<String>)> {
    if models.is_empty() && entry_script.is_none() {
        return Err(Error::BadRequest(
            "a deployment needs a model (-m NAME:VERSION) or an entry script".into(),
        ));
    }
    if models.len() > MAX_MODELS {
        return Err(Error::BadRequest(format!(
            "a deployment holds at most {MAX_MODELS} models, this one has {}",
            models.len()
        )));
    }
    let as_bytes = |v: &Value| {
        if v.is_null() {
            b"{}".to_vec()
        } else {
            serde_json::to_vec(v).unwrap_or_default()
        }
    };
    let (dc, mut ignored) = DeploymentConfig::from_json("deploymentconfig.json", &as_bytes(dc))?;
    let (ic, ic_ignored) = InferenceConfig::from_json("inferenceconfig.json", &as_bytes(ic))?;
    ignored.extend(ic_ignored);
    let mut ids = Vec::with_capacity(models.len());
    for id in models {
        ids.push(ws.model(id)?.id());
    }
    ws.check_files(&source)?;
    if let Some(script) = &entry_script {
        check_relative(script)?;
        if !source.iter().any(|f| &f.path == script) {
            return Err(Error::BadRequest(format!(
                "entry script {script} is not among the uploaded source files"
            )));
        }
    } else if ids.len() != 1 {
        return Err(Error::BadRequest(format!(
            "without an entry script a service serves exactly one ONNX model, this deployment names {}",
            ids.len()
        )));
    }
    let record = VersionRecord::new(name, ids, ic, dc, source, entry_script);
    Ok((record, ignored))
}

/// Applies the settings a request names; the others keep their values.
pub(crate) fn apply_settings(v: &mut VersionRecord, s: &VersionSettings) {
    if let Some(t) = s.traffic {
        v.traffic = t;
    }
    if let Some(d) = s.is_default {
        v.is_default = d;
    }
    if let Some(c) = s.control {
        v.control = c;
    }
    if let Some(m) = s.mirror {
        v.mirror = m;
    }
    if let Some(d) = &s.description {
        v.description = Some(d.clone());
    }
    if let Some(t) = &s.tags {
        v.tags = t.clone();
    }
    if let Some(r) = &s.rollback {
        v.rollback = Some(r.clone());
    }
}
