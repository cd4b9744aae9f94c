//! switchboard: a learned LLM router. See `docs/ARCHITECTURE.md`.
//!
//! The tree follows the request path: `api` → `gateway` → `features` →
//! `bandit` → `providers` → `store`.

pub mod api;
pub mod auth;
pub mod bandit;
pub mod cli;
pub mod config;
pub mod domain;
pub mod error;
pub mod experiments;
pub mod features;
pub mod gateway;
pub mod providers;
pub mod retrain;
pub mod serve;
pub mod sim;
pub mod startup;
pub mod store;
pub mod telemetry;
