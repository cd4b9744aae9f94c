//! Scale-out tables (Postgres only; SQLite is one process): the log of
//! policy deltas, replica heartbeats, the compacted checkpoint in
//! `policy_state`, and compaction. See docs/scaling.md.
//!
//! Invariant: positions in `policy_deltas` are drawn from a sequence while
//! holding a transaction-level advisory lock that is released at commit, so
//! they become visible in increasing order and a reader that has seen
//! position p will never later see a lower one. A flush is one transaction;
//! its rows are keyed by (incarnation, seq, route), so retrying it is a no-op.

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::{PgPool, Row};

use super::{Store, StoreError};

/// The advisory lock that orders delta positions ("SBDL").
const DELTA_LOCK: i64 = 0x5342_444c;

/// One replica's identity as stored.
#[derive(Debug, Clone)]
pub struct ReplicaIdentity {
    pub id: String,
    pub incarnation: String,
    pub started_at: DateTime<Utc>,
    pub version: String,
}

/// What a heartbeat reports besides the identity.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReplicaProgress {
    pub watermark: i64,
    pub last_seq: i64,
    pub unflushed: i64,
}

/// One route's delta in a flush.
#[derive(Debug, Clone)]
pub struct NewDelta {
    pub route: String,
    pub epoch: String,
    pub updates: i64,
    pub delta: Vec<u8>,
}

/// A delta read back from the log.
#[derive(Debug, Clone)]
pub struct DeltaEntry {
    pub pos: i64,
    pub replica: String,
    pub incarnation: String,
    pub seq: i64,
    pub route: String,
    pub epoch: String,
    pub delta: Vec<u8>,
}

/// A route's compacted state: every delta up to `watermark` merged.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub snapshot: String,
    pub watermark: i64,
    pub epoch: String,
}

/// A row of `replicas`, with liveness judged by the database's clock.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReplicaRow {
    pub id: String,
    pub incarnation: String,
    pub started_at: DateTime<Utc>,
    pub heartbeat_at: DateTime<Utc>,
    pub stopped_at: Option<DateTime<Utc>>,
    pub heartbeat_age_ms: i64,
    pub live: bool,
    pub watermark: i64,
    pub last_seq: i64,
    pub unflushed: i64,
    pub version: String,
}

const UPSERT_REPLICA: &str = "INSERT INTO replicas (id, incarnation, started_at, heartbeat_at, \
    stopped_at, watermark, last_seq, unflushed, version) \
    VALUES ($1, $2, $3, now(), NULL, $4, $5, $6, $7) \
    ON CONFLICT (id) DO UPDATE SET incarnation = excluded.incarnation, \
    started_at = excluded.started_at, heartbeat_at = now(), stopped_at = NULL, \
    watermark = excluded.watermark, last_seq = excluded.last_seq, \
    unflushed = excluded.unflushed, version = excluded.version";

/// Whether this incarnation's heartbeat had lapsed (or its row was taken
/// over or is missing): then others may have compacted past it.
const LAPSED: &str = "SELECT incarnation <> $2 OR stopped_at IS NOT NULL \
    OR heartbeat_at < now() - make_interval(secs => $3::float8 / 1000.0) \
    FROM replicas WHERE id = $1";

const INSERT_DELTA: &str = "INSERT INTO policy_deltas \
    (pos, replica, incarnation, seq, route, epoch, updates, delta) \
    VALUES (nextval('policy_delta_pos'), $1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING";

const PULL: &str = "SELECT pos, replica, incarnation, seq, route, epoch, delta \
    FROM policy_deltas WHERE pos > $1 ORDER BY pos LIMIT $2";

const OWN_POSITIONS: &str = "SELECT seq, route, pos FROM policy_deltas WHERE incarnation = $1";

const LOAD_CHECKPOINT: &str = "SELECT CAST(snapshot AS TEXT) AS snapshot, watermark, epoch \
    FROM policy_state WHERE route = $1";

/// The label of the route's active version ('' = none: learned online).
const ACTIVE_LABEL: &str = "COALESCE((SELECT version FROM policy_snapshots \
    WHERE route = $1 AND status = 'active' LIMIT 1), '')";

/// A checkpoint only moves forward within its epoch, and only a checkpoint
/// of the active version's epoch may replace one of another epoch (so a
/// replica that has not yet swapped cannot hide the new epoch's state).
fn save_checkpoint_sql() -> String {
    format!(
        "INSERT INTO policy_state (route, version, snapshot, updated_at, watermark, epoch) \
         VALUES ($1, $2, $3, now(), $4, $5) \
         ON CONFLICT (route) DO UPDATE SET version = excluded.version, \
         snapshot = excluded.snapshot, updated_at = excluded.updated_at, \
         watermark = excluded.watermark, epoch = excluded.epoch \
         WHERE (policy_state.epoch = excluded.epoch AND policy_state.watermark < excluded.watermark) \
         OR (policy_state.epoch <> excluded.epoch AND excluded.epoch = {ACTIVE_LABEL})"
    )
}

/// Deletes deltas every live replica has merged (or skipped) that are
/// covered by their route's checkpoint, or belong to a dead epoch. Deltas of
/// the active epoch go only once a checkpoint of that epoch covers them.
const COMPACT: &str = "WITH horizon AS (SELECT MIN(watermark) AS w FROM replicas \
    WHERE stopped_at IS NULL AND heartbeat_at >= now() - make_interval(secs => $1::float8 / 1000.0)) \
    DELETE FROM policy_deltas d USING policy_state s, horizon h \
    WHERE d.route = s.route AND d.pos <= LEAST(s.watermark, COALESCE(h.w, s.watermark)) \
    AND (d.epoch = s.epoch OR d.epoch <> COALESCE((SELECT version FROM policy_snapshots p \
        WHERE p.route = d.route AND p.status = 'active' LIMIT 1), ''))";

const LIST: &str = "SELECT id, incarnation, started_at, heartbeat_at, stopped_at, watermark, \
    last_seq, unflushed, version, \
    CAST(EXTRACT(EPOCH FROM (now() - heartbeat_at)) * 1000 AS BIGINT) AS age_ms, \
    (stopped_at IS NULL AND heartbeat_at >= now() - make_interval(secs => $1::float8 / 1000.0)) AS live \
    FROM replicas ORDER BY id";

/// Rows of replicas gone for a week are forgotten.
const FORGET: &str = "DELETE FROM replicas WHERE heartbeat_at < now() - interval '7 days'";

impl Store {
    fn postgres(&self, what: &'static str) -> Result<&PgPool, StoreError> {
        match self {
            Store::Postgres(p) => Ok(p),
            Store::Sqlite(_) => Err(StoreError::NeedsPostgres(what)),
        }
    }

    /// Registers or refreshes this replica; returns whether its previous
    /// heartbeat had lapsed by more than `stale_ms` (or another process took
    /// the id over), in which case it must rejoin from the checkpoint.
    pub async fn heartbeat(
        &self,
        me: &ReplicaIdentity,
        progress: ReplicaProgress,
        stale_ms: u64,
    ) -> Result<bool, StoreError> {
        let pool = self.postgres("heartbeats")?;
        let mut tx = pool.begin().await?;
        let lapsed = upsert_replica(&mut tx, me, progress, stale_ms).await?;
        tx.commit().await?;
        Ok(lapsed)
    }

    /// Ships one flush: every route's delta and the heartbeat, in one
    /// transaction. Retrying the same `seq` inserts nothing twice. Returns
    /// whether the heartbeat had lapsed (see `heartbeat`).
    pub async fn flush_deltas(
        &self,
        me: &ReplicaIdentity,
        seq: i64,
        deltas: &[NewDelta],
        progress: ReplicaProgress,
        stale_ms: u64,
    ) -> Result<bool, StoreError> {
        let pool = self.postgres("policy deltas")?;
        let mut tx = pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(DELTA_LOCK)
            .execute(&mut *tx)
            .await?;
        for d in deltas {
            sqlx::query(INSERT_DELTA)
                .bind(&me.id)
                .bind(&me.incarnation)
                .bind(seq)
                .bind(&d.route)
                .bind(&d.epoch)
                .bind(d.updates)
                .bind(&d.delta)
                .execute(&mut *tx)
                .await?;
        }
        let lapsed = upsert_replica(&mut tx, me, progress, stale_ms).await?;
        tx.commit().await?;
        Ok(lapsed)
    }

    /// Deltas after position `after`, in log order, at most `limit`.
    pub async fn pull_deltas(&self, after: i64, limit: i64) -> Result<Vec<DeltaEntry>, StoreError> {
        let pool = self.postgres("policy deltas")?;
        let rows = sqlx::query(PULL)
            .bind(after)
            .bind(limit)
            .fetch_all(pool)
            .await?;
        Ok(rows
            .iter()
            .map(|r| DeltaEntry {
                pos: r.get("pos"),
                replica: r.get("replica"),
                incarnation: r.get("incarnation"),
                seq: r.get("seq"),
                route: r.get("route"),
                epoch: r.get("epoch"),
                delta: r.get("delta"),
            })
            .collect())
    }

    /// `(seq, route, pos)` of this incarnation's deltas still in the log.
    pub async fn own_delta_positions(
        &self,
        incarnation: &str,
    ) -> Result<Vec<(i64, String, i64)>, StoreError> {
        let pool = self.postgres("policy deltas")?;
        let rows = sqlx::query(OWN_POSITIONS)
            .bind(incarnation)
            .fetch_all(pool)
            .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get("seq"), r.get("route"), r.get("pos")))
            .collect())
    }

    pub async fn load_checkpoint(&self, route: &str) -> Result<Option<Checkpoint>, StoreError> {
        let pool = self.postgres("checkpoints")?;
        let row = sqlx::query(LOAD_CHECKPOINT)
            .bind(route)
            .fetch_optional(pool)
            .await?;
        Ok(row.map(|r| Checkpoint {
            snapshot: r.get("snapshot"),
            watermark: r.get("watermark"),
            epoch: r.get("epoch"),
        }))
    }

    /// Saves a route's merged state at `watermark`; false when a newer
    /// checkpoint (or one of the active epoch) is already there.
    pub async fn save_checkpoint(
        &self,
        route: &str,
        version: &str,
        snapshot: &serde_json::Value,
        watermark: i64,
        epoch: &str,
    ) -> Result<bool, StoreError> {
        let pool = self.postgres("checkpoints")?;
        let done = sqlx::query(&save_checkpoint_sql())
            .bind(route)
            .bind(version)
            .bind(Json(snapshot))
            .bind(watermark)
            .bind(epoch)
            .execute(pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Deletes merged and checkpointed deltas; returns how many.
    pub async fn compact_deltas(&self, stale_ms: u64) -> Result<u64, StoreError> {
        let pool = self.postgres("compaction")?;
        let done = sqlx::query(COMPACT)
            .bind(stale_ms as f64)
            .execute(pool)
            .await?;
        sqlx::query(FORGET).execute(pool).await?;
        Ok(done.rows_affected())
    }

    /// Marks this incarnation stopped (a clean shutdown, not a death).
    pub async fn replica_stopped(&self, me: &ReplicaIdentity) -> Result<(), StoreError> {
        let pool = self.postgres("heartbeats")?;
        sqlx::query(
            "UPDATE replicas SET stopped_at = now(), heartbeat_at = now() \
             WHERE id = $1 AND incarnation = $2",
        )
        .bind(&me.id)
        .bind(&me.incarnation)
        .execute(pool)
        .await?;
        Ok(())
    }

    pub async fn list_replicas(&self, stale_ms: u64) -> Result<Vec<ReplicaRow>, StoreError> {
        let pool = self.postgres("replicas")?;
        let rows = sqlx::query(LIST)
            .bind(stale_ms as f64)
            .fetch_all(pool)
            .await?;
        Ok(rows
            .iter()
            .map(|r| ReplicaRow {
                id: r.get("id"),
                incarnation: r.get("incarnation"),
                started_at: r.get("started_at"),
                heartbeat_at: r.get("heartbeat_at"),
                stopped_at: r.get("stopped_at"),
                heartbeat_age_ms: r.get("age_ms"),
                live: r.get("live"),
                watermark: r.get("watermark"),
                last_seq: r.get("last_seq"),
                unflushed: r.get("unflushed"),
                version: r.get("version"),
            })
            .collect())
    }
}

/// Refreshes the replica's row; true when its last heartbeat had lapsed.
async fn upsert_replica(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    me: &ReplicaIdentity,
    p: ReplicaProgress,
    stale_ms: u64,
) -> Result<bool, StoreError> {
    let lapsed: Option<bool> = sqlx::query_scalar(LAPSED)
        .bind(&me.id)
        .bind(&me.incarnation)
        .bind(stale_ms as f64)
        .fetch_optional(&mut **tx)
        .await?;
    sqlx::query(UPSERT_REPLICA)
        .bind(&me.id)
        .bind(&me.incarnation)
        .bind(me.started_at)
        .bind(p.watermark)
        .bind(p.last_seq)
        .bind(p.unflushed)
        .bind(&me.version)
        .execute(&mut **tx)
        .await?;
    Ok(lapsed.unwrap_or(true))
}
