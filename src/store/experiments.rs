//! Reading an experiment's results: one row per request of the experiment
//! (or its mirrored originals, or its shadow-scored decisions) with the
//! reward it earned: the latest `quality` feedback, else 0 for a failure.
//! Aggregation is done by the caller (`experiments::stats`), the same way
//! on both backends. Reads at most `LIMIT` most recent rows.

use sqlx::Row;

use super::{SqliteStore, Store, StoreError};

const LIMIT: i64 = 200_000;

/// One request as an experiment's results need it.
#[derive(Debug, Clone, PartialEq)]
pub struct ExperimentObs {
    pub arm: String,
    pub model: Option<String>,
    pub ok: bool,
    pub cost_usd: f64,
    pub latency_ms: f64,
    pub reward: Option<f64>,
    pub propensity: Option<f64>,
    pub counterfactual: Option<serde_json::Value>,
}

const REWARD: &str = "COALESCE((SELECT f.value FROM feedback f WHERE f.request_id = r.id \
    AND f.metric = 'quality' ORDER BY f.created_at DESC, f.id DESC LIMIT 1), \
    CASE WHEN r.status = 'error' THEN 0.0 END)";

fn sql(kind: &str) -> String {
    let filter = match kind {
        // Requests assigned to an acting experiment, and mirrored calls.
        "assigned" => "r.experiment = $1",
        // The client requests a shadow experiment mirrored.
        "mirrored" => "r.id IN (SELECT s.shadow_of FROM requests s WHERE s.experiment = $1)",
        // Decisions a shadow policy scored (the name is checked by the caller).
        _ => "r.route = $1 AND r.counterfactual IS NOT NULL",
    };
    format!(
        "SELECT COALESCE(r.experiment_arm, 'control') AS arm, r.model, r.status, r.cost_usd, \
         r.latency_ms, r.propensity, CAST(r.counterfactual AS TEXT) AS counterfactual, \
         {REWARD} AS reward FROM requests r WHERE {filter} \
         ORDER BY r.created_at DESC LIMIT {LIMIT}"
    )
}

macro_rules! obs {
    ($r:expr) => {
        ExperimentObs {
            arm: $r.get("arm"),
            model: $r.get("model"),
            ok: $r.get::<String, _>("status") == "ok",
            cost_usd: $r.get("cost_usd"),
            latency_ms: $r.get("latency_ms"),
            reward: $r.get("reward"),
            propensity: $r.get("propensity"),
            counterfactual: $r
                .get::<Option<String>, _>("counterfactual")
                .and_then(|t| serde_json::from_str(&t).ok()),
        }
    };
}

impl Store {
    /// `which`: `assigned` (rows with `experiment = key`), `mirrored` (the
    /// originals of a shadow experiment's mirrors) or `scored` (rows of
    /// route `key` a shadow policy scored).
    pub async fn experiment_rows(
        &self,
        which: &str,
        key: &str,
    ) -> Result<Vec<ExperimentObs>, StoreError> {
        let sql = sql(which);
        Ok(match self {
            Store::Postgres(p) => sqlx::query(&sql)
                .bind(key)
                .fetch_all(p)
                .await?
                .iter()
                .map(|r| obs!(r))
                .collect(),
            Store::Sqlite(SqliteStore { pool: p, .. }) => sqlx::query(&sql)
                .bind(key)
                .fetch_all(p)
                .await?
                .iter()
                .map(|r| obs!(r))
                .collect(),
        })
    }
}
