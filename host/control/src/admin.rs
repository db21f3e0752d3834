//! The admin API (`/api/v1/admin/...`) behind `plinth model|deploy|endpoint|service`: its route table.
//! Writes to services go to the deployments actor; reads go to the store. The router checked the
//! admin token before the body was read, and shapes every error returned here.

use bytes::Bytes;
use http::{Method, StatusCode};
use plinth_router::{Admin, AdminBody, AdminRequest, BoxFuture, MAX_UPLOAD_BYTES};
use serde::Serialize;
use serde_json::Value;

use crate::api::{Deleted, Keys, Logs, RegenKey, RegisterModel, to_json};
use crate::deployments::Command;
use crate::plane::ControlPlane;
use crate::{Error, Result};

impl Admin for ControlPlane {
    fn handle<'a>(&'a self, request: AdminRequest<'a>) -> BoxFuture<'a, plinth_router::Result<(StatusCode, Value)>> {
        Box::pin(async move { self.route(request).await.map_err(plinth_router::Error::from) })
    }

    fn loading(&self) -> usize {
        ControlPlane::loading(self)
    }
}

impl ControlPlane {
    async fn route(&self, request: AdminRequest<'_>) -> Result<(StatusCode, Value)> {
        let AdminRequest {
            method,
            path,
            query,
            body,
        } = request;
        let ws = &self.cx.ws;
        if let Some(declared) = &self.cx.options.declared
            && method != Method::GET
            && !matches!(path, ["services", _, "token"])
        {
            return Err(Error::Conflict(format!(
                "this host serves service {declared} as its manifest declares it (plinth serve --service-manifest): \
                 change the manifest (the PlinthService) instead of this host"
            )));
        }
        match (method, path) {
            (&Method::GET, ["blobs", sha]) => match ws.has_blob(sha)? {
                true => ok(&serde_json::json!({"sha256": sha})),
                false => Err(Error::NotFound(format!("blob {sha} not found"))),
            },
            (&Method::PUT, ["blobs", sha]) => {
                self.upload(sha, body).await?;
                Ok((StatusCode::CREATED, serde_json::json!({})))
            }
            (&Method::POST, ["models"]) => {
                let req: RegisterModel = parse_body(body).await?;
                let ws = ws.clone();
                let record =
                    blocking(move || ws.register_model(&req.name, req.description, req.tags, req.files)).await?;
                Ok((StatusCode::CREATED, to_json(&record)))
            }
            (&Method::GET, ["info"]) => {
                let capacity = self.cx.capacity.clone();
                let placer = self.cx.gpus.clone();
                let library = self.cx.options.ort_library.clone();
                ok(&blocking(move || {
                    Ok(crate::info::host_info_placed(
                        Some(&capacity),
                        Some(&placer),
                        library.as_deref(),
                    ))
                })
                .await?)
            }
            (&Method::GET, ["models"]) => ok(&ws.models()?),
            (&Method::GET, ["models", id]) => ok(&ws.model(id)?),
            (&Method::DELETE, ["models", id]) => {
                let id = id.to_string();
                self.ask(|reply| Command::DeleteModel { id: id.clone(), reply }).await?;
                ok(&Deleted { deleted: id })
            }
            (&Method::POST, ["services"]) => {
                let req = parse_body(body).await?;
                ok(&self
                    .ask(|reply| Command::Deploy {
                        req,
                        add_to: None,
                        reply,
                    })
                    .await?)
            }
            (&Method::GET, ["services"]) => ok(&self.ask(|reply| Command::Describe { name: None, reply }).await?),
            (&Method::GET, ["services", name]) => {
                let name = Some(name.to_string());
                let mut views = self.ask(|reply| Command::Describe { name, reply }).await?;
                ok(&views.pop())
            }
            (&Method::DELETE, ["services", name]) => {
                let name = name.to_string();
                self.ask(|reply| Command::DeleteService {
                    name: name.clone(),
                    reply,
                })
                .await?;
                ok(&Deleted { deleted: name })
            }
            (&Method::POST, ["services", name, "versions"]) => {
                let req = parse_body(body).await?;
                let add_to = Some(name.to_string());
                ok(&self.ask(|reply| Command::Deploy { req, add_to, reply }).await?)
            }
            (&Method::PATCH, ["services", name, "versions", version]) => {
                let req = parse_body(body).await?;
                let (name, version) = (name.to_string(), version.to_string());
                ok(&self
                    .ask(|reply| Command::Update {
                        name,
                        version,
                        req,
                        reply,
                    })
                    .await?)
            }
            (&Method::DELETE, ["services", name, "versions", version]) => {
                let (name, version) = (name.to_string(), version.to_string());
                ok(&self
                    .ask(|reply| Command::DeleteVersion { name, version, reply })
                    .await?)
            }
            (&Method::GET, ["services", name, "keys"]) => {
                let r = ws.service(name)?;
                ok(&Keys {
                    primary_key: r.primary_key,
                    secondary_key: r.secondary_key,
                })
            }
            (&Method::POST, ["services", name, "regen-key"]) => {
                let req: RegenKey = parse_body(body).await?;
                let name = name.to_string();
                ok(&self
                    .ask(|reply| Command::RegenKey {
                        name,
                        which: req.key,
                        reply,
                    })
                    .await?)
            }
            (&Method::GET | &Method::POST, ["services", name, "token"]) => {
                let r = ws.service(name)?;
                if !r.token_auth_enabled {
                    return Err(Error::BadRequest(format!(
                        "service {name} does not use token auth (set tokenAuthEnabled in its deployment config)"
                    )));
                }
                ok(&self.cx.tokens.issue(name, &r.token_secret)?)
            }
            (&Method::GET, ["services", name, "logs"]) => {
                ws.service(name)?;
                let param =
                    |key: &str| query.and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')));
                let tail = param("tail").and_then(|t| t.parse().ok());
                let after = param("after").and_then(|t| t.parse().ok());
                let (lines, cursor) = self.cx.logs.lines_after(name, after, tail);
                ok(&Logs {
                    lines,
                    cursor: cursor.map(|c| c.to_string()),
                })
            }
            (method, _) => Err(Error::NotFound(format!("no admin route {method} /{}", path.join("/")))),
        }
    }
}

fn ok<T: Serialize>(v: &T) -> Result<(StatusCode, Value)> {
    Ok((StatusCode::OK, to_json(v)))
}

/// A JSON request body as `T`, or a 400 naming the field that does not fit.
async fn parse_body<T: serde::de::DeserializeOwned>(body: AdminBody) -> Result<T> {
    let bytes = body.json().await?;
    plinth_spec::config::from_json_naming_the_field(&bytes).map_err(Error::BadRequest)
}

impl ControlPlane {
    /// Streams an upload to disk as it arrives (never whole in memory), hashing as it goes; a body that
    /// does not hash to `sha` is refused and leaves nothing behind.
    async fn upload(&self, sha: &str, mut body: AdminBody) -> Result<()> {
        let ws = self.cx.ws.clone();
        if ws.has_blob(sha)? {
            return Ok(());
        }
        let sha = sha.to_string();
        let mut writer = blocking(move || ws.blob_writer(&sha)).await?;
        // Chunks are handed to a blocking thread a megabyte or so at a time.
        let mut pending: Vec<Bytes> = Vec::new();
        let mut pending_len = 0;
        loop {
            let chunk = body.chunk(MAX_UPLOAD_BYTES).await?;
            let end = chunk.is_none();
            if let Some(c) = chunk {
                pending_len += c.len();
                pending.push(c);
            }
            if pending_len >= 1 << 20 || (end && !pending.is_empty()) {
                let batch = std::mem::take(&mut pending);
                pending_len = 0;
                writer = blocking(move || {
                    for c in &batch {
                        writer.write(c)?;
                    }
                    Ok(writer)
                })
                .await?;
            }
            if end {
                return blocking(move || writer.finish()).await;
            }
        }
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|source| Error::Task {
        what: "an admin task failed",
        source,
    })?
}
