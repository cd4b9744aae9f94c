//! Scale-out: several replicas learning as one over Postgres
//! (docs/scaling.md). Each replica ships additive deltas of what its own
//! traffic taught (`bandit::PolicyDelta`) and merges everyone's in one
//! global order, so all of them converge to the same state.
//!
//! Owns: the replica's identity, the messages between the learning writer
//! and the replica task, the status the admin API and metrics read, and the
//! start-up load of the checkpoint. Parts: `tracker` (writer side: cuts
//! deltas, rebuilds the serving state on merged ones, follows reloads and
//! swaps), `task` (the replica task: ships, pulls, folds, checkpoints,
//! heartbeats, compacts), `slots` (the task's per-route folds, following
//! the writer's slots across reloads), `fold` (the pure per-route log
//! fold), `codec` (CBOR of a delta), `view` (what the admin API shows).
//!
//! Routes are indexed by the writer's slot everywhere (`RouteLearner::slot`):
//! a reload (`reshape.rs`) adds slots and retires removed ones, never
//! reuses one, and tells the task in order with the flushes
//! (`ToTask::Routes`).
//! Must not import axum; the request path never touches any of it.
//!
//! Invariant: the writer never waits on the database. It hands a flush to
//! the replica task with `try_send` and learns of merged state through its
//! update queue, like any other update. SQLite serves one process, so
//! replication is off there.

mod codec;
mod fold;
mod slots;
mod task;
#[cfg(test)]
mod testing;
mod tracker;
pub mod view;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::bandit::{PolicyDelta, PolicySnapshot, RouteSpec};
use crate::config::ScaleConfig;
use crate::store::scale::ReplicaIdentity;
use crate::store::Store;
pub use task::ReplicaTask;
pub use tracker::Tracker;

/// Flushes queued to the replica task before the writer must wait for one
/// to be acknowledged (it only cuts while none is outstanding).
pub const TO_TASK_QUEUE: usize = 64;

/// Writer -> replica task.
#[derive(Debug)]
pub enum ToTask {
    Flush(Flush),
    /// A route's state was replaced by an activated version: a new epoch.
    Epoch {
        route: usize,
        snapshot: Box<PolicySnapshot>,
    },
    /// A reload changed the route set; sent after a flush that shipped
    /// everything learned under the old one.
    Routes(Vec<RouteChange>),
}

/// What a reload did to one slot (`LearningWriter::reshape`).
#[derive(Debug)]
pub enum RouteChange {
    /// A new route in a new slot (`slot` = the number of slots before it),
    /// starting from `start`, which covers the log up to `watermark`.
    Added {
        slot: usize,
        name: String,
        spec: RouteSpec,
        start: Box<PolicySnapshot>,
        watermark: i64,
    },
    /// The route's arms or settings changed and its learned state carried
    /// over (`PolicySnapshot::reshape`): the merged state is reshaped alike.
    Reshaped { slot: usize, spec: RouteSpec },
    /// The route's feature space changed: it starts again from `start`
    /// (its checkpoint if one fits the new space, else its priors).
    Restarted {
        slot: usize,
        spec: RouteSpec,
        start: Box<PolicySnapshot>,
        watermark: i64,
    },
    /// The route is gone: its slot is no longer read, rebased or
    /// checkpointed (its last updates were shipped before).
    Removed { slot: usize },
}

/// What the writer learned since its previous flush, per route that learned.
#[derive(Debug)]
pub struct Flush {
    pub seq: u64,
    /// The writer's published version per route (checkpoints carry it on).
    pub versions: Vec<u64>,
    pub deltas: Vec<RouteDelta>,
}

#[derive(Debug, Clone)]
pub struct RouteDelta {
    pub route: usize,
    pub epoch: String,
    pub delta: PolicyDelta,
}

/// Replica task -> writer (through the writer's update queue).
#[derive(Debug)]
pub enum FromTask {
    /// The route's merged state, with every flush up to `through_seq`
    /// applied after it: serve this plus what was learned since.
    Rebase {
        route: usize,
        epoch: String,
        snapshot: Box<PolicySnapshot>,
        through_seq: u64,
    },
    /// Every flush up to `seq` is in the log and merged.
    Ack { seq: u64 },
}

impl FromTask {
    /// The slot the message concerns, if one.
    pub fn route(&self) -> Option<usize> {
        match self {
            FromTask::Rebase { route, .. } => Some(*route),
            FromTask::Ack { .. } => None,
        }
    }
}

/// Who this process is, and the settings it replicates with.
#[derive(Debug, Clone)]
pub struct Replication {
    pub me: ReplicaIdentity,
    pub flush: Duration,
    pub stale_after: Duration,
    pub checkpoint: Duration,
}

impl Replication {
    /// Replication settings when the store is Postgres and scale-out is on.
    pub fn new(cfg: &ScaleConfig, store: &Store) -> Option<Self> {
        if !cfg.enabled || matches!(store, Store::Sqlite(_)) {
            return None;
        }
        Some(Self {
            me: ReplicaIdentity {
                id: cfg.replica_id.clone().unwrap_or_else(default_replica_id),
                incarnation: uuid::Uuid::new_v4().simple().to_string(),
                started_at: Utc::now(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
            },
            flush: Duration::from_millis(cfg.delta_flush_ms),
            stale_after: Duration::from_millis(cfg.stale_after_ms),
            checkpoint: Duration::from_millis(cfg.checkpoint_ms),
        })
    }

    pub fn stale_ms(&self) -> u64 {
        self.stale_after.as_millis() as u64
    }
}

/// `hostname-pid-random`: unique per process, readable in lists.
fn default_replica_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "replica".into());
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}-{}", std::process::id(), &random[..6])
}

/// One route as the replica task last merged it.
#[derive(Debug, Clone, Serialize)]
pub struct RouteStatus {
    /// The writer's slot (`RouteLearner::slot`).
    #[serde(skip)]
    pub slot: usize,
    pub route: String,
    pub epoch: String,
    /// Every delta of the log up to here is merged into `merged`.
    pub watermark: i64,
    #[serde(skip)]
    pub merged: Arc<PolicySnapshot>,
}

/// What `/admin/replicas` and the metrics show about this replica.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub id: String,
    pub incarnation: String,
    pub started_at: DateTime<Utc>,
    /// The last step reached the database.
    pub database_ok: bool,
    pub last_sync_at: Option<DateTime<Utc>>,
    /// Flushes handed over by the writer and not yet in the log.
    pub pending_flushes: usize,
    pub last_seq: u64,
    pub rejoins: u64,
    pub routes: Vec<RouteStatus>,
}

/// The read side of the replica task's status.
pub type StatusHandle = Arc<ArcSwap<Status>>;

/// A route's start-up state: its checkpoint (and the log position it
/// covers) when one fits, else `None`.
pub async fn load_checkpoint(
    store: &Store,
    route: &str,
) -> Result<Option<(String, i64)>, crate::store::StoreError> {
    Ok(store
        .load_checkpoint(route)
        .await?
        .map(|c| (c.snapshot, c.watermark)))
}
