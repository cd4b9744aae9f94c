//! The composition root: store, outbox writer, providers, gateway, router,
//! listener and graceful shutdown. `main` and the tests both call `start`.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api::{self, AppState};
use crate::config::{Config, Env};
use crate::gateway::live::Live;
use crate::gateway::Gateway;
use crate::providers::tokens;
use crate::store::outbox::outbox;
use crate::store::{redact_url, Store, DEFAULT_SQLITE_URL};

/// A running router.
pub struct Running {
    pub addr: SocketAddr,
    /// The serving gateway, replaced whole by a configuration reload.
    pub live: Arc<Live>,
    stop: watch::Sender<bool>,
    /// Stops the learner and the outbox writer, once the server has finished
    /// its in-flight requests (their outcomes must still be written).
    drain: watch::Sender<bool>,
    server: JoinHandle<()>,
    learner: JoinHandle<()>,
    writer: JoinHandle<()>,
    grace: Duration,
}

/// The process-wide Prometheus recorder (installed once, shared by every app
/// a test process starts).
fn metrics_handle() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(crate::telemetry::install_metrics)
        .clone()
}

/// The database URL from the environment, or the embedded SQLite file.
pub fn database_url(env: &Env) -> String {
    env.get("DATABASE_URL")
        .filter(|u| !u.is_empty())
        .cloned()
        .unwrap_or_else(|| DEFAULT_SQLITE_URL.to_owned())
}

/// Connects and migrates the store, builds the gateway and starts serving
/// on `config.server.listen` (port 0 picks a free one).
/// Whether local token counts are on this configuration's request path:
/// client keys (token rate limits, budget reservations), TTFT hedging and
/// stream continuation. tiktoken's `o200k_base` tables take ~40 MB, so
/// they are loaded at start only then; otherwise on first need (an
/// upstream that omits usage, a client key's first request, a reload that
/// turns hedging on), which pays the load once.
fn needs_token_counts(config: &Config) -> bool {
    config.server.require_api_keys
        || config
            .routes
            .iter()
            .any(|r| r.ttft_deadline_ms.is_some() || r.continue_stream_on_fallback)
}

pub async fn start(config: Config, env: &Env) -> anyhow::Result<Running> {
    // Before anything records a metric (the gateway publishes breaker states).
    let metrics = metrics_handle();
    let url = database_url(env);
    let store = Store::connect_lazy(&url)
        .with_context(|| format!("opening the database {}", redact_url(&url)))?;
    store
        .migrate()
        .await
        .with_context(|| format!("applying migrations to {}", redact_url(&url)))?;
    if needs_token_counts(&config) {
        tokio::task::spawn_blocking(tokens::warm_up);
    }

    let (outbox, writer) = outbox(store.clone(), &config.store);
    let (stop, stop_rx) = watch::channel(false);
    let (drain, drain_rx) = watch::channel(false);
    let writer = tokio::spawn(writer.run(drain_rx.clone()));
    // Partitions ahead and retention, hourly; never on the request path.
    tokio::spawn(crate::store::retention::run(
        store.clone(),
        config.store.clone(),
        drain_rx.clone(),
    ));

    let rows = crate::gateway::control::load_rows(&store, &config)
        .await
        .context("reading the live controls (experiments, flags, arm changes)")?;
    let control = Arc::new(crate::experiments::Control::from_rows(&rows, &config));
    let (gateway, learner) = Gateway::build(&config, control, Arc::new(rows), env, store, outbox)
        .await
        .context("building the gateway")?;
    let watch_every = Duration::from_millis(config.server.config_watch_ms);
    let live = Arc::new(Live::new(gateway, env.clone()));
    let learner = tokio::spawn(learner.run(drain_rx));
    crate::gateway::config_watch::spawn(live.clone(), watch_every, stop_rx.clone());
    tokio::spawn(crate::gateway::control::run(live.clone(), stop_rx.clone()));
    let state = AppState {
        live: live.clone(),
        metrics,
        admin_token: env
            .get("SWITCHBOARD_ADMIN_TOKEN")
            .filter(|t| !t.is_empty())
            .cloned(),
    };
    let app = api::app(
        state,
        config.server.max_body_bytes,
        Duration::from_millis(config.server.body_timeout_ms),
    );
    let listener = tokio::net::TcpListener::bind(&config.server.listen)
        .await
        .with_context(|| format!("binding {}", config.server.listen))?;
    let addr = listener.local_addr()?;
    let server_stop = stop_rx;
    let header_timeout = Duration::from_millis(config.server.header_timeout_ms);
    let server = tokio::spawn(async move {
        crate::serve::serve(listener, app, header_timeout, server_stop).await;
    });
    tracing::info!(%addr, database = live.current().store.backend(), "switchboard is listening.");
    Ok(Running {
        addr,
        live,
        stop,
        drain,
        server,
        learner,
        writer,
        grace: Duration::from_millis(config.server.shutdown_grace_ms),
    })
}

impl Running {
    /// The gateway serving now.
    pub fn gateway(&self) -> Arc<Gateway> {
        self.live.current()
    }

    /// Stops accepting, lets in-flight requests finish (up to the grace
    /// period), then drains the outbox into the database.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        if tokio::time::timeout(self.grace, self.server).await.is_err() {
            tracing::warn!("In-flight requests outlived the shutdown grace period.");
        }
        // Shared budgets: what this replica was granted and did not spend
        // goes back to the other replicas.
        self.live.current().keys.give_back_leases().await;
        let _ = self.drain.send(true);
        if tokio::time::timeout(self.grace, self.learner)
            .await
            .is_err()
        {
            tracing::error!("The learner did not save its state within the grace period.");
        }
        if tokio::time::timeout(self.grace, self.writer).await.is_err() {
            tracing::error!("The outbox did not drain within the grace period.");
        }
        self.live.current().store.close().await;
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
