//! Batch retraining for switchboard: reads logged requests and feedback from
//! the store, fits candidate policies, evaluates them off-policy and
//! publishes snapshots. Depends on the root library, never the reverse, so
//! its heavy dependencies (ndarray, linfa) stay out of the serving binary.
//!
//! Modules: `ridge` (sufficient statistics, cross-validated ridge), `fit`
//! (per-arm models from the log), `pca` (the optional projection of the
//! hashed features, `--pca`), `ope` (IPS / SNIPS / DR with bootstrap
//! intervals), `job` (the `switchboard train` run: fit, evaluate, guard,
//! publish), `warm` (priors from a full-information labelled file),
//! `command` (the `switchboard train` command: arguments, trainer lock).

pub mod command;
pub mod fit;
pub mod job;
pub mod ope;
pub mod pca;
pub mod progress;
pub mod ridge;
pub mod synthetic;
pub mod warm;

/// The schema version of the snapshots this crate reads and writes.
pub const SNAPSHOT_SCHEMA_VERSION: u32 = 1;
