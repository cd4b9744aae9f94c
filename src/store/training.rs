//! The training source: logged decisions joined with their quality
//! feedback, streamed row by row so a trainer runs in bounded memory.
//!
//! Feedback joins its request by id within an attribution window after the
//! request; of the `quality` feedback inside it, the latest wins (any
//! source, any later time). The chosen arm is the first model tried (the
//! policy's choice; fallbacks after it are not the policy's doing). Same
//! columns on both backends; the window arithmetic differs.

use chrono::{DateTime, Utc};
use futures_util::stream::{BoxStream, StreamExt};
use sqlx::Row;

use super::{SqliteStore, Store, StoreError};

/// One logged decision with what became of it.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedRow {
    pub id: String,
    pub created_at: DateTime<Utc>,
    /// The arm the policy chose.
    pub chosen: String,
    pub eligible: Vec<String>,
    pub propensity: f64,
    pub features: Vec<f64>,
    pub cost_usd: f64,
    pub latency_ms: f64,
    pub ok: bool,
    /// Latest `quality` feedback within the window, if any.
    pub quality: Option<f64>,
}

/// Which rows to read.
#[derive(Debug, Clone)]
pub struct LogWindow {
    pub route: String,
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    /// Feedback later than this after its request is ignored.
    pub attribution_s: f64,
}

const PG_SQL: &str = "SELECT r.id, r.created_at, \
    COALESCE(r.fallback_chain->0->>'model', r.model) AS chosen, \
    CAST(r.eligible_models AS TEXT) AS eligible, r.propensity, \
    CAST(r.features AS TEXT) AS features, r.cost_usd, r.latency_ms, r.status, \
    (SELECT f.value FROM feedback f WHERE f.request_id = r.id AND f.metric = 'quality' \
       AND f.created_at <= r.created_at + $4 * interval '1 second' \
     ORDER BY f.created_at DESC, f.id DESC LIMIT 1) AS quality \
    FROM requests r WHERE r.route = $1 AND r.created_at >= $2 AND r.created_at < $3 \
    AND r.features IS NOT NULL AND r.propensity IS NOT NULL \
    ORDER BY r.created_at, r.id";

const SQLITE_SQL: &str = "SELECT r.id, r.created_at, \
    COALESCE(json_extract(r.fallback_chain, '$[0].model'), r.model) AS chosen, \
    CAST(r.eligible_models AS TEXT) AS eligible, r.propensity, \
    CAST(r.features AS TEXT) AS features, r.cost_usd, r.latency_ms, r.status, \
    (SELECT f.value FROM feedback f WHERE f.request_id = r.id AND f.metric = 'quality' \
       AND julianday(f.created_at) <= julianday(r.created_at) + $4 / 86400.0 \
     ORDER BY f.created_at DESC, f.id DESC LIMIT 1) AS quality \
    FROM requests r WHERE r.route = $1 AND r.created_at >= $2 AND r.created_at < $3 \
    AND r.features IS NOT NULL AND r.propensity IS NOT NULL \
    ORDER BY r.created_at, r.id";

macro_rules! logged {
    ($r:expr) => {{
        let r = $r;
        let parse_vec = |col: &str| -> Option<String> { r.get::<Option<String>, _>(col) };
        let eligible: Vec<String> = parse_vec("eligible")
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        let features: Vec<f64> = parse_vec("features")
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        LoggedRow {
            id: r.get("id"),
            created_at: r.get("created_at"),
            chosen: r.get::<Option<String>, _>("chosen").unwrap_or_default(),
            eligible,
            propensity: r.get::<Option<f64>, _>("propensity").unwrap_or(0.0),
            features,
            cost_usd: r.get("cost_usd"),
            latency_ms: r.get("latency_ms"),
            ok: r.get::<String, _>("status") == "ok",
            quality: r.get("quality"),
        }
    }};
}

const COUNT_SQL: &str = "SELECT COUNT(*) FROM requests r WHERE r.route = $1 \
    AND r.created_at >= $2 AND r.created_at < $3 \
    AND r.features IS NOT NULL AND r.propensity IS NOT NULL";

impl Store {
    /// How many rows `logged_rows` will stream (for a progress bar).
    pub async fn count_logged_rows(&self, w: &LogWindow) -> Result<u64, StoreError> {
        let n: i64 = match self {
            Store::Postgres(p) => {
                sqlx::query_scalar(COUNT_SQL)
                    .bind(&w.route)
                    .bind(w.since)
                    .bind(w.until)
                    .fetch_one(p)
                    .await?
            }
            Store::Sqlite(SqliteStore { pool: p, .. }) => {
                sqlx::query_scalar(COUNT_SQL)
                    .bind(&w.route)
                    .bind(w.since)
                    .bind(w.until)
                    .fetch_one(p)
                    .await?
            }
        };
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Streams the window's logged decisions in time order. Rows are
    /// decoded one at a time; memory does not grow with the window.
    pub fn logged_rows<'a>(
        &'a self,
        w: &'a LogWindow,
    ) -> BoxStream<'a, Result<LoggedRow, StoreError>> {
        match self {
            Store::Postgres(p) => sqlx::query(PG_SQL)
                .bind(&w.route)
                .bind(w.since)
                .bind(w.until)
                .bind(w.attribution_s)
                .fetch(p)
                .map(|r| r.map(|r| logged!(&r)).map_err(StoreError::from))
                .boxed(),
            Store::Sqlite(SqliteStore { pool: p, .. }) => sqlx::query(SQLITE_SQL)
                .bind(&w.route)
                .bind(w.since)
                .bind(w.until)
                .bind(w.attribution_s)
                .fetch(p)
                .map(|r| r.map(|r| logged!(&r)).map_err(StoreError::from))
                .boxed(),
        }
    }
}
