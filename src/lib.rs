//! switchboard: a learned LLM router. See `docs/ARCHITECTURE.md`.
//!
//! The tree follows the request path: `api` → `gateway` → `features` →
//! `bandit` → `providers` → `store`.

pub mod api;
pub mod auth;
pub mod bandit;
pub mod config;
pub mod domain;
pub mod error;
pub mod features;
pub mod gateway;
pub mod keys_cmd;
pub mod policy_cmd;
pub mod providers;
pub mod replay_cmd;
pub mod serve;
pub mod sim;
pub mod startup;
pub mod store;
pub mod telemetry;
