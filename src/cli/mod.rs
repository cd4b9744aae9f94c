//! The subcommands behind `switchboard` that are more than a call into the
//! library: offline replay, policy versions, experiments, client keys,
//! export/import. `main.rs` parses the command line and dispatches here.

pub mod age;
pub mod experiment;
pub mod export;
pub mod keys;
pub mod policy;
pub mod replay;
