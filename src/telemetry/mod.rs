//! Tracing setup and metric names. Metric names are constants so that a
//! dashboard and the code cannot drift apart; labels stay low-cardinality.

pub mod names {
    pub const REQUESTS: &str = "switchboard_requests_total";
    pub const REQUEST_LATENCY: &str = "switchboard_request_duration_seconds";
    pub const TTFT: &str = "switchboard_time_to_first_token_seconds";
    pub const UPSTREAM_ERRORS: &str = "switchboard_upstream_errors_total";
    pub const COST_USD: &str = "switchboard_cost_usd_total";
    pub const TOKENS: &str = "switchboard_tokens_total";
    pub const BREAKER_OPEN: &str = "switchboard_circuit_open";
    pub const FEEDBACK: &str = "switchboard_feedback_total";
    pub const OUTBOX_DEPTH: &str = "switchboard_outbox_depth";
    pub const OUTBOX_BATCH_SIZE: &str = "switchboard_outbox_batch_size";
    pub const EVENTS_WRITTEN: &str = "switchboard_events_written_total";
    pub const EVENTS_SPILLED: &str = "switchboard_events_spilled_total";
    pub const EVENTS_DROPPED: &str = "switchboard_events_dropped_total";
    pub const DECISIONS: &str = "switchboard_decisions_total";
    pub const REWARD: &str = "switchboard_reward";
    pub const DRIFT_EVENTS: &str = "switchboard_drift_events_total";
    pub const LEARNING_DROPPED: &str = "switchboard_learning_updates_dropped_total";
}

/// Installs the global subscriber: human-readable by default, JSON when
/// `json` is set. `RUST_LOG` filters as usual (default `info`).
pub fn init_tracing(json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    // A second init (tests) is harmless: keep the first subscriber.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Installs the Prometheus recorder and returns the handle `/metrics` renders.
pub fn install_metrics() -> Option<metrics_exporter_prometheus::PrometheusHandle> {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .ok()
}
