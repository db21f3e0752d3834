//! The pod runner itself, without podman.

use super::*;

/// The runner itself, without podman: a Secret laid out and swapped as the kubelet does it, and what it
/// cannot run refused by name before anything runs.
#[test]
fn the_pod_runner_lays_out_secrets_as_the_kubelet_does_and_refuses_what_it_cannot_run() {
    use serde_json::json;
    let dir = crate::fixture::temp_dir("pod-runner");
    let deployment = |pod: Value| {
        json!({"kind": "Deployment", "metadata": {"name": "d", "namespace": "ml"},
               "spec": {"template": {"spec": pod}}})
    };
    let secret = |data: &str| json!({"kind": "Secret", "metadata": {"name": "s"}, "data": {"key": data}});
    let spec =
        json!({"containers": [], "volumes": [{"name": "keys", "secret": {"secretName": "s", "defaultMode": 0o440}}]});
    let mut pod = Pod::new(&[deployment(spec), secret("c2VjcmV0LWtleQ==")], "unused", &dir);
    let keys = pod.volume("keys").to_path_buf();
    assert_eq!(std::fs::read_to_string(keys.join("key")).unwrap(), "secret-key");
    assert_eq!(std::fs::read_link(keys.join("key")).unwrap(), Path::new("..data/key"));
    let first = std::fs::read_link(keys.join("..data")).unwrap();
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(keys.join("key")).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o440);
    pod.update(secret("cm90YXRlZCE="));
    assert_eq!(std::fs::read_to_string(keys.join("key")).unwrap(), "rotated!");
    assert_ne!(std::fs::read_link(keys.join("..data")).unwrap(), first);
    assert!(!keys.join(&first).exists(), "the old payload goes");

    let refused = [
        (
            json!({"containers": [], "volumes": [{"name": "h", "hostPath": {"path": "/"}}]}),
            "does not run hostPath volumes",
        ),
        (
            json!({"containers": [], "hostNetwork": true}),
            "does not know the pod field `hostNetwork`",
        ),
        (
            json!({"containers": [], "volumes": [{"name": "k", "secret": {"secretName": "absent"}}]}),
            "Secret absent is neither rendered nor given",
        ),
        (
            json!({"containers": [{"name": "c", "lifecycle": {}}]}),
            "does not know a container.lifecycle (container c)",
        ),
        (
            json!({"containers": [{"name": "c", "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}),
            "cannot give the resource nvidia.com/gpu",
        ),
        (
            json!({"containers": [{"name": "c", "volumeMounts": [{"name": "nope", "mountPath": "/x"}]}]}),
            "c mounts nope, which the pod does not have",
        ),
    ];
    for (spec, says) in refused {
        let objects = [deployment(spec)];
        let Err(err) = std::panic::catch_unwind(|| Pod::new(&objects, "unused", &dir)) else {
            panic!("not refused: {says}");
        };
        let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(msg.contains(says), "{msg}");
    }
    assert_eq!(quantity("1536Mi"), 1536.0 * 1024.0 * 1024.0);
    assert_eq!(quantity("4Gi"), 4.0 * 1024.0 * 1024.0 * 1024.0);
    assert_eq!(quantity("500m"), 0.5);
    assert_eq!(quantity("2"), 2.0);
    assert_eq!(decode_base64("YWI="), b"ab");
}
