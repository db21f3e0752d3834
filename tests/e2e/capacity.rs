//! The host's budget: CPU requests share cores (oversubscription allowed, reported and cappable), memory
//! is reserved (a refusal says what would fit and who holds it), and a redeploy counts what it replaces.

use crate::fixture::*;

fn host_memory_gb() -> f64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kb: f64 = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .parse()
        .unwrap();
    kb / (1024.0 * 1024.0)
}

fn deploy(host: &TestHost, name: &str, dc: &std::path::Path) -> std::process::Output {
    host.cli()
        .args([
            "deploy",
            "-m",
            "diabetes:1",
            "-n",
            name,
            "--dc",
            dc.to_str().unwrap(),
            "--overwrite",
        ])
        .output()
        .unwrap()
}

#[test]
fn cpu_is_shared_memory_is_reserved() {
    let dir = temp_dir("capacity");
    let host = TestHost::start(&dir.join("ws"), &[]);
    host.register_diabetes();
    let cores = std::thread::available_parallelism().unwrap().get() as f64;
    // Three services each asking for all the cores: all deploy, and the subscription is reported.
    let dc = Dc::test()
        .no_auth()
        .with(
            "containerResourceRequirements",
            serde_json::json!({"cpu": cores, "memoryInGB": 0.1}),
        )
        .write(&dir, "cpu.json");
    for name in ["a", "b", "c"] {
        let out = deploy(&host, name, &dc);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let info = host.run_json(&["info"]);
    assert_eq!(info["reserved"]["cpuSubscription"], 3.0, "{info}");
    assert!(host.run(&["info"]).contains("3.00× subscribed"));
    // The scientific runtime's versions, from the wheel scripts/setup installs.
    let science = info["scientificPython"]
        .as_array()
        .expect("the scientific runtime's versions");
    let names: Vec<&str> = science.iter().filter_map(|p| p["name"].as_str()).collect();
    assert!(
        names.starts_with(&["python", "numpy", "pandas", "scipy", "scikit-learn"]),
        "{info}"
    );
    assert!(
        host.run(&["info"]).contains("scientific Python runtime: python 3."),
        "{}",
        host.run(&["info"])
    );
    assert!(
        host.run(&["service", "show", "a"])
            .contains("host CPU:    3.00× subscribed")
    );

    // Memory: a version that cannot fit is refused naming what would fit and who holds the memory.
    let total = host_memory_gb();
    let big = Dc::test()
        .no_auth()
        .with(
            "containerResourceRequirements",
            serde_json::json!({"cpu": 0.1, "memoryInGB": total * 0.6}),
        )
        .write(&dir, "big.json");
    let out = deploy(&host, "big", &big);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = deploy(&host, "bigger", &big);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("MiB of memory; the host has"), "{err}");
    assert!(err.contains("would fit"), "{err}");
    assert!(err.contains("held by big/1 (1 × "), "{err}");
    // Redeploying the big one counts what the version it replaces frees.
    let out = deploy(&host, "big", &big);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(score(&host.score_url("big"), None, &sample_body()).status, 200);
}

#[test]
fn cpu_oversubscription_can_be_capped() {
    let dir = temp_dir("capacity-cap");
    let host = TestHost::start(&dir.join("ws"), &["--cpu-oversubscription", "1"]);
    host.register_diabetes();
    let cores = std::thread::available_parallelism().unwrap().get() as f64;
    let dc = Dc::test()
        .no_auth()
        .with(
            "containerResourceRequirements",
            serde_json::json!({"cpu": cores, "memoryInGB": 0.1}),
        )
        .write(&dir, "cpu.json");
    assert!(deploy(&host, "a", &dc).status.success());
    let out = deploy(&host, "b", &dc);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("capped at 1× by --cpu-oversubscription"), "{err}");
}
