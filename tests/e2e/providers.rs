//! Execution providers on this CPU machine: lists are validated, a missing provider is refused unless
//! `cpu` follows it (then the fallback is reported in `service show`, logs and metrics), `gpuCores`
//! without a GPU is refused naming it, and `plinth info` lists what the library has.

use crate::fixture::*;

fn metrics(host: &TestHost) -> String {
    let r = curl(
        &format!("{}/metrics", host.url),
        &["-H", &format!("Authorization: Bearer {}", host.admin_token())],
    );
    assert_eq!(r.status, 200);
    r.body
}

fn deploy_fails(host: &TestHost, name: &str, dc: &std::path::Path) -> String {
    let out = host
        .cli()
        .args(["deploy", "-m", "diabetes:1", "-n", name, "--dc", dc.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{err}");
    err
}

#[test]
fn providers_fall_back_only_when_told_and_say_so_everywhere() {
    let dir = temp_dir("providers");
    let host = TestHost::start(&dir.join("ws"), &[]);
    host.register_diabetes();

    // cuda, then cpu: served on the CPU, with the same answers, and the fallback reported.
    let dc = Dc::test()
        .no_auth()
        .with("executionProviders", serde_json::json!(["cuda", "cpu"]))
        .write(&dir, "fallback.json");
    host.deploy("diabetes:1", "fallback", &dc);
    let plain = Dc::test().no_auth().write(&dir, "plain.json");
    host.deploy("diabetes:1", "plain", &plain);
    let a = score(&host.score_url("fallback"), None, &sample_body());
    let b = score(&host.score_url("plain"), None, &sample_body());
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body, b.body);

    let show = host.run_json(&["service", "show", "fallback"]);
    let p = &show["versions"][0]["providers"][0];
    assert_eq!(p["model"], "diabetes", "{show}");
    assert_eq!(p["provider"], "cpu", "{show}");
    let fallback = p["fallback"].as_str().unwrap();
    assert!(
        fallback.contains("cuda is not in this host's ONNX Runtime library"),
        "{fallback}"
    );
    assert!(fallback.ends_with("serving on cpu"), "{fallback}");
    let text = host.run(&["service", "show", "fallback"]);
    assert!(text.contains("cpu (fallback)"), "{text}");
    assert!(text.contains("fallback:    1 model diabetes: cuda is not in"), "{text}");
    let text = host.run(&["service", "show", "plain"]);
    assert!(
        text.lines()
            .any(|l| l.starts_with("1 ") && l.trim_end().ends_with(" cpu")),
        "{text}"
    );

    let logs = host.run(&["service", "logs", "fallback"]);
    assert_eq!(
        logs.matches("cuda is not in this host's ONNX Runtime library").count(),
        1,
        "{logs}"
    );

    let m = metrics(&host);
    for want in [
        r#"plinth_model_provider_info{model="diabetes",provider="cpu",service="fallback",version="1"} 1"#,
        r#"plinth_model_provider_fallback{model="diabetes",service="fallback",version="1"} 1"#,
        r#"plinth_model_provider_info{model="diabetes",provider="cpu",service="plain",version="1"} 1"#,
        r#"plinth_model_provider_fallback{model="diabetes",service="plain",version="1"} 0"#,
    ] {
        assert!(m.contains(want), "missing {want} in\n{m}");
    }

    // cuda alone: refused, naming the provider, the library and how to get one that has it.
    let dc = Dc::test()
        .with("executionProviders", serde_json::json!(["cuda"]))
        .write(&dir, "cuda.json");
    let err = deploy_fails(&host, "cuda", &dc);
    for want in [
        "cuda is not in this host's ONNX Runtime library",
        "libonnxruntime.so",
        "onnxruntime-gpu",
        "ORT_DYLIB_PATH",
    ] {
        assert!(err.contains(want), "no '{want}' in {err}");
    }

    // gpuCores on a host without a GPU: refused, naming the GPU.
    let dc = Dc::test().with("gpuCores", 1.into()).write(&dir, "gpu.json");
    let err = deploy_fails(&host, "gpu", &dc);
    assert!(
        err.contains("gpuCores: 1 asks for 1 GPU(s) per replica and this host has 0"),
        "{err}"
    );

    // A misspelt provider or option is a config error naming the field.
    let dc = Dc::test()
        .with("executionProviders", serde_json::json!(["cpu", {"name": "rocm"}]))
        .write(&dir, "bad.json");
    let err = deploy_fails(&host, "bad", &dc);
    assert!(
        err.contains("executionProviders[1]: unknown execution provider \"rocm\""),
        "{err}"
    );
    let dc = Dc::test()
        .with(
            "executionProviders",
            serde_json::json!([{"name": "tensorrt", "fp61": true}]),
        )
        .write(&dir, "bad2.json");
    let err = deploy_fails(&host, "bad2", &dc);
    assert!(
        err.contains("executionProviders[0]: tensorrt options: unknown field `fp61`"),
        "{err}"
    );

    // The host: its library, providers and what the two services reserve.
    let info = host.run_json(&["info"]);
    assert!(
        info["onnxRuntime"]["library"]
            .as_str()
            .unwrap()
            .contains("libonnxruntime.so"),
        "{info}"
    );
    assert!(
        info["onnxRuntime"]["version"].as_str().unwrap().starts_with("1."),
        "{info}"
    );
    let providers = info["onnxRuntime"]["providers"].as_array().unwrap();
    assert!(providers.contains(&"cpu".into()), "{info}");
    assert!(!providers.contains(&"cuda".into()), "{info}");
    assert_eq!(info["gpus"]["count"], 0, "{info}");
    assert_eq!(info["reserved"]["gpus"], 0, "{info}");
    assert!(info["reserved"]["cores"].as_f64().unwrap() > 0.0, "{info}");
    assert!(info["cores"].as_f64().unwrap() >= 1.0, "{info}");
    let text = host.run(&["info"]);
    assert!(text.contains("providers:") && text.contains("cpu"), "{text}");
    assert!(text.contains("GPUs:         none"), "{text}");
    assert!(text.contains("reserved:"), "{text}");
}

#[test]
fn the_gpu_benchmark_is_ready_to_run() {
    let root = crate::support::repo();
    let run = root.join("bench/gpu/run");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&run).unwrap().permissions());
    assert!(mode & 0o111 != 0, "bench/gpu/run is not executable");
    let ok = std::process::Command::new("bash").arg("-n").arg(&run).status().unwrap();
    assert!(ok.success());
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    assert!(readme.contains("`bench/gpu/run`"));
    // The driver parses, and the setup it calls knows --gpu.
    let ok = std::process::Command::new(root.join(".venv/bin/python"))
        .args(["-m", "py_compile"])
        .arg(root.join("bench/gpu/bench.py"))
        .status()
        .unwrap();
    assert!(ok.success());
    let out = std::process::Command::new(root.join("scripts/setup"))
        .arg("--bogus")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("known: --gpu"));
}

#[test]
fn replicas_share_a_gpu_by_memory_and_a_whole_gpu_stays_whole() {
    // One simulated 16 GB GPU: replicas are placed on it as on a real one, and serve on the cpu listed
    // after cuda (this machine's library has no CUDA provider).
    let dir = temp_dir("gpu-share");
    let host = TestHost::start(&dir.join("ws"), &["--gpus", "1", "--gpu-memory-gb", "16"]);
    host.register_diabetes();
    let dc = |name: &str, gb: f64, replicas: u32| {
        Dc::test()
            .no_auth()
            .replicas(replicas)
            .with("executionProviders", serde_json::json!(["cuda", "cpu"]))
            .with("gpuMemoryGb", gb.into())
            .write(&dir, &format!("{name}.json"))
    };
    // Two services, and two replicas of one, on one GPU.
    host.deploy("diabetes:1", "a", &dc("a", 6.0, 1));
    host.deploy("diabetes:1", "b", &dc("b", 4.0, 2));
    assert_eq!(score(&host.score_url("a"), None, &sample_body()).status, 200);
    assert_eq!(score(&host.score_url("b"), None, &sample_body()).status, 200);
    let show = host.run_json(&["service", "show", "b"]);
    assert_eq!(
        show["versions"][0]["gpus"],
        serde_json::json!([{"gpu": 0, "memoryGb": 4.0}, {"gpu": 0, "memoryGb": 4.0}]),
        "{show}"
    );
    assert!(
        host.run(&["service", "show", "b"])
            .contains("GPUs:        version 1: GPU 0 (4.0 GB), GPU 0 (4.0 GB)")
    );
    let info = host.run_json(&["info"]);
    let gpu = &info["gpus"]["devices"][0];
    assert_eq!(gpu["memoryBytes"], 16u64 << 30, "{info}");
    assert_eq!(gpu["promisedBytes"], 14u64 << 30, "{info}");
    assert_eq!(gpu["shares"], 3, "{info}");
    assert_eq!(
        gpu["holders"],
        serde_json::json!(["a/1 (1 × 6.0 GB)", "b/1 (2 × 4.0 GB)"]),
        "{info}"
    );
    assert!(
        host.run(&["info"])
            .contains("GPU 0: 16.0 GB, 14.0 GB promised: a/1 (1 × 6.0 GB), b/1 (2 × 4.0 GB)")
    );

    // What does not fit is refused, naming what the GPU holds.
    let err = deploy_fails(&host, "c", &dc("c", 4.0, 1));
    assert!(err.contains("no GPU has 4.0 GB free for a replica of c/1"), "{err}");
    assert!(err.contains("GPU 0: 14.0 of 16.0 GB promised"), "{err}");
    let err = deploy_fails(&host, "big", &dc("big", 20.0, 1));
    assert!(
        err.contains("more than this host's largest GPU holds (16.0 GB)"),
        "{err}"
    );
    // gpuCores 1 still means a whole GPU: not one that shares hold.
    let whole = Dc::test()
        .no_auth()
        .with("executionProviders", serde_json::json!(["cuda", "cpu"]))
        .with("gpuCores", 1.into())
        .write(&dir, "whole.json");
    let err = deploy_fails(&host, "whole", &whole);
    assert!(err.contains("no GPU is free of shared replicas"), "{err}");
    // Deleting a service gives its memory back.
    host.run(&["service", "delete", "b"]);
    host.run(&["service", "delete", "c"]);
    host.deploy("diabetes:1", "c", &dc("c", 4.0, 1));
    let info = host.run_json(&["info"]);
    assert_eq!(info["gpus"]["devices"][0]["promisedBytes"], 10u64 << 30, "{info}");
}
