//! The control plane: the admin API behind `plinth model|deploy|service`, and deployments, which
//! materialise a service's files from the blob store, compile its entry script (cached), load the
//! package off the request path and swap it into the router.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use http::{Method, StatusCode};
use plinth_runtime::onnx::SessionOptions;
use plinth_runtime::wasm::{ScriptLimits, WasmEngine};
use plinth_runtime::{MAX_MODELS, ModelSource, Package, PackageSpec};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::auth::{TokenIssuer, bearer, generate_key, key_matches, now};
use crate::config::{DeploymentConfig, InferenceConfig};
use crate::logs::LogHub;
use crate::service::{Router, Service, ServiceConfig};
use crate::store::{FileRef, ModelRecord, ServiceRecord, Workspace, check_name, check_relative};
use crate::{Error, Result};

/// Settings of a control plane.
#[derive(Debug, Clone)]
pub struct ControlOptions {
    /// Lifetime of the tokens `plinth service token` hands out. Default 1 hour.
    pub token_lifetime: Duration,
    pub ort_library: Option<PathBuf>,
    /// Where compiled entry scripts are cached. Default: `<workspace>/cache`.
    pub cache_dir: Option<PathBuf>,
}

impl Default for ControlOptions {
    fn default() -> Self {
        ControlOptions {
            token_lifetime: Duration::from_secs(3600),
            ort_library: None,
            cache_dir: None,
        }
    }
}

/// Where a service's deployment stands.
#[derive(Debug, Clone, Serialize)]
pub struct DeployState {
    /// `Transitioning`, `Healthy` or `Failed`, as Azure ML names them.
    pub state: &'static str,
    pub error: Option<String>,
    pub generation: u64,
    /// Configuration fields accepted but without effect here.
    pub ignored: Vec<String>,
}

pub struct ControlPlane {
    ws: Arc<Workspace>,
    router: Arc<Router>,
    engine: Arc<WasmEngine>,
    tokens: TokenIssuer,
    logs: Arc<LogHub>,
    states: DashMap<String, DeployState>,
    generation: AtomicU64,
    options: ControlOptions,
}

/// `POST /api/v1/admin/models`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterModel {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    files: Vec<FileRef>,
}

/// `POST /api/v1/admin/services`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeployRequest {
    name: String,
    models: Vec<String>,
    #[serde(default)]
    inference_config: Value,
    #[serde(default)]
    deployment_config: Value,
    #[serde(default)]
    source: Vec<FileRef>,
    #[serde(default)]
    entry_script: Option<String>,
}

impl ControlPlane {
    pub fn new(
        ws: Arc<Workspace>,
        router: Arc<Router>,
        engine: Arc<WasmEngine>,
        logs: Arc<LogHub>,
        options: ControlOptions,
    ) -> Self {
        let tokens = TokenIssuer::new(ws.jwt_secret(), options.token_lifetime);
        ControlPlane {
            ws,
            router,
            engine,
            tokens,
            logs,
            states: DashMap::new(),
            generation: AtomicU64::new(now() * 1000),
            options,
        }
    }

    pub fn tokens(&self) -> &TokenIssuer {
        &self.tokens
    }

    pub fn admin_token(&self) -> &str {
        self.ws.admin_token()
    }

    pub fn logs(&self) -> &Arc<LogHub> {
        &self.logs
    }

    /// Services still loading.
    pub fn transitioning(&self) -> Vec<String> {
        self.states
            .iter()
            .filter(|e| e.value().state == "Transitioning")
            .map(|e| e.key().clone())
            .collect()
    }

    pub fn state(&self, name: &str) -> Option<DeployState> {
        self.states.get(name).map(|s| s.clone())
    }

    /// Deploys every stored service (at start-up).
    pub fn restore(self: &Arc<Self>) -> Result<()> {
        for record in self.ws.services()? {
            self.start_deploy(record, Vec::new());
        }
        Ok(())
    }

    /// Deploys and waits until every stored service is Healthy or Failed.
    pub async fn wait_idle(&self) {
        while !self.transitioning().is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn admin(
        self: &Arc<Self>,
        parts: &http::request::Parts,
        path: &[&str],
        body: Bytes,
    ) -> Result<(StatusCode, Value)> {
        let given = bearer(parts.headers.get(http::header::AUTHORIZATION));
        if !given.is_some_and(|g| key_matches(g, self.ws.admin_token())) {
            return Err(Error::Unauthorized(
                "the admin API needs 'Authorization: Bearer <admin token>' (the workspace's admin-token file)".into(),
            ));
        }
        let ok = |v: Value| Ok((StatusCode::OK, v));
        match (&parts.method, path) {
            (&Method::GET, ["blobs", sha]) => match self.ws.has_blob(sha)? {
                true => ok(json!({"sha256": sha})),
                false => Err(Error::NotFound(format!("blob {sha} not found"))),
            },
            (&Method::PUT, ["blobs", sha]) => {
                let ws = self.ws.clone();
                let sha = sha.to_string();
                blocking(move || ws.put_blob(&sha, &body)).await?;
                Ok((StatusCode::CREATED, json!({})))
            }
            (&Method::POST, ["models"]) => {
                let req: RegisterModel = parse_body(&body)?;
                let ws = self.ws.clone();
                let record =
                    blocking(move || ws.register_model(&req.name, req.description, req.tags, req.files)).await?;
                Ok((StatusCode::CREATED, to_json(&record)))
            }
            (&Method::GET, ["models"]) => ok(to_json(&self.ws.models()?)),
            (&Method::GET, ["models", id]) => ok(to_json(&self.ws.model(id)?)),
            (&Method::DELETE, ["models", id]) => {
                self.ws.delete_model(id)?;
                ok(json!({"deleted": id}))
            }
            (&Method::POST, ["services"]) => {
                let req: DeployRequest = parse_body(&body)?;
                let (state, status) = self.deploy(req)?;
                ok(json!({"state": state, "status": status}))
            }
            (&Method::GET, ["services"]) => {
                let list: Vec<Value> = self.ws.services()?.iter().map(|r| self.describe(r, false)).collect();
                ok(Value::Array(list))
            }
            (&Method::GET, ["services", name]) => ok(self.describe(&self.ws.service(name)?, true)),
            (&Method::DELETE, ["services", name]) => {
                self.ws.delete_service(name)?;
                self.router.remove(name);
                self.states.remove(*name);
                self.logs.remove(name);
                let _ = std::fs::remove_dir_all(self.deploy_root(name));
                ok(json!({"deleted": name}))
            }
            (&Method::GET, ["services", name, "keys"]) => {
                let r = self.ws.service(name)?;
                ok(json!({"primaryKey": r.primary_key, "secondaryKey": r.secondary_key}))
            }
            (&Method::POST, ["services", name, "regen-key"]) => {
                let req: Value = parse_body(&body)?;
                let which = req.get("key").and_then(Value::as_str).unwrap_or("");
                let mut r = self.ws.service(name)?;
                match which.to_ascii_lowercase().as_str() {
                    "primary" => r.primary_key = generate_key(),
                    "secondary" => r.secondary_key = generate_key(),
                    _ => {
                        return Err(Error::BadRequest(format!(
                            "key must be \"primary\" or \"secondary\", got \"{which}\""
                        )));
                    }
                }
                r.updated = now();
                self.ws.put_service(&r)?;
                if let Some(svc) = self.router.get(name) {
                    svc.set_keys(r.primary_key.clone(), r.secondary_key.clone());
                }
                self.logs.event(name, "INFO", &format!("{which} key regenerated"));
                ok(json!({"primaryKey": r.primary_key, "secondaryKey": r.secondary_key}))
            }
            (&Method::GET | &Method::POST, ["services", name, "token"]) => {
                let r = self.ws.service(name)?;
                if !r.deployment_config.token_auth_enabled {
                    return Err(Error::BadRequest(format!(
                        "service {name} does not use token auth (set tokenAuthEnabled in its deployment config)"
                    )));
                }
                ok(to_json(&self.tokens.issue(name)?))
            }
            (&Method::GET, ["services", name, "logs"]) => {
                self.ws.service(name)?;
                let tail = query_param(parts, "tail").and_then(|t| t.parse().ok());
                ok(json!({"lines": self.logs.lines(name, tail)}))
            }
            (method, _) => Err(Error::NotFound(format!("no admin route {method} /{}", path.join("/")))),
        }
    }

    fn describe(&self, r: &ServiceRecord, full: bool) -> Value {
        let state = self.state(&r.name);
        let dc = &r.deployment_config;
        let mut v = json!({
            "name": r.name,
            "state": state.as_ref().map(|s| s.state).unwrap_or("Unknown"),
            "error": state.as_ref().and_then(|s| s.error.clone()),
            "models": r.models,
            "scoringUri": format!("/api/v1/service/{}/score", r.name),
            "swaggerUri": format!("/api/v1/service/{}/swagger.json", r.name),
            "entryScript": r.entry_script,
            "authEnabled": dc.auth_enabled,
            "tokenAuthEnabled": dc.token_auth_enabled,
            "created": r.created,
            "updated": r.updated,
        });
        if full {
            v["deploymentConfig"] = serde_json::to_value(dc).unwrap_or_default();
            v["inferenceConfig"] = serde_json::to_value(&r.inference_config).unwrap_or_default();
            v["ignored"] = json!(state.map(|s| s.ignored).unwrap_or_default());
            v["replicas"] = json!(
                self.router
                    .get(&r.name)
                    .map(|s| s.versions().iter().map(|v| v.config().replicas).sum::<u32>())
            );
        }
        v
    }

    /// Validates and stores a deployment, then starts it. Re-deploying a name keeps its keys.
    fn deploy(self: &Arc<Self>, req: DeployRequest) -> Result<(&'static str, Value)> {
        check_name("service", &req.name)?;
        if req.models.is_empty() && req.entry_script.is_none() {
            return Err(Error::BadRequest(
                "a deployment needs a model (-m NAME:VERSION) or an entry script".into(),
            ));
        }
        if req.models.len() > MAX_MODELS {
            return Err(Error::BadRequest(format!(
                "a deployment holds at most {MAX_MODELS} models, this one has {}",
                req.models.len()
            )));
        }
        let as_bytes = |v: &Value| {
            if v.is_null() {
                b"{}".to_vec()
            } else {
                serde_json::to_vec(v).unwrap_or_default()
            }
        };
        let (dc, mut ignored) = DeploymentConfig::from_json("deploymentconfig.json", &as_bytes(&req.deployment_config))
            .map_err(|e| Error::BadRequest(e.to_string()))?;
        let (ic, ic_ignored) = InferenceConfig::from_json("inferenceconfig.json", &as_bytes(&req.inference_config))
            .map_err(|e| Error::BadRequest(e.to_string()))?;
        ignored.extend(ic_ignored);
        let mut models = Vec::with_capacity(req.models.len());
        for id in &req.models {
            models.push(self.ws.model(id)?.id());
        }
        self.ws.check_files(&req.source)?;
        if let Some(script) = &req.entry_script {
            check_relative(script)?;
            if !req.source.iter().any(|f| &f.path == script) {
                return Err(Error::BadRequest(format!(
                    "entry script {script} is not among the uploaded source files"
                )));
            }
        } else if models.len() != 1 {
            return Err(Error::BadRequest(format!(
                "without an entry script a service serves exactly one ONNX model, this deployment names {}",
                models.len()
            )));
        }
        let previous = self.ws.service(&req.name).ok();
        let (primary, secondary) = match (&dc.keys.primary_key, &dc.keys.secondary_key, &previous) {
            (Some(p), Some(s), _) => (p.clone(), s.clone()),
            (p, s, prev) => (
                p.clone()
                    .or_else(|| prev.as_ref().map(|r| r.primary_key.clone()))
                    .unwrap_or_else(generate_key),
                s.clone()
                    .or_else(|| prev.as_ref().map(|r| r.secondary_key.clone()))
                    .unwrap_or_else(generate_key),
            ),
        };
        let record = ServiceRecord {
            name: req.name.clone(),
            models,
            inference_config: ic,
            deployment_config: dc,
            source: req.source,
            entry_script: req.entry_script,
            primary_key: primary,
            secondary_key: secondary,
            created: previous.as_ref().map(|p| p.created).unwrap_or_else(now),
            updated: now(),
        };
        self.ws.put_service(&record)?;
        for note in &ignored {
            self.logs
                .event(&record.name, "WARN", &format!("ignored on a Plinth host: {note}"));
        }
        let state = self.start_deploy(record.clone(), ignored);
        Ok((state, self.describe(&record, false)))
    }

    fn start_deploy(self: &Arc<Self>, record: ServiceRecord, ignored: Vec<String>) -> &'static str {
        let generation = self.generation.fetch_add(1, Ordering::Relaxed);
        let name = record.name.clone();
        self.states.insert(
            name.clone(),
            DeployState {
                state: "Transitioning",
                error: None,
                generation,
                ignored,
            },
        );
        self.logs
            .event(&name, "INFO", &format!("deploying (generation {generation})"));
        let this = self.clone();
        tokio::spawn(async move {
            let builder = this.clone();
            let result = tokio::task::spawn_blocking(move || builder.build(&record, generation))
                .await
                .unwrap_or_else(|e| Err(Error::Internal(format!("deployment task failed: {e}"))));
            let mut state = match this.states.get_mut(&name) {
                Some(s) if s.generation == generation => s,
                // Deleted, or superseded by a newer deployment: drop this one.
                _ => return,
            };
            match result {
                Ok(service) => {
                    this.router.insert(service);
                    state.state = "Healthy";
                    drop(state);
                    this.logs.event(&name, "INFO", "deployment succeeded: Healthy");
                    tracing::info!(service = %name, generation, "service deployed");
                    this.prune(&name, generation);
                }
                Err(e) => {
                    state.state = "Failed";
                    state.error = Some(e.to_string());
                    drop(state);
                    this.logs.event(&name, "ERROR", &format!("deployment failed: {e}"));
                    tracing::warn!(service = %name, error = %e, "deployment failed");
                }
            }
        });
        "Transitioning"
    }

    fn deploy_root(&self, name: &str) -> PathBuf {
        self.ws.root().join("deployments").join(name)
    }

    /// Removes the files of older generations (loaded sessions and open directories stay valid).
    fn prune(&self, name: &str, keep: u64) {
        if let Ok(entries) = std::fs::read_dir(self.deploy_root(name)) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy() != keep.to_string() {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
    }

    /// Materialises files, prepares the entry script and loads the package: the slow part, off the request path.
    fn build(&self, record: &ServiceRecord, generation: u64) -> Result<Service> {
        let dir = self.deploy_root(&record.name).join(generation.to_string());
        let models_dir = dir.join("models");
        let src_dir = dir.join("src");
        let mut sources = Vec::new();
        let records: Vec<ModelRecord> = record
            .models
            .iter()
            .map(|id| self.ws.model(id))
            .collect::<Result<_>>()?;
        let single = records.len() == 1;
        for m in &records {
            // As Azure ML lays out AZUREML_MODEL_DIR: one model's files directly, several as <name>/<version>/.
            let base = if single {
                models_dir.clone()
            } else {
                models_dir.join(&m.name).join(m.version.to_string())
            };
            for f in &m.files {
                self.materialize(f, &base)?;
            }
            let onnx: Vec<&FileRef> = m.files.iter().filter(|f| f.path.ends_with(".onnx")).collect();
            match onnx.as_slice() {
                [one] => sources.push(ModelSource {
                    name: m.name.clone(),
                    path: base.join(&one.path),
                }),
                [] => {}
                _ => {
                    return Err(Error::BadRequest(format!(
                        "model {} holds several .onnx files; register them separately",
                        m.id()
                    )));
                }
            }
        }
        std::fs::create_dir_all(&models_dir).map_err(|e| Error::Storage(format!("{}: {e}", models_dir.display())))?;
        for f in &record.source {
            self.materialize(f, &src_dir)?;
        }
        let entry_script = match &record.entry_script {
            Some(script) => {
                self.logs
                    .event(&record.name, "INFO", &format!("preparing entry script {script}"));
                let path = src_dir.join(script);
                let cache = self
                    .options
                    .cache_dir
                    .clone()
                    .unwrap_or_else(|| self.ws.root().join("cache"));
                Some(crate::scripts::prepare(&path, &cache).map_err(|e| Error::BadRequest(format!("{e:#}")))?)
            }
            None => None,
        };
        if entry_script.is_none() && sources.len() != 1 {
            return Err(Error::BadRequest(
                "without an entry script the model must hold exactly one .onnx file".into(),
            ));
        }
        let dc = &record.deployment_config;
        let replicas = dc.initial_replicas();
        let slots = (replicas * dc.max_concurrent_requests_per_container) as usize;
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let spec = PackageSpec {
            models: sources,
            entry_script,
            script_name: Some(record.name.clone()),
            model_dir: Some(models_dir),
            session: SessionOptions {
                intra_threads: (dc.container_resource_requirements.cpu.ceil() as usize).clamp(1, cores),
                sessions: slots.clamp(1, 64),
            },
            limits: ScriptLimits {
                deadline: Duration::from_millis(dc.scoring_timeout_ms),
                memory_bytes: (dc.container_resource_requirements.memory_in_gb * (1u64 << 30) as f64) as usize,
                max_idle: slots.clamp(1, 64),
                ..ScriptLimits::default()
            },
            ort_library: self.options.ort_library.clone(),
        };
        let package = Package::load(&spec, Some(&self.engine)).map_err(|e| match e {
            // A script that fails to load or init is the deployer's problem, reported as such.
            e @ (plinth_runtime::Error::ScriptInit { .. } | plinth_runtime::Error::ScriptLoad { .. }) => {
                Error::BadRequest(e.to_string())
            }
            e => Error::Runtime(e),
        })?;
        let config = ServiceConfig {
            auth_enabled: dc.auth_enabled,
            token_auth_enabled: dc.token_auth_enabled,
            primary_key: record.primary_key.clone(),
            secondary_key: record.secondary_key.clone(),
            replicas,
            max_concurrent: dc.max_concurrent_requests_per_container,
            max_queue_wait: Duration::from_millis(dc.max_queue_wait_ms),
            scoring_timeout: Duration::from_millis(dc.scoring_timeout_ms),
            ..ServiceConfig::default()
        };
        Ok(Service::new(record.name.clone(), Arc::new(package), config))
    }

    /// Places a blob at `base/<path>`: a hard link where the filesystem allows, else a copy.
    fn materialize(&self, f: &FileRef, base: &Path) -> Result<()> {
        check_relative(&f.path)?;
        let to = base.join(&f.path);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::Storage(format!("{}: {e}", parent.display())))?;
        }
        let from = self.ws.blob_path(&f.sha256)?;
        if to.exists() {
            return Ok(());
        }
        std::fs::hard_link(&from, &to)
            .or_else(|_| std::fs::copy(&from, &to).map(drop))
            .map_err(|e| Error::Storage(format!("placing {}: {e}", to.display())))
    }
}

fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        Error::BadRequest(if path.is_empty() || path == "." {
            format!("{inner}")
        } else {
            format!("{path}: {inner}")
        })
    })
}

fn query_param<'a>(parts: &'a http::request::Parts, key: &str) -> Option<&'a str> {
    parts
        .uri
        .query()?
        .split('&')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("task failed: {e}")))?
}

fn to_json<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or_default()
}
