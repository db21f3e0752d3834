//! The controller's own metrics (`plinth_controller_*`), served on its `/metrics`.

use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry, TextEncoder};

#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub reconciliations: IntCounter,
    /// Failed reconciles by error kind.
    pub failures: IntCounterVec,
    pub reconcile_seconds: HistogramVec,
    /// Scale changes applied, by direction (`up`, `down`, `set`).
    pub scalings: IntCounterVec,
    /// Host pods whose load could not be read, by reason.
    pub load_read_failures: IntCounterVec,
}

impl Default for Metrics {
    fn default() -> Self {
        let registry = Registry::new();
        let reconciliations = IntCounter::with_opts(Opts::new(
            "plinth_controller_reconciliations_total",
            "PlinthService reconciles started",
        ))
        .expect("metric");
        let failures = IntCounterVec::new(
            Opts::new(
                "plinth_controller_reconcile_failures_total",
                "Reconciles that failed, by error",
            ),
            &["error"],
        )
        .expect("metric");
        let reconcile_seconds = HistogramVec::new(
            HistogramOpts::new(
                "plinth_controller_reconcile_duration_seconds",
                "Time one reconcile took",
            )
            .buckets(vec![0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0]),
            &[],
        )
        .expect("metric");
        let scalings = IntCounterVec::new(
            Opts::new(
                "plinth_controller_scalings_total",
                "Pod count changes applied through /scale",
            ),
            &["direction"],
        )
        .expect("metric");
        let load_read_failures = IntCounterVec::new(
            Opts::new(
                "plinth_controller_load_read_failures_total",
                "Host pods whose /api/v1/load could not be read",
            ),
            &["reason"],
        )
        .expect("metric");
        for c in [
            Box::new(reconciliations.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(failures.clone()),
            Box::new(reconcile_seconds.clone()),
            Box::new(scalings.clone()),
            Box::new(load_read_failures.clone()),
        ] {
            registry.register(c).expect("unique metric names");
        }
        Metrics {
            registry,
            reconciliations,
            failures,
            reconcile_seconds,
            scalings,
            load_read_failures,
        }
    }
}

impl Metrics {
    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}
