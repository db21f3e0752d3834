//! `plinth package fetch URI --sha256 H --to DIR`: brings a package (what `plinth service export` wrote)
//! to `DIR/<sha256>.tar`, refusing one that hashes differently. The init container of every host pod a
//! `PlinthService` runs; `https://` (the system's roots, plus `--cacert`) and `file:///` URIs.
//!
//! Private storage: an `Authorization` header (`--header-file`) or a query string such as an Azure Blob
//! SAS token (`--query-file`), each read from a file (a mounted Secret), so that neither is in the
//! manifest, the arguments or a message: URIs are shown without their query.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use http_body_util::BodyExt;
use plinth_spec::manifest::is_sha256;
use sha2::{Digest, Sha256};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Download a package and check its sha256 (the init container of a host pod).
    Fetch(FetchArgs),
}

#[derive(clap::Args)]
pub struct FetchArgs {
    /// `https://host/path/package.tar` or `file:///path/package.tar`.
    uri: String,
    /// The sha256 the package must have (lowercase hex).
    #[arg(long)]
    sha256: String,
    /// The folder to put it in, as `<sha256>.tar`.
    #[arg(long)]
    to: PathBuf,
    /// A PEM certificate to trust besides the system's roots (a private https server).
    #[arg(long, env = "PLINTH_CACERT")]
    cacert: Option<PathBuf>,
    /// Seconds without a byte from the server before giving up.
    #[arg(long, default_value_t = 60)]
    idle_timeout_secs: u64,
    /// A file holding an `Authorization` header value (`Bearer ...`), sent to the package's server (not to
    /// another server it redirects to).
    #[arg(long, value_name = "FILE")]
    header_file: Option<PathBuf>,
    /// A file holding a query string (an Azure Blob SAS token, `sv=...&sig=...`) added to the URI.
    #[arg(long, value_name = "FILE")]
    query_file: Option<PathBuf>,
    /// The most bytes to take (the package's size, when the manifest knows it): a larger download stops.
    #[arg(long, value_name = "BYTES")]
    max_bytes: Option<u64>,
}

pub fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Fetch(args) => fetch(args),
    }
}

fn fetch(args: FetchArgs) -> anyhow::Result<()> {
    if !is_sha256(&args.sha256) {
        bail!("--sha256 '{}' is not 64 lowercase hex digits", args.sha256);
    }
    std::fs::create_dir_all(&args.to).with_context(|| format!("creating {}", args.to.display()))?;
    remove_partial_fetches(&args.to);
    let dest = args.to.join(format!("{}.tar", args.sha256));
    // A restarted init container finds what it fetched before.
    if dest.is_file() && plinth_control::package::file_sha256(&dest)? == args.sha256 {
        println!("{} already present", dest.display());
        return Ok(());
    }
    let part = args.to.join(format!(".{}.part", args.sha256));
    let mut out = Sink {
        file: std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&part)?),
        hasher: Sha256::new(),
        bytes: 0,
        max: args.max_bytes,
    };
    let result = if let Some(path) = args.uri.strip_prefix("file://") {
        if !path.starts_with('/') {
            let _ = std::fs::remove_file(&part);
            bail!(
                "'{}': a file URI names an absolute path on this machine: file:///path/package.tar",
                args.uri
            );
        }
        copy_file(Path::new(path), &mut out)
    } else if args.uri.starts_with("https://") {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        runtime.block_on(download(&args, &mut out))
    } else {
        Err(anyhow::anyhow!(
            "package URI '{}' must start with https:// or file:/// (pvc:// packages are mounted, not fetched)",
            shown(&args.uri)
        ))
    };
    let finished = result.and_then(|()| out.file.flush().map_err(anyhow::Error::from));
    if let Err(e) = finished {
        let _ = std::fs::remove_file(&part);
        return Err(e.context(format!("fetching {}", shown(&args.uri))));
    }
    let actual = plinth_spec::record::hex(&out.hasher.finalize());
    if actual != args.sha256 {
        let _ = std::fs::remove_file(&part);
        bail!(
            "package {} has sha256 {actual}, not the {} asked for: refused",
            shown(&args.uri),
            args.sha256
        );
    }
    std::fs::rename(&part, &dest)?;
    println!("{} ({} bytes, sha256 checked)", dest.display(), out.bytes);
    Ok(())
}

/// A URI as messages show it: without its query (which may hold a signature).
fn shown(uri: &str) -> String {
    match uri.split_once('?') {
        Some((base, _)) => format!("{base}?…"),
        None => uri.to_string(),
    }
}

/// Removes what a killed fetch left (`.<sha256>.part`), whatever package it was fetching.
fn remove_partial_fetches(dir: &Path) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') && name.ends_with(".part") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// A credential file's text, trimmed; an empty one is an error (a Secret key that was never filled).
fn credential(path: &Path, what: &str) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {what} from {}", path.display()))?;
    let text = text.trim();
    if text.is_empty() {
        bail!("{} is empty: it should hold {what}", path.display());
    }
    Ok(text.to_string())
}

struct Sink {
    file: std::io::BufWriter<std::fs::File>,
    hasher: Sha256,
    bytes: u64,
    /// `--max-bytes`.
    max: Option<u64>,
}

impl Sink {
    fn put(&mut self, chunk: &[u8]) -> anyhow::Result<()> {
        if let Some(max) = self.max
            && self.bytes + chunk.len() as u64 > max
        {
            bail!("the package is larger than {max} bytes (--max-bytes): stopped");
        }
        self.hasher.update(chunk);
        self.bytes += chunk.len() as u64;
        self.file.write_all(chunk)?;
        Ok(())
    }
}

fn copy_file(path: &Path, out: &mut Sink) -> anyhow::Result<()> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        out.put(&buf[..n])?;
    }
}

async fn download(args: &FetchArgs, out: &mut Sink) -> anyhow::Result<()> {
    let roots = crate::client::trusted_roots(args.cacert.as_deref())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .build();
    let client: hyper_util::client::legacy::Client<_, http_body_util::Empty<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector);
    let idle = Duration::from_secs(args.idle_timeout_secs.max(1));
    let mut full = args.uri.clone();
    if let Some(path) = &args.query_file {
        let query = credential(path, "a query string (a SAS token)")?;
        let query = query.trim_start_matches('?');
        full.push(if full.contains('?') { '&' } else { '?' });
        full.push_str(query);
    }
    let authorization = match &args.header_file {
        Some(path) => {
            let value = credential(path, "an Authorization header value")?;
            let mut value = http::HeaderValue::from_str(&value)
                .map_err(|_| anyhow::anyhow!("{}: not a header value", path.display()))?;
            value.set_sensitive(true);
            Some(value)
        }
        None => None,
    };
    let mut uri: http::Uri = full
        .parse()
        .map_err(|_| anyhow::anyhow!("'{}' is not a URL", shown(&args.uri)))?;
    let origin = uri.authority().cloned();
    // Object stores answer with redirects to signed URLs: follow a few (https only).
    for _ in 0..5 {
        let mut request = http::Request::get(uri.clone());
        // The credential goes to the package's own server, never to one it redirects to.
        if let Some(value) = authorization.as_ref().filter(|_| uri.authority() == origin.as_ref()) {
            request = request.header(http::header::AUTHORIZATION, value.clone());
        }
        let request = request.body(http_body_util::Empty::new())?;
        let response = tokio::time::timeout(idle, client.request(request))
            .await
            .map_err(|_| anyhow::anyhow!("no answer in {} s", idle.as_secs()))??;
        let status = response.status();
        if status.is_redirection() {
            let location = response
                .headers()
                .get(http::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .context("a redirect without a Location")?;
            // A relative Location is resolved against the URI that answered.
            let next = if location.starts_with('/') {
                format!(
                    "{}://{}{location}",
                    uri.scheme_str().unwrap_or("https"),
                    uri.authority().map(|a| a.as_str()).unwrap_or_default()
                )
            } else {
                location.to_string()
            };
            uri = next
                .parse()
                .map_err(|_| anyhow::anyhow!("a redirect to '{}' that is not a URL", shown(location)))?;
            continue;
        }
        if !status.is_success() {
            bail!("the server answered {status}");
        }
        if let (Some(max), Some(len)) = (
            args.max_bytes,
            response
                .headers()
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok()),
        ) && len > max
        {
            bail!("the package is {len} bytes, larger than {max} (--max-bytes): not fetched");
        }
        let mut body = response.into_body();
        loop {
            let frame = tokio::time::timeout(idle, body.frame())
                .await
                .map_err(|_| anyhow::anyhow!("no data for {} s", idle.as_secs()))?;
            match frame {
                None => return Ok(()),
                Some(frame) => {
                    if let Ok(data) = frame?.into_data() {
                        out.put(&data)?;
                    }
                }
            }
        }
    }
    bail!("more than 5 redirects")
}
