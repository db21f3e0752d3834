//! Prometheus metrics: `plinth_<noun>_<unit>` with small, fixed label sets, in a registry per host.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder, exponential_buckets,
};

/// The series a request of one version touches.
pub struct VersionSeries {
    /// `plinth_requests_total` with status 200 (other statuses are looked up when they happen).
    pub ok: IntCounter,
    pub seconds: Histogram,
    pub in_flight: IntGauge,
    pub queue_wait: Histogram,
}

pub struct Metrics {
    registry: Registry,
    /// Requests by service, version and HTTP status.
    pub requests: IntCounterVec,
    /// End-to-end request latency.
    pub request_seconds: HistogramVec,
    /// Time spent waiting for a free replica.
    pub queue_wait_seconds: HistogramVec,
    pub in_flight: IntGaugeVec,
    pub replicas: IntGaugeVec,
    /// Utilization in percent (busy replicas, waiting requests counted as busy, over current replicas).
    pub utilization_percent: IntGaugeVec,
    /// Scaling decisions by direction (`up`, `down`).
    pub scaling_decisions: IntCounterVec,
    /// Entry script calls stopped by the host, by kind (`deadline`, `memory`, `trap`).
    pub script_traps: IntCounterVec,
    /// Time to load a replica's package (models, compiled script).
    pub model_load_seconds: HistogramVec,
    /// Model data collection: records written and dropped.
    pub collected_records: IntCounterVec,
    pub collection_dropped: IntCounterVec,
    /// Rows per dynamic batch, and how long its oldest request waited to be batched.
    pub batch_size: HistogramVec,
    pub batch_queue_seconds: HistogramVec,
    /// Open client connections, and connections the host closed by reason (`header_timeout`, `idle`,
    /// `shed`, `turned_away`).
    pub open_connections: IntGauge,
    pub connections_closed: IntCounterVec,
    /// 1 for the execution provider serving each model of each version.
    pub model_provider: IntGaugeVec,
    /// 1 for a model whose listed providers were not all usable, so a later one (cpu) serves it.
    pub model_provider_fallback: IntGaugeVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let sv = &["service", "version"];
        let latency = exponential_buckets(0.000_05, 2.0, 20).expect("valid buckets");
        let m = Metrics {
            requests: IntCounterVec::new(
                Opts::new("plinth_requests_total", "Requests by service, version and HTTP status"),
                &["service", "version", "status"],
            )
            .unwrap(),
            request_seconds: HistogramVec::new(
                HistogramOpts::new("plinth_request_duration_seconds", "Request latency, end to end")
                    .buckets(latency.clone()),
                sv,
            )
            .unwrap(),
            queue_wait_seconds: HistogramVec::new(
                HistogramOpts::new("plinth_queue_wait_seconds", "Time waiting for a free replica").buckets(latency),
                sv,
            )
            .unwrap(),
            in_flight: IntGaugeVec::new(
                Opts::new("plinth_in_flight_requests", "Requests being served or waiting"),
                sv,
            )
            .unwrap(),
            replicas: IntGaugeVec::new(Opts::new("plinth_replicas", "Current replicas"), sv).unwrap(),
            utilization_percent: IntGaugeVec::new(
                Opts::new(
                    "plinth_utilization_percent",
                    "Busy replicas (waiting requests count as busy) over current replicas, in percent",
                ),
                sv,
            )
            .unwrap(),
            scaling_decisions: IntCounterVec::new(
                Opts::new("plinth_scaling_decisions_total", "Autoscaler decisions"),
                &["service", "version", "direction"],
            )
            .unwrap(),
            script_traps: IntCounterVec::new(
                Opts::new("plinth_script_traps_total", "Entry script calls stopped by the host"),
                &["service", "version", "kind"],
            )
            .unwrap(),
            model_load_seconds: HistogramVec::new(
                HistogramOpts::new("plinth_model_load_seconds", "Time to load a replica")
                    .buckets(exponential_buckets(0.001, 4.0, 10).expect("valid buckets")),
                sv,
            )
            .unwrap(),
            collected_records: IntCounterVec::new(
                Opts::new(
                    "plinth_collected_records_total",
                    "Model data collection records written",
                ),
                &["service"],
            )
            .unwrap(),
            collection_dropped: IntCounterVec::new(
                Opts::new(
                    "plinth_collection_dropped_total",
                    "Model data collection records not written: the queue was full, or the write failed",
                ),
                &["service", "reason"],
            )
            .unwrap(),
            batch_size: HistogramVec::new(
                HistogramOpts::new("plinth_batch_size", "Rows per dynamic batch")
                    .buckets(exponential_buckets(1.0, 2.0, 13).expect("valid buckets")),
                sv,
            )
            .unwrap(),
            batch_queue_seconds: HistogramVec::new(
                HistogramOpts::new("plinth_batch_queue_seconds", "Wait of a batch's oldest request")
                    .buckets(exponential_buckets(0.000_01, 2.0, 16).expect("valid buckets")),
                sv,
            )
            .unwrap(),
            open_connections: IntGauge::new("plinth_open_connections", "Open client connections").unwrap(),
            connections_closed: IntCounterVec::new(
                Opts::new(
                    "plinth_connections_closed_total",
                    "Connections the host closed: slow head, idle, shed at the cap, turned away when full",
                ),
                &["reason"],
            )
            .unwrap(),
            model_provider: IntGaugeVec::new(
                Opts::new(
                    "plinth_model_provider_info",
                    "1 for the ONNX Runtime execution provider serving each model",
                ),
                &["service", "version", "model", "provider"],
            )
            .unwrap(),
            model_provider_fallback: IntGaugeVec::new(
                Opts::new(
                    "plinth_model_provider_fallback",
                    "1 when a model's preferred execution providers could not be used and a later one serves it",
                ),
                &["service", "version", "model"],
            )
            .unwrap(),
            registry,
        };
        let r = &m.registry;
        r.register(Box::new(m.requests.clone())).unwrap();
        r.register(Box::new(m.request_seconds.clone())).unwrap();
        r.register(Box::new(m.queue_wait_seconds.clone())).unwrap();
        r.register(Box::new(m.in_flight.clone())).unwrap();
        r.register(Box::new(m.replicas.clone())).unwrap();
        r.register(Box::new(m.utilization_percent.clone())).unwrap();
        r.register(Box::new(m.scaling_decisions.clone())).unwrap();
        r.register(Box::new(m.script_traps.clone())).unwrap();
        r.register(Box::new(m.model_load_seconds.clone())).unwrap();
        r.register(Box::new(m.collected_records.clone())).unwrap();
        r.register(Box::new(m.collection_dropped.clone())).unwrap();
        r.register(Box::new(m.batch_size.clone())).unwrap();
        r.register(Box::new(m.batch_queue_seconds.clone())).unwrap();
        r.register(Box::new(m.open_connections.clone())).unwrap();
        r.register(Box::new(m.connections_closed.clone())).unwrap();
        r.register(Box::new(m.model_provider.clone())).unwrap();
        r.register(Box::new(m.model_provider_fallback.clone())).unwrap();
        m
    }

    /// One version's request series, resolved once so that a request touches no label map.
    pub fn series(&self, service: &str, version: &str) -> VersionSeries {
        VersionSeries {
            ok: self.requests.with_label_values(&[service, version, "200"]),
            seconds: self.request_seconds.with_label_values(&[service, version]),
            in_flight: self.in_flight.with_label_values(&[service, version]),
            queue_wait: self.queue_wait_seconds.with_label_values(&[service, version]),
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}
