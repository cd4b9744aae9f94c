//! Shared key budgets across replicas (docs/scaling.md, "Budgets"): each
//! replica spends only what the `budget_leases` ledger granted it, in
//! leases of `budget_lease_fraction` of the limit (or what one request
//! needs, if more). A lease runs low -> one background top-up; a request
//! that does not fit its replica's lease waits for one grant (like the
//! first use of a key waits for its record); unused leases go back on
//! shutdown.
//!
//! Bound: the sum of grants never passes the limit, so the recorded spend
//! of all replicas together passes it only by what real costs exceed their
//! reservations (as on one replica). The price is under-use: leases held by
//! other replicas (at most one lease each) or by a replica that died (until
//! the period ends) are not available to this one.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use super::budget::Period;
use super::state::KeyState;
use crate::store::keys::KeyRecord;
use crate::store::Store;
use crate::telemetry::names;

/// Longest a request waits for a grant (generous: a slow database should
/// delay a budgeted request, not fail it).
const GRANT_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Leases {
    store: Store,
    fraction: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("the shared budget ledger is unreachable")]
    Unavailable,
}

fn limit_of(key: &KeyRecord, period: Period) -> Option<f64> {
    match period {
        Period::Day => key.budget_usd_per_day,
        Period::Month => key.budget_usd_per_month,
    }
}

impl Leases {
    pub fn new(store: Store, fraction: f64) -> Self {
        Self { store, fraction }
    }

    /// Asks the ledger for at least `need` more of the period's budget
    /// (a whole lease if there is that much left) and books the grant.
    pub async fn extend(
        &self,
        key: &KeyRecord,
        state: &KeyState,
        period: Period,
        need: f64,
    ) -> Result<(), LeaseError> {
        let Some(limit) = limit_of(key, period) else {
            return Ok(());
        };
        let want = need.max(self.fraction * limit);
        let (label, since) = period.key(Utc::now());
        let ask = self
            .store
            .lease_budget(&key.id, &label, since, limit, need, want);
        let grant = match tokio::time::timeout(GRANT_TIMEOUT, ask).await {
            Ok(Ok(g)) => g,
            Ok(Err(e)) => return Err(failed(e)),
            Err(_) => return Err(failed("no answer in time")),
        };
        let result = if grant.granted > 0.0 {
            "granted"
        } else {
            "exhausted"
        };
        metrics::counter!(names::BUDGET_LEASES, "result" => result).increment(1);
        state.grant(period, grant.granted, grant.total);
        Ok(())
    }

    /// Starts one background top-up when the key's lease in some period
    /// has fallen under half a lease, so requests rarely wait for one.
    pub fn top_up(self: &Arc<Self>, key: &Arc<KeyRecord>, state: &Arc<KeyState>) {
        let low: Vec<Period> = state
            .unused()
            .into_iter()
            .filter(|(p, left)| limit_of(key, *p).is_some_and(|l| *left < 0.5 * self.fraction * l))
            .map(|(p, _)| p)
            .collect();
        if low.is_empty() || !state.start_top_up() {
            return;
        }
        let (me, key, state) = (self.clone(), key.clone(), state.clone());
        tokio::spawn(async move {
            for p in low {
                if me.extend(&key, &state, p, 0.0).await.is_err() {
                    break;
                }
            }
            state.end_top_up();
        });
    }

    /// Gives every unused lease back (shutdown, after in-flight requests).
    pub async fn give_back(&self, states: Vec<(String, Arc<KeyState>)>) {
        for (key_id, state) in states {
            for (period, amount) in state.release_unused() {
                if amount <= 0.0 {
                    continue;
                }
                let (label, _) = period.key(Utc::now());
                if let Err(e) = self.store.return_budget(&key_id, &label, amount).await {
                    tracing::warn!(error = %e, "Giving back a budget lease failed; it stays unused until the period ends.");
                }
            }
        }
    }
}

fn failed(e: impl std::fmt::Display) -> LeaseError {
    metrics::counter!(names::BUDGET_LEASES, "result" => "error").increment(1);
    tracing::warn!(error = %e, "The shared budget ledger could not grant a lease.");
    LeaseError::Unavailable
}
