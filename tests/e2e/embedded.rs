//! The embedding API, as `examples/embedded` uses it: a router over your own package on your own listener.

#[path = "../../examples/embedded/main.rs"]
#[allow(dead_code)]
mod example;

use crate::fixture::{curl, sample_body};
use crate::support::repo;

#[test]
fn an_embedded_router_serves_on_its_own_listener() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let url = format!(
        "http://{}/api/v1/service/diabetes/score",
        listener.local_addr().unwrap()
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = rt.spawn(async move {
        example::serve_diabetes(&repo(), listener, async {
            let _ = stopped.await;
        })
        .await
    });
    let r = std::thread::spawn(move || curl(&url, &["--data-binary", &sample_body()]))
        .join()
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.json()["variable"].as_array().unwrap().len() == 2);
    stop.send(()).unwrap();
    rt.block_on(server).unwrap().unwrap();
}
