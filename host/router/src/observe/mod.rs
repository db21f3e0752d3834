//! What the router tells about itself: Prometheus metrics, request and service logs, model data
//! collection, and the one place a finished request is counted and logged.

mod collect;
mod logs;
mod metrics;

use std::sync::Arc;
use std::time::Instant;

use http::StatusCode;

pub use self::collect::{Collector, QUEUE as COLLECT_QUEUE, Record, Sampling};
pub use self::logs::{LINES_KEPT, LogHub, is_service_event};
pub use self::metrics::{Metrics, VersionSeries};

/// The version that served a request, as the observer records it.
#[derive(Clone, Copy)]
pub(crate) struct Served<'v> {
    pub(crate) name: &'v Arc<str>,
    /// The version's own series in this host's registry, when it has them.
    pub(crate) series: Option<&'v VersionSeries>,
}

/// Counts and logs scoring requests into a host's metrics and (when there is one) its service logs.
pub(crate) struct Observer {
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) logs: Option<Arc<LogHub>>,
}

impl Observer {
    /// One finished scoring request.
    pub(crate) fn request(
        &self,
        service: &str,
        version: Option<Served<'_>>,
        status: StatusCode,
        started: Instant,
        request_id: &str,
        error: Option<&crate::Error>,
    ) {
        let latency = started.elapsed();
        let version_name: &str = version.map(|v| v.name.as_ref()).unwrap_or("-");
        match version.and_then(|v| v.series) {
            Some(series) => {
                if status == StatusCode::OK {
                    series.ok.inc();
                } else {
                    self.metrics
                        .requests
                        .with_label_values(&[service, version_name, status.as_str()])
                        .inc();
                }
                series.seconds.observe(latency.as_secs_f64());
            }
            None => {
                self.metrics
                    .requests
                    .with_label_values(&[service, version_name, status.as_str()])
                    .inc();
                self.metrics
                    .request_seconds
                    .with_label_values(&[service, version_name])
                    .observe(latency.as_secs_f64());
            }
        }
        let latency_us = latency.as_micros() as u64;
        tracing::info!(target: "plinth::request", request_id, service, version = version_name, status = status.as_u16(), latency_us, "request");
        if let Some(logs) = &self.logs {
            let shared;
            let name = match version {
                Some(v) => v.name,
                None => {
                    shared = Arc::from("-");
                    &shared
                }
            };
            logs.request(
                service,
                request_id,
                name,
                status.as_u16(),
                latency_us,
                error.map(|e| e as &dyn std::fmt::Display),
            );
        }
    }

    /// Counts a request of `version` in flight until the guard drops (also when the client leaves).
    pub(crate) fn in_flight<'v>(&self, service: &str, version: Served<'v>) -> InFlight<'v> {
        let gauge = match version.series {
            Some(series) => InFlight::Series(&series.in_flight),
            None => InFlight::Looked(self.metrics.in_flight.with_label_values(&[service, version.name])),
        };
        gauge.gauge().inc();
        gauge
    }
}

/// Holds a version's in-flight gauge up while a request is served: the version's own series, or (for a
/// version that reports to another registry too) the one looked up by label.
pub(crate) enum InFlight<'v> {
    Series(&'v prometheus::IntGauge),
    Looked(prometheus::IntGauge),
}

impl InFlight<'_> {
    fn gauge(&self) -> &prometheus::IntGauge {
        match self {
            InFlight::Series(g) => g,
            InFlight::Looked(g) => g,
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.gauge().dec();
    }
}
