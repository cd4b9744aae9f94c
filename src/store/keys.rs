//! The `api_keys` table and the spend sums that budgets start from. Same SQL
//! on both backends (lists are JSON text, read back with serde).
//!
//! Invariant: only the SHA-256 of a key ever reaches this module; the key
//! itself is shown once by whoever created it and never stored.

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::{SqliteStore, Store, StoreError};

/// One stored client key (never the key itself).
#[derive(Debug, Clone, PartialEq)]
pub struct KeyRecord {
    pub id: String,
    /// Lower-case hex SHA-256 of the whole key.
    pub key_hash: String,
    /// The first characters of the key, to recognise it in lists.
    pub prefix: String,
    pub name: Option<String>,
    pub tenant: Option<String>,
    pub tier: Option<String>,
    /// Routes and models this key may call; both empty means any.
    pub allowed_routes: Vec<String>,
    pub allowed_models: Vec<String>,
    /// Feature flags: names rules and experiments select keys by.
    pub flags: Vec<String>,
    pub requests_per_minute: Option<i64>,
    pub tokens_per_minute: Option<i64>,
    pub budget_usd_per_day: Option<f64>,
    pub budget_usd_per_month: Option<f64>,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "id, key_hash, prefix, name, tenant, tier, allowed_routes, allowed_models, \
    flags, requests_per_minute, tokens_per_minute, budget_usd_per_day, budget_usd_per_month, \
    created_at, revoked_at";

const INSERT_SQL: &str = "INSERT INTO api_keys (id, key_hash, prefix, name, tenant, tier, \
    allowed_routes, allowed_models, flags, requests_per_minute, tokens_per_minute, \
    budget_usd_per_day, budget_usd_per_month, created_at, revoked_at) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)";

const FLAGS_SQL: &str = "UPDATE api_keys SET flags = $1 WHERE id = $2 AND revoked_at IS NULL";

const REVOKE_SQL: &str = "UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL";

const SPENT_SQL: &str =
    "SELECT COALESCE(SUM(cost_usd), 0.0) FROM requests WHERE api_key_id = $1 AND created_at >= $2";

macro_rules! key_from_row {
    ($r:expr) => {{
        let r = $r;
        let list = |col: &str| -> Vec<String> {
            serde_json::from_str(&r.get::<String, _>(col)).unwrap_or_default()
        };
        KeyRecord {
            id: r.get("id"),
            key_hash: r.get("key_hash"),
            prefix: r.get("prefix"),
            name: r.get("name"),
            tenant: r.get("tenant"),
            tier: r.get("tier"),
            allowed_routes: list("allowed_routes"),
            allowed_models: list("allowed_models"),
            flags: list("flags"),
            requests_per_minute: r.get("requests_per_minute"),
            tokens_per_minute: r.get("tokens_per_minute"),
            budget_usd_per_day: r.get("budget_usd_per_day"),
            budget_usd_per_month: r.get("budget_usd_per_month"),
            created_at: r.get("created_at"),
            revoked_at: r.get("revoked_at"),
        }
    }};
}

macro_rules! bind_key {
    ($q:expr, $k:expr) => {{
        let k = $k;
        $q.bind(k.id.clone())
            .bind(k.key_hash.clone())
            .bind(k.prefix.clone())
            .bind(k.name.clone())
            .bind(k.tenant.clone())
            .bind(k.tier.clone())
            .bind(serde_json::json!(k.allowed_routes).to_string())
            .bind(serde_json::json!(k.allowed_models).to_string())
            .bind(serde_json::json!(k.flags).to_string())
            .bind(k.requests_per_minute)
            .bind(k.tokens_per_minute)
            .bind(k.budget_usd_per_day)
            .bind(k.budget_usd_per_month)
            .bind(k.created_at)
            .bind(k.revoked_at)
    }};
}

impl Store {
    pub async fn insert_key(&self, key: &KeyRecord) -> Result<(), StoreError> {
        match self {
            Store::Postgres(p) => {
                bind_key!(sqlx::query(INSERT_SQL), key).execute(p).await?;
            }
            Store::Sqlite(SqliteStore { pool: p, .. }) => {
                bind_key!(sqlx::query(INSERT_SQL), key).execute(p).await?;
            }
        }
        Ok(())
    }

    /// Every key, newest first, revoked ones included.
    pub async fn list_keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM api_keys ORDER BY created_at DESC, id");
        Ok(match self {
            Store::Postgres(p) => sqlx::query(&sql)
                .fetch_all(p)
                .await?
                .iter()
                .map(|r| key_from_row!(r))
                .collect(),
            Store::Sqlite(SqliteStore { pool: p, .. }) => sqlx::query(&sql)
                .fetch_all(p)
                .await?
                .iter()
                .map(|r| key_from_row!(r))
                .collect(),
        })
    }

    /// The key whose hash this is, revoked or not.
    pub async fn key_by_hash(&self, key_hash: &str) -> Result<Option<KeyRecord>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM api_keys WHERE key_hash = $1");
        Ok(match self {
            Store::Postgres(p) => sqlx::query(&sql)
                .bind(key_hash)
                .fetch_optional(p)
                .await?
                .map(|r| key_from_row!(&r)),
            Store::Sqlite(SqliteStore { pool: p, .. }) => sqlx::query(&sql)
                .bind(key_hash)
                .fetch_optional(p)
                .await?
                .map(|r| key_from_row!(&r)),
        })
    }

    /// Revokes the key with this id; `false` when there is no such live key.
    pub async fn revoke_key(&self, id: &str) -> Result<bool, StoreError> {
        let now = Utc::now();
        let n = match self {
            Store::Postgres(p) => sqlx::query(REVOKE_SQL)
                .bind(now)
                .bind(id)
                .execute(p)
                .await?
                .rows_affected(),
            Store::Sqlite(SqliteStore { pool: p, .. }) => sqlx::query(REVOKE_SQL)
                .bind(now)
                .bind(id)
                .execute(p)
                .await?
                .rows_affected(),
        };
        Ok(n > 0)
    }

    /// Replaces a live key's feature flags; false if there is no live key
    /// with this id.
    pub async fn set_key_flags(&self, id: &str, flags: &[String]) -> Result<bool, StoreError> {
        let text = serde_json::json!(flags).to_string();
        let n = match self {
            Store::Postgres(p) => sqlx::query(FLAGS_SQL)
                .bind(text)
                .bind(id)
                .execute(p)
                .await?
                .rows_affected(),
            Store::Sqlite(SqliteStore { pool: p, .. }) => sqlx::query(FLAGS_SQL)
                .bind(text)
                .bind(id)
                .execute(p)
                .await?
                .rows_affected(),
        };
        Ok(n > 0)
    }

    /// The recorded cost of a key's requests since `since`.
    pub async fn key_spent_since(
        &self,
        key_id: &str,
        since: DateTime<Utc>,
    ) -> Result<f64, StoreError> {
        Ok(match self {
            Store::Postgres(p) => {
                sqlx::query_scalar(SPENT_SQL)
                    .bind(key_id)
                    .bind(since)
                    .fetch_one(p)
                    .await?
            }
            Store::Sqlite(SqliteStore { pool: p, .. }) => {
                sqlx::query_scalar(SPENT_SQL)
                    .bind(key_id)
                    .bind(since)
                    .fetch_one(p)
                    .await?
            }
        })
    }
}
