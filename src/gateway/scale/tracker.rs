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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::super::testing::{fresh, spec, teach};
    use super::*;

    fn flush(rx: &mut mpsc::Receiver<ToTask>) -> Flush {
        match rx.try_recv().unwrap() {
            ToTask::Flush(f) => f,
            other => panic!("expected a flush, got {other:?}"),
        }
    }

    fn feedback(w: &PolicyWriter, arm: &str) -> u64 {
        let s = w.state();
        s.arm(s.arm_index(arm).unwrap()).unwrap().counts().feedback
    }

    #[test]
    fn a_reload_ships_the_old_shape_first_then_follows_the_new_slots() {
        let (tx, mut rx) = mpsc::channel(8);
        let mut writers = vec![PolicyWriter::new(fresh())];
        let mut t = Tracker::new(tx, &writers);
        teach(&mut writers[0], "a", 2);
        t.cut(&writers, false);
        teach(&mut writers[0], "b", 1);
        // The reload: a forced cut while the first flush is unacknowledged.
        t.cut(&writers, true);
        let (first, second) = (flush(&mut rx), flush(&mut rx));
        assert_eq!((first.seq, second.seq), (1, 2));
        assert_eq!(second.deltas[0].delta.arms[0].arm, "b");
        // Route 0 gains arm `c`; route 1 is new.
        let wider = spec(&["a", "b", "c"]);
        writers[0] = PolicyWriter::new(writers[0].state().clone().reshape(&wider).unwrap());
        writers.push(PolicyWriter::new(fresh()));
        let specs = vec![wider.clone(), spec(&["a", "b"])];
        t.reshaped(
            &writers,
            vec![
                RouteChange::Reshaped {
                    slot: 0,
                    spec: wider,
                },
                RouteChange::Added {
                    slot: 1,
                    name: "new".into(),
                    spec: spec(&["a", "b"]),
                    start: Box::new(fresh()),
                    watermark: 0,
                },
            ],
        );
        assert!(matches!(rx.try_recv().unwrap(), ToTask::Routes(c) if c.len() == 2));
        // A merged state from before the task heard of the reload (old
        // arms, both flushes merged) is refitted to the new arms.
        let mut merged = PolicyWriter::new(fresh());
        teach(&mut merged, "a", 2);
        teach(&mut merged, "b", 1);
        let msg = FromTask::Rebase {
            route: 0,
            epoch: String::new(),
            snapshot: Box::new(merged.state().clone()),
            through_seq: 2,
        };
        assert_eq!(t.on_task(msg, &mut writers, &specs), Some(0));
        assert_eq!(writers[0].state().arm_count(), 3);
        assert_eq!(feedback(&writers[0], "a"), 2, "nothing counted twice");
        // What the new arm and the new route learn ships next.
        teach(&mut writers[0], "c", 1);
        teach(&mut writers[1], "a", 3);
        t.cut(&writers, false);
        let next = flush(&mut rx);
        let routes: Vec<(usize, &str)> = next
            .deltas
            .iter()
            .map(|d| (d.route, d.delta.arms[0].arm.as_str()))
            .collect();
        assert_eq!(routes, [(0, "c"), (1, "a")]);
    }
}
