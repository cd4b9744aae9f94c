//! Export and import of the logged history: requests (each row is a
//! decision with its outcome), their feedback and the policy versions, as
//! the plain records the router writes, streamed so memory does not grow
//! with the history. `cli::export` turns them into JSONL files and back.
//!
//! Import writes requests and feedback through the outbox's batch writer
//! (so the dashboards' rollups are rebuilt by the same triggers) and policy
//! versions as they were (status, parent, time). It is meant for a fresh
//! database: `history_rows` lets the caller refuse one that already holds
//! history, since feedback without an idempotency key would be doubled.

use chrono::{DateTime, Utc};
use futures_util::stream::{BoxStream, StreamExt};
use serde::{Deserialize, Serialize};
use sqlx::types::Json;
use sqlx::Row;

use super::records::{AttemptRecord, FeedbackRecord, RequestRecord};
use super::{SqliteStore, Store, StoreError};

/// One row of `policy_snapshots`, as exported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyRecord {
    pub version: String,
    pub route: String,
    pub algorithm: String,
    pub parameters: serde_json::Value,
    pub metrics: Option<serde_json::Value>,
    pub status: String,
    pub parent: Option<String>,
    pub created_at: DateTime<Utc>,
}

const REQUESTS_SQL: &str = "SELECT id, created_at, api_key_id, tenant, route, tier, user_id, \
    requested_model, model, provider, CAST(eligible_models AS TEXT) AS eligible_models, \
    policy_version, propensity, CAST(features AS TEXT) AS features, \
    CAST(decision AS TEXT) AS decision, stream, prompt_tokens, completion_tokens, \
    tokens_counted_locally, cost_usd, latency_ms, ttft_ms, status, status_code, error_kind, \
    CAST(fallback_chain AS TEXT) AS fallback_chain, attempts, cache_hit, \
    CAST(tags AS TEXT) AS tags, experiment, experiment_arm, shadow, shadow_of, \
    CAST(counterfactual AS TEXT) AS counterfactual \
    FROM requests WHERE created_at >= $1 ORDER BY created_at, id";

const FEEDBACK_SQL: &str = "SELECT f.request_id, f.created_at, f.metric, f.value, f.source, \
    f.comment, f.feedback_id FROM feedback f \
    WHERE f.request_id IN (SELECT id FROM requests WHERE created_at >= $1) ORDER BY f.id";

const POLICY_INSERT: &str = "INSERT INTO policy_snapshots \
    (version, route, algorithm, parameters, metrics, status, parent, created_at) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";

/// Parses a JSON text column, `None` for NULL or unparsable text.
fn json<T: serde::de::DeserializeOwned>(text: Option<String>) -> Option<T> {
    text.and_then(|t| serde_json::from_str(&t).ok())
}

macro_rules! request {
    ($r:expr) => {{
        let r = $r;
        RequestRecord {
            id: r.try_get("id")?,
            created_at: r.try_get("created_at")?,
            api_key_id: r.try_get("api_key_id")?,
            tenant: r.try_get("tenant")?,
            route: r.try_get("route")?,
            tier: r.try_get("tier")?,
            user_id: r.try_get("user_id")?,
            requested_model: r.try_get("requested_model")?,
            model: r.try_get("model")?,
            provider: r.try_get("provider")?,
            eligible_models: json(r.try_get("eligible_models")?).unwrap_or_default(),
            policy_version: r.try_get("policy_version")?,
            propensity: r.try_get("propensity")?,
            features: json(r.try_get("features")?),
            decision: json(r.try_get("decision")?),
            stream: r.try_get("stream")?,
            prompt_tokens: r.try_get("prompt_tokens")?,
            completion_tokens: r.try_get("completion_tokens")?,
            tokens_counted_locally: r.try_get("tokens_counted_locally")?,
            cost_usd: r.try_get("cost_usd")?,
            latency_ms: r.try_get("latency_ms")?,
            ttft_ms: r.try_get("ttft_ms")?,
            ok: r.try_get::<String, _>("status")? == "ok",
            status_code: r.try_get("status_code")?,
            error_kind: r.try_get("error_kind")?,
            fallback_chain: json::<Vec<AttemptRecord>>(r.try_get("fallback_chain")?)
                .unwrap_or_default(),
            attempts: r.try_get("attempts")?,
            cache_hit: r.try_get("cache_hit")?,
            tags: json(r.try_get("tags")?),
            assignment: crate::store::records::Assignment {
                experiment: r.try_get("experiment")?,
                experiment_arm: r.try_get("experiment_arm")?,
                shadow: r.try_get("shadow")?,
                shadow_of: r.try_get("shadow_of")?,
                counterfactual: json(r.try_get("counterfactual")?),
            },
        }
    }};
}

macro_rules! feedback {
    ($r:expr) => {{
        let r = $r;
        FeedbackRecord {
            request_id: r.try_get("request_id")?,
            created_at: r.try_get("created_at")?,
            metric: r.try_get("metric")?,
            value: r.try_get("value")?,
            source: r.try_get("source")?,
            comment: r.try_get("comment")?,
            feedback_id: r.try_get("feedback_id")?,
        }
    }};
}

/// Streams `$sql` (one bind: `$since`) decoded by `$decode` on either backend.
macro_rules! stream_rows {
    ($store:expr, $sql:expr, $since:expr, $decode:ident) => {
        match $store {
            Store::Postgres(p) => sqlx::query($sql)
                .bind($since)
                .fetch(p)
                .map(|r| -> Result<_, StoreError> {
                    let r = r?;
                    Ok($decode!(&r))
                })
                .boxed(),
            Store::Sqlite(SqliteStore { pool: p, .. }) => sqlx::query($sql)
                .bind($since)
                .fetch(p)
                .map(|r| -> Result<_, StoreError> {
                    let r = r?;
                    Ok($decode!(&r))
                })
                .boxed(),
        }
    };
}

impl Store {
    /// Requests logged at or after `since`, oldest first.
    pub fn export_requests(
        &self,
        since: DateTime<Utc>,
    ) -> BoxStream<'_, Result<RequestRecord, StoreError>> {
        stream_rows!(self, REQUESTS_SQL, since, request)
    }

    /// The feedback of those requests, in the order it was stored.
    pub fn export_feedback(
        &self,
        since: DateTime<Utc>,
    ) -> BoxStream<'_, Result<FeedbackRecord, StoreError>> {
        stream_rows!(self, FEEDBACK_SQL, since, feedback)
    }

    /// Every policy version, oldest first.
    pub async fn export_policies(&self) -> Result<Vec<PolicyRecord>, StoreError> {
        let mut rows = self.list_policies(None).await?;
        rows.reverse();
        Ok(rows
            .into_iter()
            .map(|p| PolicyRecord {
                parameters: serde_json::from_str(&p.parameters)
                    .unwrap_or(serde_json::Value::String(p.parameters)),
                version: p.version,
                route: p.route,
                algorithm: p.algorithm,
                metrics: p.metrics,
                status: p.status,
                parent: p.parent,
                created_at: p.created_at,
            })
            .collect())
    }

    /// Stores an exported version as it was (status included).
    pub async fn import_policy(&self, p: &PolicyRecord) -> Result<(), StoreError> {
        macro_rules! insert {
            ($pool:expr) => {{
                sqlx::query(POLICY_INSERT)
                    .bind(&p.version)
                    .bind(&p.route)
                    .bind(&p.algorithm)
                    .bind(Json(&p.parameters))
                    .bind(p.metrics.as_ref().map(Json))
                    .bind(&p.status)
                    .bind(&p.parent)
                    .bind(p.created_at)
                    .execute($pool)
                    .await?;
            }};
        }
        match self {
            Store::Postgres(pool) => insert!(pool),
            Store::Sqlite(SqliteStore { pool, .. }) => insert!(pool),
        }
        Ok(())
    }

    /// Rows of history already stored (requests, feedback, policy versions).
    pub async fn history_rows(&self) -> Result<i64, StoreError> {
        let sql = "SELECT (SELECT COUNT(*) FROM requests) + (SELECT COUNT(*) FROM feedback) \
                   + (SELECT COUNT(*) FROM policy_snapshots)";
        Ok(match self {
            Store::Postgres(p) => sqlx::query_scalar(sql).fetch_one(p).await?,
            Store::Sqlite(SqliteStore { pool: p, .. }) => {
                sqlx::query_scalar(sql).fetch_one(p).await?
            }
        })
    }
}
