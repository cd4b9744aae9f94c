//! Versioned policies: the `policy_snapshots` table (every version a
//! training run or warm start produced, with parent, algorithm, parameters,
//! metrics and status) and the change notification replicas follow.
//!
//! Invariant: at most one `active` row per route; `activate` retires the
//! previous one in the same transaction and, on Postgres, sends
//! `NOTIFY switchboard_policy` with the route name on commit.

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::Row;

use super::{SqliteStore, Store, StoreError};

/// The Postgres channel replicas `LISTEN` on; the payload is the route.
pub const POLICY_CHANNEL: &str = "switchboard_policy";

/// One row of `policy_snapshots`; `parameters` is the snapshot JSON text.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyRow {
    pub version: String,
    pub route: String,
    pub algorithm: String,
    pub parameters: String,
    pub metrics: Option<serde_json::Value>,
    pub status: String,
    pub parent: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// A new version to store.
#[derive(Debug, Clone)]
pub struct NewPolicy<'a> {
    pub version: &'a str,
    pub route: &'a str,
    pub algorithm: &'a str,
    pub parameters: &'a serde_json::Value,
    pub metrics: &'a serde_json::Value,
    pub parent: Option<&'a str>,
    /// Activate it at once (retiring the route's active version).
    pub active: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyStoreError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no policy version {0:?}")]
    Unknown(String),
}

impl From<sqlx::Error> for PolicyStoreError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(StoreError::Sql(e))
    }
}

const COLUMNS: &str = "version, route, algorithm, CAST(parameters AS TEXT) AS parameters, \
    CAST(metrics AS TEXT) AS metrics, status, parent, created_at";
const INSERT_SQL: &str = "INSERT INTO policy_snapshots \
    (version, route, algorithm, parameters, metrics, status, parent, created_at) \
    VALUES ($1, $2, $3, $4, $5, 'candidate', $6, $7)";
const RETIRE_SQL: &str =
    "UPDATE policy_snapshots SET status = 'retired' WHERE route = $1 AND status = 'active'";
const ACTIVATE_SQL: &str = "UPDATE policy_snapshots SET status = 'active' WHERE version = $1";
const ROUTE_SQL: &str = "SELECT route FROM policy_snapshots WHERE version = $1";

macro_rules! row {
    ($r:expr) => {
        PolicyRow {
            version: $r.get("version"),
            route: $r.get("route"),
            algorithm: $r.get("algorithm"),
            parameters: $r.get("parameters"),
            metrics: $r
                .get::<Option<String>, _>("metrics")
                .and_then(|t| serde_json::from_str(&t).ok()),
            status: $r.get("status"),
            parent: $r.get("parent"),
            created_at: $r.get("created_at"),
        }
    };
}

/// Runs `$body` with `$tx` a transaction on either backend, then commits.
macro_rules! in_tx {
    ($store:expr, |$tx:ident, $pg:ident| $body:block) => {
        match $store {
            Store::Postgres(pool) => {
                let mut $tx = pool.begin().await?;
                let $pg = true;
                $body
                $tx.commit().await?;
            }
            Store::Sqlite(SqliteStore { pool, .. }) => {
                let mut $tx = pool.begin().await?;
                let $pg = false;
                $body
                $tx.commit().await?;
            }
        }
    };
}

impl Store {
    /// Stores a version as `candidate`, or as `active` when asked.
    pub async fn insert_policy(&self, p: &NewPolicy<'_>) -> Result<(), PolicyStoreError> {
        in_tx!(self, |tx, pg| {
            sqlx::query(INSERT_SQL)
                .bind(p.version)
                .bind(p.route)
                .bind(p.algorithm)
                .bind(Json(p.parameters))
                .bind(Json(p.metrics))
                .bind(p.parent)
                .bind(Utc::now())
                .execute(&mut *tx)
                .await?;
            if p.active {
                sqlx::query(RETIRE_SQL)
                    .bind(p.route)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(ACTIVATE_SQL)
                    .bind(p.version)
                    .execute(&mut *tx)
                    .await?;
                if pg {
                    sqlx::query("SELECT pg_notify($1, $2)")
                        .bind(POLICY_CHANNEL)
                        .bind(p.route)
                        .execute(&mut *tx)
                        .await?;
                }
            }
        });
        Ok(())
    }

    /// Makes `version` its route's active policy (retiring the previous
    /// one) and notifies replicas. Returns the route.
    pub async fn activate_policy(&self, version: &str) -> Result<String, PolicyStoreError> {
        let route;
        in_tx!(self, |tx, pg| {
            let r: Option<String> = sqlx::query_scalar(ROUTE_SQL)
                .bind(version)
                .fetch_optional(&mut *tx)
                .await?;
            route = r.ok_or_else(|| PolicyStoreError::Unknown(version.to_owned()))?;
            sqlx::query(RETIRE_SQL)
                .bind(&route)
                .execute(&mut *tx)
                .await?;
            sqlx::query(ACTIVATE_SQL)
                .bind(version)
                .execute(&mut *tx)
                .await?;
            if pg {
                sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(POLICY_CHANNEL)
                    .bind(&route)
                    .execute(&mut *tx)
                    .await?;
            }
        });
        Ok(route)
    }

    /// Versions, newest first, optionally of one route.
    pub async fn list_policies(&self, route: Option<&str>) -> Result<Vec<PolicyRow>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM policy_snapshots WHERE route = COALESCE($1, route) \
             ORDER BY created_at DESC, version DESC"
        );
        Ok(match self {
            Store::Postgres(p) => sqlx::query(&sql)
                .bind(route)
                .fetch_all(p)
                .await?
                .iter()
                .map(|r| row!(r))
                .collect(),
            Store::Sqlite(SqliteStore { pool: p, .. }) => sqlx::query(&sql)
                .bind(route)
                .fetch_all(p)
                .await?
                .iter()
                .map(|r| row!(r))
                .collect(),
        })
    }

    pub async fn policy(&self, version: &str) -> Result<Option<PolicyRow>, StoreError> {
        self.one_policy("version = $1", version).await
    }

    pub async fn active_policy(&self, route: &str) -> Result<Option<PolicyRow>, StoreError> {
        self.one_policy("route = $1 AND status = 'active'", route)
            .await
    }

    /// At most one snapshot matching `condition` with `$1` bound to `arg`
    /// (`condition` is a constant of this module, never user input).
    async fn one_policy(
        &self,
        condition: &str,
        arg: &str,
    ) -> Result<Option<PolicyRow>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM policy_snapshots WHERE {condition}");
        Ok(match self {
            Store::Postgres(p) => sqlx::query(&sql)
                .bind(arg)
                .fetch_optional(p)
                .await?
                .map(|r| row!(r)),
            Store::Sqlite(SqliteStore { pool: p, .. }) => sqlx::query(&sql)
                .bind(arg)
                .fetch_optional(p)
                .await?
                .map(|r| row!(r)),
        })
    }

    /// A fresh version number: one more than the versions stored.
    pub async fn next_policy_number(&self) -> Result<i64, StoreError> {
        let sql = "SELECT COUNT(*) FROM policy_snapshots";
        let n: i64 = match self {
            Store::Postgres(p) => sqlx::query_scalar(sql).fetch_one(p).await?,
            Store::Sqlite(SqliteStore { pool: p, .. }) => {
                sqlx::query_scalar(sql).fetch_one(p).await?
            }
        };
        Ok(n + 1)
    }
}
