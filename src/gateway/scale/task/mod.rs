//! The replica task: the only part of replication that talks to Postgres.
//! Every `delta_flush_ms` (and whenever the writer hands over a flush) it
//! ships the queued flushes (one transaction each, idempotent), heartbeats,
//! pulls every delta past its watermark in log order, folds them, and tells
//! the writer; every `checkpoint_ms` the lowest-named live replica saves the
//! merged state to `policy_state` and deletes the deltas every live replica
//! has merged. On shutdown it ships what is left, checkpoints and signs off.
//!
//! While Postgres is unreachable it keeps its queue and retries each tick;
//! the writer meanwhile learns locally (its next cut grows). If its
//! heartbeat lapsed past `stale_after_ms` (others may have compacted past
//! it) it rejoins: it reloads the checkpoint and reads the log from there.
//! A reload's route changes arrive in order with the flushes
//! (`ToTask::Routes`, see `slots.rs`); a route the reload added is checked
//! against its checkpoint on the next step, as at a rejoin.

use std::collections::VecDeque;
use std::time::Duration;

use arc_swap::ArcSwap;
use chrono::Utc;
use std::sync::Arc;
use tokio::sync::mpsc;

use super::fold::{Folded, Pending};
use super::slots::Slots;
use super::{codec, Flush, FromTask, Replication, RouteStatus, Status, StatusHandle, ToTask};
use crate::bandit::{PolicySnapshot, RouteSpec};
use crate::gateway::learning::Update;
use crate::store::scale::{NewDelta, ReplicaProgress};
use crate::store::{Store, StoreError};
use crate::telemetry::names;

mod join;

/// Log entries read per query, and queries per step (the rest next step).
const PAGE: i64 = 200;
const PAGES_PER_STEP: usize = 50;

pub struct ReplicaTask {
    store: Store,
    rep: Replication,
    slots: Slots,
    /// Slots a reload added, to check against their checkpoints.
    added: Vec<usize>,
    /// Flushes received from the writer, not yet committed.
    queue: VecDeque<Flush>,
    last_received: u64,
    last_acked: u64,
    joined: bool,
    database_ok: bool,
    rejoins: u64,
    rx: mpsc::Receiver<ToTask>,
    tx: mpsc::Sender<Update>,
    status: StatusHandle,
}

impl ReplicaTask {
    /// `starts[i]`: route i's state and the log position it covers.
    pub fn new(
        store: Store,
        rep: Replication,
        names: Vec<String>,
        specs: Vec<RouteSpec>,
        starts: Vec<(PolicySnapshot, i64)>,
        rx: mpsc::Receiver<ToTask>,
        tx: mpsc::Sender<Update>,
    ) -> (Self, StatusHandle) {
        let status = Arc::new(ArcSwap::from_pointee(Status {
            id: rep.me.id.clone(),
            incarnation: rep.me.incarnation.clone(),
            started_at: rep.me.started_at,
            database_ok: false,
            last_sync_at: None,
            pending_flushes: 0,
            last_seq: 0,
            rejoins: 0,
            routes: Vec::new(),
        }));
        let task = Self {
            store,
            rep,
            slots: Slots::new(names, specs, starts),
            added: Vec::new(),
            queue: VecDeque::new(),
            last_received: 0,
            last_acked: 0,
            joined: false,
            database_ok: false,
            rejoins: 0,
            rx,
            tx,
            status: status.clone(),
        };
        task.publish_status(None);
        (task, status)
    }

    pub fn flush_interval(&self) -> Duration {
        self.rep.flush
    }

    pub async fn run(mut self) {
        let mut tick = tokio::time::interval(self.rep.flush);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut checkpoint = tokio::time::interval(self.rep.checkpoint);
        checkpoint.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        checkpoint.tick().await;
        loop {
            tokio::select! {
                msg = self.rx.recv() => match msg {
                    Some(msg) => {
                        self.receive(msg);
                        // Drain what else is queued, then ship at once.
                        while let Ok(m) = self.rx.try_recv() {
                            self.receive(m);
                        }
                        self.step().await;
                    }
                    None => break,
                },
                _ = tick.tick() => self.step().await,
                _ = checkpoint.tick() => self.checkpoint(false).await,
            }
        }
        self.finish().await;
    }

    fn receive(&mut self, msg: ToTask) {
        match msg {
            ToTask::Flush(f) => {
                self.last_received = f.seq;
                let pending = f.deltas.iter().map(|d| {
                    let p = Pending {
                        seq: f.seq,
                        epoch: d.epoch.clone(),
                        delta: d.delta.clone(),
                        committed: false,
                    };
                    (d.route, p)
                });
                self.slots.hand_over(&f.versions, pending);
                self.queue.push_back(f);
            }
            ToTask::Epoch { route, snapshot } => {
                if let Some(s) = self.slots.live_mut(route) {
                    tracing::info!(route = %s.name, epoch = snapshot.label(), "A new policy version: reading its deltas from the log.");
                    s.log.new_epoch(*snapshot);
                }
            }
            ToTask::Routes(changes) => {
                for c in changes {
                    self.added.extend(self.slots.change(c));
                }
            }
        }
    }

    fn progress(&self) -> ReplicaProgress {
        ReplicaProgress {
            watermark: if self.joined {
                self.slots.watermark()
            } else {
                0
            },
            last_seq: self.last_received as i64,
            unflushed: self
                .queue
                .iter()
                .flat_map(|f| &f.deltas)
                .map(|d| d.delta.updates() as i64)
                .sum(),
        }
    }

    /// One round: ship, heartbeat, pull, fold, notify. Errors leave the
    /// state as it was; the next round retries.
    async fn step(&mut self) {
        let result = self.try_step().await;
        self.database_ok = result.is_ok();
        if let Err(e) = &result {
            metrics::counter!(names::SCALE_SYNC_ERRORS).increment(1);
            tracing::warn!(error = %e, "Replication could not reach the database; learning goes on locally and ships on return.");
        }
        self.publish_status(result.ok().map(|_| Utc::now()));
    }

    async fn try_step(&mut self) -> Result<(), StoreError> {
        if !self.joined {
            self.rejoin().await?;
        }
        let (mut lapsed, mut beat) = (false, false);
        while let Some(f) = self.queue.front() {
            let rows = encode_rows(f, &self.slots);
            let seq = f.seq as i64;
            lapsed |= self
                .store
                .flush_deltas(
                    &self.rep.me,
                    seq,
                    &rows,
                    self.progress(),
                    self.rep.stale_ms(),
                )
                .await?;
            metrics::counter!(names::SCALE_FLUSHES).increment(1);
            self.slots.mark_committed(f.seq);
            self.queue.pop_front();
            beat = true;
        }
        if !beat {
            lapsed |= self
                .store
                .heartbeat(&self.rep.me, self.progress(), self.rep.stale_ms())
                .await?;
        }
        if lapsed {
            tracing::warn!("This replica's heartbeat had lapsed; it rejoins from the checkpoint.");
            self.rejoin().await?;
        }
        let mut changed = vec![false; self.slots.len()];
        if !self.added.is_empty() {
            let added = self.added.clone();
            changed = self.adopt_checkpoints(&added).await?;
            self.added.clear();
        }
        for (c, pulled) in changed.iter_mut().zip(self.pull().await?) {
            *c |= pulled;
        }
        self.notify(changed).await;
        Ok(())
    }

    /// Reads the log past the watermark; returns the routes whose merged
    /// state gained others' deltas.
    async fn pull(&mut self) -> Result<Vec<bool>, StoreError> {
        let mut changed = vec![false; self.slots.len()];
        for _ in 0..PAGES_PER_STEP {
            let entries = self.store.pull_deltas(self.slots.watermark(), PAGE).await?;
            let Some(last) = entries.last().map(|e| e.pos) else {
                break;
            };
            for e in &entries {
                let Some(i) = self.slots.find(&e.route) else {
                    continue;
                };
                let Some(slot) = self.slots.live_mut(i) else {
                    continue;
                };
                let own = (e.incarnation == self.rep.me.incarnation).then_some(e.seq as u64);
                let delta = codec::decode(&e.delta).map_err(|x| x.to_string());
                match slot.log.fold(e.pos, own, &e.epoch, delta) {
                    Folded::Merged { own, unknown_arms } => {
                        let origin = if own { "own" } else { "foreign" };
                        metrics::counter!(names::SCALE_DELTAS_MERGED, "origin" => origin)
                            .increment(1);
                        changed[i] |= !own;
                        if !unknown_arms.is_empty() {
                            tracing::warn!(route = %e.route, replica = %e.replica, ?unknown_arms, "A delta names arms this replica does not serve; they were skipped (do the replicas run the same route config?).");
                        }
                    }
                    Folded::OtherFeatures if own.is_some() => {
                        tracing::debug!(route = %e.route, pos = e.pos, "An own delta from before a reload changed the route's features was passed over.");
                    }
                    Folded::OtherFeatures => {
                        metrics::counter!(names::SCALE_DELTAS_REJECTED).increment(1);
                        tracing::warn!(route = %e.route, replica = %e.replica, "A delta was learned on other features for this route; it was passed over (do the replicas run the same route config?).");
                    }
                    Folded::Rejected(why) => {
                        metrics::counter!(names::SCALE_DELTAS_REJECTED).increment(1);
                        tracing::error!(route = %e.route, replica = %e.replica, pos = e.pos, error = %why, "A delta could not be merged and was passed over.");
                    }
                    Folded::Skipped => {}
                }
            }
            self.slots.advance(last);
            if (entries.len() as i64) < PAGE {
                break;
            }
        }
        metrics::gauge!(names::SCALE_WATERMARK).set(self.slots.watermark() as f64);
        Ok(changed)
    }

    /// Rebases the writer on routes that merged others' deltas, and
    /// acknowledges flushes that are now in the log.
    async fn notify(&mut self, changed: Vec<bool>) {
        for (route, slot) in self.slots.live() {
            if !changed.get(route).copied().unwrap_or(false) {
                continue;
            }
            let log = &slot.log;
            match log.serving() {
                Ok(snapshot) => {
                    let msg = FromTask::Rebase {
                        route,
                        epoch: log.epoch.clone(),
                        snapshot: Box::new(snapshot),
                        through_seq: self.last_received,
                    };
                    if self.tx.send(Update::Replica(msg)).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    tracing::error!(route = %slot.name, error = %e, "Applying this replica's pending deltas failed.")
                }
            }
        }
        // Everything received is merged once no route has a pending delta
        // left and nothing is queued.
        let oldest = self
            .slots
            .oldest_pending()
            .into_iter()
            .chain(self.queue.iter().map(|f| f.seq))
            .min();
        let acked = oldest.map_or(self.last_received, |s| s.saturating_sub(1));
        if acked > self.last_acked {
            self.last_acked = acked;
            let _ = self
                .tx
                .send(Update::Replica(FromTask::Ack { seq: acked }))
                .await;
        }
    }

    fn publish_status(&self, synced: Option<chrono::DateTime<Utc>>) {
        let previous = self.status.load();
        self.status.store(Arc::new(Status {
            id: self.rep.me.id.clone(),
            incarnation: self.rep.me.incarnation.clone(),
            started_at: self.rep.me.started_at,
            database_ok: self.database_ok,
            last_sync_at: synced.or(previous.last_sync_at),
            pending_flushes: self.queue.len(),
            last_seq: self.last_received,
            rejoins: self.rejoins,
            routes: self
                .slots
                .live()
                .map(|(i, s)| RouteStatus {
                    slot: i,
                    route: s.name.clone(),
                    epoch: s.log.epoch.clone(),
                    watermark: s.log.watermark,
                    merged: Arc::new(s.log.base.clone()),
                })
                .collect(),
        }));
    }
}

/// The flush's rows; a route retired since the cut still ships its last
/// delta under its name (other replicas may serve it yet).
fn encode_rows(f: &Flush, slots: &Slots) -> Vec<NewDelta> {
    f.deltas
        .iter()
        .filter_map(|d| {
            let route = slots.get(d.route)?.name.clone();
            match codec::encode(&d.delta) {
                Ok(bytes) => Some(NewDelta {
                    route,
                    epoch: d.epoch.clone(),
                    updates: d.delta.updates() as i64,
                    delta: bytes,
                }),
                Err(e) => {
                    tracing::error!(error = %e, "Encoding a delta failed; it is dropped.");
                    None
                }
            }
        })
        .collect()
}
