//! Online learning for every route: the encoder and the lock-free policy
//! handle the request path reads, and the one writer task that owns the
//! mutable statistics, applies outcomes and feedback, publishes snapshots and
//! persists them to the store (every few seconds and on shutdown).
//!
//! The request path only ever `try_send`s an update; it never waits for the
//! writer, and the writer never holds anything the request path needs.
//! With scale-out on (Postgres), the writer also cuts deltas for the replica
//! task and rebuilds on merged ones (`scale/`); the task, not the writer,
//! then saves the (merged) state.

use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::catalog::Catalog;
use super::prepare::prepare_route;
pub use super::prepare::{policy_config, route_spec, RouteLearner};
use super::scale::{self, FromTask, ReplicaTask, Replication, StatusHandle, Tracker};
use crate::bandit::{
    Outcome, PolicySnapshot, PolicyWriter, Quality, RouteSpec, UpdateError, UpdateReport,
};
use crate::config::Config;
use crate::features::FeatureError;
use crate::store::{priority, Store};
use crate::telemetry::names;

/// How often the writer saves changed state to the store.
const PERSIST_EVERY: Duration = Duration::from_secs(10);
/// Updates reach readers at most this late. Publishing after every update
/// costs a fresh copy of each touched model's matrices (the last snapshot
/// still shares them) and a repack of its f32 mirror: at one request in
/// flight, two of each per request.
const PUBLISH_EVERY: Duration = Duration::from_millis(5);
const UPDATE_QUEUE: usize = 65_536;
/// Updates taken from the queue at a time; fewer than this waiting means
/// the writer keeps up.
const RECV_BATCH: usize = 256;
/// How long a re-inversion's thread may stay lowered (`refresh_off_worker`):
/// the learner waits for it, so past this it finishes at ordinary priority.
const REFRESH_LOWERED_AT_MOST: Duration = Duration::from_millis(50);
/// The same for a save's serialisation (~2.6 ms at d = 100 with four arms).
const PERSIST_LOWERED_AT_MOST: Duration = Duration::from_millis(200);

/// A route's policy writer as the learner runs it: its exact re-inversions
/// are left to the learner to compute off the worker
/// (`LearningWriter::refresh_off_worker`).
pub(super) fn route_writer(snapshot: PolicySnapshot) -> PolicyWriter {
    let mut writer = PolicyWriter::new(snapshot);
    writer.defer_refreshes();
    writer
}

/// `route` is the route's writer slot (`RouteLearner::slot`).
#[derive(Debug)]
pub enum Update {
    Outcome {
        route: usize,
        outcome: Outcome,
    },
    Quality {
        route: usize,
        quality: Quality,
    },
    /// An activated policy version replaces the route's state.
    Swap {
        route: usize,
        snapshot: Box<PolicySnapshot>,
    },
    /// A reloaded configuration: the new route set (`reshape.rs`).
    Reshape(Box<super::reshape::Reshape>),
    /// The replica task merged deltas or acknowledged a flush.
    Replica(FromTask),
}

pub struct Learning {
    pub routes: Vec<RouteLearner>,
    pub(super) tx: mpsc::Sender<Update>,
    /// Scale-out: this replica's identity and replication status (the same
    /// across reloads: `[scale]` is read at start).
    pub replica: Option<(Replication, StatusHandle)>,
}

#[derive(Debug, thiserror::Error)]
pub enum LearningError {
    #[error("route {route}: features: {source}")]
    Features { route: String, source: FeatureError },
    #[error("route {route}: policy: {reason}")]
    Policy { route: String, reason: String },
}

/// The writer half; run it with `tokio::spawn(writer.run(shutdown))`.
/// Its vectors are indexed by slot; a route removed by a reload keeps its
/// slot (`live[slot] == false`) so slots are never reused.
pub struct LearningWriter {
    pub(super) writers: Vec<PolicyWriter>,
    pub(super) routes: Vec<String>,
    rx: mpsc::Receiver<Update>,
    pub(super) store: Store,
    pub(super) dirty: Vec<bool>,
    /// Routes with updates applied but not yet published.
    unpublished: Vec<bool>,
    last_publish: tokio::time::Instant,
    pub(super) specs: Vec<RouteSpec>,
    pub(super) live: Vec<bool>,
    tx: mpsc::Sender<Update>,
    /// The activation watcher, respawned when a reload changes the routes.
    watcher: Option<tokio::task::JoinHandle<()>>,
    /// Scale-out: the replica task until `run` starts it, and the writer's
    /// side of it.
    replica: Option<(ReplicaTask, mpsc::Sender<scale::ToTask>)>,
    /// Scale-out, while running: cuts deltas, follows reloads and swaps.
    pub(super) tracker: Option<Tracker>,
    /// `[store] writer_yields`: re-inversions run lowered while the writer
    /// keeps up, as the outbox's batches do.
    yields: bool,
}

impl Learning {
    /// Builds each route's policy, resuming from the store's saved state
    /// (with scale-out, the replicas' checkpoint) when it fits the route as
    /// configured now.
    pub async fn build(
        config: &Config,
        catalog: &Catalog,
        store: &Store,
    ) -> Result<(Self, LearningWriter), LearningError> {
        let replication = Replication::new(&config.scale, store);
        let mut routes = Vec::with_capacity(config.routes.len());
        let mut writers = Vec::with_capacity(config.routes.len());
        let mut specs = Vec::with_capacity(config.routes.len());
        // Log position each route's start-up state covers (scale-out).
        let mut watermarks = Vec::with_capacity(config.routes.len());
        for (slot, (r, entry)) in config.routes.iter().zip(&catalog.routes).enumerate() {
            let prepared = prepare_route(r, config, store, replication.is_some()).await?;
            let writer = route_writer(prepared.snapshot);
            routes.push(
                prepared
                    .parts
                    .learner(writer.handle(), entry.arms.clone(), slot),
            );
            watermarks.push(prepared.watermark);
            writers.push(writer);
            specs.push(prepared.spec);
        }
        let (tx, rx) = mpsc::channel(UPDATE_QUEUE);
        let names: Vec<String> = config
            .routes
            .iter()
            .map(|r| r.name.as_str().to_owned())
            .collect();
        let (replica, status) = match replication {
            Some(rep) => {
                let (to_task, task_rx) = mpsc::channel(scale::TO_TASK_QUEUE);
                let starts = writers
                    .iter()
                    .zip(watermarks)
                    .map(|(w, m)| (w.state().clone(), m))
                    .collect();
                let (task, status) = ReplicaTask::new(
                    store.clone(),
                    rep.clone(),
                    names.clone(),
                    specs.clone(),
                    starts,
                    task_rx,
                    tx.clone(),
                );
                (Some((task, to_task)), Some((rep, status)))
            }
            None => (None, None),
        };
        let writer = LearningWriter {
            dirty: vec![false; writers.len()],
            unpublished: vec![false; writers.len()],
            last_publish: tokio::time::Instant::now(),
            live: vec![true; writers.len()],
            watcher: None,
            routes: names,
            writers,
            rx,
            store: store.clone(),
            specs,
            tx: tx.clone(),
            replica,
            tracker: None,
            yields: config.store.writer_yields,
        };
        Ok((
            Self {
                routes,
                tx,
                replica: status,
            },
            writer,
        ))
    }

    /// Hands an update to the writer without waiting. A full queue drops it
    /// (counted): learning is best-effort, serving is not.
    pub fn send(&self, update: Update) {
        if self.tx.try_send(update).is_err() {
            metrics::counter!(names::LEARNING_DROPPED).increment(1);
        }
    }
}

impl LearningWriter {
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut buf = Vec::with_capacity(RECV_BATCH);
        let mut persist = tokio::time::interval(PERSIST_EVERY);
        persist.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.respawn_watcher(&shutdown);
        // Scale-out: the replica task ships, merges and saves; the writer
        // cuts a delta every flush interval.
        let (mut task, flush_every) = match self.replica.take() {
            Some((task, to_task)) => {
                let every = task.flush_interval();
                self.tracker = Some(Tracker::new(to_task, &self.writers));
                (Some(tokio::spawn(task.run())), every)
            }
            None => (None, PERSIST_EVERY),
        };
        let mut flush = tokio::time::interval(flush_every);
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                n = self.rx.recv_many(&mut buf, RECV_BATCH) => {
                    if n == 0 { break; }
                    if self.apply(&mut buf).await {
                        self.respawn_watcher(&shutdown);
                    }
                    if self.last_publish.elapsed() >= PUBLISH_EVERY {
                        self.publish_pending();
                    }
                }
                _ = tokio::time::sleep_until(self.last_publish + PUBLISH_EVERY),
                    if self.unpublished.contains(&true) => self.publish_pending(),
                _ = flush.tick(), if self.tracker.is_some() => self.cut(false),
                _ = persist.tick(), if self.tracker.is_none() => self.persist().await,
                _ = shutdown.changed() => {
                    self.rx.close();
                    while self.rx.recv_many(&mut buf, RECV_BATCH).await > 0 {
                        self.apply(&mut buf).await;
                    }
                    self.publish_pending();
                    break;
                }
            }
        }
        if let Some(w) = self.watcher.take() {
            w.abort();
        }
        if let Some(task) = task.take() {
            self.cut(true);
            self.tracker = None; // closes the task's queue: it ships, saves and stops
            if let Err(e) = task.await {
                tracing::error!(error = %e, "The replica task failed.");
            }
            tracing::info!("The learner shipped its last deltas.");
        } else {
            self.persist().await;
            tracing::info!("The learner saved its state.");
        }
    }

    /// Scale-out: hands what every route learned since the last cut to the
    /// replica task (`force`: even while a flush is unacknowledged).
    pub(super) fn cut(&mut self, force: bool) {
        if let Some(t) = self.tracker.as_mut() {
            t.cut(&self.writers, force);
            metrics::gauge!(names::SCALE_UNFLUSHED).set(t.unflushed(&self.writers) as f64);
        }
    }

    /// (Re)starts the activation watcher over the live routes, with each
    /// route's current label so an already-served version is not swapped in
    /// again.
    fn respawn_watcher(&mut self, shutdown: &watch::Receiver<bool>) {
        if let Some(w) = self.watcher.take() {
            w.abort();
        }
        let watched = (0..self.writers.len())
            .filter(|&i| self.live[i])
            .map(|i| super::policy_watch::Watched {
                slot: i,
                route: self.routes[i].clone(),
                spec: self.specs[i].clone(),
                label: self.writers[i].state().label().to_owned(),
            })
            .collect();
        self.watcher = Some(tokio::spawn(super::policy_watch::run(
            self.store.clone(),
            watched,
            self.tx.clone(),
            shutdown.clone(),
        )));
    }

    /// Applies a batch; the touched routes are published by the run loop
    /// (`PUBLISH_EVERY`). Returns whether the route set changed (a reload).
    async fn apply(&mut self, buf: &mut Vec<Update>) -> bool {
        let mut touched = std::mem::take(&mut self.unpublished);
        touched.resize(self.writers.len(), false);
        let mut reshaped = false;
        for update in buf.drain(..) {
            let update = match update {
                Update::Reshape(r) => {
                    // Earlier updates in this batch are published first, so
                    // the reshaped state includes them.
                    self.publish_touched(&mut touched);
                    self.reshape(*r);
                    touched.resize(self.writers.len(), false);
                    reshaped = true;
                    continue;
                }
                Update::Replica(msg) => {
                    // A merge begun before a reload removed the route: no
                    // request reads that slot's state any more.
                    if msg
                        .route()
                        .is_some_and(|r| !self.live.get(r).copied().unwrap_or(false))
                    {
                        continue;
                    }
                    let rebuilt = match self.tracker.as_mut() {
                        Some(t) => t.on_task(msg, &mut self.writers, &self.specs),
                        None => None,
                    };
                    if let Some(r) = rebuilt {
                        touched[r] = true;
                    }
                    continue;
                }
                other => other,
            };
            let (route, result) = match &update {
                Update::Outcome { route, outcome } => (
                    *route,
                    self.live_writer(*route).map(|w| w.apply_outcome(outcome)),
                ),
                Update::Swap { route, snapshot } => (*route, self.swap(*route, snapshot)),
                Update::Quality { route, quality } => {
                    if let Some(name) = self.routes.get(*route) {
                        metrics::histogram!(names::REWARD, "route" => name.clone())
                            .record(quality.reward.get());
                    }
                    (
                        *route,
                        self.live_writer(*route).map(|w| w.apply_quality(quality)),
                    )
                }
                Update::Reshape(_) | Update::Replica(_) => continue,
            };
            self.refresh_off_worker(route).await;
            match result {
                Some(Ok(report)) => {
                    touched[route] = true;
                    for event in report.drift {
                        tracing::warn!(route = %self.routes[route], ?event, "Drift detected: the arm's statistics now decay faster and it is explored more.");
                        metrics::counter!(names::DRIFT_EVENTS, "route" => self.routes[route].clone()).increment(1);
                    }
                }
                // A request begun before a reload may name an arm the route
                // no longer has: nothing to learn.
                Some(Err(UpdateError::UnknownArm(arm))) => {
                    tracing::debug!(route = %self.routes[route], %arm, "An update for a removed arm was dropped.");
                }
                Some(Err(e)) => tracing::warn!(error = %e, "An update was rejected by the policy."),
                None => {}
            }
        }
        self.unpublished = touched;
        reshaped
    }

    /// Computes the exact re-inversion the last update of `slot` made due
    /// (if any) on a blocking thread while the learner waits for it, its
    /// updates queueing meanwhile: the runtime's worker keeps serving
    /// requests (`bandit::Refresh`). The result is the same as refreshing
    /// in place, since nothing else touches the writer in between.
    async fn refresh_off_worker(&mut self, slot: usize) {
        let Some(refresh) = self.writers.get_mut(slot).and_then(|w| w.take_refresh()) else {
            return;
        };
        let yields = self.yields && self.rx.len() < RECV_BATCH;
        let done = off_worker(yields, REFRESH_LOWERED_AT_MOST, move || {
            let inverse = refresh.invert();
            (refresh, inverse)
        })
        .await;
        match done {
            Ok((refresh, inverse)) => self.writers[slot].finish_refresh(refresh, inverse),
            // Its design stays due, so the next update asks again.
            Err(e) => tracing::warn!(error = %e, "A policy's re-inversion did not finish."),
        }
    }

    fn publish_pending(&mut self) {
        let mut pending = std::mem::take(&mut self.unpublished);
        self.publish_touched(&mut pending);
        self.unpublished = pending;
        self.last_publish = tokio::time::Instant::now();
    }

    /// Swaps an activated version into a live route. The watcher prepared
    /// it against the route's spec at the time; a reload since may have
    /// changed the arms, so it is fitted again. With scale-out the swap
    /// starts a new epoch (`Tracker::swapped`).
    fn swap(
        &mut self,
        slot: usize,
        snapshot: &PolicySnapshot,
    ) -> Option<Result<UpdateReport, UpdateError>> {
        let fitted = match snapshot.clone().prepare(self.specs.get(slot)?) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(route = %self.routes[slot], error = %e, "An activated policy no longer fits the reloaded route; keeping the current one.");
                return None;
            }
        };
        if !self.live.get(slot).copied().unwrap_or(false) {
            return None;
        }
        let writer = &mut self.writers[slot];
        writer.replace(fitted);
        if let Some(t) = self.tracker.as_mut() {
            t.swapped(slot, writer);
        }
        Some(Ok(UpdateReport::default()))
    }

    fn live_writer(&mut self, slot: usize) -> Option<&mut PolicyWriter> {
        if self.live.get(slot).copied().unwrap_or(false) {
            self.writers.get_mut(slot)
        } else {
            None
        }
    }

    fn publish_touched(&mut self, touched: &mut [bool]) {
        for (i, t) in touched.iter_mut().enumerate() {
            if std::mem::take(t) {
                self.writers[i].publish();
                self.dirty[i] = true;
            }
        }
    }

    async fn persist(&mut self) {
        for i in 0..self.writers.len() {
            if !self.dirty[i] {
                continue;
            }
            let state = self.writers[i].state();
            let version = RouteLearner::version(state);
            // Writing out every matrix took up to 17 ms, long enough to stall
            // the requests queued behind it on a runtime worker; the clone
            // shares the arms (`Arc`s) and the JSON is written on a blocking
            // thread (docs/performance.md), lowered as the outbox's batches
            // are, so a save does not take a core from requests either.
            let state = state.clone();
            let done = off_worker(self.yields, PERSIST_LOWERED_AT_MOST, move || {
                serde_json::to_value(&state)
            })
            .await;
            let value = match done {
                Ok(Ok(v)) => v,
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "Serialising a policy failed.");
                    continue;
                }
                Err(e) => {
                    tracing::error!(error = %e, "The thread serialising a policy failed.");
                    continue;
                }
            };
            match self
                .store
                .save_policy_state(&self.routes[i], &version, &value)
                .await
            {
                Ok(()) => self.dirty[i] = false,
                Err(e) => {
                    tracing::warn!(route = %self.routes[i], error = %e, "Saving the policy failed; will retry.")
                }
            }
        }
    }
}

/// Runs the learner's heavy work on a blocking thread, lowered for at most
/// `cap` with `yields` (`priority::run_beside`); a lowering the cap ended
/// is counted.
async fn off_worker<T: Send + 'static>(
    yields: bool,
    cap: Duration,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, tokio::task::JoinError> {
    let (done, capped) = priority::run_beside(yields, cap, Vec::new, work).await;
    if capped {
        metrics::counter!(names::LEARNING_LOWERING_ENDED).increment(1);
    }
    done
}
