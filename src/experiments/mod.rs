//! Experiments and arm lifecycles: canaries, A/B splits (including the
//! blue-green switch of a route), shadow traffic, shadow and canary policy
//! versions, onboarding and retirement of models, and operator flags.
//!
//! Owns the pure parts: configuration shapes (`spec`), the merged view of
//! the file and the stored controls (`control`), sticky assignment
//! (`assign`), the adjustments to a policy's choice probabilities
//! (`mix`) and the statistics of results (`stats`). Must not import axum,
//! the gateway or the store's SQL: the gateway applies these, the store
//! persists them.

pub mod assign;
pub mod control;
pub mod mix;
pub mod spec;
pub mod stats;

pub use control::{ArmChange, ArmState, Control, Experiment, Status};
pub use spec::{
    AutoPromote, ExperimentConfig, ExperimentKind, OnboardConfig, RetireConfig, StickyBy,
};
