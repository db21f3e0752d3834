use plinth_runtime::wasm::EngineConfig;

use std::path::PathBuf;

use plinth_router::{LogHub, Metrics, Router};
use plinth_runtime::wasm::WasmEngine;

use super::*;
use crate::{ControlOptions, ControlPlane, Workspace};

async fn control(tag: &str) -> (Arc<ControlPlane>, Arc<Workspace>, PathBuf) {
    let dir = std::env::temp_dir().join(format!("plinth-{tag}-{}", generate_key()));
    let ws = Arc::new(Workspace::open(&dir).unwrap());
    ws.put_service(&ServiceRecord::test("ep").with_split(80, 20)).unwrap();
    let engine = Arc::new(WasmEngine::new(EngineConfig::default()).unwrap());
    let cp = ControlPlane::new(
        ws.clone(),
        Arc::new(Router::new()),
        engine,
        Arc::new(LogHub::new()),
        Arc::new(Metrics::new()),
        ControlOptions::default(),
    );
    (cp, ws, dir)
}

#[tokio::test]
async fn a_rollback_never_undoes_a_key_regeneration() {
    let (cp, ws, dir) = control("rollback-keys").await;
    // The monitor decides on the record as it read it; the key is regenerated after that read.
    let seen_by_monitor = ws.service("ep").unwrap();
    let keys = cp
        .ask(|reply| Command::RegenKey {
            name: "ep".into(),
            which: "primary".into(),
            reply,
        })
        .await
        .unwrap();
    cp.send(Command::Rollback {
        service: "ep".into(),
        version: "green".into(),
        event: "rolled back".into(),
    })
    .await
    .unwrap();
    // A command is answered only after every command sent before it.
    cp.ask(|reply| Command::Describe { name: None, reply }).await.unwrap();
    let stored = ws.service("ep").unwrap();
    assert_ne!(keys.primary_key, seen_by_monitor.primary_key);
    assert_eq!(stored.primary_key, keys.primary_key, "the regenerated key is kept");
    assert_eq!(stored.secondary_key, seen_by_monitor.secondary_key);
    assert_eq!(stored.version("green").unwrap().traffic, 0);
    assert_eq!(stored.events, vec!["rolled back".to_string()]);
    // A second rollback of the same version changes nothing.
    cp.send(Command::Rollback {
        service: "ep".into(),
        version: "green".into(),
        event: "again".into(),
    })
    .await
    .unwrap();
    cp.ask(|reply| Command::Describe { name: None, reply }).await.unwrap();
    assert_eq!(ws.service("ep").unwrap().events.len(), 1);
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn concurrent_regenerations_are_each_kept_in_turn() {
    let (cp, ws, dir) = control("regen").await;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let cp = cp.clone();
        let which = if i % 2 == 0 { "primary" } else { "secondary" };
        tasks.push(tokio::spawn(async move {
            cp.ask(|reply| Command::RegenKey {
                name: "ep".into(),
                which: which.into(),
                reply,
            })
            .await
            .unwrap()
        }));
    }
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    let stored = ws.service("ep").unwrap();
    // Whatever order the actor took them in, the stored pair is one it answered.
    assert!(
        answers
            .iter()
            .any(|k| k.primary_key == stored.primary_key && k.secondary_key == stored.secondary_key),
        "stored keys were never handed out"
    );
    std::fs::remove_dir_all(dir).unwrap();
}
