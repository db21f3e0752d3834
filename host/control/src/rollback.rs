//! The rollback monitor: every half second it compares each treatment's recent requests with its
//! rollback policy, and asks the deployments actor to set a breaking treatment's traffic to 0 (the actor
//! re-reads the record, so a rollback never undoes another write).

use std::sync::Arc;
use std::time::Duration;

use plinth_router::Service;
use tokio::sync::mpsc;

use crate::context::Context;
use crate::deployments::Command;
use plinth_spec::record::ServiceRecord;

/// How often treatments are checked against their rollback policies.
const CHECK_EVERY: Duration = Duration::from_millis(500);

/// Starts the monitor; it stops with the deployments actor.
pub(crate) fn start(cx: Arc<Context>, actor: mpsc::WeakSender<Command>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(CHECK_EVERY);
        loop {
            tick.tick().await;
            let Some(actor) = actor.upgrade() else { break };
            let Ok(services) = cx.ws.services() else { continue };
            for record in services {
                let Some(live) = cx.router.get(&record.name) else {
                    continue;
                };
                for (version, event) in breaches(&record, &live) {
                    let rollback = Command::Rollback {
                        service: record.name.clone(),
                        version,
                        event,
                    };
                    if actor.send(rollback).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
}

/// Treatments of `record` whose recent error rate or p99 breaks their policy, each with its event line.
fn breaches(record: &ServiceRecord, live: &Service) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for v in record
        .versions
        .iter()
        .filter(|v| !v.control && !v.is_default && v.traffic > 0)
    {
        let Some(policy) = &v.rollback else { continue };
        let Ok(running) = live.version(&v.name) else { continue };
        let w = running.stats().window(Duration::from_secs(policy.window_secs));
        if w.requests < policy.min_requests {
            continue;
        }
        let error_breach = policy.max_error_rate.is_some_and(|max| w.error_rate > max);
        let latency_breach = policy.max_p99_ms.is_some_and(|max| w.p99_ms > max);
        if error_breach || latency_breach {
            let event = format!(
                "{} automatic rollback: version {} traffic {}% → 0% (error rate {:.3}, p99 {:.1} ms over {} requests in {} s; policy {})",
                plinth_spec::time::timestamp(),
                v.name,
                v.traffic,
                w.error_rate,
                w.p99_ms,
                w.requests,
                policy.window_secs,
                serde_json::to_string(policy).unwrap_or_default()
            );
            out.push((v.name.clone(), event));
        }
    }
    out
}
