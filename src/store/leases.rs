//! Shared key budgets (Postgres; see docs/scaling.md "Budgets"): one row
//! per key and period holds how much of the budget has been granted to
//! replicas. A replica spends only what it was granted, so the sum of all
//! replicas' spend cannot pass the budget.
//!
//! Invariant: `granted_usd` only grows by `lease_budget`, never past the
//! limit it is given, under a row lock; it starts at the spend already
//! recorded for the period when the row is created.

use chrono::{DateTime, Utc};

use super::{Store, StoreError};

/// A grant: what this call added and the period's total granted after it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Grant {
    pub granted: f64,
    pub total: f64,
}

const CREATE: &str = "INSERT INTO budget_leases (key_id, period, granted_usd, updated_at) \
    SELECT $1, $2, COALESCE(SUM(cost_usd), 0.0), now() FROM requests \
    WHERE api_key_id = $1 AND created_at >= $3 \
    ON CONFLICT (key_id, period) DO NOTHING";

const LOCK: &str =
    "SELECT granted_usd FROM budget_leases WHERE key_id = $1 AND period = $2 FOR UPDATE";

const GRANT: &str = "UPDATE budget_leases SET granted_usd = granted_usd + $3, updated_at = now() \
    WHERE key_id = $1 AND period = $2";

const GIVE_BACK: &str = "UPDATE budget_leases SET granted_usd = GREATEST(granted_usd - $3, 0), \
    updated_at = now() WHERE key_id = $1 AND period = $2";

impl Store {
    /// Grants `key_id` up to `want` USD of its budget `limit` for `period`
    /// (which began at `since`): as much as is left, but nothing when less
    /// than `need` is left (a lease that cannot serve the request would only
    /// strand budget on this replica).
    pub async fn lease_budget(
        &self,
        key_id: &str,
        period: &str,
        since: DateTime<Utc>,
        limit: f64,
        need: f64,
        want: f64,
    ) -> Result<Grant, StoreError> {
        let Store::Postgres(pool) = self else {
            return Err(StoreError::NeedsPostgres("budget leases"));
        };
        let mut tx = pool.begin().await?;
        sqlx::query(CREATE)
            .bind(key_id)
            .bind(period)
            .bind(since)
            .execute(&mut *tx)
            .await?;
        let before: f64 = sqlx::query_scalar(LOCK)
            .bind(key_id)
            .bind(period)
            .fetch_one(&mut *tx)
            .await?;
        let left = (limit - before).max(0.0);
        let granted = if left >= need { want.min(left) } else { 0.0 };
        if granted > 0.0 {
            sqlx::query(GRANT)
                .bind(key_id)
                .bind(period)
                .bind(granted)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(Grant {
            granted,
            total: before + granted,
        })
    }

    /// Hands back an unused part of a lease (on shutdown).
    pub async fn return_budget(
        &self,
        key_id: &str,
        period: &str,
        amount: f64,
    ) -> Result<(), StoreError> {
        let Store::Postgres(pool) = self else {
            return Err(StoreError::NeedsPostgres("budget leases"));
        };
        sqlx::query(GIVE_BACK)
            .bind(key_id)
            .bind(period)
            .bind(amount)
            .execute(pool)
            .await?;
        Ok(())
    }
}
