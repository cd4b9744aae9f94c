//! The replica task's routes, indexed by the writer's slot: each one's
//! name, shape, log fold, the highest writer version seen and the watermark
//! last checkpointed. Follows the writer across reloads (`RouteChange`):
//! slots are appended, reshaped, restarted or retired, never reused. Pure:
//! no I/O.
//!
//! Invariants: a retired slot takes no part in anything any more (reading
//! the log, the watermark, acknowledgements, rebases, checkpoints, status);
//! a route name has at most one live slot, so a log entry folds into one.

use super::fold::{Pending, RouteLog};
use super::RouteChange;
use crate::bandit::{PolicySnapshot, RouteSpec};
use crate::store::scale::Checkpoint;

pub struct Slot {
    pub name: String,
    pub spec: RouteSpec,
    pub log: RouteLog,
    /// The writer's highest published version (checkpoints carry it on).
    pub version: u64,
    /// Watermark of the last checkpoint this replica saved.
    pub saved: i64,
    pub live: bool,
}

impl Slot {
    fn new(name: String, spec: RouteSpec, start: PolicySnapshot, watermark: i64) -> Self {
        Self {
            name,
            spec,
            version: start.version(),
            saved: watermark,
            log: RouteLog::new(start, watermark),
            live: true,
        }
    }

    /// Restarts from `cp` when it is of this epoch and ahead of the fold,
    /// dropping own deltas it already holds. `covered(seq)`: a committed own
    /// delta of this route at or below `cp`'s watermark (or no longer in
    /// the log: compacted, which only happens below a checkpoint). Returns
    /// whether the fold restarted.
    pub fn adopt(&mut self, cp: &Checkpoint, covered: impl Fn(u64) -> bool) -> bool {
        if cp.epoch != self.log.epoch || cp.watermark <= self.log.watermark {
            return false;
        }
        match PolicySnapshot::from_json(&cp.snapshot).and_then(|s| s.prepare(&self.spec)) {
            Ok(s) => {
                self.log.restart(s, cp.watermark);
                self.log.drop_covered(covered);
                true
            }
            Err(e) => {
                tracing::warn!(route = %self.name, error = %e, "The checkpoint does not fit this route; reading the log instead.");
                false
            }
        }
    }
}

impl Slot {
    /// The checkpoint to save: the merged state with the writer's highest
    /// version, its version string, as JSON.
    pub fn checkpoint(&self) -> Result<(String, serde_json::Value), serde_json::Error> {
        let mut state = self.log.base.clone();
        state.set_version(self.version.max(state.version()));
        let label = if state.label().is_empty() {
            "online"
        } else {
            state.label()
        };
        let version = format!("{label}.{}", state.version());
        Ok((version, serde_json::to_value(&state)?))
    }
}

pub struct Slots {
    slots: Vec<Slot>,
    /// Log position read up to: the watermark while no route is live.
    head: i64,
}

impl Slots {
    /// `starts[i]`: slot i's state and the log position it covers.
    pub fn new(
        names: Vec<String>,
        specs: Vec<RouteSpec>,
        starts: Vec<(PolicySnapshot, i64)>,
    ) -> Self {
        let slots: Vec<Slot> = names
            .into_iter()
            .zip(specs)
            .zip(starts)
            .map(|((n, s), (start, w))| Slot::new(n, s, start, w))
            .collect();
        let head = slots.iter().map(|s| s.log.watermark).max().unwrap_or(0);
        Self { slots, head }
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn get(&self, slot: usize) -> Option<&Slot> {
        self.slots.get(slot)
    }

    /// A live slot.
    pub fn live_mut(&mut self, slot: usize) -> Option<&mut Slot> {
        self.slots.get_mut(slot).filter(|s| s.live)
    }

    pub fn live(&self) -> impl Iterator<Item = (usize, &Slot)> {
        self.slots.iter().enumerate().filter(|(_, s)| s.live)
    }

    /// The live slot serving `route`.
    pub fn find(&self, route: &str) -> Option<usize> {
        self.live().find(|(_, s)| s.name == route).map(|(i, _)| i)
    }

    /// Every live route has merged the log up to here.
    pub fn watermark(&self) -> i64 {
        self.live()
            .map(|(_, s)| s.log.watermark)
            .min()
            .unwrap_or(self.head)
    }

    /// Every entry up to `pos` has been read.
    pub fn advance(&mut self, pos: i64) {
        self.head = self.head.max(pos);
        for s in self.slots.iter_mut().filter(|s| s.live) {
            s.log.advance(pos);
        }
    }

    /// A flush handed over: the writer's versions, and each live route's
    /// delta pending until it shows up in the log.
    pub fn hand_over(&mut self, versions: &[u64], pending: impl Iterator<Item = (usize, Pending)>) {
        for (s, v) in self.slots.iter_mut().zip(versions) {
            s.version = s.version.max(*v);
        }
        for (slot, p) in pending {
            if let Some(s) = self.live_mut(slot) {
                s.log.hand_over(p);
            }
        }
    }

    pub fn mark_committed(&mut self, seq: u64) {
        for s in self.slots.iter_mut().filter(|s| s.live) {
            s.log.mark_committed(seq);
        }
    }

    /// The oldest own flush some live route still waits to see in the log.
    pub fn oldest_pending(&self) -> Option<u64> {
        self.live()
            .flat_map(|(_, s)| s.log.pending().map(|p| p.seq))
            .min()
    }

    /// Follows one change of a reload. Returns a new slot, which the task
    /// checks against its checkpoint (one may have been saved, and the log
    /// compacted under it, since the writer read it).
    pub fn change(&mut self, change: RouteChange) -> Option<usize> {
        match change {
            RouteChange::Added {
                slot,
                name,
                spec,
                start,
                watermark,
            } => {
                if slot != self.slots.len() {
                    tracing::error!(slot, slots = self.slots.len(), route = %name, "A new route's slot is out of step with the writer; it is not replicated.");
                    return None;
                }
                tracing::info!(route = %name, "A reload added this route: reading its deltas from the log.");
                self.slots.push(Slot::new(name, spec, *start, watermark));
                Some(slot)
            }
            RouteChange::Reshaped { slot, spec } => {
                let s = self.live_mut(slot)?;
                // The writer reshaped its state alike; own pending deltas
                // name their arms, so they still apply.
                match s.log.base.clone().reshape(&spec) {
                    Ok(base) => s.log.base = base,
                    Err(e) => {
                        tracing::error!(route = %s.name, error = %e, "The merged state could not follow the reload; deltas that do not fit are passed over.");
                    }
                }
                s.spec = spec;
                None
            }
            RouteChange::Restarted {
                slot,
                spec,
                start,
                watermark,
            } => {
                let s = self.live_mut(slot)?;
                s.log.restart(*start, watermark);
                // Own deltas of the old feature space still ship (for
                // replicas on the old config) but cannot apply here.
                s.log.drop_pending();
                s.spec = spec;
                s.saved = watermark;
                None
            }
            RouteChange::Removed { slot } => {
                if let Some(s) = self.live_mut(slot) {
                    s.live = false;
                    s.log.drop_pending();
                }
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::super::testing::{fresh, learned, spec};
    use super::*;

    fn pending(seq: u64, from: &PolicySnapshot, arm: &str) -> Pending {
        Pending {
            seq,
            epoch: String::new(),
            delta: learned(from, arm, 2),
            committed: false,
        }
    }

    fn added(slot: usize, name: &str, watermark: i64) -> RouteChange {
        RouteChange::Added {
            slot,
            name: name.into(),
            spec: spec(&["a", "b"]),
            start: Box::new(fresh()),
            watermark,
        }
    }

    #[test]
    fn a_reload_adds_retires_and_re_adds_routes_by_slot() {
        let mut slots = Slots::new(
            vec!["x".into()],
            vec![spec(&["a", "b"])],
            vec![(fresh(), 9)],
        );
        // A new route starts at its checkpoint's watermark, which now
        // bounds what this replica has merged.
        assert_eq!(slots.change(added(1, "y", 4)), Some(1));
        assert_eq!((slots.find("y"), slots.watermark()), (Some(1), 4));
        slots.hand_over(&[1, 1], [(1, pending(3, &fresh(), "a"))].into_iter());
        assert_eq!(slots.oldest_pending(), Some(3));
        // Removed: not read, not waited for, not in the watermark.
        assert_eq!(slots.change(RouteChange::Removed { slot: 1 }), None);
        assert_eq!((slots.find("y"), slots.watermark()), (None, 9));
        assert_eq!(slots.oldest_pending(), None);
        assert_eq!(slots.live().count(), 1);
        // Back again: a new slot, the retired one stays retired.
        assert_eq!(slots.change(added(2, "y", 0)), Some(2));
        assert_eq!(slots.find("y"), Some(2));
        assert!(!slots.get(1).unwrap().live);
        // A slot out of step with the writer is refused.
        assert_eq!(slots.change(added(7, "z", 0)), None);
        assert_eq!(slots.len(), 3);
    }

    #[test]
    fn with_no_live_route_the_watermark_is_what_was_read() {
        let mut slots = Slots::new(
            vec!["x".into()],
            vec![spec(&["a", "b"])],
            vec![(fresh(), 2)],
        );
        slots.change(RouteChange::Removed { slot: 0 });
        slots.advance(40);
        assert_eq!(slots.watermark(), 40, "the log is not read again from 0");
    }

    #[test]
    fn a_reshaped_route_keeps_its_merged_state_and_a_restarted_one_drops_it() {
        let base = fresh();
        let mut slots = Slots::new(
            vec!["x".into()],
            vec![spec(&["a", "b"])],
            vec![(base.clone(), 0)],
        );
        let slot = slots.live_mut(0).unwrap();
        slot.log.fold(1, None, "", Ok(learned(&base, "a", 3)));
        slots.hand_over(&[1], [(0, pending(1, &base, "b"))].into_iter());
        // An arm added by the reload: learned statistics carry over, the
        // pending own delta still applies (by arm name).
        slots.change(RouteChange::Reshaped {
            slot: 0,
            spec: spec(&["a", "b", "c"]),
        });
        let s = slots.get(0).unwrap();
        let serving = s.log.serving().unwrap();
        assert_eq!(serving.arm_count(), 3);
        let feedback = |arm: &str| {
            let i = serving.arm_index(arm).unwrap();
            serving.arm(i).unwrap().counts().feedback
        };
        assert_eq!((feedback("a"), feedback("b"), feedback("c")), (3, 2, 0));
        // Another feature space: the fold starts over and waits for nothing.
        slots.change(RouteChange::Restarted {
            slot: 0,
            spec: spec(&["a"]),
            start: Box::new(PolicySnapshot::new(&spec(&["a"])).unwrap()),
            watermark: 5,
        });
        let s = slots.get(0).unwrap();
        assert_eq!((s.log.watermark, s.log.base.arm_count()), (5, 1));
        assert_eq!(slots.oldest_pending(), None);
    }
}
