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

use std::sync::{Arc, Mutex, PoisonError};
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
/// The same for a batch of outcomes and feedback (`apply_lowered`): tens of
/// µs an update, a re-inversion now and then.
const LEARN_LOWERED_AT_MOST: Duration = Duration::from_millis(50);

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

impl Update {
    /// An outcome or a feedback: what a route's statistics learn from.
    fn teaches(&self) -> bool {
        matches!(self, Self::Outcome { .. } | Self::Quality { .. })
    }
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
        if self.yields && self.rx.len() < RECV_BATCH && buf.iter().all(Update::teaches) {
            self.apply_lowered(buf).await;
            return false;
        }
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
            self.record_reward(&update);
            let (route, result) = match &update {
                Update::Swap { route, snapshot } => (*route, self.swap(*route, snapshot)),
                Update::Reshape(_) | Update::Replica(_) => continue,
                teaching => match learn(&mut self.writers, &self.live, teaching) {
                    Some(learned) => learned,
                    None => continue,
                },
            };
            self.refresh_off_worker(route).await;
            self.report(route, result, &mut touched);
        }
        self.unpublished = touched;
        reshaped
    }

    /// With `writer_yields`, a batch of only outcomes and feedback (the
    /// steady state) is learned on a blocking thread lowered to
    /// `SCHED_IDLE`, its re-inversions included, while the learner waits:
    /// a request that arrives meanwhile preempts it. On the runtime's worker
    /// a cycle's two updates ran just as the client's next request came in
    /// (at one request in flight, the bandit route's p50 over the fixed
    /// model's fell from ~40 to ~34 µs; docs/performance.md, session 21).
    /// The same updates in the same order as `apply`, so the same state.
    async fn apply_lowered(&mut self, buf: &mut Vec<Update>) {
        for update in buf.iter() {
            self.record_reward(update);
        }
        // Shared rather than moved, so the writers come back whatever
        // happens to the batch (a blocking task cancelled before it runs,
        // by a runtime shutting down, drops its closure unrun).
        let writers = Arc::new(Mutex::new(std::mem::take(&mut self.writers)));
        let on_thread = writers.clone();
        let live = self.live.clone();
        let updates = std::mem::take(buf);
        let done = off_worker(true, LEARN_LOWERED_AT_MOST, move || {
            let mut writers = on_thread.lock().unwrap_or_else(PoisonError::into_inner);
            let learned: Vec<_> = updates
                .iter()
                .filter_map(|u| {
                    let (route, result) = learn(&mut writers, &live, u)?;
                    if let Some(w) = writers.get_mut(route) {
                        w.settle();
                    }
                    Some((route, result))
                })
                .collect();
            (updates, learned)
        })
        .await;
        self.writers = std::mem::take(&mut *writers.lock().unwrap_or_else(PoisonError::into_inner));
        let (mut updates, learned) = match done {
            Ok(done) => done,
            // As a panic in `apply` would: the learner stops.
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => {
                tracing::warn!(error = %e, "A batch of the learner's updates was dropped.");
                return;
            }
        };
        updates.clear();
        *buf = updates; // keeps the run loop's buffer
        let mut touched = std::mem::take(&mut self.unpublished);
        touched.resize(self.writers.len(), false);
        for (route, result) in learned {
            self.report(route, result, &mut touched);
        }
        self.unpublished = touched;
    }

    fn record_reward(&self, update: &Update) {
        if let Update::Quality { route, quality } = update {
            if let Some(name) = self.routes.get(*route) {
                metrics::histogram!(names::REWARD, "route" => name.clone())
                    .record(quality.reward.get());
            }
        }
    }

    /// Marks a learned route for publishing and logs what the update said.
    fn report(
        &self,
        route: usize,
        result: Option<Result<UpdateReport, UpdateError>>,
        touched: &mut [bool],
    ) {
        match result {
            Some(Ok(report)) => {
                touched[route] = true;
                for event in report.drift {
                    tracing::warn!(route = %self.routes[route], ?event, "Drift detected: the arm's statistics now decay faster and it is explored more.");
                    metrics::counter!(names::DRIFT_EVENTS, "route" => self.routes[route].clone())
                        .increment(1);
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

/// Applies an outcome or a feedback to its route's writer: the route's
/// slot and what the writer said (`None` inside for a route a reload
/// removed); `None` for any other update.
fn learn(
    writers: &mut [PolicyWriter],
    live: &[bool],
    update: &Update,
) -> Option<(usize, Option<Result<UpdateReport, UpdateError>>)> {
    Some(match update {
        Update::Outcome { route, outcome } => (
            *route,
            live_writer(writers, live, *route).map(|w| w.apply_outcome(outcome)),
        ),
        Update::Quality { route, quality } => (
            *route,
            live_writer(writers, live, *route).map(|w| w.apply_quality(quality)),
        ),
        _ => return None,
    })
}

fn live_writer<'a>(
    writers: &'a mut [PolicyWriter],
    live: &[bool],
    slot: usize,
) -> Option<&'a mut PolicyWriter> {
    if live.get(slot).copied().unwrap_or(false) {
        writers.get_mut(slot)
    } else {
        None
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::bandit::{ArmSpec, BudgetConfig, PolicyConfig};
    use crate::domain::{ModelName, Reward, Usd};
    use crate::features::Features;

    /// A route of dimension 3 over arms `a` and `b`: each design is
    /// re-inverted every 6 of its updates.
    fn spec() -> RouteSpec {
        RouteSpec {
            dimension: 3,
            feature_fingerprint: 7,
            config: PolicyConfig::default(),
            budget: BudgetConfig::default(),
            arms: ["a", "b"]
                .iter()
                .map(|n| ArmSpec::new(ModelName::parse(n).unwrap()))
                .collect(),
        }
    }

    /// A learner over one fresh route; its store is never opened.
    fn learner(yields: bool) -> LearningWriter {
        let spec = spec();
        let (tx, rx) = mpsc::channel(16);
        LearningWriter {
            writers: vec![route_writer(PolicySnapshot::new(&spec).unwrap())],
            routes: vec!["auto".into()],
            rx,
            store: Store::connect_lazy("sqlite:///nonexistent/never-opened.db").unwrap(),
            dirty: vec![false],
            unpublished: vec![false],
            last_publish: tokio::time::Instant::now(),
            specs: vec![spec],
            live: vec![true],
            tx,
            watcher: None,
            replica: None,
            tracker: None,
            yields,
        }
    }

    /// Requests `from..from + n`, each an outcome and a feedback, spread
    /// over both arms, several features, failures and rewards.
    fn cycles(from: usize, n: usize) -> Vec<Update> {
        (from..from + n)
            .flat_map(|i| {
                let arm = ModelName::parse(if i % 3 == 0 { "a" } else { "b" }).unwrap();
                let sparse = if i % 2 == 0 { 0.0 } else { 0.5 };
                let x = Features::from(&[1.0, (i % 7) as f64 / 7.0, sparse][..]);
                [
                    Update::Outcome {
                        route: 0,
                        outcome: Outcome {
                            arm: arm.clone(),
                            x: x.clone(),
                            cost_usd: Usd::new(1e-4 * (1 + i % 5) as f64).unwrap(),
                            latency_s: 0.1 * (1 + i % 4) as f64,
                            ok: i % 11 != 0,
                        },
                    },
                    Update::Quality {
                        route: 0,
                        quality: Quality {
                            arm,
                            x,
                            reward: Reward::new((i % 10) as f64 / 10.0).unwrap(),
                        },
                    },
                ]
            })
            .collect()
    }

    /// With `writer_yields` the steady state's batches are learned on a
    /// lowered thread: the same updates in the same order, re-inversions
    /// included, so the same state to the bit as on the worker.
    #[tokio::test]
    async fn a_lowered_batch_learns_exactly_what_the_worker_does() {
        let (mut worker, mut lowered) = (learner(false), learner(true));
        for (from, n) in [(0, 1), (1, 7), (8, 40), (48, 37), (85, 3)] {
            let (mut a, mut b) = (cycles(from, n), cycles(from, n));
            worker.apply(&mut a).await;
            lowered.apply(&mut b).await;
            assert!(a.is_empty() && b.is_empty(), "both batches are taken");
            assert_eq!(worker.writers[0].state(), lowered.writers[0].state());
            // (48, 37) ends on the feedback that makes a re-inversion due
            // (request 84's): it is done before the batch returns.
            assert!(worker.writers[0].take_refresh().is_none());
            assert!(lowered.writers[0].take_refresh().is_none());
        }
        assert_eq!(worker.unpublished, vec![true]);
        assert_eq!(lowered.unpublished, vec![true]);
        let fresh = PolicySnapshot::new(&spec()).unwrap();
        assert_ne!(lowered.writers[0].state(), &fresh, "it learned");
    }

    /// A route a reload removed learns nothing on either path.
    #[tokio::test]
    async fn a_lowered_batch_skips_a_removed_route() {
        let mut lowered = learner(true);
        lowered.live[0] = false;
        let mut batch = cycles(0, 5);
        lowered.apply(&mut batch).await;
        let fresh = PolicySnapshot::new(&spec()).unwrap();
        assert_eq!(lowered.writers[0].state(), &fresh);
        assert_eq!(lowered.unpublished, vec![false]);
    }
}
