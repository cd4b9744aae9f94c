//! Point reads and writes outside the event batches: the learner's saved
//! state and a request's stored decision. Same SQL on both backends.

use chrono::Utc;
use sqlx::types::Json;
use sqlx::Row;

use super::{SqliteStore, Store, StoreError};

/// What the store kept about one decision.
#[derive(Debug, Clone)]
pub struct StoredDecision {
    pub route: Option<String>,
    pub model: Option<String>,
    pub policy_version: Option<String>,
    pub propensity: Option<f64>,
    pub features: Option<Vec<f64>>,
    pub decision: Option<serde_json::Value>,
    pub cost_usd: f64,
    pub status: String,
}

const DECISION_SQL: &str = "SELECT route, model, policy_version, propensity, \
    CAST(features AS TEXT) AS features, CAST(decision AS TEXT) AS decision, cost_usd, status \
    FROM requests WHERE id = $1";

const SAVE_STATE_SQL: &str = "INSERT INTO policy_state (route, version, snapshot, updated_at) \
    VALUES ($1, $2, $3, $4) ON CONFLICT (route) DO UPDATE SET version = excluded.version, \
    snapshot = excluded.snapshot, updated_at = excluded.updated_at";

const LOAD_STATE_SQL: &str = "SELECT CAST(snapshot AS TEXT) FROM policy_state WHERE route = $1";

impl Store {
    pub async fn decision(&self, request_id: &str) -> Result<Option<StoredDecision>, StoreError> {
        macro_rules! read {
            ($row:expr) => {
                $row.map(|r| StoredDecision {
                    route: r.get("route"),
                    model: r.get("model"),
                    policy_version: r.get("policy_version"),
                    propensity: r.get("propensity"),
                    features: r
                        .get::<Option<String>, _>("features")
                        .and_then(|t| serde_json::from_str(&t).ok()),
                    decision: r
                        .get::<Option<String>, _>("decision")
                        .and_then(|t| serde_json::from_str(&t).ok()),
                    cost_usd: r.get("cost_usd"),
                    status: r.get("status"),
                })
            };
        }
        Ok(match self {
            Store::Postgres(p) => read!(
                sqlx::query(DECISION_SQL)
                    .bind(request_id)
                    .fetch_optional(p)
                    .await?
            ),
            Store::Sqlite(SqliteStore { pool: p, .. }) => read!(
                sqlx::query(DECISION_SQL)
                    .bind(request_id)
                    .fetch_optional(p)
                    .await?
            ),
        })
    }

    /// Saves a route's learner state (a JSON snapshot), replacing the last one.
    pub async fn save_policy_state(
        &self,
        route: &str,
        version: &str,
        snapshot: &serde_json::Value,
    ) -> Result<(), StoreError> {
        let now = Utc::now();
        match self {
            Store::Postgres(p) => {
                sqlx::query(SAVE_STATE_SQL)
                    .bind(route)
                    .bind(version)
                    .bind(Json(snapshot))
                    .bind(now)
                    .execute(p)
                    .await?;
            }
            Store::Sqlite(SqliteStore { pool: p, .. }) => {
                sqlx::query(SAVE_STATE_SQL)
                    .bind(route)
                    .bind(version)
                    .bind(Json(snapshot))
                    .bind(now)
                    .execute(p)
                    .await?;
            }
        }
        Ok(())
    }

    pub async fn load_policy_state(&self, route: &str) -> Result<Option<String>, StoreError> {
        Ok(match self {
            Store::Postgres(p) => {
                sqlx::query_scalar(LOAD_STATE_SQL)
                    .bind(route)
                    .fetch_optional(p)
                    .await?
            }
            Store::Sqlite(SqliteStore { pool: p, .. }) => {
                sqlx::query_scalar(LOAD_STATE_SQL)
                    .bind(route)
                    .fetch_optional(p)
                    .await?
            }
        })
    }
}
