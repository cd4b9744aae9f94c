//! Live controls that outlive a config reload and a restart: disabled
//! models (`model_flags`), arms added to or retired from a route
//! (`route_arms`) and experiments (`experiments`). Every change notifies
//! `switchboard_control` on Postgres so each replica re-reads them.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::types::Json;
use sqlx::Row;

use super::{SqliteStore, Store, StoreError};

/// The Postgres channel replicas `LISTEN` on for control changes.
pub const CONTROL_CHANNEL: &str = "switchboard_control";

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelFlag {
    pub model: String,
    pub disabled: bool,
    pub reason: Option<String>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExperimentRow {
    pub name: String,
    pub route: String,
    pub kind: String,
    pub candidate: String,
    pub share: f64,
    pub sticky_by: Option<String>,
    pub status: String,
    /// `config` (status only; the file defines it) or `api`.
    pub source: String,
    pub params: Option<serde_json::Value>,
    pub note: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ArmRow {
    pub route: String,
    pub model: String,
    /// `added`, `retiring` or `retired`.
    pub state: String,
    pub prior_quality: Option<f64>,
    pub explore_quota: Option<i64>,
    pub explore_share: Option<f64>,
    pub window_s: Option<i64>,
    pub started_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Everything the control tables hold.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ControlRows {
    pub flags: Vec<ModelFlag>,
    pub experiments: Vec<ExperimentRow>,
    pub arms: Vec<ArmRow>,
}

const FLAGS_SQL: &str =
    "SELECT model, disabled, reason, updated_at FROM model_flags ORDER BY model";
const EXPERIMENTS_SQL: &str = "SELECT name, route, kind, candidate, share, sticky_by, status, \
    source, CAST(params AS TEXT) AS params, note, created_at, updated_at FROM experiments ORDER BY created_at, name";
const ARMS_SQL: &str = "SELECT route, model, state, prior_quality, explore_quota, explore_share, \
    window_s, started_at, updated_at FROM route_arms ORDER BY route, model";
const SET_FLAG_SQL: &str = "INSERT INTO model_flags (model, disabled, reason, updated_at) \
    VALUES ($1, $2, $3, $4) ON CONFLICT (model) DO UPDATE SET disabled = excluded.disabled, \
    reason = excluded.reason, updated_at = excluded.updated_at";
const UPSERT_EXPERIMENT_SQL: &str = "INSERT INTO experiments (name, route, kind, candidate, \
    share, sticky_by, status, source, params, note, created_at, updated_at) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) ON CONFLICT (name) DO UPDATE SET \
    route = excluded.route, kind = excluded.kind, candidate = excluded.candidate, \
    share = excluded.share, sticky_by = excluded.sticky_by, status = excluded.status, \
    source = excluded.source, params = excluded.params, note = excluded.note, \
    updated_at = excluded.updated_at";
const INSERT_CONFIG_EXPERIMENT_SQL: &str = "INSERT INTO experiments (name, route, kind, \
    candidate, share, sticky_by, status, source, params, note, created_at, updated_at) \
    VALUES ($1, $2, $3, $4, $5, $6, 'running', 'config', NULL, NULL, $7, $7) \
    ON CONFLICT (name) DO NOTHING";
const STATUS_SQL: &str =
    "UPDATE experiments SET status = $2, note = COALESCE($3, note), updated_at = $4 WHERE name = $1";
const UPSERT_ARM_SQL: &str = "INSERT INTO route_arms (route, model, state, prior_quality, \
    explore_quota, explore_share, window_s, started_at, updated_at) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (route, model) DO UPDATE SET \
    state = excluded.state, prior_quality = excluded.prior_quality, \
    explore_quota = excluded.explore_quota, explore_share = excluded.explore_share, \
    window_s = excluded.window_s, started_at = excluded.started_at, updated_at = excluded.updated_at";
const DELETE_ARM_SQL: &str = "DELETE FROM route_arms WHERE route = $1 AND model = $2";
const FORCED_SQL: &str = "SELECT COUNT(*) FROM requests WHERE route = $1 AND experiment = $2 \
    AND experiment_arm = 'forced'";

macro_rules! flag {
    ($r:expr) => {
        ModelFlag {
            model: $r.get("model"),
            disabled: $r.get("disabled"),
            reason: $r.get("reason"),
            updated_at: $r.get("updated_at"),
        }
    };
}

macro_rules! experiment {
    ($r:expr) => {
        ExperimentRow {
            name: $r.get("name"),
            route: $r.get("route"),
            kind: $r.get("kind"),
            candidate: $r.get("candidate"),
            share: $r.get("share"),
            sticky_by: $r.get("sticky_by"),
            status: $r.get("status"),
            source: $r.get("source"),
            params: $r
                .get::<Option<String>, _>("params")
                .and_then(|t| serde_json::from_str(&t).ok()),
            note: $r.get("note"),
            created_at: $r.get("created_at"),
            updated_at: $r.get("updated_at"),
        }
    };
}

macro_rules! arm {
    ($r:expr) => {
        ArmRow {
            route: $r.get("route"),
            model: $r.get("model"),
            state: $r.get("state"),
            prior_quality: $r.get("prior_quality"),
            explore_quota: $r.get("explore_quota"),
            explore_share: $r.get("explore_share"),
            window_s: $r.get("window_s"),
            started_at: $r.get("started_at"),
            updated_at: $r.get("updated_at"),
        }
    };
}

/// Runs one statement with its binds on either backend, announces the
/// change, and returns the rows affected.
macro_rules! exec {
    ($store:expr, $sql:expr $(, $arg:expr)* $(,)?) => {{
        let n = match $store {
            Store::Postgres(p) => sqlx::query($sql)$(.bind($arg))*.execute(p).await?.rows_affected(),
            Store::Sqlite(SqliteStore { pool: p, .. }) => sqlx::query($sql)$(.bind($arg))*.execute(p).await?.rows_affected(),
        };
        $store.notify_control().await?;
        n
    }};
}

impl Store {
    pub async fn load_control(&self) -> Result<ControlRows, StoreError> {
        Ok(match self {
            Store::Postgres(p) => ControlRows {
                flags: sqlx::query(FLAGS_SQL)
                    .fetch_all(p)
                    .await?
                    .iter()
                    .map(|r| flag!(r))
                    .collect(),
                experiments: sqlx::query(EXPERIMENTS_SQL)
                    .fetch_all(p)
                    .await?
                    .iter()
                    .map(|r| experiment!(r))
                    .collect(),
                arms: sqlx::query(ARMS_SQL)
                    .fetch_all(p)
                    .await?
                    .iter()
                    .map(|r| arm!(r))
                    .collect(),
            },
            Store::Sqlite(SqliteStore { pool: p, .. }) => ControlRows {
                flags: sqlx::query(FLAGS_SQL)
                    .fetch_all(p)
                    .await?
                    .iter()
                    .map(|r| flag!(r))
                    .collect(),
                experiments: sqlx::query(EXPERIMENTS_SQL)
                    .fetch_all(p)
                    .await?
                    .iter()
                    .map(|r| experiment!(r))
                    .collect(),
                arms: sqlx::query(ARMS_SQL)
                    .fetch_all(p)
                    .await?
                    .iter()
                    .map(|r| arm!(r))
                    .collect(),
            },
        })
    }

    async fn notify_control(&self) -> Result<(), StoreError> {
        if let Store::Postgres(p) = self {
            sqlx::query("SELECT pg_notify($1, '')")
                .bind(CONTROL_CHANNEL)
                .execute(p)
                .await?;
        }
        Ok(())
    }

    pub async fn set_model_disabled(
        &self,
        model: &str,
        disabled: bool,
        reason: Option<&str>,
    ) -> Result<(), StoreError> {
        exec!(self, SET_FLAG_SQL, model, disabled, reason, Utc::now());
        Ok(())
    }

    pub async fn upsert_experiment(&self, e: &ExperimentRow) -> Result<(), StoreError> {
        exec!(
            self,
            UPSERT_EXPERIMENT_SQL,
            &e.name,
            &e.route,
            &e.kind,
            &e.candidate,
            e.share,
            &e.sticky_by,
            &e.status,
            &e.source,
            e.params.clone().map(Json),
            &e.note,
            e.created_at,
            e.updated_at,
        );
        Ok(())
    }

    /// Records a `[[experiments]]` entry the first time it is seen, as
    /// running; an existing row (e.g. stopped by an operator) is kept.
    /// Returns whether a row was inserted.
    pub async fn register_config_experiment(&self, e: &ExperimentRow) -> Result<bool, StoreError> {
        let n = exec!(
            self,
            INSERT_CONFIG_EXPERIMENT_SQL,
            &e.name,
            &e.route,
            &e.kind,
            &e.candidate,
            e.share,
            &e.sticky_by,
            e.created_at,
        );
        Ok(n > 0)
    }

    /// Sets an experiment's status; false if there is no such experiment.
    pub async fn set_experiment_status(
        &self,
        name: &str,
        status: &str,
        note: Option<&str>,
    ) -> Result<bool, StoreError> {
        let n = exec!(self, STATUS_SQL, name, status, note, Utc::now());
        Ok(n > 0)
    }

    pub async fn upsert_arm(&self, a: &ArmRow) -> Result<(), StoreError> {
        exec!(
            self,
            UPSERT_ARM_SQL,
            &a.route,
            &a.model,
            &a.state,
            a.prior_quality,
            a.explore_quota,
            a.explore_share,
            a.window_s,
            a.started_at,
            a.updated_at,
        );
        Ok(())
    }

    pub async fn delete_arm(&self, route: &str, model: &str) -> Result<(), StoreError> {
        exec!(self, DELETE_ARM_SQL, route, model);
        Ok(())
    }

    /// Forced-exploration decisions already made for an onboarding arm
    /// (`experiment` = `onboard:<model>`), so a restart keeps the quota.
    pub async fn forced_decisions(&self, route: &str, experiment: &str) -> Result<i64, StoreError> {
        Ok(match self {
            Store::Postgres(p) => {
                sqlx::query_scalar(FORCED_SQL)
                    .bind(route)
                    .bind(experiment)
                    .fetch_one(p)
                    .await?
            }
            Store::Sqlite(SqliteStore { pool: p, .. }) => {
                sqlx::query_scalar(FORCED_SQL)
                    .bind(route)
                    .bind(experiment)
                    .fetch_one(p)
                    .await?
            }
        })
    }
}
