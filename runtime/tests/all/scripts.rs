//! Entry scripts as components: results, isolation, and every bound.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use plinth_runtime::wasm::{CallContext, ScriptLimits};
use plinth_runtime::{Error, ModelSource, Package, PackageSpec, TrapKind};

use crate::helpers::*;

fn ctx() -> CallContext {
    CallContext {
        request_id: Some("test".into()),
        ..CallContext::default()
    }
}

fn run(p: &Package, body: &str) -> Result<String, Error> {
    p.score(body.as_bytes(), &ctx()).map(|b| String::from_utf8(b).unwrap())
}

/// A private copy of the model folder, so a test can check nothing was written into it.
fn model_copy(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("plinth-models-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(diabetes_model_dir().join("model.onnx"), dir.join("model.onnx")).unwrap();
    dir
}

fn adversary(tag: &str, limits: ScriptLimits) -> (Arc<Package>, PathBuf) {
    let dir = model_copy(tag);
    let spec = PackageSpec {
        models: vec![ModelSource {
            name: "diabetes".into(),
            path: dir.clone(),
        }],
        entry_script: Some(component("adversary")),
        limits,
        ..PackageSpec::default()
    };
    (load(&spec), dir)
}

fn short_limits() -> ScriptLimits {
    ScriptLimits {
        deadline: Duration::from_millis(300),
        memory_bytes: 64 << 20,
        max_response_bytes: 1 << 20,
        ..ScriptLimits::default()
    }
}

#[test]
fn rust_entry_script_matches_scikit_learn() {
    let spec = PackageSpec {
        entry_script: Some(component("diabetes_script")),
        ..diabetes_spec()
    };
    let p = load(&spec);
    let v: serde_json::Value =
        serde_json::from_str(&run(&p, std::str::from_utf8(&sample()).unwrap()).unwrap()).unwrap();
    let got: Vec<f64> = v["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    let (sklearn, _) = reference();
    assert_close(&got, &sklearn, 1e-4);

    let err = run(&p, r#"{"data": [[1, 2, 3]]}"#).unwrap_err();
    assert!(err.is_client_error(), "{err:?}");
    assert!(err.to_string().contains("row 0 has 3 features"), "{err}");
    let err = run(&p, "not json").unwrap_err();
    assert!(err.is_client_error(), "{err:?}");
}

#[test]
fn concurrent_calls_each_get_their_own_instance() {
    let spec = PackageSpec {
        entry_script: Some(component("diabetes_script")),
        ..diabetes_spec()
    };
    let p = load(&spec);
    let want = run(&p, std::str::from_utf8(&sample()).unwrap()).unwrap();
    let threads: Vec<_> = (0..6)
        .map(|_| {
            let p = p.clone();
            let want = want.clone();
            std::thread::spawn(move || {
                let body = String::from_utf8(sample()).unwrap();
                for _ in 0..100 {
                    assert_eq!(run(&p, &body).unwrap(), want);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn instances_are_kept_between_calls_and_replaced_after_a_trap() {
    let (p, _) = adversary("keep", short_limits());
    assert_eq!(run(&p, "a").unwrap(), "1:a");
    assert_eq!(run(&p, "b").unwrap(), "2:b");
    assert!(run(&p, "panic").is_err());
    assert_eq!(run(&p, "c").unwrap(), "1:c", "a fresh instance after the trap");
}

#[test]
fn an_infinite_loop_hits_the_deadline_and_the_next_call_succeeds() {
    let (p, _) = adversary("loop", short_limits());
    let started = Instant::now();
    let err = run(&p, "loop").unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(
            err,
            Error::ScriptTrap {
                kind: TrapKind::Deadline,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.kind(), "deadline");
    assert!(err.to_string().contains("deadline exceeded"), "{err}");
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "stopped after {took:?}"
    );
    assert!(run(&p, "after").unwrap().ends_with(":after"));
}

#[test]
fn a_memory_bomb_hits_the_cap_and_the_next_call_succeeds() {
    let (p, _) = adversary("alloc", short_limits());
    let err = run(&p, "alloc").unwrap_err();
    assert!(
        matches!(
            err,
            Error::ScriptTrap {
                kind: TrapKind::Memory,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("the cap is 64 MiB"), "{err}");
    assert!(run(&p, "after").unwrap().ends_with(":after"));
}

#[test]
fn a_panic_is_a_trap_that_reports_the_panic_message() {
    let (p, _) = adversary("panic", short_limits());
    let err = run(&p, "panic").unwrap_err();
    assert!(
        matches!(
            err,
            Error::ScriptTrap {
                kind: TrapKind::Trap,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("adversary panicked on purpose"), "{err}");
    assert!(run(&p, "after").unwrap().ends_with(":after"));
}

#[test]
fn the_host_filesystem_is_out_of_reach() {
    let (p, dir) = adversary("fs", short_limits());
    let err = run(&p, "read-passwd").unwrap_err();
    assert!(matches!(err, Error::ScriptFailed { .. }), "{err:?}");
    assert!(
        err.to_string().contains("/etc/passwd") && !err.to_string().contains("root:"),
        "{err}"
    );

    let err = run(&p, "write-models").unwrap_err();
    assert!(err.to_string().contains("/models/evil.txt"), "{err}");
    assert!(!dir.join("evil.txt").exists(), "the model folder is read-only");

    let _ = std::fs::remove_file("/tmp/plinth-evil.txt");
    let err = run(&p, "write-tmp").unwrap_err();
    assert!(err.to_string().contains("/tmp/plinth-evil.txt"), "{err}");
    assert!(!std::path::Path::new("/tmp/plinth-evil.txt").exists());

    // What the script can see: its model files, read-only, and no host environment.
    assert_eq!(run(&p, "list-models").unwrap(), "model.onnx");
    assert_eq!(run(&p, "env").unwrap(), "AZUREML_MODEL_DIR=/models");
    assert!(run(&p, "after").unwrap().ends_with(":after"));
}

#[test]
fn an_enormous_response_is_refused() {
    // Building 100 MiB inside the guest takes a while on a busy machine; the deadline is not under test here.
    let limits = ScriptLimits {
        deadline: Duration::from_secs(20),
        memory_bytes: 512 << 20,
        max_response_bytes: 1 << 20,
        ..short_limits()
    };
    let (p, _) = adversary("huge", limits);
    let err = run(&p, "huge-output").unwrap_err();
    assert!(matches!(err, Error::OutputTooLarge { .. }), "{err:?}");
    assert!(err.to_string().contains("exceeds the limit of 1048576 bytes"), "{err}");
    assert!(run(&p, "after").unwrap().ends_with(":after"));
}

#[test]
fn script_errors_keep_their_meaning() {
    let (p, _) = adversary("errors", short_limits());
    let err = run(&p, "bad-request").unwrap_err();
    assert!(err.is_client_error(), "{err:?}");
    let err = run(&p, "infer-unknown").unwrap_err();
    assert!(matches!(err, Error::ScriptFailed { .. }), "{err:?}");
    assert!(err.to_string().contains("unknown model 'no-such-model'"), "{err}");
    assert_eq!(run(&p, "models").unwrap(), "diabetes");
    let err = p.score(&[0xff, 0xfe], &ctx()).unwrap_err();
    assert!(err.to_string().contains("not UTF-8"), "{err}");
}

#[test]
fn compiled_components_are_cached_by_content_hash() {
    let spec = PackageSpec {
        entry_script: Some(component("diabetes_script")),
        ..diabetes_spec()
    };
    let _first = load(&spec);
    let second = load(&spec);
    assert!(
        second.script().unwrap().from_cache(),
        "the second load reads the compiled component from the cache"
    );
}

#[test]
fn a_file_that_is_not_a_component_is_a_clear_load_error() {
    let bogus = std::env::temp_dir().join(format!("plinth-bogus-{}.wasm", std::process::id()));
    std::fs::write(&bogus, b"\0asm garbage").unwrap();
    let spec = PackageSpec {
        entry_script: Some(bogus.clone()),
        ..diabetes_spec()
    };
    let err = Package::load(&spec, Some(engine())).unwrap_err();
    assert_eq!(err.kind(), "script_load", "{err}");
    assert!(err.to_string().contains("not a valid component"), "{err}");
    std::fs::remove_file(bogus).unwrap();
}
