//! The HTTP client the CLI uses to talk to a host (HTTP, or HTTPS trusting the system's authorities and
//! `--cacert`).

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use bytes::Bytes;
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

pub struct Client {
    host: String,
    port: u16,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    token: Option<String>,
}

/// The authorities an HTTPS connection trusts: the system's (`SSL_CERT_FILE` and `SSL_CERT_DIR` are
/// honoured), plus the PEM certificates in `cacert`.
pub fn trusted_roots(cacert: Option<&Path>) -> anyhow::Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = cacert {
        for cert in CertificateDer::pem_file_iter(path).with_context(|| format!("reading {}", path.display()))? {
            roots.add(cert.with_context(|| format!("parsing {}", path.display()))?)?;
        }
    }
    if roots.is_empty() {
        bail!("no trusted certificate authorities (install ca-certificates, or pass --cacert FILE)");
    }
    Ok(roots)
}

impl Client {
    /// `base` is `http://host:port` or `https://host:port`; `cacert`, a PEM that signed an HTTPS host (beside
    /// the system's authorities).
    pub fn new(base: &str, token: Option<String>, cacert: Option<&Path>) -> anyhow::Result<Self> {
        let uri: Uri = base
            .parse()
            .with_context(|| format!("host '{base}' is not a URL like http://127.0.0.1:8080"))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => bail!("host '{base}' must start with http:// or https://"),
        };
        let host = uri
            .host()
            .with_context(|| format!("host '{base}' has no host name"))?
            .trim_matches(['[', ']'])
            .to_string();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tls = if https {
            let roots = trusted_roots(cacert)?;
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()?
                .with_root_certificates(roots)
                .with_no_client_auth();
            let name =
                ServerName::try_from(host.clone()).with_context(|| format!("'{host}' is not a valid server name"))?;
            Some((TlsConnector::from(Arc::new(config)), name))
        } else {
            None
        };
        Ok(Client { host, port, tls, token })
    }

    /// The same host with another bearer credential (a service's key or token).
    pub fn with_token(&self, token: String) -> Client {
        Client {
            host: self.host.clone(),
            port: self.port,
            tls: self.tls.clone(),
            token: Some(token),
        }
    }

    /// One request on a fresh connection; returns the status and body.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        let stream = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .with_context(|| {
                format!(
                    "cannot reach the Plinth host at {}:{} (is `plinth serve` running?)",
                    self.host, self.port
                )
            })?;
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, format!("{}:{}", self.host, self.port));
        if let Some(t) = &self.token {
            req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        if body.is_some() {
            req = req.header(http::header::CONTENT_TYPE, "application/json");
        }
        let req = req.body(Full::new(Bytes::from(body.unwrap_or_default())))?;
        let response = match &self.tls {
            Some((connector, name)) => {
                let tls = connector.connect(name.clone(), stream).await.context(
                    "TLS handshake with the host failed (a host whose certificate no system authority \
                         signed, a self-signed one say, needs --cacert FILE or PLINTH_CACERT)",
                )?;
                send(TokioIo::new(tls), req).await?
            }
            None => send(TokioIo::new(stream), req).await?,
        };
        Ok(response)
    }

    /// A JSON request; a non-2xx answer becomes an error carrying the host's message.
    pub async fn json(&self, method: Method, path: &str, body: Option<&Value>) -> anyhow::Result<Value> {
        let body = body.map(serde_json::to_vec).transpose()?;
        let (status, bytes) = self.request(method, path, body).await?;
        let value: Value =
            serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        if !status.is_success() {
            let message = value
                .get("error")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| value.to_string());
            bail!("{message} (HTTP {})", status.as_u16());
        }
        Ok(value)
    }
}

async fn send<S>(io: TokioIo<S>, req: Request<Full<Bytes>>) -> anyhow::Result<(StatusCode, Bytes)>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .context("HTTP handshake with the host failed")?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let response = sender
        .send_request(req)
        .await
        .context("sending the request to the host")?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .context("reading the host's answer")?
        .to_bytes();
    Ok((status, body))
}
