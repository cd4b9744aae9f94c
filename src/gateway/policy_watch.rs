//! Following the active policy version: at start, an activated snapshot
//! replaces the saved online state unless that state already grew from it;
//! while serving, a watcher task learns of activations (Postgres
//! `LISTEN switchboard_policy`, polling on SQLite and as a fallback) and
//! hands the new snapshot to the single writer, which swaps it in with one
//! `ArcSwap::store`: requests in flight keep the snapshot they loaded, the
//! next ones see the new version, and online updates continue on top of it.
//!
//! Invariant: a snapshot reaches the writer only after `prepare` against
//! the route as configured; a bad one is logged and the old one serves on.

use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::learning::Update;
use crate::bandit::{PolicySnapshot, RouteSpec};
use crate::store::policies::POLICY_CHANNEL;
use crate::store::Store;

/// Polling period on SQLite (and the safety net on Postgres).
const POLL_SQLITE: Duration = Duration::from_secs(2);
const POLL_POSTGRES: Duration = Duration::from_secs(30);

/// The route's active stored version, prepared for `spec`, if any.
async fn active_snapshot(
    store: &Store,
    route: &str,
    spec: &RouteSpec,
) -> Option<(String, PolicySnapshot)> {
    let row = match store.active_policy(route).await {
        Ok(Some(row)) => row,
        Ok(None) => return None,
        Err(e) => {
            tracing::warn!(route, error = %e, "Reading the active policy failed.");
            return None;
        }
    };
    match PolicySnapshot::from_json(&row.parameters).and_then(|s| s.prepare(spec)) {
        Ok(s) => Some((row.version.clone(), s.relabelled(&row.version))),
        Err(e) => {
            tracing::error!(route, version = %row.version, error = %e, "The active policy does not fit the route; keeping the current one.");
            None
        }
    }
}

/// Start-up reconciliation: the saved online state if it descends from the
/// active version (same label), else the active version, else `saved`.
pub async fn reconcile(
    store: &Store,
    route: &str,
    spec: &RouteSpec,
    saved: PolicySnapshot,
) -> PolicySnapshot {
    match active_snapshot(store, route, spec).await {
        Some((version, active)) if saved.label() != version => {
            tracing::info!(route, %version, "Serving the active policy version.");
            active
        }
        _ => saved,
    }
}

/// One route the watcher follows: its writer slot, name, configured shape
/// and the label of the version it serves now.
pub struct Watched {
    pub slot: usize,
    pub route: String,
    pub spec: RouteSpec,
    pub label: String,
}

/// Watches for activations until shutdown (or until the writer replaces it
/// after a reload changed the routes).
pub async fn run(
    store: Store,
    mut routes: Vec<Watched>,
    tx: mpsc::Sender<Update>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut listener = match &store {
        Store::Postgres(pool) => match sqlx::postgres::PgListener::connect_with(pool).await {
            Ok(mut l) => match l.listen(POLICY_CHANNEL).await {
                Ok(()) => Some(l),
                Err(e) => {
                    tracing::warn!(error = %e, "LISTEN failed; polling for policy changes.");
                    None
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "No listener connection; polling for policy changes.");
                None
            }
        },
        Store::Sqlite(_) => None,
    };
    let period = if listener.is_some() {
        POLL_POSTGRES
    } else {
        POLL_SQLITE
    };
    let mut poll = tokio::time::interval(period);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let only: Option<String> = tokio::select! {
            _ = shutdown.changed() => return,
            _ = poll.tick() => None,
            n = async {
                match listener.as_mut() {
                    Some(l) => l.recv().await,
                    None => std::future::pending().await,
                }
            } => match n {
                Ok(n) => Some(n.payload().to_owned()),
                Err(e) => {
                    tracing::warn!(error = %e, "The policy listener failed; it reconnects.");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    None
                }
            },
        };
        for w in routes.iter_mut() {
            if only.as_ref().is_some_and(|r| *r != w.route) {
                continue;
            }
            if let Some((version, snapshot)) = active_snapshot(&store, &w.route, &w.spec).await {
                if w.label != version {
                    tracing::info!(route = %w.route, %version, "Swapping in the newly activated policy.");
                    let update = Update::Swap {
                        route: w.slot,
                        snapshot: Box::new(snapshot),
                    };
                    if tx.send(update).await.is_err() {
                        return;
                    }
                    w.label = version;
                }
            }
        }
    }
}
