//! Dashboard reads: per-model, per-hour, per-route, per-policy-version and
//! per-key aggregates over a recent window. Everything except the error list
//! reads the hourly rollups (`rollup_hourly`, `rollup_latency_hourly`,
//! `rollup_errors_hourly`, kept by triggers, see migrations/*/2026112200000[34]_*.sql), so a query
//! touches hours × models rows, not requests. Same SQL on both backends: the
//! rollups store `hour` as Unix seconds, sums are cast to `BIGINT` / `DOUBLE
//! PRECISION`, which both Postgres and SQLite understand.
//!
//! Latency percentiles come from the bucket counts (linear inside a bucket),
//! as Prometheus estimates them; the SQL views give exact ones.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{Database, Encode, QueryBuilder, Type};

use super::{SqliteStore, Store, StoreError};

/// Lower bounds of the latency buckets in ms; bucket `i` is
/// `[LATENCY_BUCKETS_MS[i], LATENCY_BUCKETS_MS[i + 1])`, the last is open.
/// Must match `sb_latency_bucket` (Postgres) and `latency_bucket_bounds` (SQLite);
/// the SQLite writer buckets request rows with it (`batch/rollup.rs`).
pub const LATENCY_BUCKETS_MS: [f64; 27] = [
    0.0, 5.0, 10.0, 20.0, 30.0, 50.0, 75.0, 100.0, 150.0, 200.0, 300.0, 400.0, 500.0, 750.0,
    1000.0, 1500.0, 2000.0, 3000.0, 4000.0, 5000.0, 7500.0, 10000.0, 15000.0, 20000.0, 30000.0,
    60000.0, 120000.0,
];

/// The window a dashboard query covers: whole hours, from `since` (Unix
/// seconds at an hour's start) to now.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub since: i64,
}

impl Window {
    /// The last `hours` hours, the current one included.
    pub fn last_hours(hours: u32, now: DateTime<Utc>) -> Self {
        let this_hour = now.timestamp().div_euclid(3600) * 3600;
        Self {
            since: this_hour - (i64::from(hours.max(1)) - 1) * 3600,
        }
    }

    pub fn since_time(&self) -> DateTime<Utc> {
        DateTime::from_timestamp(self.since, 0).unwrap_or_default()
    }
}

/// Sums over the rollup rows of one group (a model, an hour and model, ...).
#[derive(Debug, Clone, Default, Serialize, sqlx::FromRow)]
pub struct Totals {
    pub requests: i64,
    pub errors: i64,
    pub cost_usd: f64,
    pub latency_ms_sum: f64,
    pub ttft_ms_sum: f64,
    pub ttft_count: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub rewarded: i64,
    pub reward_sum: f64,
}

impl Totals {
    fn ratio(a: f64, b: i64) -> Option<f64> {
        (b > 0).then(|| a / b as f64)
    }
    pub fn error_rate(&self) -> Option<f64> {
        Self::ratio(self.errors as f64, self.requests)
    }
    pub fn mean_cost_usd(&self) -> Option<f64> {
        Self::ratio(self.cost_usd, self.requests)
    }
    pub fn mean_latency_ms(&self) -> Option<f64> {
        Self::ratio(self.latency_ms_sum, self.requests)
    }
    pub fn mean_ttft_ms(&self) -> Option<f64> {
        Self::ratio(self.ttft_ms_sum, self.ttft_count)
    }
    /// Mean of each rewarded request's latest `quality` feedback.
    pub fn mean_reward(&self) -> Option<f64> {
        Self::ratio(self.reward_sum, self.rewarded)
    }
    pub fn feedback_coverage(&self) -> Option<f64> {
        Self::ratio(self.rewarded as f64, self.requests)
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ModelRow {
    pub model: String,
    #[sqlx(flatten)]
    pub totals: Totals,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct HourModelRow {
    pub hour: i64,
    pub model: String,
    #[sqlx(flatten)]
    pub totals: Totals,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ArmRow {
    pub route: String,
    pub policy_version: String,
    pub model: String,
    #[sqlx(flatten)]
    pub totals: Totals,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct SpendRow {
    pub api_key_id: String,
    pub tenant: String,
    pub requests: i64,
    pub cost_usd: f64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct BucketRow {
    pub model: String,
    pub bucket: i32,
    pub requests: i64,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ErrorRow {
    pub id: String,
    pub created_at: DateTime<Utc>,
    pub route: Option<String>,
    pub model: Option<String>,
    pub error_kind: Option<String>,
    pub status_code: i32,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ErrorKindRow {
    pub model: Option<String>,
    pub error_kind: Option<String>,
    pub requests: i64,
}

const TOTALS: &str = "CAST(SUM(requests) AS BIGINT) AS requests, \
    CAST(SUM(errors) AS BIGINT) AS errors, \
    CAST(SUM(cost_usd) AS DOUBLE PRECISION) AS cost_usd, \
    CAST(SUM(latency_ms_sum) AS DOUBLE PRECISION) AS latency_ms_sum, \
    CAST(SUM(ttft_ms_sum) AS DOUBLE PRECISION) AS ttft_ms_sum, \
    CAST(SUM(ttft_count) AS BIGINT) AS ttft_count, \
    CAST(SUM(prompt_tokens) AS BIGINT) AS prompt_tokens, \
    CAST(SUM(completion_tokens) AS BIGINT) AS completion_tokens, \
    CAST(SUM(rewarded) AS BIGINT) AS rewarded, \
    CAST(SUM(reward_sum) AS DOUBLE PRECISION) AS reward_sum";

/// `SELECT <keys>, <totals> FROM rollup_hourly WHERE hour >= ? [AND route = ?]
/// GROUP BY <keys> ORDER BY <keys>`; `keys` is a fixed list from this file.
fn rollup_query<'a, DB>(keys: &str, w: Window, route: Option<&str>) -> QueryBuilder<'a, DB>
where
    DB: Database,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
{
    let mut qb = QueryBuilder::new("SELECT ");
    qb.push(keys)
        .push(", ")
        .push(TOTALS)
        .push(" FROM rollup_hourly WHERE hour >= ")
        .push_bind(w.since);
    if let Some(r) = route {
        qb.push(" AND route = ").push_bind(r.to_owned());
    }
    qb.push(" GROUP BY ")
        .push(keys)
        .push(" ORDER BY ")
        .push(keys);
    qb
}

fn latency_query<'a, DB>(w: Window) -> QueryBuilder<'a, DB>
where
    DB: Database,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
{
    let mut qb = QueryBuilder::new(
        "SELECT model, bucket, CAST(SUM(requests) AS BIGINT) AS requests \
         FROM rollup_latency_hourly WHERE hour >= ",
    );
    qb.push_bind(w.since)
        .push(" GROUP BY model, bucket ORDER BY model, bucket");
    qb
}

fn spend_query<'a, DB>(w: Window, limit: i64) -> QueryBuilder<'a, DB>
where
    DB: Database,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
{
    let mut qb = QueryBuilder::new(
        "SELECT api_key_id, tenant, CAST(SUM(requests) AS BIGINT) AS requests, \
         CAST(SUM(cost_usd) AS DOUBLE PRECISION) AS cost_usd \
         FROM rollup_hourly WHERE hour >= ",
    );
    qb.push_bind(w.since)
        .push(" GROUP BY api_key_id, tenant ORDER BY cost_usd DESC, api_key_id, tenant LIMIT ")
        .push_bind(limit);
    qb
}

/// Newest errors first; the partial index `requests_errors_created_at` keeps
/// this cheap however large `requests` is.
fn errors_query<'a, DB>(since: DateTime<Utc>, limit: i64) -> QueryBuilder<'a, DB>
where
    DB: Database,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> DateTime<Utc>: Encode<'q, DB> + Type<DB>,
{
    let mut qb = QueryBuilder::new(
        "SELECT id, created_at, route, model, error_kind, status_code FROM requests \
         WHERE status = 'error' AND created_at >= ",
    );
    qb.push_bind(since)
        .push(" ORDER BY created_at DESC LIMIT ")
        .push_bind(limit);
    qb
}

fn error_kinds_query<'a, DB>(w: Window) -> QueryBuilder<'a, DB>
where
    DB: Database,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
{
    let mut qb = QueryBuilder::new(
        "SELECT NULLIF(model, '') AS model, NULLIF(error_kind, '') AS error_kind, \
         CAST(SUM(requests) AS BIGINT) AS requests FROM rollup_errors_hourly WHERE hour >= ",
    );
    qb.push_bind(w.since)
        .push(" GROUP BY model, error_kind ORDER BY requests DESC, model, error_kind");
    qb
}

/// Runs a query built by one of the generic builders above on whichever
/// backend the store is, decoding rows as `$row`.
macro_rules! fetch_all {
    ($store:expr, $row:ty, $build:ident ( $($arg:expr),* )) => {
        match $store {
            Store::Postgres(p) => {
                let mut qb = $build::<sqlx::Postgres>($($arg),*);
                qb.build_query_as::<$row>().fetch_all(p).await?
            }
            Store::Sqlite(SqliteStore { pool: p, .. }) => {
                let mut qb = $build::<sqlx::Sqlite>($($arg),*);
                qb.build_query_as::<$row>().fetch_all(p).await?
            }
        }
    };
}

impl Store {
    /// Per model, optionally only on one route.
    pub async fn dashboard_models(
        &self,
        w: Window,
        route: Option<&str>,
    ) -> Result<Vec<ModelRow>, StoreError> {
        Ok(fetch_all!(self, ModelRow, rollup_query("model", w, route)))
    }

    /// Per hour and model, oldest first.
    pub async fn dashboard_timeseries(
        &self,
        w: Window,
        route: Option<&str>,
    ) -> Result<Vec<HourModelRow>, StoreError> {
        Ok(fetch_all!(
            self,
            HourModelRow,
            rollup_query("hour, model", w, route)
        ))
    }

    /// Per route, policy version and model (routed traffic only).
    pub async fn dashboard_arms(&self, w: Window) -> Result<Vec<ArmRow>, StoreError> {
        let rows: Vec<ArmRow> = fetch_all!(
            self,
            ArmRow,
            rollup_query("route, policy_version, model", w, None::<&str>)
        );
        Ok(rows.into_iter().filter(|r| !r.route.is_empty()).collect())
    }

    /// Latency bucket counts per model.
    pub async fn dashboard_latency_buckets(&self, w: Window) -> Result<Vec<BucketRow>, StoreError> {
        Ok(fetch_all!(self, BucketRow, latency_query(w)))
    }

    /// Spend per API key and tenant, largest first.
    pub async fn dashboard_spend(
        &self,
        w: Window,
        limit: i64,
    ) -> Result<Vec<SpendRow>, StoreError> {
        Ok(fetch_all!(self, SpendRow, spend_query(w, limit)))
    }

    pub async fn dashboard_recent_errors(
        &self,
        w: Window,
        limit: i64,
    ) -> Result<Vec<ErrorRow>, StoreError> {
        Ok(fetch_all!(
            self,
            ErrorRow,
            errors_query(w.since_time(), limit)
        ))
    }

    pub async fn dashboard_error_kinds(&self, w: Window) -> Result<Vec<ErrorKindRow>, StoreError> {
        Ok(fetch_all!(self, ErrorKindRow, error_kinds_query(w)))
    }
}

impl Totals {
    /// Adds another group's sums into this one.
    pub fn absorb(&mut self, o: &Totals) {
        self.requests += o.requests;
        self.errors += o.errors;
        self.cost_usd += o.cost_usd;
        self.latency_ms_sum += o.latency_ms_sum;
        self.ttft_ms_sum += o.ttft_ms_sum;
        self.ttft_count += o.ttft_count;
        self.prompt_tokens += o.prompt_tokens;
        self.completion_tokens += o.completion_tokens;
        self.rewarded += o.rewarded;
        self.reward_sum += o.reward_sum;
    }
}

/// The `q`-quantile (0..=1) of latencies given per-bucket counts, linear
/// inside the bucket that holds it (the open last bucket answers its lower
/// bound). `None` without data.
pub fn quantile_from_buckets(counts: &[(i32, i64)], q: f64) -> Option<f64> {
    let total: i64 = counts.iter().map(|&(_, n)| n.max(0)).sum();
    if total == 0 {
        return None;
    }
    let mut sorted: Vec<(i32, i64)> = counts.to_vec();
    sorted.sort_unstable();
    let rank = q.clamp(0.0, 1.0) * total as f64;
    let mut below = 0.0;
    for &(b, n) in &sorted {
        let n = n.max(0) as f64;
        if n > 0.0 && below + n >= rank {
            let i = usize::try_from(b)
                .unwrap_or(0)
                .min(LATENCY_BUCKETS_MS.len() - 1);
            let lo = LATENCY_BUCKETS_MS[i];
            let Some(&hi) = LATENCY_BUCKETS_MS.get(i + 1) else {
                return Some(lo);
            };
            return Some(lo + (hi - lo) * ((rank - below) / n).clamp(0.0, 1.0));
        }
        below += n;
    }
    sorted
        .last()
        .map(|&(b, _)| LATENCY_BUCKETS_MS[usize::try_from(b).unwrap_or(0).min(26)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_inside_the_bucket() {
        // 10 requests in [100, 150): the median sits halfway.
        assert_eq!(quantile_from_buckets(&[(7, 10)], 0.5), Some(125.0));
        // 9 fast, 1 slow: p95 lands in the slow bucket.
        let c = [(7, 9), (14, 1)];
        let p95 = quantile_from_buckets(&c, 0.95).unwrap();
        assert!((1000.0..1500.0).contains(&p95), "{p95}");
        assert_eq!(quantile_from_buckets(&[(26, 3)], 0.5), Some(120000.0));
        assert_eq!(quantile_from_buckets(&[], 0.5), None);
    }

    #[test]
    fn the_window_starts_on_an_hour() {
        let now = DateTime::from_timestamp(10 * 3600 + 1234, 0).unwrap();
        assert_eq!(Window::last_hours(1, now).since, 10 * 3600);
        assert_eq!(Window::last_hours(24, now).since, -13 * 3600);
    }
}
