//! Reconciler and scaler tests against a mocked API server: a `tower_test` mock service stands in for
//! Kubernetes, and each scenario checks every request's method, path and body in order and answers it.

use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use kube::{Client, Resource, ResourceExt};
use serde_json::{Value, json};
use tower_test::mock;

use crate::controller::{Context, error_policy, reconcile};
use crate::crd::{PlinthService, PlinthServiceSpec};
use crate::metrics::Metrics;
use crate::render::{FINALIZER, RenderOptions};
use crate::scale::{HostLoad, LoadReader, Scaler, Tick};

const SHA: &str = "3f2a3f2a3f2a3f2a3f2a3f2a3f2a3f2a3f2a3f2a3f2a3f2a3f2a3f2a3f2a3f2a";
const BASE: &str = "/apis/plinth.dev/v1alpha1/namespaces/ml/plinthservices";

type Handle = mock::Handle<Request<Body>, Response<Body>>;

/// The mocked API server's side: takes requests one by one.
struct ApiServer(Handle);

/// One request as the server saw it.
struct Seen {
    method: Method,
    path: String,
    query: String,
    body: Value,
}

impl ApiServer {
    async fn next(&mut self) -> (Seen, mock::SendResponse<Response<Body>>) {
        let (request, send) = tokio::time::timeout(Duration::from_secs(5), self.0.next_request())
            .await
            .expect("the controller made no further request")
            .expect("the client is gone");
        let method = request.method().clone();
        let path = request.uri().path().to_string();
        let query = request.uri().query().unwrap_or_default().to_string();
        let bytes = request.into_body().collect_bytes().await.unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        (
            Seen {
                method,
                path,
                query,
                body,
            },
            send,
        )
    }

    /// Expects `method path` and answers `status` with `body`; returns what was sent.
    async fn expect(&mut self, method: Method, path: &str, status: StatusCode, answer: Value) -> Seen {
        let (seen, send) = self.next().await;
        assert_eq!(
            (&seen.method, seen.path.as_str()),
            (&method, path),
            "query {}",
            seen.query
        );
        send.send_response(
            Response::builder()
                .status(status)
                .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                .unwrap(),
        );
        seen
    }

    /// An event the recorder publishes.
    async fn expect_event(&mut self, reason: &str) -> Seen {
        let seen = self
            .expect(
                Method::POST,
                "/apis/events.k8s.io/v1/namespaces/ml/events",
                StatusCode::CREATED,
                json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e"}}),
            )
            .await;
        assert_eq!(seen.body["reason"], reason, "{}", seen.body);
        seen
    }

    /// Nothing more was asked.
    async fn expect_no_more(&mut self) {
        if let Ok(Some((r, _))) = tokio::time::timeout(Duration::from_millis(200), self.0.next_request()).await {
            panic!("unexpected request {} {}", r.method(), r.uri());
        }
    }
}

fn context() -> (Arc<Context>, ApiServer) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "ml");
    let cx = Context::new(client, Arc::new(Metrics::default()), RenderOptions::default());
    (Arc::new(cx), ApiServer(handle))
}

fn service(spec: Value) -> PlinthService {
    let spec: PlinthServiceSpec = serde_json::from_value(spec).unwrap();
    let mut ps = PlinthService::new("diabetes", spec);
    ps.metadata.namespace = Some("ml".into());
    ps.metadata.uid = Some("0b9c2a4e-1111-2222-3333-444455556666".into());
    ps.metadata.generation = Some(3);
    ps.meta_mut().resource_version = Some("42".into());
    ps
}

/// The resource as the API server answers a patch of it.
fn answer() -> Value {
    serde_json::to_value(with_finalizer(service(https_spec()))).unwrap()
}

fn with_finalizer(mut ps: PlinthService) -> PlinthService {
    ps.metadata.finalizers = Some(vec![FINALIZER.into()]);
    ps
}

fn https_spec() -> Value {
    json!({
        "package": {"uri": "https://models.example.com/diabetes.tar", "sha256": SHA},
        "inferenceConfig": {"entryScript": "score.py"},
        "deploymentConfig": {
            "containerResourceRequirements": {"cpu": 0.5, "memoryInGB": 1.5},
            "autoScaler": {"autoscaleEnabled": true, "minReplicas": 2, "maxReplicas": 6, "targetUtilization": 70},
        },
    })
}

fn deployment_answer(replicas: i32, ready: i32) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "diabetes", "namespace": "ml"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"plinth.dev/service": "diabetes"}},
                 "template": {"metadata": {}, "spec": {"containers": []}}},
        "status": {"replicas": replicas, "readyReplicas": ready, "updatedReplicas": replicas},
    })
}

fn status_of(seen: &Seen) -> &Value {
    &seen.body["status"]
}

fn condition<'a>(status: &'a Value, kind: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == kind)
        .unwrap_or_else(|| panic!("no {kind} condition in {status}"))
}

/// The objects of a first apply, in order; returns the Deployment sent.
async fn expect_apply(api: &mut ApiServer, secret_exists: bool) -> Value {
    // The controller never reads Secrets: it creates the keys' one, and a 409 means it is there.
    let (code, reply) = if secret_exists {
        (
            StatusCode::CONFLICT,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "AlreadyExists", "code": 409, "message": "secrets \"diabetes-keys\" already exists"}),
        )
    } else {
        (
            StatusCode::CREATED,
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "diabetes-keys"}}),
        )
    };
    let created = api
        .expect(Method::POST, "/api/v1/namespaces/ml/secrets", code, reply)
        .await;
    let keys = &created.body["stringData"];
    assert_eq!(created.body["metadata"]["name"], "diabetes-keys");
    assert_eq!(keys["primaryKey"].as_str().unwrap().len(), 64, "{}", created.body);
    assert_ne!(keys["primaryKey"], keys["secondaryKey"]);
    assert_eq!(created.body["metadata"]["ownerReferences"][0]["kind"], "PlinthService");
    if !secret_exists {
        api.expect_event("KeysCreated").await;
    }
    let cm = api
        .expect(
            Method::PATCH,
            "/api/v1/namespaces/ml/configmaps/diabetes-config",
            StatusCode::OK,
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "diabetes-config"}}),
        )
        .await;
    assert!(
        cm.query.contains("fieldManager=plinth-controller") && cm.query.contains("force=true"),
        "{}",
        cm.query
    );
    let manifest: Value = serde_json::from_str(cm.body["data"]["service.json"].as_str().unwrap()).unwrap();
    assert_eq!(manifest["name"], "diabetes");
    assert_eq!(manifest["versions"][0]["package"]["sha256"], SHA);
    let d = api
        .expect(
            Method::PATCH,
            "/apis/apps/v1/namespaces/ml/deployments/diabetes",
            StatusCode::OK,
            deployment_answer(1, 0),
        )
        .await;
    assert!(
        d.query.contains("fieldManager=plinth-controller") && d.query.contains("force=true"),
        "{}",
        d.query
    );
    let c = &d.body["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(
        c["startupProbe"]["httpGet"]["path"], "/readyz",
        "slow loads: ready within the startup window"
    );
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert!(
        d.body["spec"].get("replicas").is_none(),
        "the Deployment leaves replicas to the scaler: {}",
        d.body["spec"]
    );
    assert_eq!(
        d.body["metadata"]["ownerReferences"][0]["uid"],
        "0b9c2a4e-1111-2222-3333-444455556666"
    );
    let svc = api
        .expect(
            Method::PATCH,
            "/api/v1/namespaces/ml/services/diabetes",
            StatusCode::OK,
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "diabetes"}}),
        )
        .await;
    assert_eq!(svc.body["spec"]["ports"][0]["port"], 80);
    let status = api
        .expect(
            Method::PATCH,
            &format!("{BASE}/diabetes/status"),
            StatusCode::OK,
            answer(),
        )
        .await;
    assert!(status.query.contains("fieldManager=plinth-controller") && status.query.contains("force=true"));
    for scalers in ["desiredReplicas", "utilization", "lastScaleTime"] {
        assert!(status_of(&status).get(scalers).is_none(), "{scalers} is the scaler's");
    }
    let st = status_of(&status);
    assert_eq!(st["observedGeneration"], 3);
    assert_eq!(st["selector"], "plinth.dev/service=diabetes");
    assert_eq!(
        st["scoringUri"],
        "http://diabetes.ml.svc.cluster.local/api/v1/service/diabetes/score"
    );
    assert_eq!(condition(st, "Ready")["status"], "False");
    assert_eq!(condition(st, "Progressing")["status"], "True");
    d.body
}

#[tokio::test]
async fn a_first_reconcile_adds_the_finalizer() {
    let (cx, mut api) = context();
    let ps = service(https_spec());
    let server = tokio::spawn(async move {
        let seen = api
            .expect(
                Method::PATCH,
                &format!("{BASE}/diabetes"),
                StatusCode::OK,
                serde_json::to_value(with_finalizer(service(https_spec()))).unwrap(),
            )
            .await;
        // A JSON patch that adds the finalizer (guarded by a test of the current list).
        assert!(seen.body.to_string().contains(FINALIZER), "{}", seen.body);
        api.expect_no_more().await;
    });
    reconcile(Arc::new(ps), cx).await.unwrap();
    server.await.unwrap();
}

#[tokio::test]
async fn an_apply_creates_the_secret_once_and_applies_the_objects_without_replicas() {
    let (cx, mut api) = context();
    let ps = with_finalizer(service(https_spec()));
    let server = tokio::spawn(async move {
        let d = expect_apply(&mut api, false).await;
        let init = &d["spec"]["template"]["spec"]["initContainers"][0];
        assert_eq!(
            init["args"],
            json!([
                "package",
                "fetch",
                "https://models.example.com/diabetes.tar",
                "--sha256",
                SHA,
                "--to",
                "/var/lib/plinth/packages"
            ])
        );
        api.expect_no_more().await;
        api
    });
    reconcile(Arc::new(ps.clone()), cx.clone()).await.unwrap();
    let mut api = server.await.unwrap();
    // The next reconcile finds the Secret and leaves it alone.
    let server = tokio::spawn(async move {
        expect_apply(&mut api, true).await;
        api.expect_no_more().await;
    });
    reconcile(Arc::new(ps), cx).await.unwrap();
    server.await.unwrap();
}

#[tokio::test]
async fn a_gpu_spec_and_a_claim_reach_the_pod() {
    let (cx, mut api) = context();
    let mut spec = https_spec();
    spec["package"]["uri"] = json!("pvc://models/diabetes/p.tar");
    spec["deploymentConfig"]["gpuCores"] = json!(1);
    spec["tolerations"] = json!([{"key": "pool", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]);
    let ps = with_finalizer(service(spec));
    let server = tokio::spawn(async move {
        let d = expect_apply(&mut api, true).await;
        let pod = &d["spec"]["template"]["spec"];
        let init: Vec<&Value> = pod["initContainers"].as_array().unwrap().iter().collect();
        assert!(
            init.len() == 1 && init[0]["name"] == "warm",
            "a claim is mounted, not fetched: {init:?}"
        );
        assert_eq!(
            init[0]["resources"]["limits"]["nvidia.com/gpu"], "1",
            "the models load on the GPU"
        );
        assert!(
            pod["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|v| v["persistentVolumeClaim"]["claimName"] == "models")
        );
        let c = &pod["containers"][0];
        assert_eq!(c["resources"]["limits"]["nvidia.com/gpu"], "1");
        let tolerations = pod["tolerations"].as_array().unwrap();
        assert!(tolerations.iter().any(|t| t["key"] == "nvidia.com/gpu"));
        assert!(tolerations.iter().any(|t| t["key"] == "pool"));
        assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        api.expect_no_more().await;
    });
    reconcile(Arc::new(ps), cx).await.unwrap();
    server.await.unwrap();
}

#[tokio::test]
async fn an_invalid_spec_only_writes_its_status() {
    let (cx, mut api) = context();
    let mut spec = https_spec();
    spec["deploymentConfig"]["autoScaler"]["targetUtilization"] = json!(300);
    let mut ps = with_finalizer(service(spec));
    // What still runs stays described.
    ps.status = Some(crate::crd::PlinthServiceStatus {
        replicas: Some(2),
        selector: Some("plinth.dev/service=diabetes".into()),
        ..Default::default()
    });
    let server = tokio::spawn(async move {
        let seen = api
            .expect(
                Method::PATCH,
                &format!("{BASE}/diabetes/status"),
                StatusCode::OK,
                answer(),
            )
            .await;
        let ready = condition(status_of(&seen), "Ready");
        assert_eq!(
            (ready["status"].as_str(), ready["reason"].as_str()),
            (Some("False"), Some("InvalidSpec"))
        );
        assert!(
            ready["message"]
                .as_str()
                .unwrap()
                .starts_with("spec.deploymentConfig: autoScaler.targetUtilization"),
            "{ready}"
        );
        assert_eq!(status_of(&seen)["replicas"], 2);
        assert_eq!(status_of(&seen)["selector"], "plinth.dev/service=diabetes");
        api.expect_event("InvalidSpec").await;
        api.expect_no_more().await;
    });
    let action = reconcile(Arc::new(ps), cx).await.unwrap();
    assert_eq!(action, kube::runtime::controller::Action::await_change());
    server.await.unwrap();
}

#[tokio::test]
async fn a_deletion_removes_the_finalizer() {
    let (cx, mut api) = context();
    let mut ps = with_finalizer(service(https_spec()));
    ps.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::now(),
    ));
    let server = tokio::spawn(async move {
        api.expect_event("Deleted").await;
        let seen = api
            .expect(
                Method::PATCH,
                &format!("{BASE}/diabetes"),
                StatusCode::OK,
                serde_json::to_value(service(https_spec())).unwrap(),
            )
            .await;
        let ops = seen.body.as_array().expect("a JSON patch");
        assert!(
            ops.iter()
                .any(|op| op["op"] == "remove" && op["path"] == "/metadata/finalizers/0"),
            "{}",
            seen.body
        );
        api.expect_no_more().await;
    });
    reconcile(Arc::new(ps), cx).await.unwrap();
    server.await.unwrap();
}

#[tokio::test]
async fn an_api_error_requeues_with_backoff_and_is_counted() {
    let (cx, mut api) = context();
    let ps = Arc::new(with_finalizer(service(https_spec())));
    let server = tokio::spawn(async move {
        api.expect(
            Method::POST,
            "/api/v1/namespaces/ml/secrets",
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "InternalError", "code": 500, "message": "etcd is down"}),
        )
        .await;
        api.expect_no_more().await;
    });
    let error = reconcile(ps.clone(), cx.clone()).await.unwrap_err();
    server.await.unwrap();
    assert!(error.to_string().contains("etcd is down"), "{error}");
    let first = error_policy(ps.clone(), &error, cx.clone());
    let second = error_policy(ps, &error, cx.clone());
    assert_eq!(
        first,
        kube::runtime::controller::Action::requeue(Duration::from_secs(5))
    );
    assert_eq!(
        second,
        kube::runtime::controller::Action::requeue(Duration::from_secs(10))
    );
    assert_eq!(cx.metrics.failures.with_label_values(&["kube"]).get(), 2);
    assert!(
        cx.metrics
            .render()
            .contains("plinth_controller_reconcile_failures_total{error=\"kube\"} 2")
    );
}

fn pod(ip: &str) -> Value {
    json!({
        "metadata": {"name": format!("diabetes-{ip}"), "labels": {"plinth.dev/service": "diabetes"}},
        "spec": {"containers": [{"name": "plinth", "ports": [{"name": "http", "containerPort": 8080}]}]},
        "status": {"phase": "Running", "podIP": ip},
    })
}

/// A reader that reports `utilization` for every host.
fn steady(utilization: f64) -> LoadReader {
    Arc::new(move |_| {
        Box::pin(async move {
            Ok(HostLoad {
                replicas: 1,
                busy: (utilization >= 1.0) as u64,
                waiting: 0,
                utilization,
            })
        })
    })
}

/// One scaler tick's reads: the Deployment's scale and its pods.
async fn expect_reads(api: &mut ApiServer, replicas: i32, pods: usize) {
    api.expect(
        Method::GET,
        "/apis/apps/v1/namespaces/ml/deployments/diabetes/scale",
        StatusCode::OK,
        json!({"apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": {"name": "diabetes"}, "spec": {"replicas": replicas}, "status": {"replicas": replicas}}),
    )
    .await;
    let items: Vec<Value> = (0..pods).map(|i| pod(&format!("10.0.0.{}", i + 1))).collect();
    let list = api
        .expect(
            Method::GET,
            "/api/v1/namespaces/ml/pods",
            StatusCode::OK,
            json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items}),
        )
        .await;
    assert!(
        list.query.contains("labelSelector=plinth.dev%2Fservice%3Ddiabetes"),
        "{}",
        list.query
    );
}

async fn expect_scale_to(api: &mut ApiServer, replicas: i32) {
    let seen = api
        .expect(
            Method::PATCH,
            "/apis/apps/v1/namespaces/ml/deployments/diabetes/scale",
            StatusCode::OK,
            json!({"apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": {"name": "diabetes"}, "spec": {"replicas": replicas}}),
        )
        .await;
    assert_eq!(seen.body, json!({"spec": {"replicas": replicas}}));
    api.expect_event("Scaled").await;
}

#[tokio::test]
async fn high_utilization_scales_up_at_once_within_max() {
    let (cx, mut api) = context();
    let ps = with_finalizer(service(https_spec()));
    let scaler = Scaler::new(steady(3.0), Duration::from_secs(60));
    let server = tokio::spawn(async move {
        expect_reads(&mut api, 2, 2).await;
        // 2 pods at 300% against 70%: ceil(2 × 3 / 0.7) = 9, capped at maxReplicas 6.
        expect_scale_to(&mut api, 6).await;
        let status = api
            .expect(
                Method::PATCH,
                &format!("{BASE}/diabetes/status"),
                StatusCode::OK,
                answer(),
            )
            .await;
        assert_eq!(status.body["status"]["desiredReplicas"], 6);
        assert_eq!(status.body["status"]["utilization"], 300.0);
        assert!(status.body["status"]["lastScaleTime"].is_string());
        api.expect_no_more().await;
    });
    let tick = scaler.tick(&cx, &ps, Duration::ZERO).await.unwrap();
    server.await.unwrap();
    let Tick::Decided(d) = tick else { panic!("{tick:?}") };
    assert_eq!((d.current, d.desired), (2, 6));
    assert_eq!(cx.metrics.scalings.with_label_values(&["up"]).get(), 1);
}

#[tokio::test]
async fn low_utilization_waits_out_the_window_before_scaling_down() {
    let (cx, mut api) = context();
    let ps = with_finalizer(service(https_spec()));
    let scaler = Scaler::new(steady(0.1), Duration::from_secs(60));
    let server = tokio::spawn(async move {
        // Inside the window: reads and a status, no /scale.
        for _ in 0..2 {
            expect_reads(&mut api, 4, 4).await;
            let status = api
                .expect(
                    Method::PATCH,
                    &format!("{BASE}/diabetes/status"),
                    StatusCode::OK,
                    answer(),
                )
                .await;
            assert_eq!(status.body["status"]["desiredReplicas"], 4);
        }
        // After it: one pod less (down is one step at a time).
        expect_reads(&mut api, 4, 4).await;
        expect_scale_to(&mut api, 3).await;
        api.expect(
            Method::PATCH,
            &format!("{BASE}/diabetes/status"),
            StatusCode::OK,
            answer(),
        )
        .await;
        api.expect_no_more().await;
    });
    for (at, want) in [(0, 4), (59, 4), (61, 3)] {
        let Tick::Decided(d) = scaler.tick(&cx, &ps, Duration::from_secs(at)).await.unwrap() else {
            panic!("no decision")
        };
        assert_eq!(d.desired, want, "at {at} s: {d:?}");
    }
    server.await.unwrap();
}

#[tokio::test]
async fn with_autoscaling_off_the_fixed_count_is_applied() {
    let (cx, mut api) = context();
    let mut spec = https_spec();
    spec["deploymentConfig"]["autoScaler"]["autoscaleEnabled"] = json!(false);
    spec["replicas"] = json!(3);
    let ps = with_finalizer(service(spec));
    let scaler = Scaler::new(steady(0.0), Duration::from_secs(60));
    let server = tokio::spawn(async move {
        api.expect(
            Method::GET,
            "/apis/apps/v1/namespaces/ml/deployments/diabetes/scale",
            StatusCode::OK,
            json!({"apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": {"name": "diabetes"}, "spec": {"replicas": 1}}),
        )
        .await;
        expect_scale_to(&mut api, 3).await;
        api.expect_no_more().await;
    });
    let tick = scaler.tick(&cx, &ps, Duration::ZERO).await.unwrap();
    assert_eq!(tick, Tick::Fixed { current: 1, desired: 3 });
    server.await.unwrap();
    let _ = ps.name_any();
}

#[tokio::test]
async fn an_object_the_api_server_refuses_shows_as_an_invalid_spec_not_a_retry_loop() {
    let (cx, mut api) = context();
    let ps = with_finalizer(service(https_spec()));
    let server = tokio::spawn(async move {
        api.expect(
            Method::POST,
            "/api/v1/namespaces/ml/secrets",
            StatusCode::CREATED,
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "diabetes-keys"}}),
        )
        .await;
        api.expect_event("KeysCreated").await;
        api.expect(
            Method::PATCH,
            "/api/v1/namespaces/ml/configmaps/diabetes-config",
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Invalid", "code": 422,
                   "message": "ConfigMap \"diabetes-config\" is invalid: metadata.annotations: Too long"}),
        )
        .await;
        let seen = api
            .expect(
                Method::PATCH,
                &format!("{BASE}/diabetes/status"),
                StatusCode::OK,
                answer(),
            )
            .await;
        let ready = condition(status_of(&seen), "Ready");
        assert_eq!(ready["reason"], "InvalidSpec");
        assert!(ready["message"].as_str().unwrap().contains("Too long"), "{ready}");
        api.expect_event("InvalidSpec").await;
        api.expect_no_more().await;
    });
    let action = reconcile(Arc::new(ps), cx).await.unwrap();
    assert_eq!(action, kube::runtime::controller::Action::await_change());
    server.await.unwrap();
}

#[tokio::test]
async fn a_scale_up_waits_for_the_pods_of_the_last_one_to_serve() {
    let (cx, mut api) = context();
    let ps = with_finalizer(service(https_spec()));
    // 3 pods wanted, 2 serving at 300%, the third still loading (it reports no replica yet).
    let reader: LoadReader = Arc::new(|addr: std::net::SocketAddr| {
        Box::pin(async move {
            let loading = addr.ip().to_string() == "10.0.0.3";
            Ok(HostLoad {
                replicas: if loading { 0 } else { 1 },
                busy: 1,
                waiting: 2,
                utilization: if loading { 0.0 } else { 3.0 },
            })
        })
    });
    let scaler = Scaler::new(reader, Duration::from_secs(60));
    let server = tokio::spawn(async move {
        expect_reads(&mut api, 3, 3).await;
        api.expect_no_more().await;
    });
    let tick = scaler.tick(&cx, &ps, Duration::ZERO).await.unwrap();
    assert_eq!(tick, Tick::Skipped("pods still starting"));
    server.await.unwrap();
}
