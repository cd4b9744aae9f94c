//! Upkeep of the history: monthly partitions of `requests` created ahead
//! (Postgres) and the retention settings (`[store] retention_days`,
//! `rollup_retention_days`) applied, by a background task every replica runs
//! (the SQL functions serialise themselves with an advisory lock, and the
//! deletes are idempotent).
//!
//! Retention: on Postgres the months that end before the cutoff are dropped
//! whole (`sb_drop_request_partitions_before`, migration 31), then the rows
//! older than the cutoff left in the boundary month and the default
//! partition are deleted (pruned to those partitions); on SQLite they are
//! deleted. Feedback goes by its own age: feedback is never older than its
//! request, so everything about a dropped request goes with it, except late
//! feedback younger than the cutoff, which ages out in turn. Rollups are
//! aggregates: deleting raw rows does not change them; they have their own
//! setting. Never on the request path.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;

use super::{SqliteStore, Store, StoreError};
use crate::config::StoreConfig;

/// Months of partitions kept ready ahead of today.
const MONTHS_AHEAD: i64 = 2;
/// How often the task runs (and once at start).
const EVERY: Duration = Duration::from_secs(3_600);

/// What one pass removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pruned {
    pub partitions_dropped: Vec<String>,
    pub requests: u64,
    pub feedback: u64,
    pub rollup_rows: u64,
}

const ROLLUP_TABLES: [&str; 3] = [
    "rollup_hourly",
    "rollup_latency_hourly",
    "rollup_errors_hourly",
];

impl Store {
    /// Creates the missing monthly partitions from last month to
    /// `MONTHS_AHEAD` ahead (Postgres; nothing to do on SQLite).
    pub async fn ensure_partitions(&self, now: DateTime<Utc>) -> Result<i32, StoreError> {
        let Store::Postgres(pool) = self else {
            return Ok(0);
        };
        let from = now - chrono::Duration::days(31);
        let to = now + chrono::Duration::days(31 * MONTHS_AHEAD);
        Ok(
            sqlx::query_scalar("SELECT sb_ensure_request_partitions($1, $2)")
                .bind(from)
                .bind(to)
                .fetch_one(pool)
                .await?,
        )
    }

    /// Deletes requests and feedback older than `cutoff` and, if given,
    /// rollup hours before `rollup_cutoff`.
    pub async fn prune(
        &self,
        cutoff: Option<DateTime<Utc>>,
        rollup_cutoff: Option<DateTime<Utc>>,
    ) -> Result<Pruned, StoreError> {
        let mut out = Pruned::default();
        macro_rules! exec {
            ($pool:expr, $sql:expr, $bind:expr) => {
                sqlx::query($sql)
                    .bind($bind)
                    .execute($pool)
                    .await?
                    .rows_affected()
            };
        }
        match self {
            Store::Postgres(pool) => {
                if let Some(c) = cutoff {
                    out.partitions_dropped =
                        sqlx::query_scalar("SELECT sb_drop_request_partitions_before($1)")
                            .bind(c)
                            .fetch_all(pool)
                            .await?;
                    out.requests = exec!(pool, "DELETE FROM requests WHERE created_at < $1", c);
                    out.feedback = exec!(pool, "DELETE FROM feedback WHERE created_at < $1", c);
                }
                if let Some(c) = rollup_cutoff {
                    for t in ROLLUP_TABLES {
                        let sql = format!("DELETE FROM {t} WHERE hour < $1");
                        out.rollup_rows += exec!(pool, &sql, c.timestamp());
                    }
                }
            }
            Store::Sqlite(SqliteStore { pool, .. }) => {
                if let Some(c) = cutoff {
                    out.requests = exec!(pool, "DELETE FROM requests WHERE created_at < $1", c);
                    out.feedback = exec!(pool, "DELETE FROM feedback WHERE created_at < $1", c);
                }
                if let Some(c) = rollup_cutoff {
                    for t in ROLLUP_TABLES {
                        let sql = format!("DELETE FROM {t} WHERE hour < $1");
                        out.rollup_rows += exec!(pool, &sql, c.timestamp());
                    }
                }
            }
        }
        Ok(out)
    }

    /// One maintenance pass under `config` at `now`.
    pub async fn maintain(
        &self,
        config: &StoreConfig,
        now: DateTime<Utc>,
    ) -> Result<Pruned, StoreError> {
        self.ensure_partitions(now).await?;
        let days = |d: Option<u32>| d.map(|d| now - chrono::Duration::days(i64::from(d)));
        self.prune(
            days(config.retention_days),
            days(config.rollup_retention_days),
        )
        .await
    }
}

/// Runs `maintain` at start and every hour until `shutdown`.
pub async fn run(store: Store, config: StoreConfig, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|s| *s) => return,
            _ = tick.tick() => {}
        }
        match store.maintain(&config, Utc::now()).await {
            Ok(p) if p != Pruned::default() => tracing::info!(
                partitions = ?p.partitions_dropped,
                requests = p.requests,
                feedback = p.feedback,
                rollup_rows = p.rollup_rows,
                "Retention removed old history."
            ),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "Store maintenance failed; it retries within the hour.")
            }
        }
    }
}
