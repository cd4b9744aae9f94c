//! Tracing setup and metric names. Metric names are constants so that a
//! dashboard and the code cannot drift apart; labels stay low-cardinality.

pub mod otlp;
pub mod request_metrics;
pub mod spans;

pub mod names {
    pub const REQUESTS: &str = "switchboard_requests_total";
    pub const REQUEST_LATENCY: &str = "switchboard_request_duration_seconds";
    pub const TTFT: &str = "switchboard_time_to_first_token_seconds";
    pub const UPSTREAM_ERRORS: &str = "switchboard_upstream_errors_total";
    /// USD × 10⁶, rounded: the `metrics` crate's counters are integers.
    pub const COST_USD: &str = "switchboard_cost_microusd_total";
    pub const TOKENS: &str = "switchboard_tokens_total";
    pub const BREAKER_OPEN: &str = "switchboard_circuit_open";
    pub const FEEDBACK: &str = "switchboard_feedback_total";
    pub const OUTBOX_DEPTH: &str = "switchboard_outbox_depth";
    pub const OUTBOX_BATCH_SIZE: &str = "switchboard_outbox_batch_size";
    pub const EVENTS_WRITTEN: &str = "switchboard_events_written_total";
    pub const EVENTS_SPILLED: &str = "switchboard_events_spilled_total";
    pub const EVENTS_DROPPED: &str = "switchboard_events_dropped_total";
    /// Batches whose threads ran lowered (`[store] writer_yields`) past
    /// the cap and were put back to ordinary priority: starved, most likely.
    pub const OUTBOX_LOWERING_ENDED: &str = "switchboard_outbox_lowering_ended_total";
    /// Drift alarms raised by the learner, by `route`.
    pub const DRIFT_EVENTS: &str = "switchboard_drift_events_total";
    /// Policy re-inversions whose thread ran lowered (`[store]
    /// writer_yields`) past the cap and finished at ordinary priority.
    pub const LEARNING_LOWERING_ENDED: &str = "switchboard_learning_lowering_ended_total";
    /// Learning updates dropped because the writer's queue was full.
    pub const LEARNING_DROPPED: &str = "switchboard_learning_updates_dropped_total";
    /// Requests that ended in an error, by `route`, `model`, `provider`, `kind`.
    pub const REQUEST_ERRORS: &str = "switchboard_request_errors_total";
    /// Hedges started (`ttft_deadline_ms` passed without an answer), by
    /// `route` and the hedge's `model`.
    pub const HEDGES: &str = "switchboard_hedges_total";
    /// Hedges that answered first (the earlier attempt was cancelled), by
    /// `route` and the hedge's `model`.
    pub const HEDGE_WINS: &str = "switchboard_hedge_wins_total";
    /// Streams broken after their first byte and continued on another
    /// model, by `route`, the `model` that continued and `outcome`
    /// (`resumed` / `failed`).
    pub const STREAM_CONTINUATIONS: &str = "switchboard_stream_continuations_total";
    /// Circuit state per `model`: 0 closed, 1 open, 2 half-open (probing).
    pub const BREAKER_STATE: &str = "switchboard_circuit_state";
    // Recorded by the learning core:
    /// Decisions by `route`, `model`, `greedy` ("true" / "false").
    pub const DECISIONS: &str = "switchboard_decisions_total";
    /// Rewards (in [0, 1]) the policy learned from, by `route`, `model`.
    pub const REWARD: &str = "switchboard_reward";
    /// Info gauge: 1 for the active `version` of each `route`'s policy.
    pub const POLICY_VERSION: &str = "switchboard_policy_version";
    /// Configuration reloads by `trigger` (api, signal, file) and `result`
    /// (applied, unchanged, refused).
    pub const CONFIG_RELOADS: &str = "switchboard_config_reloads_total";
    /// The configuration generation serving (1 at start, +1 per reload).
    pub const CONFIG_GENERATION: &str = "switchboard_config_generation";
    /// Mirrored (shadow) calls by `model` and `status` (ok, error).
    pub const SHADOW_REQUESTS: &str = "switchboard_shadow_requests_total";
    /// Mirrors skipped because too many were in flight.
    pub const SHADOW_SKIPPED: &str = "switchboard_shadow_skipped_total";
    /// Experiment assignments by `experiment` and `arm`.
    pub const EXPERIMENT_ASSIGNMENTS: &str = "switchboard_experiment_assignments_total";
    // Scale-out (docs/scaling.md):
    /// Flush transactions committed (each ships one delta per route that learned).
    pub const SCALE_FLUSHES: &str = "switchboard_scale_flushes_total";
    /// Replication rounds that could not reach the database.
    pub const SCALE_SYNC_ERRORS: &str = "switchboard_scale_sync_errors_total";
    /// Deltas merged from the log, by `origin` ("own" / "foreign").
    pub const SCALE_DELTAS_MERGED: &str = "switchboard_scale_deltas_merged_total";
    /// Deltas that could not be decoded or merged (passed over).
    pub const SCALE_DELTAS_REJECTED: &str = "switchboard_scale_deltas_rejected_total";
    /// Deltas deleted by compaction.
    pub const SCALE_DELTAS_COMPACTED: &str = "switchboard_scale_deltas_compacted_total";
    /// Log position every route of this replica has merged up to.
    pub const SCALE_WATERMARK: &str = "switchboard_scale_watermark";
    /// Learning updates applied locally and not yet merged from the log.
    pub const SCALE_UNFLUSHED: &str = "switchboard_scale_unflushed_updates";
    /// Serving states rebuilt on others' deltas.
    pub const SCALE_REBASES: &str = "switchboard_scale_rebases_total";
    /// Times this replica (re)joined from the checkpoint.
    pub const SCALE_REJOINS: &str = "switchboard_scale_rejoins_total";
    /// Live replicas (fresh heartbeats), as this replica last counted them.
    pub const SCALE_REPLICAS_LIVE: &str = "switchboard_scale_replicas_live";
    /// Budget lease requests, by `result` ("granted", "exhausted", "error").
    pub const BUDGET_LEASES: &str = "switchboard_budget_leases_total";
}

/// Histogram buckets, so the exporter renders histograms (not summaries)
/// that Prometheus can aggregate across replicas.
pub mod buckets {
    /// Request latency and time to first token, in seconds.
    pub const SECONDS: &[f64] = &[
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
    ];
    /// Events per outbox batch.
    pub const BATCH: &[f64] = &[1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0];
    /// Rewards in [0, 1].
    pub const REWARD: &[f64] = &[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0];
}

/// The tracer provider `init_tracing` installed, flushed by `shutdown_tracing`.
static OTLP: std::sync::OnceLock<opentelemetry_sdk::trace::SdkTracerProvider> =
    std::sync::OnceLock::new();

/// Installs the global subscriber: human-readable by default, JSON when
/// `json` is set. `RUST_LOG` filters as usual (default `info`). With an OTLP
/// endpoint in the environment (`otlp.rs`), spans are also exported.
pub fn init_tracing(json: bool) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, Layer};
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = if json {
        tracing_subscriber::fmt::layer().json().boxed()
    } else {
        tracing_subscriber::fmt::layer().boxed()
    };
    let env: crate::config::Env = std::env::vars().collect();
    let service = env
        .get("OTEL_SERVICE_NAME")
        .cloned()
        .unwrap_or_else(|| "switchboard".into());
    let provider = otlp::endpoint(&env).and_then(|e| match otlp::provider(&e, &service) {
        Ok(p) => Some(p),
        Err(err) => {
            eprintln!("warning: OTLP export to {e} is off: {err}");
            None
        }
    });
    let otel = provider.as_ref().map(otlp::layer);
    // A second init (tests) is harmless: keep the first subscriber.
    let installed = tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(otel)
        .try_init()
        .is_ok();
    if let (true, Some(p)) = (installed, provider) {
        let _ = OTLP.set(p);
    }
}

/// Exports the spans still batched (call before the process exits).
pub fn shutdown_tracing() {
    if let Some(p) = OTLP.get() {
        if let Err(e) = p.shutdown() {
            eprintln!("warning: flushing OTLP spans failed: {e}");
        }
    }
}

/// How often histogram samples are folded into their buckets.
const METRICS_UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Histogram samples wait in the recorder until a scrape or an upkeep
/// folds them into their buckets; `install_recorder` runs no upkeep, so
/// without scrapes every request's samples stayed in memory (a 10-minute
/// soak at 5,400 req/s grew from 212 to 333 MiB). A plain thread, because
/// the recorder outlives any one runtime (tests start several apps).
fn spawn_upkeep(handle: &metrics_exporter_prometheus::PrometheusHandle) {
    let handle = handle.clone();
    let spawned = std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || loop {
            std::thread::sleep(METRICS_UPKEEP_EVERY);
            handle.run_upkeep();
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "The metrics upkeep thread did not start; histograms drain only when scraped.");
    }
}

/// Installs the Prometheus recorder and returns the handle `/metrics` renders.
pub fn install_metrics() -> Option<metrics_exporter_prometheus::PrometheusHandle> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    let with_buckets = [
        (names::REQUEST_LATENCY, buckets::SECONDS),
        (names::TTFT, buckets::SECONDS),
        (names::OUTBOX_BATCH_SIZE, buckets::BATCH),
        (names::REWARD, buckets::REWARD),
    ]
    .into_iter()
    .try_fold(PrometheusBuilder::new(), |b, (name, buckets)| {
        b.set_buckets_for_metric(Matcher::Full(name.to_owned()), buckets)
    });
    match with_buckets {
        Ok(b) => b.install_recorder().ok().inspect(spawn_upkeep),
        Err(e) => {
            tracing::error!(error = %e, "The metric buckets are invalid; metrics are off.");
            None
        }
    }
}
