//! The single writer: applies outcome and quality updates to a working
//! copy of the policy and publishes immutable snapshots for lock-free reads.
//!
//! Owns: `PolicyWriter`, `Outcome`, `Quality`, `UpdateReport`. Must not be
//! shared across threads mutably: the gateway owns it in one task and sends
//! it updates (plain `&mut self` methods, no locks). Readers hold
//! `PolicyHandle` (`Arc<ArcSwap<PolicySnapshot>>`) and call `load()`.
//! Publishing is cheap: the working copy's arms are `Arc`s shared with the
//! last published snapshot, and the first update of a model after a
//! publish writes its new matrices (2 d^2 floats) into a fresh copy rather
//! than updating them in place (`arm.rs`); unchanged arms are shared.
//! Publish every update for freshest reads, or every N updates / few ms to
//! amortise the fresh copies and the decision mirror each publish packs.
//! Invariant: the published snapshot is always a validated state; version
//! increases by one per publish. Updates carry raw feature vectors (as
//! logged); a projected snapshot maps them itself (`projected.rs`).

use std::sync::Arc;

use arc_swap::ArcSwap;
use serde::Serialize;

use super::arm::Scratch;
use super::drift::DriftEvent;
use super::refresh::{Inverse, Refresh};
use super::snapshot::{PolicySnapshot, RouteSpec, SnapshotError};
use crate::domain::{ModelName, Reward, Usd};
use crate::features::Features;

/// Shared read side: `handle.load()` gives the current snapshot, wait-free.
pub type PolicyHandle = Arc<ArcSwap<PolicySnapshot>>;

/// A response finished (or failed). A failed request (`ok = false`) also
/// counts as quality 0 for its arm right away; the gateway must then not
/// send a later `Quality` for it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    pub arm: ModelName,
    pub x: Features,
    pub cost_usd: Usd,
    pub latency_s: f64,
    pub ok: bool,
}

/// Feedback on a response, possibly hours after it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Quality {
    pub arm: ModelName,
    pub x: Features,
    pub reward: Reward,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum UpdateError {
    #[error("arm {0:?} is not part of this policy")]
    UnknownArm(String),
    #[error("features have {found} entries, the policy expects {expected}")]
    Dimension { expected: usize, found: usize },
    #[error("non-finite feature value")]
    NonFinite,
    #[error("latency {0} must be finite and >= 0 seconds")]
    Latency(f64),
}

/// What an update changed that the gateway may want to log or count.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct UpdateReport {
    pub drift: Vec<DriftEvent>,
}

pub struct PolicyWriter {
    state: PolicySnapshot,
    shared: PolicyHandle,
    scratch: Scratch,
    unpublished: u64,
}

impl PolicyWriter {
    /// Takes a validated snapshot (from `PolicySnapshot::new`, or
    /// `from_json` + `prepare`) and publishes it.
    pub fn new(snapshot: PolicySnapshot) -> Self {
        for arm in &snapshot.arms {
            arm.prime();
        }
        let shared = Arc::new(ArcSwap::from_pointee(snapshot.clone()));
        Self {
            state: snapshot,
            shared,
            scratch: Scratch::default(),
            unpublished: 0,
        }
    }

    pub fn handle(&self) -> PolicyHandle {
        Arc::clone(&self.shared)
    }

    /// The working state, including unpublished updates (persist this).
    pub fn state(&self) -> &PolicySnapshot {
        &self.state
    }

    /// Updates applied since the last publish.
    pub fn unpublished(&self) -> u64 {
        self.unpublished
    }

    pub fn set_label(&mut self, label: impl Into<String>) {
        self.state.label = label.into();
    }

    /// Leaves each exact re-inversion an update makes due to the caller,
    /// to compute off this thread (`refresh.rs`): after every update,
    /// `take_refresh`, `Refresh::invert` anywhere, then `finish_refresh`,
    /// before the next update. A refresh left untaken is done in place
    /// before the next update or publish, as without this.
    pub fn defer_refreshes(&mut self) {
        self.scratch.defer = true;
    }

    /// The re-inversion the last update made due, if any.
    pub fn take_refresh(&mut self) -> Option<Refresh> {
        let (arm, model) = self.scratch.due.take()?;
        let gram = self.state.arms.get(arm)?.gram(model);
        Some(Refresh { arm, gram })
    }

    /// Applies a re-inversion from `take_refresh`. One for a model that has
    /// changed since (replaced in between) is dropped.
    pub fn finish_refresh(&mut self, refresh: Refresh, inverse: Inverse) {
        let model = refresh.model();
        let Refresh { arm, gram } = refresh;
        let current = self.state.arms.get(arm).is_some_and(|a| a.holds(&gram));
        // Released first, so `make_mut` below does not copy the model.
        drop(gram);
        if let Some(slot) = self.state.arms.get_mut(arm).filter(|_| current) {
            Arc::make_mut(slot).refresh(model, inverse.0);
        }
    }

    /// Does a refresh left untaken, here (also the learner's lowered
    /// batches, already off the request worker, after each update).
    pub fn settle(&mut self) {
        if let Some(refresh) = self.take_refresh() {
            let inverse = refresh.invert();
            self.finish_refresh(refresh, inverse);
        }
    }

    /// Makes the working state visible to readers; returns its version.
    pub fn publish(&mut self) -> u64 {
        self.settle();
        // Arms unchanged since the last publish are primed already.
        for arm in &self.state.arms {
            arm.prime();
        }
        self.state.version += 1;
        self.shared.store(Arc::new(self.state.clone()));
        self.unpublished = 0;
        self.state.version
    }

    /// Replaces the learned state with another validated snapshot (an
    /// activated training result, already `prepare`d for the route) and
    /// publishes it; later updates continue on top of it.
    pub fn replace(&mut self, snapshot: PolicySnapshot) -> u64 {
        // A refresh due in the state being replaced is moot.
        self.scratch.due = None;
        self.state = snapshot;
        self.publish()
    }

    /// Applies a route config change (new arms start at their prior; see
    /// `PolicySnapshot::prepare`) and publishes it.
    pub fn reconfigure(&mut self, spec: &RouteSpec) -> Result<u64, SnapshotError> {
        // Arms may move: a due refresh is done before they do.
        self.settle();
        self.state = self.state.clone().prepare(spec)?;
        Ok(self.publish())
    }

    fn locate(&self, arm: &ModelName, x: &[f64]) -> Result<usize, UpdateError> {
        let i = self
            .state
            .arm_index(arm.as_str())
            .ok_or_else(|| UpdateError::UnknownArm(arm.to_string()))?;
        if x.len() != self.state.dimension {
            return Err(UpdateError::Dimension {
                expected: self.state.dimension,
                found: x.len(),
            });
        }
        if x.iter().any(|v| !v.is_finite()) {
            return Err(UpdateError::NonFinite);
        }
        Ok(i)
    }

    /// Cost and latency of a finished request; feeds the pacer with the
    /// realised cost. A failure also records quality 0; its cost and latency
    /// do not train the cost/latency models (an error's price says nothing
    /// about an answer's price).
    pub fn apply_outcome(&mut self, o: &Outcome) -> Result<UpdateReport, UpdateError> {
        self.settle();
        let i = self.locate(&o.arm, &o.x)?;
        if !(o.latency_s.is_finite() && o.latency_s >= 0.0) {
            return Err(UpdateError::Latency(o.latency_s));
        }
        let state = &mut self.state;
        let target = state.budget.target_usd_per_request;
        state
            .pacing
            .observe(o.cost_usd.get(), target, &state.config.pacing);
        // Updates carry raw vectors; the snapshot's own projection applies.
        let x = state.project(&o.x);
        let Some(slot) = state.arms.get_mut(i) else {
            return Err(UpdateError::UnknownArm(o.arm.to_string()));
        };
        let arm = Arc::make_mut(slot);
        let cfg = &state.config;
        let mut report = UpdateReport::default();
        if o.ok {
            report.drift.extend(arm.observe_outcome(
                i,
                &x,
                o.cost_usd.get(),
                o.latency_s,
                cfg,
                &mut self.scratch,
            ));
        } else {
            arm.record_error();
            report
                .drift
                .extend(arm.observe_quality(i, &x, 0.0, cfg, &mut self.scratch));
        }
        self.unpublished += 1;
        Ok(report)
    }

    /// Quality feedback for an earlier request.
    pub fn apply_quality(&mut self, q: &Quality) -> Result<UpdateReport, UpdateError> {
        self.settle();
        let i = self.locate(&q.arm, &q.x)?;
        let state = &mut self.state;
        let x = state.project(&q.x);
        let Some(slot) = state.arms.get_mut(i) else {
            return Err(UpdateError::UnknownArm(q.arm.to_string()));
        };
        let arm = Arc::make_mut(slot);
        let mut report = UpdateReport::default();
        report.drift.extend(arm.observe_quality(
            i,
            &x,
            q.reward.get(),
            &state.config,
            &mut self.scratch,
        ));
        self.unpublished += 1;
        Ok(report)
    }

    /// Overrides the pacing dual (e.g. an operator reset); clamped.
    pub fn set_pacing_lambda(&mut self, lambda: f64) {
        self.state.pacing.set_lambda(lambda);
    }
}
