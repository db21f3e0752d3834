//! A deployment package: one or more ONNX models plus an optional entry script.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::onnx::{OnnxModel, SessionOptions};
use crate::wasm::{CallContext, EntryScript, ScienceScript, ScriptLimits, WasmEngine};
use crate::{Error, Result, json};

/// At most this many models per deployment (as Azure ML allows).
pub const MAX_MODELS: usize = 1000;

/// Where a model comes from.
#[derive(Debug, Clone)]
pub struct ModelSource {
    /// The name an entry script uses in `infer(model, ...)`.
    pub name: String,
    /// An `.onnx` file, or a directory holding exactly one.
    pub path: PathBuf,
}

/// Everything needed to load a package.
#[derive(Debug, Clone, Default)]
pub struct PackageSpec {
    pub models: Vec<ModelSource>,
    /// A WebAssembly component implementing the `plinth:scoring` world, or a `.py` script run as it is on
    /// the scientific Python runtime (numpy, pandas, scikit-learn, ...; see [`ScienceScript`]). Without
    /// one, the package must hold exactly one model, served directly ("no-code").
    pub entry_script: Option<PathBuf>,
    /// The entry script's name in logs and errors. Default: the file's stem.
    pub script_name: Option<String>,
    /// Shown read-only to the entry script at `/models`. Default: the folder of the first model.
    pub model_dir: Option<PathBuf>,
    pub session: SessionOptions,
    pub limits: ScriptLimits,
    /// The ONNX Runtime library; default: found as [`crate::onnx`] describes.
    pub ort_library: Option<PathBuf>,
}

/// The models of a package, by name.
#[derive(Debug, Default)]
pub struct ModelSet {
    models: Vec<Arc<OnnxModel>>,
}

impl ModelSet {
    pub fn new(models: Vec<Arc<OnnxModel>>) -> Self {
        ModelSet { models }
    }

    pub fn get(&self, name: &str) -> Result<&Arc<OnnxModel>> {
        self.models
            .iter()
            .find(|m| m.name() == name)
            .ok_or_else(|| Error::UnknownModel {
                model: name.to_string(),
                known: self.names().collect::<Vec<_>>().join(", "),
            })
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.models.iter().map(|m| m.name())
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<OnnxModel>> {
        self.models.iter()
    }

    pub fn len(&self) -> usize {
        self.models.len()
    }

    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }
}

/// A loaded package, ready to score.
#[derive(Debug)]
pub struct Package {
    models: Arc<ModelSet>,
    script: Option<EntryScript>,
    science: Option<ScienceScript>,
    lease: Option<Lease>,
}

/// Whatever the package was placed on (a GPU, say), held until the package goes.
struct Lease(#[allow(dead_code)] Box<dyn std::any::Any + Send + Sync>);

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Lease")
    }
}

impl Package {
    /// Loads every model, then the entry script (if any) with `engine`.
    pub fn load(spec: &PackageSpec, engine: Option<&WasmEngine>) -> Result<Self> {
        if spec.models.len() > MAX_MODELS {
            return Err(Error::Config(format!(
                "a deployment holds at most {MAX_MODELS} models, this one has {}",
                spec.models.len()
            )));
        }
        if spec.entry_script.is_none() && spec.models.len() != 1 {
            return Err(Error::Config(format!(
                "without an entry script a deployment serves exactly one model, this one has {}",
                spec.models.len()
            )));
        }
        let mut models = Vec::with_capacity(spec.models.len());
        for source in &spec.models {
            if models.iter().any(|m: &Arc<OnnxModel>| m.name() == source.name) {
                return Err(Error::Config(format!("model name '{}' is used twice", source.name)));
            }
            let file = model_file(&source.name, &source.path)?;
            models.push(Arc::new(OnnxModel::load(
                &source.name,
                &file,
                &spec.session,
                spec.ort_library.as_deref(),
            )?));
        }
        let models = Arc::new(ModelSet::new(models));
        let science = match &spec.entry_script {
            Some(path) if path.extension().is_some_and(|e| e == "py") => {
                let engine = engine.ok_or_else(|| Error::Config("an entry script needs a wasm engine".into()))?;
                let model_dir = spec.model_dir.clone().or_else(|| default_model_dir(spec));
                let name = spec.script_name.clone().unwrap_or_else(|| "score".into());
                Some(ScienceScript::load(
                    &name,
                    path,
                    models.clone(),
                    model_dir.as_deref(),
                    spec.limits.clone(),
                    engine.config().cache_dir.as_deref(),
                )?)
            }
            _ => None,
        };
        let script = match &spec.entry_script {
            None => None,
            Some(_) if science.is_some() => None,
            Some(path) => {
                let engine = engine.ok_or_else(|| Error::Config("an entry script needs a wasm engine".into()))?;
                let model_dir = spec.model_dir.clone().or_else(|| default_model_dir(spec));
                let name = spec.script_name.clone().unwrap_or_else(|| {
                    path.file_stem()
                        .map(|s| s.to_string_lossy().into_owned())
                        .unwrap_or_else(|| "script".into())
                });
                Some(EntryScript::load(
                    engine,
                    &name,
                    path,
                    models.clone(),
                    model_dir.as_deref(),
                    spec.limits.clone(),
                )?)
            }
        };
        Ok(Package {
            models,
            script,
            science,
            lease: None,
        })
    }

    /// Holds `lease` (what the package was placed on: a GPU, say) for as long as the package lives, so
    /// that dropping it gives the place back.
    pub fn with_lease(mut self, lease: impl Send + Sync + 'static) -> Self {
        self.lease = Some(Lease(Box::new(lease)));
        self
    }

    pub fn models(&self) -> &ModelSet {
        &self.models
    }

    /// The entry script, when it is a component.
    pub fn script(&self) -> Option<&EntryScript> {
        self.script.as_ref()
    }

    /// The entry script, when it runs on the scientific Python runtime.
    pub fn science(&self) -> Option<&ScienceScript> {
        self.science.as_ref()
    }

    /// Whether requests go through an entry script (of either kind).
    pub fn has_script(&self) -> bool {
        self.script.is_some() || self.science.is_some()
    }

    /// Scores one request body: through the entry script's `run`, or, for a no-code package, by decoding
    /// the JSON into the model's inputs and encoding its outputs.
    pub fn score(&self, body: &[u8], ctx: &CallContext) -> Result<Vec<u8>> {
        if let Some(science) = &self.science {
            let r = science.run(body, ctx)?;
            let json = r
                .content_type
                .as_deref()
                .is_none_or(|t| t.starts_with("application/json"));
            if r.status == 200 && json && r.headers.is_empty() {
                return Ok(r.body);
            }
            // Azure's AMLResponse: the script chose the status (and perhaps a content type and headers).
            return Err(Error::Response {
                status: r.status,
                content_type: r.content_type,
                headers: r.headers,
                body: r.body,
            });
        }
        match &self.script {
            Some(script) => {
                let text = std::str::from_utf8(body)
                    .map_err(|e| Error::InvalidInput(format!("request body is not UTF-8 text: {e}")))?;
                script.run(text, ctx).map(String::into_bytes)
            }
            None => {
                let model = self
                    .models
                    .iter()
                    .next()
                    .ok_or_else(|| Error::Config("package has no model".into()))?;
                let inputs = json::decode_request(model.inputs(), body)?;
                let outputs = model.infer(&inputs)?;
                Ok(json::encode_outputs(&outputs))
            }
        }
    }
}

/// The `.onnx` file a model path names: the file itself, or the one `.onnx` file in a directory.
fn model_file(name: &str, path: &Path) -> Result<PathBuf> {
    if path.is_file() {
        return Ok(path.to_path_buf());
    }
    let entries = std::fs::read_dir(path).map_err(|e| Error::ModelLoad {
        model: name.to_string(),
        message: path.display().to_string(),
        source: Some(Box::new(e)),
    })?;
    let onnx: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "onnx"))
        .collect();
    match onnx.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(Error::ModelLoad {
            model: name.to_string(),
            message: format!("no .onnx file in {}", path.display()),
            source: None,
        }),
        _ => Err(Error::ModelLoad {
            model: name.to_string(),
            message: format!("{} holds several .onnx files; name one", path.display()),
            source: None,
        }),
    }
}

fn default_model_dir(spec: &PackageSpec) -> Option<PathBuf> {
    let first = &spec.models.first()?.path;
    if first.is_dir() {
        Some(first.clone())
    } else {
        first.parent().map(Path::to_path_buf)
    }
}
