//! A real `plinth serve` on 127.0.0.1:0 with its own workspace, and real clients.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::support::repo;

/// Compiled entry scripts are shared by every test and kept across runs.
pub fn cache_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("plinth-cache")
}

pub fn plinth() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_plinth"));
    cmd.current_dir(repo())
        .env("PLINTH_CACHE_DIR", cache_dir())
        .env_remove("ORT_DYLIB_PATH")
        .env("PLINTH_LOG", "warn");
    cmd
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
    pub ws: PathBuf,
    extra: Vec<String>,
    cacert: Option<PathBuf>,
}

impl TestHost {
    pub fn start(ws: &Path, extra: &[&str]) -> TestHost {
        let mut cmd = plinth();
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--workspace"])
            .arg(ws)
            .args(extra);
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
        TestHost {
            child: Some(child),
            url,
            ws: ws.to_path_buf(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            cacert: None,
        }
    }

    pub fn with_cacert(mut self, cacert: &Path) -> Self {
        self.cacert = Some(cacert.to_path_buf());
        self
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
