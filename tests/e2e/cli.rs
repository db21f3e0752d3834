//! The first hour with the CLI: Azure's spellings, scoring a deployed service from the command line,
//! errors that say what to do, plain logs when they are not on a terminal.

use std::io::{BufRead, BufReader, Read};
use std::process::Stdio;

use crate::fixture::*;

#[test]
fn azure_spellings_service_run_and_a_foreign_admin_token() {
    let dir = temp_dir("cli");
    let host = TestHost::start(&dir.join("ws"), &[]);
    host.register_diabetes();
    // Azure's `-ic … -dc …` (one dash), and its long names.
    let dc = Dc::test().keys("cli-key-0123456789abcdef").write(&dir, "dc.json");
    let ic = write_json(&dir, "ic.json", &serde_json::json!({}));
    let out = host.run(&[
        "deploy",
        "-m",
        "diabetes:1",
        "-n",
        "ridge",
        "-ic",
        ic.to_str().unwrap(),
        "-dc",
        dc.to_str().unwrap(),
    ]);
    assert!(out.contains("Healthy"), "{out}");
    assert!(!out.contains("Updated"), "{out}");
    host.run(&[
        "deploy",
        "-m",
        "diabetes:1",
        "-n",
        "ridge2",
        "--inference-config-file",
        ic.to_str().unwrap(),
        "--deploy-config-file",
        dc.to_str().unwrap(),
    ]);

    // Tables are aligned: every row's state starts under the STATE header, whatever the name's length.
    let list = host.run(&["service", "list"]);
    let column = list.lines().next().unwrap().find("STATE").unwrap();
    for row in list.lines().skip(1) {
        assert_eq!(row.find("Healthy"), Some(column), "{list}");
    }

    // `show` without -o is a short summary; -o json keeps the whole record.
    let show = host.run(&["service", "show", "ridge"]);
    assert!(show.starts_with("ridge  Healthy"), "{show}");
    assert!(
        show.contains(&format!("scoring URI: {}/api/v1/service/ridge/score", host.url)),
        "{show}"
    );
    assert!(
        show.contains("VERSION") && show.contains("diabetes:1") && show.lines().count() < 15,
        "{show}"
    );
    assert!(host.run_json(&["service", "show", "ridge"])["versions"][0]["deploymentConfig"].is_object());
    let model = host.run(&["model", "show", "diabetes:1"]);
    assert!(
        model.starts_with("diabetes:1  registered ") && model.contains("model.onnx"),
        "{model}"
    );

    // Deploying onto an existing name is refused without --overwrite (as az ml model deploy refuses it),
    // and says how; with it, it says it updated the service, and with what.
    let refused = host
        .cli()
        .args(["deploy", "-m", "diabetes", "-n", "ridge", "--dc", dc.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success()
            && err.contains("service ridge is already deployed (serving diabetes:1); add --overwrite"),
        "{err}"
    );
    let again = host.run(&[
        "deploy",
        "-m",
        "diabetes",
        "-n",
        "ridge",
        "--dc",
        dc.to_str().unwrap(),
        "--overwrite",
    ]);
    assert!(
        again.contains("Updated service ridge (it was already deployed): diabetes:1 → diabetes:1"),
        "{again}"
    );

    // `service run`: scores with the service's own key, the body inline, from a file, or from stdin.
    let sample = crate::support::repo().join("examples/diabetes/sample.json");
    let inline = host.run_json(&["service", "run", "ridge", "-d", &sample_body()]);
    let from_file = host.run_json(&["service", "run", "ridge", "-d", &format!("@{}", sample.display())]);
    assert_eq!(inline, from_file);
    assert_eq!(inline["variable"].as_array().map(Vec::len), Some(2), "{inline}");
    // `-n NAME` as az ml spells it, beside the positional name.
    assert_eq!(
        host.run_json(&["service", "keys", "-n", "ridge"]),
        host.run_json(&["service", "keys", "ridge"])
    );
    assert_eq!(
        host.run_json(&["model", "show", "--name", "diabetes:1"])["name"],
        "diabetes"
    );
    // `-o yaml` and `-o table` beside json and text, as az takes them.
    let keys = host.run_json(&["service", "keys", "ridge"]);
    let yaml = host.run(&["service", "keys", "ridge", "-o", "yaml"]);
    assert!(
        yaml.contains(&format!("primaryKey: {}", keys["primaryKey"].as_str().unwrap())),
        "{yaml}"
    );
    assert_eq!(
        host.run(&["service", "list", "-o", "table"]),
        host.run(&["service", "list"])
    );
    // It prints the service's body as the service sent it: every digit and key order as curl sees them.
    let (key, _) = host.keys("ridge");
    let http = crate::fixture::score(&host.score_url("ridge"), Some(&key), &sample_body());
    assert_eq!(http.status, 200, "{}", http.body);
    let text = host.run(&["service", "run", "ridge", "-d", &sample_body()]);
    assert_eq!(text.trim_end(), http.body.trim_end());
    let pretty = host.run(&["service", "run", "ridge", "-d", &sample_body(), "--pretty"]);
    let squeeze = |s: &str| s.split_whitespace().collect::<String>();
    assert!(pretty.lines().count() > 2, "{pretty}");
    assert_eq!(squeeze(&pretty), squeeze(&http.body));
    let mut child = host
        .cli()
        .args(["service", "run", "ridge", "-d", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), sample_body().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("variable"));
    let bad = host
        .cli()
        .args(["service", "run", "ridge", "-d", r#"{"data": [[1, 2]]}"#])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success() && err.contains("service ridge answered 400") && err.contains("expected shape"),
        "{err}"
    );

    // The CLI pointed at this host with another workspace's admin token.
    let other = temp_dir("cli-other");
    std::fs::create_dir_all(other.join("ws")).unwrap();
    std::fs::write(other.join("ws/admin-token"), "not-this-hosts-token\n").unwrap();
    let out = plinth()
        .env("PLINTH_HOST", &host.url)
        .env("PLINTH_WORKSPACE", other.join("ws"))
        .args(["service", "list"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("does not match") && err.contains("PLINTH_WORKSPACE"),
        "{err}"
    );
}

#[test]
fn host_logs_written_to_a_file_carry_no_colour_codes() {
    let dir = temp_dir("nocolour");
    let mut child = plinth()
        .env("PLINTH_LOG", "info")
        .args(["serve", "--listen", "127.0.0.1:0", "--workspace"])
        .arg(dir.join("ws"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("listening"), "{line}");
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    child.wait().unwrap();
    assert!(stderr.contains("listening"), "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "escape codes in a log file: {stderr:?}");
}

#[test]
fn a_failed_redeploy_keeps_serving_the_previous_deployment_and_says_so() {
    let dir = temp_dir("redeploy-fails");
    let host = TestHost::start(&dir.join("ws"), &[]);
    host.register_diabetes();
    let dc = Dc::test().no_auth().write(&dir, "dc.json");
    host.deploy("diabetes:1", "ridge", &dc);
    let url = host.score_url("ridge");
    assert_eq!(score(&url, None, &sample_body()).status, 200);
    // A model ONNX Runtime cannot load: the new deployment fails.
    let broken = dir.join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("model.onnx"), b"not an onnx model").unwrap();
    host.run(&[
        "model",
        "register",
        "--name",
        "broken",
        "--path",
        broken.to_str().unwrap(),
    ]);
    let out = host
        .cli()
        .args([
            "deploy",
            "-m",
            "broken:1",
            "-n",
            "ridge",
            "--dc",
            dc.to_str().unwrap(),
            "--overwrite",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("failed to deploy") && err.contains("it still serves its previous deployment (diabetes:1)"),
        "{err}"
    );
    // One story everywhere: it answers with the previous model, and says so.
    assert_eq!(score(&url, None, &sample_body()).status, 200);
    let list = host.run_json(&["service", "list"]);
    assert_eq!(list[0]["servingPrevious"], true, "{list}");
    assert_eq!(list[0]["models"], serde_json::json!(["diabetes:1"]), "{list}");
    assert!(host.run(&["service", "list"]).contains("Failed (serving previous)"));
    let logs = host.run(&["service", "logs", "ridge"]);
    assert!(logs.contains("still serves its previous deployment"), "{logs}");
    // After a restart it serves the same, now healthy.
    let host = host.restart();
    host.wait_ready();
    assert_eq!(score(&host.score_url("ridge"), None, &sample_body()).status, 200);
    assert_eq!(host.run_json(&["service", "show", "ridge"])["state"], "Healthy");
}

#[test]
fn a_deploy_shows_its_progress_and_ignored_fields_once() {
    let dir = temp_dir("progress");
    let host = TestHost::start(&dir.join("ws"), &[]);
    host.register_diabetes();
    let dc = Dc::test()
        .no_auth()
        .with("computeType", "aks".into())
        .write(&dir, "dc.json");
    std::fs::write(
        dir.join("env.yml"),
        "name: env\ndependencies:\n  - python=3.8\n  - numpy=1.21\n  - pip:\n    - scikit-learn==1.0\n    - tensorflow==2.0\n",
    )
    .unwrap();
    let ic = write_json(&dir, "ic.json", &serde_json::json!({"condaFile": "env.yml"}));
    let deploy = || {
        host.cli()
            .args([
                "deploy",
                "--overwrite",
                "-m",
                "diabetes:1",
                "-n",
                "ridge",
                "--ic",
                ic.to_str().unwrap(),
                "--dc",
                dc.to_str().unwrap(),
            ])
            .output()
            .unwrap()
    };
    let first = deploy();
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let progress = String::from_utf8_lossy(&first.stderr);
    for step in [
        "deploying version 1",
        "loading 1 replica(s)",
        "version 1 deployed: Healthy",
        "ignored on a Plinth host: computeType",
    ] {
        assert!(progress.contains(step), "no '{step}' in {progress}");
    }
    assert!(
        progress.contains("env.yml is not installed on a Plinth host: tensorflow will not be importable")
            && progress.contains("numpy, scikit-learn come with the scientific Python runtime"),
        "{progress}"
    );
    let second = String::from_utf8_lossy(&deploy().stderr).into_owned();
    assert!(
        second.contains("deploying version 1") && !second.contains("computeType"),
        "{second}"
    );
    let logs = host.run(&["service", "logs", "ridge"]);
    assert_eq!(
        logs.matches("ignored on a Plinth host: computeType").count(),
        1,
        "{logs}"
    );
}

#[test]
fn the_rust_example_is_built_by_the_cli_itself() {
    // `plinth deploy --ic` with an entryScript naming a Rust crate runs cargo for wasm32-wasip2 itself
    // (as `plinth score --script DIR` does: score.rs); the README's one command is all a user types.
    let dir = temp_dir("rust-example");
    let host = TestHost::start(&dir.join("ws"), &[]);
    host.register_diabetes();
    let out = host.run(&[
        "deploy",
        "-m",
        "diabetes:1",
        "-n",
        "diabetes-rust",
        "--ic",
        "examples/diabetes/inferenceconfig-rust.json",
        "--dc",
        "examples/diabetes/deploymentconfig.json",
    ]);
    assert!(out.contains("Healthy"), "{out}");
    let (key, _) = host.keys("diabetes-rust");
    let r = score(&host.score_url("diabetes-rust"), Some(&key), &sample_body());
    assert_eq!(r.status, 200, "{}", r.body);
    let got: Vec<f64> = r.json()["predictions"]
        .as_array()
        .unwrap_or_else(|| panic!("no predictions: {}", r.body))
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    let want = crate::support::reference(&crate::support::repo().join("examples/diabetes/sample.json")).0;
    crate::support::assert_close(&got, &want, 1e-4);
}

/// Checks one `-o json` output against the schema README's "JSON output" describes.
fn check_schema(v: &serde_json::Value, at: &str) {
    match v {
        serde_json::Value::Array(items) => items.iter().for_each(|i| check_schema(i, at)),
        serde_json::Value::Object(fields) => {
            for (k, field) in fields {
                if k == "deploymentConfig" || k == "inferenceConfig" {
                    continue;
                }
                assert!(!k.contains('_'), "{at}: {k} is not camelCase");
                assert!(!field.is_null(), "{at}: {k} is null (absent means none)");
                if k.ends_with("At") {
                    let t = field.as_str().unwrap_or_default();
                    let ok = t.len() == 20 && t.as_bytes()[4] == b'-' && t.as_bytes()[10] == b'T' && t.ends_with('Z');
                    assert!(ok, "{at}: {k} = {field} is not RFC 3339");
                }
                if k == "created" || k == "updated" {
                    assert!(fields.contains_key(&format!("{k}At")), "{at}: {k} without {k}At");
                }
                if k == "scoringUri" || k == "swaggerUri" {
                    assert!(
                        field.as_str().unwrap().starts_with("http"),
                        "{at}: {k} = {field} is not absolute"
                    );
                }
                check_schema(field, at);
            }
        }
        _ => {}
    }
}

#[test]
fn json_output_follows_one_schema() {
    let dir = temp_dir("schema");
    let host = TestHost::start(&dir.join("ws"), &[]);
    host.register_diabetes();
    let dc = Dc::test()
        .with("authEnabled", false.into())
        .with("tokenAuthEnabled", true.into())
        .write(&dir, "dc.json");
    let deploy = host.run_json(&[
        "deploy",
        "-m",
        "diabetes:1",
        "-n",
        "ridge",
        "--dc",
        dc.to_str().unwrap(),
    ]);
    let token = host.run_json(&["service", "token", "ridge"]);
    let r = score(&host.score_url("ridge"), token["accessToken"].as_str(), &sample_body());
    assert_eq!(r.status, 200);
    let endpoint = host.run_json(&[
        "endpoint",
        "version",
        "update",
        "ridge",
        "1",
        "--rollback-error-rate",
        "0.5",
    ]);
    let outputs = [
        ("deploy", deploy),
        ("model list", host.run_json(&["model", "list"])),
        ("model show", host.run_json(&["model", "show", "diabetes:1"])),
        ("service list", host.run_json(&["service", "list"])),
        ("service show", host.run_json(&["service", "show", "ridge"])),
        ("service keys", host.run_json(&["service", "keys", "ridge"])),
        ("service token", token.clone()),
        ("endpoint version update", endpoint),
        ("endpoint show", host.run_json(&["endpoint", "show", "ridge"])),
        ("service logs", host.run_json(&["service", "logs", "ridge"])),
    ];
    for (at, v) in &outputs {
        check_schema(v, at);
    }
    assert!(
        token["expiresAt"].is_string() && token["refreshAt"].is_string(),
        "{token}"
    );
    let show = &outputs[4].1;
    assert!(show["createdAt"].is_string(), "{show}");
    // deploy -o json is the service as `service show` gives it, and whether it replaced one.
    let deployed = &outputs[0].1;
    assert_eq!(deployed["state"], "Healthy", "{deployed}");
    assert_eq!(deployed["name"], "ridge");
    assert_eq!(deployed["updatedExisting"], false);
    assert!(
        deployed["scoringUri"]
            .as_str()
            .is_some_and(|u| u.starts_with("http") && u.ends_with("/api/v1/service/ridge/score")),
        "{deployed}"
    );
    assert!(
        show["versions"][0]["stats"]["window"]["errorRate"].is_number(),
        "{show}"
    );
    // Logs as records: a request's line has its id, status and latency as fields.
    let logs = &outputs[9].1;
    let records = logs["records"].as_array().unwrap();
    let req = records.iter().find(|r| r["level"] == "REQ").expect("a request record");
    assert_eq!(req["status"], 200, "{req}");
    assert!(req["requestId"].is_string() && req["latencyUs"].is_u64(), "{req}");
    assert!(
        records
            .iter()
            .all(|r| r["time"].is_string() && r["message"].is_string())
    );
    // An error under -o json is JSON too, on stderr.
    let out = host
        .cli()
        .args(["service", "show", "nope", "-o", "json"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err: serde_json::Value = serde_json::from_slice(&out.stderr).expect("a JSON error on stderr");
    assert!(err["error"].as_str().unwrap().contains("nope"), "{err}");
}

#[test]
fn the_readme_walkthrough_runs_as_written() {
    let readme = std::fs::read_to_string(crate::support::repo().join("README.md")).unwrap();
    let block = readme
        .split("```sh\n")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .find(|b| b.contains("plinth serve --listen"))
        .expect("the README's walkthrough")
        .to_string();
    // A free port instead of 8080, and a wait for the host the block starts in the background.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let mut script = String::from("set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n");
    for line in block.replace("8080", &port.to_string()).lines() {
        script.push_str(line);
        script.push('\n');
        if line.starts_with("plinth serve") {
            script.push_str(&format!(
                "until curl -sf {url}/healthz >/dev/null; do sleep 0.1; done\n"
            ));
        }
    }
    let dir = temp_dir("readme");
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_plinth")).parent().unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let out = plinth_in_shell(&script)
        .env("PATH", path)
        .env("PLINTH_WORKSPACE", dir.join("ws"))
        .env("PLINTH_HOST", &url)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // score.py through `service run`, through curl, and the Rust script: three answers.
    assert_eq!(stdout.matches("predictions").count(), 3, "{stdout}");
}

#[test]
fn the_demo_stops_at_a_busy_port_and_runs_on_a_free_one() {
    let demo = |port: u16, ws: &std::path::Path| {
        plinth_in_shell("scripts/demo")
            .env("PLINTH_BIN", env!("CARGO_BIN_EXE_plinth"))
            .env("PLINTH_PORT", port.to_string())
            .env("PLINTH_WORKSPACE", ws)
            .output()
            .unwrap()
    };
    let dir = temp_dir("demo");
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let out = demo(busy.local_addr().unwrap().port(), &dir.join("ws1"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("plinth serve exited (is port"),
        "{err}"
    );
    drop(busy);
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = demo(free, &dir.join("ws2"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("\"predictions\""), "{stdout}");
}

#[test]
fn a_closed_standard_output_ends_the_cli_quietly() {
    // The reader is gone before the command writes (as `plinth controller crd | head -0` leaves it).
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = plinth()
        .args(["controller", "crd"])
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !err.contains("panicked"),
        "{:?}: {err}",
        out.status
    );
}
