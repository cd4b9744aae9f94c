//! The contextual bandit that picks a model per request.
//!
//! Owns: per-arm models of quality, cost and latency; the decision rule
//! (LinUCB, linear Thompson sampling, epsilon-greedy, random, fixed); budget
//! pacing; drift response; snapshots (optionally with a learned feature
//! projection), their additive deltas (replicas learn as one) and the
//! single writer.
//! Must not import `sim`, HTTP, async runtimes or I/O; features arrive as
//! `&[f64]` / `Features` from `crate::features`.
//!
//! Why one snapshot type with an `Algorithm` enum instead of a `Policy`
//! trait object: every algorithm reads the same sufficient statistics (the
//! per-arm ridge posteriors), so they differ only in a few lines of the
//! selection rule. An enum keeps the snapshot one concrete serde type, lets
//! an operator switch algorithm without relearning, and avoids dynamic
//! dispatch on the hot path.
//!
//! Concurrency: decisions call `PolicySnapshot::decide` on a snapshot from
//! `PolicyHandle::load()` (wait-free, never locks); one `PolicyWriter`
//! applies `Outcome`/`Quality` updates and publishes new snapshots.

mod arm;
mod config;
mod decide;
mod delta;
mod drift;
mod exact;
mod fitted;
mod gram;
mod linalg;
mod mirror;
mod normal;
mod pacing;
mod projected;
mod refresh;
mod ridge;
mod snapshot;
mod widest;
mod writer;

pub use arm::{ArmCounts, ArmState};
pub use config::{
    Algorithm, ArmSpec, BudgetConfig, ConfigError, DriftConfig, Objective, PacingConfig,
    PolicyConfig,
};
pub use decide::{ArmReceipt, DecideError, Decision, DecisionRequest, Receipt};
pub use delta::{ArmDelta, DeltaError, ModelDelta, PolicyDelta};
pub use drift::{DriftEvent, DriftFlags, DriftSignal, Shift};
pub use fitted::{FittedArm, LinearFit, TargetFit};
pub use pacing::{PacingState, LAMBDA_MAX};
pub use refresh::{Inverse, Refresh};
pub use snapshot::{PolicySnapshot, RouteSpec, SnapshotError};
pub use writer::{Outcome, PolicyHandle, PolicyWriter, Quality, UpdateError, UpdateReport};

#[cfg(test)]
mod tests;
