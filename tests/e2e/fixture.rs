//! A real `plinth serve` on 127.0.0.1:0 with its own workspace, and real clients.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::support::repo;

/// Compiled entry scripts are shared by every test and kept across runs.
pub fn cache_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("plinth-cache")
}

pub fn plinth() -> Command {
    with_test_env(Command::new(env!("CARGO_BIN_EXE_plinth")))
}

/// The binary under `ulimit -n nofile`, through the shell.
fn plinth_with_nofile(nofile: u32) -> Command {
    let mut sh = Command::new("sh");
    sh.args(["-c", &format!("ulimit -n {nofile} && exec \"$0\" \"$@\"")])
        .arg(env!("CARGO_BIN_EXE_plinth"));
    with_test_env(sh)
}

/// `bash -c SCRIPT` with the tests' environment (the shared script cache among it).
pub fn plinth_in_shell(script: &str) -> Command {
    let mut bash = Command::new("bash");
    bash.arg("-c").arg(script);
    with_test_env(bash)
}

fn with_test_env(mut cmd: Command) -> Command {
    cmd.current_dir(repo())
        .env("PLINTH_CACHE_DIR", cache_dir())
        .env_remove("ORT_DYLIB_PATH")
        .env("PLINTH_LOG", "warn");
    cmd
}

/// How often [`wait_for`] looks again.
const POLL: Duration = Duration::from_millis(50);

/// Waits for something to happen: `check` is asked until it answers `Ok`, for up to `within`; after
/// that the test fails naming what did not happen (`what`) and what `check` last saw instead.
pub fn wait_for<T, E: std::fmt::Display>(what: &str, within: Duration, mut check: impl FnMut() -> Result<T, E>) -> T {
    let started = Instant::now();
    loop {
        match check() {
            Ok(v) => return v,
            Err(last) if started.elapsed() >= within => {
                panic!("waited {within:?} for {what}, in vain; last seen: {last}")
            }
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

/// A fresh, empty folder for one test.
pub fn temp_dir(tag: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{tag}-{}-{}", std::process::id(), nanos()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

pub struct TestHost {
    child: Option<Child>,
    pub url: String,
    /// The gRPC listener's address, when the host was started with `--grpc-listen`.
    pub grpc: Option<String>,
    pub ws: PathBuf,
    extra: Vec<String>,
    cacert: Option<PathBuf>,
}

impl TestHost {
    pub fn start(ws: &Path, extra: &[&str]) -> TestHost {
        Self::start_limited(ws, extra, None)
    }

    /// A host started under `ulimit -n nofile` (when given).
    pub fn start_limited(ws: &Path, extra: &[&str], nofile: Option<u32>) -> TestHost {
        let mut cmd = nofile.map_or_else(plinth, plinth_with_nofile);
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--workspace"])
            .arg(ws)
            .args(extra);
        Self::spawn(cmd, ws, extra)
    }

    /// A host started with exactly these arguments (they must include `serve` and a `--listen` with port
    /// 0); `ws` is its workspace.
    pub fn start_with_args(args: &[String], ws: &Path) -> TestHost {
        let mut cmd = plinth();
        cmd.args(args);
        Self::spawn(cmd, ws, &[])
    }

    fn spawn(mut cmd: Command, ws: &Path, extra: &[&str]) -> TestHost {
        cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("starting plinth serve");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("plinth serve printed no address");
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://") || w.starts_with("https://"))
            .unwrap_or_else(|| panic!("no address in '{line}'"))
            .to_string();
        let grpc = line.split(" and gRPC on ").nth(1).map(|a| a.trim().to_string());
        TestHost {
            child: Some(child),
            url,
            grpc,
            ws: ws.to_path_buf(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            cacert: None,
        }
    }

    pub fn with_cacert(mut self, cacert: &Path) -> Self {
        self.cacert = Some(cacert.to_path_buf());
        self
    }

    /// The host's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("host stopped").id()
    }

    pub fn port(&self) -> u16 {
        self.url.rsplit(':').next().unwrap().parse().unwrap()
    }

    /// The CLI, pointed at this host and workspace.
    pub fn cli(&self) -> Command {
        let mut cmd = plinth();
        cmd.env("PLINTH_HOST", &self.url).env("PLINTH_WORKSPACE", &self.ws);
        if let Some(c) = &self.cacert {
            cmd.env("PLINTH_CACERT", c);
        }
        cmd
    }

    /// Runs the CLI and returns stdout, failing the test on a non-zero exit.
    pub fn run(&self, args: &[&str]) -> String {
        let out = self.cli().args(args).output().unwrap();
        assert!(
            out.status.success(),
            "plinth {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn run_json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        serde_json::from_str(&self.run(&all)).unwrap()
    }

    /// Registers the diabetes example's model as `diabetes` (version 1 on a fresh host).
    pub fn register_diabetes(&self) {
        self.run(&[
            "model",
            "register",
            "--name",
            "diabetes",
            "--path",
            "examples/diabetes/model",
        ]);
    }

    /// Registers `tests/models/all_types` (one input and output per datatype) as `alltypes`.
    pub fn register_all_types(&self) {
        self.run(&[
            "model",
            "register",
            "--name",
            "alltypes",
            "--path",
            "tests/models/all_types",
        ]);
    }

    /// `plinth deploy -m MODEL -n NAME --dc DC`, no-code; returns stdout.
    pub fn deploy(&self, model: &str, name: &str, dc: &Path) -> String {
        self.run(&[
            "deploy",
            "-m",
            model,
            "-n",
            name,
            "--dc",
            dc.to_str().unwrap(),
            "--overwrite",
        ])
    }

    /// `plinth deploy -n NAME --ic IC --dc DC` (an entry script); returns stdout.
    pub fn deploy_script(&self, name: &str, ic: &Path, dc: &Path) -> String {
        self.run(&[
            "deploy",
            "-n",
            name,
            "--ic",
            ic.to_str().unwrap(),
            "--dc",
            dc.to_str().unwrap(),
            "--overwrite",
        ])
    }

    /// Deploys the Rust adversary script (`plugins/test-scripts/adversary`) as `name`, its files in `dir`.
    pub fn deploy_adversary(&self, dir: &Path, name: &str, dc: &Dc) {
        std::fs::copy(crate::support::component("adversary"), dir.join("adversary.wasm")).unwrap();
        let ic = write_json(
            dir,
            "ic-adversary.json",
            &serde_json::json!({"entryScript": "adversary.wasm"}),
        );
        let dc = dc.write(dir, &format!("dc-{name}.json"));
        self.deploy_script(name, &ic, &dc);
    }

    /// `(primary, secondary)` keys of a service.
    pub fn keys(&self, service: &str) -> (String, String) {
        let k = self.run_json(&["service", "keys", service]);
        (
            k["primaryKey"].as_str().unwrap().to_string(),
            k["secondaryKey"].as_str().unwrap().to_string(),
        )
    }

    pub fn score_url(&self, service: &str) -> String {
        format!("{}/api/v1/service/{service}/score", self.url)
    }

    /// Waits until `/readyz` says every deployment has loaded (up to 5 minutes: restoring several
    /// Python versions on a loaded 2-core machine compiles each component anew when its cache was cut
    /// off by a crash).
    pub fn wait_ready(&self) {
        wait_for("the host to be ready", Duration::from_secs(300), || {
            let r = curl(&format!("{}/readyz", self.url), &[]);
            if r.status == 200 { Ok(()) } else { Err(r.body) }
        });
    }

    /// What the host tells a cluster's scaler (`GET /api/v1/load`): replicas, busy ones, waiting requests.
    pub fn load(&self) -> serde_json::Value {
        curl(&format!("{}/api/v1/load", self.url), &[]).json()
    }

    /// Waits until a replica is serving a request (a request sent on another thread has reached one).
    pub fn wait_busy(&self, what: &str) {
        wait_for(what, Duration::from_secs(30), || {
            let load = self.load();
            match load["busy"].as_u64() {
                Some(busy) if busy > 0 => Ok(()),
                _ => Err(load),
            }
        });
    }

    /// The host's resident memory, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }

    /// The workspace's admin token.
    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.ws.join("admin-token"))
            .unwrap()
            .trim()
            .to_string()
    }

    /// Kills the host with SIGKILL (no drain, no clean-up) and waits for it to go.
    pub fn crash(&mut self) {
        let mut child = self.child.take().expect("host already stopped");
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("host already stopped");
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        child.wait().unwrap()
    }

    /// Stops this host and starts another on the same workspace.
    pub fn restart(mut self) -> TestHost {
        let status = self.stop();
        assert!(status.success(), "host exited with {status} on SIGTERM");
        let extra: Vec<&str> = self.extra.iter().map(String::as_str).collect();
        let mut again = TestHost::start(&self.ws, &extra);
        again.cacert = self.cacert.clone();
        again
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A self-signed certificate for `localhost` and 127.0.0.1, made by openssl: `(cert.pem, key.pem)`.
pub fn self_signed_cert(dir: &Path) -> (PathBuf, PathBuf) {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
        ])
        .args([
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "openssl could not make a certificate");
    (cert, key)
}

/// Runs one of the Python client scripts in `tests/e2e/` (`python SCRIPT ARGS...`), which print a line
/// per check and `N passed, 0 failed`; fails the test with their output otherwise.
pub fn python_client(script: &str, args: &[&str]) {
    let out = Command::new(crate::support::python())
        .arg(repo().join("tests/e2e").join(script))
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains(" passed, 0 failed"),
        "{script}: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A curl response.
pub struct Reply {
    pub status: u16,
    pub body: String,
    pub headers: String,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }
}

/// Runs curl with `args` (plus the URL) and returns status, headers and body.
pub fn curl(url: &str, args: &[&str]) -> Reply {
    let dir = temp_dir("curl");
    let headers = dir.join("headers");
    let out: Output = Command::new("curl")
        .args(["-sS", "-o", "-", "-D"])
        .arg(&headers)
        .args(["-w", "\n%{http_code}"])
        .args(args)
        .arg(url)
        .output()
        .expect("running curl");
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap();
    let headers = std::fs::read_to_string(&headers).unwrap_or_default();
    let _ = std::fs::remove_dir_all(dir);
    Reply {
        status: code.trim().parse().unwrap(),
        body: body.to_string(),
        headers,
    }
}

/// POSTs `body` with an optional bearer credential.
pub fn score(url: &str, key: Option<&str>, body: &str) -> Reply {
    let auth = key.map(|k| format!("Authorization: Bearer {k}"));
    let mut args = vec!["-X", "POST", "--data-binary", body];
    if let Some(a) = &auth {
        args.extend(["-H", a.as_str()]);
    }
    curl(url, &args)
}

pub fn write_json(dir: &Path, name: &str, value: &serde_json::Value) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, serde_json::to_vec_pretty(value).unwrap()).unwrap();
    p
}

pub fn sample_body() -> String {
    std::fs::read_to_string(repo().join("examples/diabetes/sample.json")).unwrap()
}

/// A keep-alive HTTP/1.1 client on one connection, for loops of thousands of requests.
pub struct KeepAlive {
    stream: std::io::BufReader<std::net::TcpStream>,
    host: String,
}

/// A response from [`KeepAlive`].
pub struct Raw {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Raw {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl KeepAlive {
    pub fn connect(url: &str) -> KeepAlive {
        let host = url.trim_start_matches("http://").split('/').next().unwrap().to_string();
        let stream = std::net::TcpStream::connect(&host).expect("connecting");
        stream.set_nodelay(true).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        KeepAlive {
            stream: std::io::BufReader::new(stream),
            host,
        }
    }

    pub fn post(&mut self, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Raw {
        use std::io::{Read, Write};
        let mut req = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n",
            self.host,
            body.len()
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        let s = self.stream.get_mut();
        s.write_all(req.as_bytes()).unwrap();
        s.write_all(body).unwrap();
        let mut line = String::new();
        self.stream.read_line(&mut line).unwrap();
        let status: u16 = line.split_whitespace().nth(1).expect("status line").parse().unwrap();
        let mut headers = Vec::new();
        loop {
            line.clear();
            self.stream.read_line(&mut line).unwrap();
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let len: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .map(|(_, v)| v.parse().unwrap())
            .unwrap_or(0);
        let mut body = vec![0; len];
        self.stream.read_exact(&mut body).unwrap();
        Raw { status, headers, body }
    }
}

/// A `deploymentconfig.json` for a test, built field by field; Azure's defaults for the rest.
///
/// ```ignore
/// let dc = Dc::test().keys(KEY).replicas(2).write(&dir, "dc.json");
/// ```
#[derive(Clone, Default)]
pub struct Dc(serde_json::Map<String, serde_json::Value>);

impl Dc {
    pub fn test() -> Dc {
        Dc::default()
    }

    /// Any field, by its Azure name.
    pub fn with(mut self, field: &str, value: serde_json::Value) -> Dc {
        self.0.insert(field.into(), value);
        self
    }

    /// Fixed keys: `primary` and `primary-2`.
    pub fn keys(self, primary: &str) -> Dc {
        self.with(
            "keys",
            serde_json::json!({"primaryKey": primary, "secondaryKey": format!("{primary}-2")}),
        )
    }

    pub fn no_auth(self) -> Dc {
        self.with("authEnabled", false.into())
    }

    /// A fixed replica count (no autoscaling).
    pub fn replicas(self, n: u32) -> Dc {
        self.with("numReplicas", n.into())
    }

    /// A pod's host, as a cluster runs it: one replica taking one request at a time, measured by its
    /// autoscaler every second but never scaled, with requests waiting up to 20 s behind it.
    pub fn one_pod(self) -> Dc {
        self.concurrency(1).with("maxQueueWaitMs", 20_000.into()).with(
            "autoScaler",
            serde_json::json!({"autoscaleEnabled": true, "minReplicas": 1, "maxReplicas": 1, "refreshPeriodInSeconds": 1}),
        )
    }

    /// `maxConcurrentRequestsPerContainer`.
    pub fn concurrency(self, n: u32) -> Dc {
        self.with("maxConcurrentRequestsPerContainer", n.into())
    }

    pub fn value(&self) -> serde_json::Value {
        serde_json::Value::Object(self.0.clone())
    }

    pub fn write(&self, dir: &Path, name: &str) -> PathBuf {
        write_json(dir, name, &self.value())
    }
}
