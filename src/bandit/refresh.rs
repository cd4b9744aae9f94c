//! An exact re-inversion (`Design::refresh`) taken out of the update that
//! made it due, so its owner can compute it on another thread and hand it
//! back before the next update.
//!
//! Owns: `Refresh` (which arm and model, and a shared handle to the matrix
//! to invert) and `Inverse`. Must not import the writer or the gateway.
//! Why: at d = 100 a re-inversion is ~0.3 ms of O(d^3) arithmetic, due
//! every `refresh_period(d)` updates of each design. The gateway's learner
//! shares the runtime's worker with requests, so at one bandit request in
//! flight ~1 % of requests waited behind one: without re-inversions the
//! c = 1 p99 fell by ~70 µs (docs/performance.md).
//! Invariant: finishing a refresh leaves the state the same to the bit as
//! refreshing in place: the same function inverts the same matrix, and the
//! writer applies it before the design's next update (it refreshes in
//! place itself when a refresh was left untaken).

use std::sync::Arc;

use super::arm::{OutcomeModel, QualityModel};
use super::linalg;

/// Which of an arm's two designs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Model {
    Quality,
    Outcome,
}

/// A design due an exact re-inversion. Holding it keeps the model's matrix
/// alive (an `Arc`), not a copy; the writer drops it before it writes.
#[derive(Debug)]
pub struct Refresh {
    pub(crate) arm: usize,
    pub(crate) gram: Gram,
}

#[derive(Debug)]
pub(crate) enum Gram {
    Quality(Arc<QualityModel>),
    Outcome(Arc<OutcomeModel>),
}

/// `A^-1`, or `None` when `A` is not numerically positive definite (the
/// writer then keeps its incremental inverse, as a refresh in place does).
#[derive(Debug)]
pub struct Inverse(pub(crate) Option<Vec<f64>>);

impl Refresh {
    /// The O(d^3) part; safe on any thread.
    pub fn invert(&self) -> Inverse {
        let design = match &self.gram {
            Gram::Quality(m) => &m.design,
            Gram::Outcome(m) => &m.design,
        };
        Inverse(linalg::spd_inverse(&design.a.folded(), design.d))
    }

    pub(crate) fn model(&self) -> Model {
        match self.gram {
            Gram::Quality(_) => Model::Quality,
            Gram::Outcome(_) => Model::Outcome,
        }
    }
}
