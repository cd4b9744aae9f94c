//! One route's fold of the delta log: the merged state at a watermark, and
//! this replica's own deltas that are handed over but not yet seen in the
//! log. Pure (no I/O): the replica task feeds it entries in log order.
//!
//! Invariants: `base` is the composition of every log entry of this
//! route's epoch up to `watermark`, in position order, on top of the state
//! the fold started from (a checkpoint, an activated version or a fresh
//! policy), so replicas that fold the same log hold the same bits. An entry
//! at or below the watermark is ignored: re-reading the log, or a flush
//! retried after its commit, never merges anything twice.

use std::collections::VecDeque;

use crate::bandit::{DeltaError, PolicyDelta, PolicySnapshot};

/// One of this replica's deltas, handed over by the writer.
#[derive(Debug, Clone)]
pub struct Pending {
    pub seq: u64,
    pub epoch: String,
    pub delta: PolicyDelta,
    /// Its flush transaction committed (it will show up in the log).
    pub committed: bool,
}

/// What folding one log entry did.
#[derive(Debug, Clone, PartialEq)]
pub enum Folded {
    /// At or below the watermark, or of another epoch: nothing merged.
    Skipped,
    Merged {
        own: bool,
        unknown_arms: Vec<String>,
    },
    /// Learned in another feature space (a replica on another route
    /// config, or this one before a reload changed the route's features).
    OtherFeatures,
    /// Undecodable or unmergeable (logged; the watermark moves past it).
    Rejected(String),
}

#[derive(Debug, Clone)]
pub struct RouteLog {
    pub epoch: String,
    pub base: PolicySnapshot,
    pub watermark: i64,
    pending: VecDeque<Pending>,
}

impl RouteLog {
    pub fn new(base: PolicySnapshot, watermark: i64) -> Self {
        Self {
            epoch: base.label().to_owned(),
            base,
            watermark,
            pending: VecDeque::new(),
        }
    }

    /// Folds the entry at `pos`; `own` is its seq when this incarnation
    /// wrote it. `delta` is the decoded entry (or why it could not be).
    pub fn fold(
        &mut self,
        pos: i64,
        own: Option<u64>,
        epoch: &str,
        delta: Result<PolicyDelta, String>,
    ) -> Folded {
        if pos <= self.watermark {
            return Folded::Skipped;
        }
        self.watermark = pos;
        if let Some(seq) = own {
            self.pending.retain(|p| p.seq != seq);
        }
        if epoch != self.epoch {
            return Folded::Skipped;
        }
        let delta = match delta {
            Ok(d) => d,
            Err(e) => return Folded::Rejected(e),
        };
        if (delta.dimension, delta.feature_fingerprint)
            != (self.base.inner_dimension(), self.base.inner_fingerprint())
        {
            return Folded::OtherFeatures;
        }
        match self.base.merge_delta(&delta) {
            Ok((next, unknown_arms)) => {
                self.base = next;
                Folded::Merged {
                    own: own.is_some(),
                    unknown_arms,
                }
            }
            Err(e) => Folded::Rejected(e.to_string()),
        }
    }

    /// Every entry up to `pos` has been read (none was for this route).
    pub fn advance(&mut self, pos: i64) {
        self.watermark = self.watermark.max(pos);
    }

    pub fn hand_over(&mut self, p: Pending) {
        self.pending.push_back(p);
    }

    pub fn mark_committed(&mut self, seq: u64) {
        for p in self.pending.iter_mut().filter(|p| p.seq == seq) {
            p.committed = true;
        }
    }

    /// Drops committed pending deltas `covered` says are already merged
    /// (into a checkpoint this fold now starts from).
    pub fn drop_covered(&mut self, covered: impl Fn(u64) -> bool) {
        self.pending.retain(|p| !(p.committed && covered(p.seq)));
    }

    /// Forgets every pending delta (the route restarted in another feature
    /// space, or is retired): they ship, but are not waited for here.
    pub fn drop_pending(&mut self) {
        self.pending.clear();
    }

    pub fn pending(&self) -> impl Iterator<Item = &Pending> {
        self.pending.iter()
    }

    /// Starts over from `base` at `watermark` (a checkpoint on rejoin).
    pub fn restart(&mut self, base: PolicySnapshot, watermark: i64) {
        self.epoch = base.label().to_owned();
        self.base = base;
        self.watermark = watermark;
    }

    /// A new epoch (an activated version): its deltas are read from the
    /// start of the log. Own deltas of the old epoch stay pending until
    /// they show up (and are skipped).
    pub fn new_epoch(&mut self, snapshot: PolicySnapshot) {
        self.restart(snapshot, 0);
    }

    /// What the writer should serve before its own unshipped updates: the
    /// merged state with this epoch's pending deltas applied after it.
    pub fn serving(&self) -> Result<PolicySnapshot, DeltaError> {
        let mut s = self.base.clone();
        for p in self.pending.iter().filter(|p| p.epoch == self.epoch) {
            s = s.merge_delta(&p.delta)?.0;
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::super::testing::{fresh, learned};
    use super::*;

    fn feedback(s: &PolicySnapshot, arm: &str) -> u64 {
        s.arm(s.arm_index(arm).unwrap()).unwrap().counts().feedback
    }

    #[test]
    fn re_reading_the_log_merges_nothing_twice() {
        let base = fresh();
        let mut log = RouteLog::new(base.clone(), 0);
        let d = learned(&base, "a", 4);
        assert!(matches!(
            log.fold(1, None, "", Ok(d.clone())),
            Folded::Merged { own: false, .. }
        ));
        let once = log.base.clone();
        assert_eq!(log.fold(1, None, "", Ok(d.clone())), Folded::Skipped);
        assert_eq!(log.base, once, "a re-applied entry is a no-op");
        assert_eq!(feedback(&log.base, "a"), 4);
    }

    #[test]
    fn own_deltas_are_served_until_they_reach_the_log_then_merged_once() {
        let base = fresh();
        let mut log = RouteLog::new(base.clone(), 10);
        let mine = learned(&base, "a", 3);
        log.hand_over(Pending {
            seq: 1,
            epoch: String::new(),
            delta: mine.clone(),
            committed: false,
        });
        let theirs = learned(&base, "b", 2);
        log.fold(11, None, "", Ok(theirs));
        let serving = log.serving().unwrap();
        assert_eq!((feedback(&serving, "a"), feedback(&serving, "b")), (3, 2));
        assert_eq!(feedback(&log.base, "a"), 0, "not in the log yet");
        log.fold(12, Some(1), "", Ok(mine));
        assert_eq!(log.pending().count(), 0);
        assert_eq!(feedback(&log.serving().unwrap(), "a"), 3, "merged once");
        assert_eq!(log.watermark, 12);
    }

    #[test]
    fn other_epochs_and_bad_entries_are_passed_over() {
        let base = fresh();
        let mut log = RouteLog::new(base.clone(), 0);
        assert_eq!(
            log.fold(1, None, "v9", Ok(learned(&base, "a", 2))),
            Folded::Skipped
        );
        assert!(matches!(
            log.fold(2, None, "", Err("garbled".into())),
            Folded::Rejected(_)
        ));
        let mut wrong = learned(&base, "a", 1);
        wrong.dimension = 4;
        assert_eq!(log.fold(3, None, "", Ok(wrong)), Folded::OtherFeatures);
        assert_eq!(log.watermark, 3);
        assert_eq!(log.base, base);
    }

    #[test]
    fn a_projected_policy_merges_its_own_space_and_passes_over_the_raw_one() {
        let projection = crate::features::Projection {
            rows: 1,
            cols: 2,
            matrix: vec![0.5, 0.5],
        };
        let spec = super::super::testing::spec(&["a", "b"]);
        let base =
            PolicySnapshot::from_fitted_projected(&spec, "", Some(projection), vec![]).unwrap();
        let mut log = RouteLog::new(base.clone(), 0);
        let d = learned(&base, "a", 3);
        assert_eq!(d.dimension, 2);
        assert!(matches!(
            log.fold(1, None, "", Ok(d)),
            Folded::Merged { own: false, .. }
        ));
        assert_eq!(feedback(&log.base, "a"), 3);
        let raw = learned(&fresh(), "b", 2);
        assert_eq!(log.fold(2, None, "", Ok(raw)), Folded::OtherFeatures);
        assert_eq!(feedback(&log.base, "b"), 0);
    }
}
