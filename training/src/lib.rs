//! Batch retraining for switchboard: reads logged requests and feedback from
//! the store, fits candidate policies, evaluates them off-policy and
//! publishes snapshots. Depends on the root library, never the reverse, so
//! its heavy dependencies stay out of the serving binary.
//!
//! This crate is the home of the `switchboard train` job; its fitting and
//! off-policy evaluation arrive with the retraining issue.

/// The schema version of the snapshots this crate reads and writes.
pub const SNAPSHOT_SCHEMA_VERSION: u32 = 1;
