//! The learning writer's side of replication: cuts what each route learned
//! since the last cut into a delta and hands it to the replica task, and
//! rebuilds a route's serving state when others' deltas were merged.
//!
//! Invariant (per route): `serving = reference ⊕ (updates since the last
//! cut)`, and `reference = merged ⊕ (own flushes not yet merged)`. A cut
//! ships `serving - reference` and moves `reference` to `serving`; a rebase
//! replaces `merged` and replays the flushes the task had not yet seen.
//! At most one flush is outstanding (unacknowledged) at a time, except the
//! final one at shutdown and the one a reload forces: while the database is
//! away, updates simply accumulate in the next cut.
//!
//! A reload (`reshape.rs`) first forces a cut, so everything learned under
//! the old route set ships in the old shape; then the references follow the
//! writer's new states (`reshaped`). A merged state the task sent before it
//! heard of the reload is refitted to the slot's current spec on arrival,
//! exactly as the task reshapes its own (`on_task`).

use std::collections::VecDeque;

use tokio::sync::mpsc;

use super::{Flush, FromTask, RouteChange, RouteDelta, ToTask};
use crate::bandit::{PolicySnapshot, PolicyWriter, RouteSpec};
use crate::telemetry::names;

pub struct Tracker {
    tx: mpsc::Sender<ToTask>,
    references: Vec<PolicySnapshot>,
    /// Flushes handed over and not yet acknowledged, oldest first.
    sent: VecDeque<Flush>,
    next_seq: u64,
    closed: bool,
}

impl Tracker {
    pub fn new(tx: mpsc::Sender<ToTask>, writers: &[PolicyWriter]) -> Self {
        Self {
            tx,
            references: writers.iter().map(|w| w.state().clone()).collect(),
            sent: VecDeque::new(),
            next_seq: 1,
            closed: false,
        }
    }

    /// Updates applied locally that are not yet merged from the log.
    pub fn unflushed(&self, writers: &[PolicyWriter]) -> u64 {
        let cut: u64 = writers
            .iter()
            .zip(&self.references)
            .map(|(w, r)| w.state().delta_since(r).updates())
            .sum();
        let sent: u64 = self
            .sent
            .iter()
            .flat_map(|f| &f.deltas)
            .map(|d| d.delta.updates())
            .sum();
        cut + sent
    }

    /// Ships what every route learned since the last cut. Unless `force`
    /// (shutdown), waits while a flush is still unacknowledged.
    pub fn cut(&mut self, writers: &[PolicyWriter], force: bool) {
        if self.closed || (!force && !self.sent.is_empty()) {
            return;
        }
        let mut deltas = Vec::new();
        for (route, (w, reference)) in writers.iter().zip(&mut self.references).enumerate() {
            let delta = w.state().delta_since(reference);
            if !delta.is_empty() {
                deltas.push(RouteDelta {
                    route,
                    epoch: w.state().label().to_owned(),
                    delta,
                });
                *reference = w.state().clone();
            }
        }
        if deltas.is_empty() {
            return;
        }
        let flush = Flush {
            seq: self.next_seq,
            versions: writers.iter().map(|w| w.state().version()).collect(),
            deltas,
        };
        self.next_seq += 1;
        self.sent.push_back(Flush {
            seq: flush.seq,
            versions: flush.versions.clone(),
            deltas: flush.deltas.clone(),
        });
        // If the task has stopped (or, impossibly, is 64 messages behind),
        // learning goes on locally; `send` logs it once.
        self.send(ToTask::Flush(flush));
    }

    /// A route's state was replaced (an activated version): a new epoch.
    pub fn swapped(&mut self, route: usize, writer: &PolicyWriter) {
        let Some(reference) = self.references.get_mut(route) else {
            return;
        };
        *reference = writer.state().clone();
        self.forget_sent(route);
        let msg = ToTask::Epoch {
            route,
            snapshot: Box::new(writer.state().clone()),
        };
        self.send(msg);
    }

    /// A reload changed the route set; `writers` are the new states. Call
    /// after `cut(.., true)` taken before the change.
    pub fn reshaped(&mut self, writers: &[PolicyWriter], changes: Vec<RouteChange>) {
        for change in &changes {
            match change {
                RouteChange::Added { slot, .. } => {
                    debug_assert_eq!(*slot, self.references.len());
                    if let Some(w) = writers.get(*slot) {
                        self.references.push(w.state().clone());
                    }
                }
                RouteChange::Reshaped { slot, .. } => self.follow(*slot, writers),
                RouteChange::Restarted { slot, .. } => {
                    // Unacknowledged deltas of the old feature space cannot
                    // be replayed on the new state.
                    self.follow(*slot, writers);
                    self.forget_sent(*slot);
                }
                // Nothing is learned on a removed route any more: its
                // reference stays equal to its state, so it ships nothing.
                RouteChange::Removed { .. } => {}
            }
        }
        if !changes.is_empty() {
            self.send(ToTask::Routes(changes));
        }
    }

    fn follow(&mut self, slot: usize, writers: &[PolicyWriter]) {
        if let (Some(r), Some(w)) = (self.references.get_mut(slot), writers.get(slot)) {
            *r = w.state().clone();
        }
    }

    fn forget_sent(&mut self, route: usize) {
        for f in &mut self.sent {
            f.deltas.retain(|d| d.route != route);
        }
    }

    fn send(&mut self, msg: ToTask) {
        if !self.closed && self.tx.try_send(msg).is_err() {
            self.closed = true;
            tracing::error!("The replica task is gone; this replica now learns alone.");
        }
    }

    /// Applies a message of the replica task. Returns the route whose
    /// serving state was rebuilt (to publish), if any. `specs`: each slot's
    /// current shape.
    pub fn on_task(
        &mut self,
        msg: FromTask,
        writers: &mut [PolicyWriter],
        specs: &[RouteSpec],
    ) -> Option<usize> {
        match msg {
            FromTask::Ack { seq } => {
                self.sent.retain(|f| f.seq > seq);
                None
            }
            FromTask::Rebase {
                route,
                epoch,
                snapshot,
                through_seq,
            } => {
                self.sent.retain(|f| f.seq > through_seq);
                let writer = writers.get_mut(route)?;
                if writer.state().label() != epoch {
                    return None; // merged on an epoch this writer has left
                }
                // Merged before the task heard of a reload that changed the
                // route: reshaped as the task reshapes its own state. One
                // from before a change of feature space cannot be, and the
                // task sends a new one after its next merge.
                let merged = match (*snapshot).reshape(specs.get(route)?) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::debug!(error = %e, "A merged state from before a reload was passed over.");
                        return None;
                    }
                };
                let reference = self.references.get_mut(route)?;
                match rebuild(merged, &self.sent, route, reference, writer.state()) {
                    Ok((new_reference, serving)) => {
                        *reference = new_reference;
                        writer.replace(serving);
                        metrics::counter!(names::SCALE_REBASES).increment(1);
                        Some(route)
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "Rebuilding a route on merged deltas failed; it keeps its local state.");
                        None
                    }
                }
            }
        }
    }
}

/// `merged ⊕ (unacknowledged flushes of the route) ⊕ (updates since the
/// last cut)`, with the serving state's local parts (drift, version) kept.
fn rebuild(
    merged: PolicySnapshot,
    sent: &VecDeque<Flush>,
    route: usize,
    reference: &PolicySnapshot,
    serving: &PolicySnapshot,
) -> Result<(PolicySnapshot, PolicySnapshot), crate::bandit::DeltaError> {
    let mut base = merged;
    for d in sent
        .iter()
        .flat_map(|f| &f.deltas)
        .filter(|d| d.route == route)
    {
        base = base.merge_delta(&d.delta)?.0;
    }
    let since = serving.delta_since(reference);
    let (mut next, _) = base.merge_delta(&since)?;
    next.keep_local_state_of(serving);
    Ok((base, next))
}
