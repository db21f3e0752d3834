//! The image, built and run for real in podman: a local Debian base (debootstrap, made once per machine and
//! kept), the Dockerfile built around this test binary's own `plinth` (once per test run, kept per binary),
//! and the container run locked down as a pod runs it. Where podman cannot run (not installed, not root,
//! no working runtime), these tests say so loudly and pass; `scripts/setup` installs what they need.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::fixture::{plinth, score, temp_dir};
use crate::support::{assert_close, reference, repo};

/// The base a test image is built on when `PLINTH_TEST_BASE_IMAGE` names none: made here by debootstrap.
const DEBIAN: &str = "localhost/debian:bookworm";
/// Test images are tagged by the hash of the binary they carry.
const REPOSITORY: &str = "localhost/plinth-e2e";

/// `podman`, with runc as the runtime where it is installed (crun refuses a hybrid cgroup hierarchy, and
/// runc works on every one).
pub fn podman() -> Command {
    let mut cmd = Command::new("podman");
    let runc = [
        "/usr/sbin/runc",
        "/usr/bin/runc",
        "/usr/local/sbin/runc",
        "/usr/local/bin/runc",
    ];
    if runc.iter().any(|p| Path::new(p).is_file()) {
        cmd.args(["--runtime", "runc"]);
    }
    cmd
}

/// Runs a podman command and returns its stdout, failing the test (with stderr) on a non-zero exit.
pub fn podman_ok(args: &[&str]) -> String {
    let out = podman().args(args).output().expect("running podman");
    assert!(
        out.status.success(),
        "podman {args:?}: {}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A test image, built and tagged.
pub struct Image {
    pub tag: String,
}

enum Built {
    Ready(Image),
    /// podman cannot run here: the tests that need it pass with this said loudly.
    Unavailable(String),
    /// It should have built and did not: every test that needs it fails with this.
    Failed(String),
}

/// The image built from this test binary's `plinth`, once per test run; `None` (said loudly) where podman
/// cannot run.
pub fn image() -> Option<&'static Image> {
    static IMAGE: OnceLock<Built> = OnceLock::new();
    built(&IMAGE, || build(REPOSITORY, &[]))
}

fn built(cell: &'static OnceLock<Built>, make: fn() -> Image) -> Option<&'static Image> {
    let state = cell.get_or_init(|| {
        if let Err(why) = available() {
            return Built::Unavailable(why);
        }
        std::panic::catch_unwind(make).map_or_else(
            |panic| {
                let msg = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                Built::Failed(msg)
            },
            Built::Ready,
        )
    });
    match state {
        Built::Ready(image) => Some(image),
        Built::Unavailable(why) => {
            eprintln!(
                "\n*** SKIPPED: podman cannot run containers here ({why}); the image and pod tests did not run ***\n"
            );
            None
        }
        Built::Failed(why) => panic!("building the test image failed: {why}"),
    }
}

fn available() -> Result<(), String> {
    if !rustix::process::geteuid().is_root() {
        return Err("not root: the pods' volumes are laid out with the ownership the kubelet gives them".into());
    }
    let info = podman()
        .args(["info", "--format", "{{.Host.OCIRuntime.Name}}"])
        .output()
        .map_err(|e| format!("podman: {e}"))?;
    if !info.status.success() {
        return Err(format!("podman info: {}", String::from_utf8_lossy(&info.stderr).trim()));
    }
    Ok(())
}

/// The Dockerfile built around this test binary (`PLINTH_BINARY=prebuilt`) with `build_args`, tagged in
/// `repository` by what went into it, unless an image of that tag is there already.
fn build(repository: &str, build_args: &[&str]) -> Image {
    let base = base_image();
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_plinth"));
    let dockerfile = repo().join("Dockerfile");
    let inputs = format!("{base} {}", build_args.join(" "));
    let tag = format!("{repository}:{}", &sha256_of(&[&binary, &dockerfile], &inputs)[..16]);
    if podman()
        .args(["image", "exists", &tag])
        .status()
        .is_ok_and(|s| s.success())
    {
        eprintln!("image {tag}: already built from this binary, Dockerfile and base");
        return Image { tag };
    }
    // The build context is the binary alone.
    let context = temp_dir("image-context");
    if std::fs::hard_link(&binary, context.join("plinth")).is_err() {
        std::fs::copy(&binary, context.join("plinth")).unwrap();
    }
    let log = context.with_extension("log");
    let out = std::fs::File::create(&log).unwrap();
    let mut cmd = podman();
    cmd.args(["build", "--format", "docker", "--layers", "--network", "host"])
        .args(["--build-arg", "PLINTH_BINARY=prebuilt", "--build-arg"])
        .arg(format!("BASE_IMAGE={base}"));
    for arg in build_args {
        cmd.args(["--build-arg", arg]);
    }
    // pip trusts what this machine trusts (a proxy that re-signs TLS among it).
    let ca = Path::new("/etc/ssl/certs/ca-certificates.crt");
    if ca.is_file() {
        cmd.arg("--secret").arg(format!("id=pip-cert,src={}", ca.display()));
    }
    cmd.arg("-f").arg(&dockerfile).args(["-t", &tag]).arg(&context);
    let started = Instant::now();
    let status = cmd
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .status()
        .expect("running podman build");
    let _ = std::fs::remove_dir_all(&context);
    assert!(
        status.success(),
        "podman build (log in {}): {}",
        log.display(),
        tail(&log, 30)
    );
    let _ = std::fs::remove_file(&log);
    let size: u64 = podman_ok(&["image", "inspect", "--format", "{{.Size}}", &tag])
        .trim()
        .parse()
        .unwrap_or(0);
    eprintln!(
        "image {tag}: built on {base} in {:.0} s, {} MB",
        started.elapsed().as_secs_f64(),
        size / 1_000_000
    );
    remove_old_images(repository, &tag);
    Image { tag }
}

/// `PLINTH_TEST_BASE_IMAGE`, else the local Debian image (made by debootstrap when missing: about 40 s,
/// once per machine).
fn base_image() -> String {
    if let Some(base) = std::env::var("PLINTH_TEST_BASE_IMAGE").ok().filter(|b| !b.is_empty()) {
        return base;
    }
    if podman()
        .args(["image", "exists", DEBIAN])
        .status()
        .is_ok_and(|s| s.success())
    {
        return DEBIAN.to_string();
    }
    let root = temp_dir("debootstrap");
    let log = root.with_extension("log");
    let started = Instant::now();
    let status = Command::new("debootstrap")
        .args(["--variant=minbase", "bookworm"])
        .arg(&root)
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("debootstrap (scripts/setup installs it)");
    assert!(status.success(), "debootstrap: {}", tail(&log, 20));
    let _ = std::fs::remove_file(&log);
    let import = Command::new("sh")
        .args(["-c", "tar -C \"$0\" -c . | podman import - \"$1\""])
        .arg(&root)
        .arg(DEBIAN)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&root);
    assert!(
        import.status.success(),
        "podman import: {}",
        String::from_utf8_lossy(&import.stderr)
    );
    eprintln!(
        "image {DEBIAN}: made by debootstrap in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    DEBIAN.to_string()
}

/// Test images of other binaries, older than a day, and the binary-only stage images podman keeps from
/// builds older than an hour: removed, with the layers only they held. Younger ones may belong to a test
/// run going on beside this one.
fn remove_old_images(repository: &str, keep: &str) {
    let old = podman_ok(&[
        "images",
        "--filter",
        &format!("reference={repository}"),
        "--filter",
        "until=24h",
        "--format",
        "{{.Repository}}:{{.Tag}}",
    ]);
    for tag in old.lines().filter(|t| *t != keep) {
        let _ = podman().args(["rmi", tag]).output();
    }
    let dangling = podman_ok(&[
        "images",
        "--filter",
        "dangling=true",
        "--filter",
        "until=1h",
        "--format",
        "{{.ID}}",
    ]);
    for id in dangling.lines() {
        let history = podman_ok(&["image", "inspect", "--format", "{{json .History}}", id]);
        let history: Vec<serde_json::Value> = serde_json::from_str(&history).unwrap_or_default();
        let binary_only = history.len() == 1
            && history[0]["created_by"]
                .as_str()
                .is_some_and(|c| c.trim_end().ends_with(" in /out/plinth"));
        if binary_only {
            let _ = podman().args(["rmi", id]).output();
        }
    }
}

fn sha256_of(files: &[&Path], and: &str) -> String {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    for f in files {
        std::io::copy(&mut std::fs::File::open(f).unwrap(), &mut hasher).unwrap();
    }
    hasher.update(and.as_bytes());
    hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A name for a container or pod that no other test (or test run) uses.
pub fn unique_name(tag: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "plinth-e2e-{tag}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// `http://127.0.0.1:PORT` that a container's (or a pod's infra container's) `port` is published on.
pub fn published_url(container: &str, port: u16) -> String {
    let mapping = podman_ok(&["port", container, &format!("{port}/tcp")]);
    let addr = mapping.lines().next().unwrap_or_default().trim();
    assert!(addr.starts_with("127.0.0.1:"), "{container} port {port}: '{mapping}'");
    format!("http://{addr}")
}

/// One line of `/proc/1/status` in a running container (its main process), the whitespace collapsed.
pub fn main_process_status(container: &str, field: &str) -> String {
    let status = podman_ok(&["exec", container, "cat", "/proc/1/status"]);
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in {status}"))
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn output_text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// Removes a container when the test ends, however it ends.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = podman().args(["rm", "-f", "-t", "2", &self.0]).output();
    }
}

#[test]
fn the_image_serves_a_deployment_as_uid_10001_on_a_read_only_root_without_capabilities() {
    let Some(image) = image() else { return };
    let tag = image.tag.as_str();
    // The binary under test, as the image's entrypoint, as the image's user.
    let own = plinth().arg("--version").output().unwrap();
    let version = podman()
        .args(["run", "--rm", "--no-healthcheck", tag, "--version"])
        .output()
        .unwrap();
    assert!(version.status.success(), "{}", output_text(&version));
    assert_eq!(version.stdout, own.stdout);
    let id = podman_ok(&["run", "--rm", "--no-healthcheck", "--entrypoint", "id", tag]);
    assert_eq!(id.trim(), "uid=10001(plinth) gid=10001(plinth) groups=10001(plinth)");
    // ONNX Runtime from the wheel, found at the path the image names whatever its Python.
    let info = podman()
        .args(["run", "--rm", "--no-healthcheck", tag, "info"])
        .output()
        .unwrap();
    let text = output_text(&info);
    assert!(info.status.success(), "{text}");
    assert!(
        text.contains("ONNX Runtime: 1.32.0 (/opt/plinth/site-packages/onnxruntime/capi/libonnxruntime.so)"),
        "{text}"
    );

    // The image's own command (`plinth serve` on PLINTH_LISTEN), locked down as the rendered pods are: its
    // state on a volume owned by its user, a scratch /tmp, nothing else writable.
    let dir = temp_dir("image-host");
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::os::unix::fs::chown(&data, Some(10001), Some(10001)).unwrap();
    let name = unique_name("host");
    let started = Instant::now();
    podman_ok(&[
        "run",
        "-d",
        "--name",
        &name,
        "--read-only",
        "--read-only-tmpfs=false",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "--memory",
        "1536m",
        "--memory-swap",
        "1536m",
        "-p",
        "127.0.0.1::8080",
        "-v",
        &format!("{}:/var/lib/plinth", data.display()),
        "--tmpfs",
        "/tmp:mode=1777",
        tag,
    ]);
    let container = Container(name);
    let url = published_url(&container.0, 8080);
    wait_for(&format!("{url}/healthz"), Duration::from_secs(60));
    eprintln!(
        "image {tag}: /healthz answered {:.1} s after the container started",
        started.elapsed().as_secs_f64()
    );
    // The HEALTHCHECK the image declares passes.
    podman_ok(&["healthcheck", "run", &container.0]);

    // A deployment through the CLI, from this machine: the diabetes example (score.py around the ONNX
    // model), prepared in the container by the image's componentize-py.
    let cli = |args: &[&str]| {
        let out = plinth()
            .env("PLINTH_HOST", &url)
            .env("PLINTH_WORKSPACE", data.join("workspace"))
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "plinth {args:?}: {}", output_text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    cli(&[
        "model",
        "register",
        "--name",
        "diabetes",
        "--path",
        "examples/diabetes/model",
    ]);
    let dc = crate::fixture::Dc::test()
        .keys("image-key-0123456789")
        .write(&dir, "dc.json");
    cli(&[
        "deploy",
        "-m",
        "diabetes:1",
        "-n",
        "diabetes",
        "--ic",
        "examples/diabetes/inferenceconfig.json",
        "--dc",
        dc.to_str().unwrap(),
    ]);
    wait_for(&format!("{url}/readyz"), Duration::from_secs(300));
    let sample = repo().join("examples/diabetes/sample.json");
    let scored = score(
        &format!("{url}/api/v1/service/diabetes/score"),
        Some("image-key-0123456789"),
        &std::fs::read_to_string(&sample).unwrap(),
    );
    assert_eq!(scored.status, 200, "{}", scored.body);
    let got: Vec<f64> = serde_json::from_value(scored.json()["predictions"].clone()).unwrap();
    assert_close(&got, &reference(&sample).1, 1e-5);

    // Seen from outside: what podman was asked for.
    let inspect: serde_json::Value =
        serde_json::from_str(&podman_ok(&["inspect", "--type", "container", &container.0])).unwrap();
    let inspect = &inspect[0];
    assert_eq!(inspect["Config"]["User"], "10001:10001", "the image's USER");
    assert_eq!(inspect["HostConfig"]["ReadonlyRootfs"], true);
    assert!(
        inspect["HostConfig"]["SecurityOpt"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o == "no-new-privileges"),
        "{}",
        inspect["HostConfig"]["SecurityOpt"]
    );
    // Seen from inside: what the kernel gives the serving process.
    assert_eq!(main_process_status(&container.0, "Uid"), "10001 10001 10001 10001");
    assert_eq!(main_process_status(&container.0, "Gid"), "10001 10001 10001 10001");
    for caps in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(main_process_status(&container.0, caps), "0000000000000000", "{caps}");
    }
    assert_eq!(main_process_status(&container.0, "NoNewPrivs"), "1");
    let write = podman()
        .args(["exec", &container.0, "touch", "/opt/plinth/bin/x"])
        .output()
        .unwrap();
    assert!(!write.status.success());
    assert!(
        output_text(&write).contains("Read-only file system"),
        "{}",
        output_text(&write)
    );
    let memory = cgroup_memory(&container.0);
    eprintln!(
        "image {tag}: the host serving the diabetes example: {} MiB anonymous, working set {} MiB, {} MiB with the page cache (peak {} MiB), of its 1536 MiB",
        memory.rss >> 20,
        memory.working_set >> 20,
        memory.current >> 20,
        memory.peak >> 20
    );
    assert_eq!(memory.limit, 1536 << 20, "the memory limit is the kernel's");
    // The host counts the container's memory, not the machine's, as what its replicas may take.
    let info = podman()
        .args(["exec", &container.0, "plinth", "info", "--local", "-o", "json"])
        .output()
        .unwrap();
    assert!(info.status.success(), "{}", output_text(&info));
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(info["memoryBytes"], 1536u64 << 20, "{info}");
}

/// Polls `url` until it answers 200.
pub fn wait_for(url: &str, within: Duration) {
    let started = Instant::now();
    let mut last = None;
    while started.elapsed() < within {
        last = probe(url);
        if last == Some(200) {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("{url} never answered 200 within {within:?} (last: {last:?})");
}

/// A GET's status, or `None` while nothing answers (a container still starting).
pub fn probe(url: &str) -> Option<u16> {
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "2", url])
        .output()
        .expect("running curl");
    let status = String::from_utf8_lossy(&out.stdout).trim().parse().ok();
    status.filter(|s| *s != 0)
}

/// A container's memory, from its cgroup, in bytes.
pub struct Memory {
    /// All it holds, the page cache of the files it wrote and read among it.
    pub current: u64,
    /// What the kubelet counts: `current` less the page cache it could drop.
    pub working_set: u64,
    /// Anonymous memory (heaps, stacks): what the processes themselves hold.
    pub rss: u64,
    /// The most `current` has been.
    pub peak: u64,
    pub limit: u64,
}

/// A running container's memory cgroup (v1 or v2), read straight from its files.
pub struct Cgroup {
    dir: PathBuf,
    v1: bool,
}

impl Cgroup {
    /// `None` when the container is not running (its cgroup gone, or not made yet).
    pub fn of(container: &str) -> Option<Cgroup> {
        let out = podman()
            .args(["inspect", "--type", "container", "--format"])
            .arg("{{.State.Running}} {{.State.CgroupPath}}")
            .arg(container)
            .output()
            .ok()?;
        let out = String::from_utf8_lossy(&out.stdout);
        let path = match out.trim().split_once(' ') {
            Some(("true", path)) if !path.trim_start_matches('/').is_empty() => path.trim_start_matches('/'),
            _ => return None,
        };
        let v1 = Path::new("/sys/fs/cgroup/memory").join(path);
        let v2 = Path::new("/sys/fs/cgroup").join(path);
        if v1.join("memory.usage_in_bytes").is_file() {
            Some(Cgroup { dir: v1, v1: true })
        } else {
            v2.join("memory.current")
                .is_file()
                .then_some(Cgroup { dir: v2, v1: false })
        }
    }

    /// `None` once the cgroup is gone.
    pub fn read(&self) -> Option<Memory> {
        let number = |name: &str| -> Option<u64> {
            let text = std::fs::read_to_string(self.dir.join(name)).ok()?;
            let text = text.trim();
            Some(if text == "max" { u64::MAX } else { text.parse().ok()? })
        };
        let stat = std::fs::read_to_string(self.dir.join("memory.stat")).ok()?;
        let field = |name: &str| -> u64 {
            stat.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
                .unwrap_or(0)
        };
        let (current, peak, limit, rss, inactive_file) = if self.v1 {
            let current = number("memory.usage_in_bytes")?;
            let peak = number("memory.max_usage_in_bytes").unwrap_or(current);
            let limit = number("memory.limit_in_bytes").unwrap_or(u64::MAX);
            (current, peak, limit, field("total_rss"), field("total_inactive_file"))
        } else {
            let current = number("memory.current")?;
            let peak = number("memory.peak").unwrap_or(current);
            let limit = number("memory.max").unwrap_or(u64::MAX);
            (current, peak, limit, field("anon"), field("inactive_file"))
        };
        Some(Memory {
            current,
            working_set: current.saturating_sub(inactive_file),
            rss,
            peak,
            limit,
        })
    }
}

/// A running container's memory now.
pub fn cgroup_memory(container: &str) -> Memory {
    Cgroup::of(container)
        .and_then(|c| c.read())
        .unwrap_or_else(|| panic!("{container} is not running"))
}

/// The GPU image's wheels, as the Dockerfile and README.md give them.
const GPU_WHEELS: &str = "ONNXRUNTIME=onnxruntime-gpu[cuda,cudnn]==1.31.1 nvidia-cublas>=13,<14";

/// The GPU image downloads about 2 GB of wheels and takes 3.5 GB: built only when asked.
#[test]
fn the_gpu_image_builds_with_the_cuda_wheels_where_plinth_loads_them() {
    if std::env::var_os("PLINTH_TEST_GPU_IMAGE").is_none_or(|v| v.is_empty() || v == "0") {
        eprintln!("the GPU image is not built unless asked: PLINTH_TEST_GPU_IMAGE=1 (2 to 3 minutes, 3.5 GB)");
        return;
    }
    static GPU: OnceLock<Built> = OnceLock::new();
    let Some(image) = built(&GPU, || build(&format!("{REPOSITORY}-gpu"), &[GPU_WHEELS])) else {
        return;
    };
    let info = podman()
        .args(["run", "--rm", "--no-healthcheck", &image.tag, "info"])
        .output()
        .unwrap();
    let text = output_text(&info);
    assert!(info.status.success(), "{text}");
    assert!(
        text.contains("ONNX Runtime: 1.31.1 (/opt/plinth/site-packages/onnxruntime/capi/libonnxruntime.so)"),
        "{text}"
    );
    let providers = text
        .lines()
        .find_map(|l| l.strip_prefix("providers:"))
        .unwrap_or_default();
    assert!(providers.split(',').any(|p| p.trim() == "cuda"), "{text}");
    // The CUDA 13 and cuDNN wheels' libraries, in the site-packages the library's path leads to.
    let site = "/opt/plinth/site-packages";
    let libraries = [
        format!("{site}/nvidia/cu13/lib/libcudart.so.13"),
        format!("{site}/nvidia/cu13/lib/libcublas.so.13"),
        format!("{site}/nvidia/cudnn/lib/libcudnn.so.9"),
        format!("{site}/onnxruntime/capi/libonnxruntime_providers_cuda.so"),
    ];
    let mut ls = podman();
    ls.args(["run", "--rm", "--no-healthcheck", "--entrypoint", "ls", &image.tag])
        .args(&libraries);
    let listed = ls.output().unwrap();
    assert!(listed.status.success(), "{}", output_text(&listed));
}
