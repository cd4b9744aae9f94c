//! Integration tests: the real app on a random port, a fresh database per
//! test, and mock upstreams that speak the real wire formats. One binary for
//! all of them keeps link time down.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod anthropic;
mod bad_input;
mod browser;
mod cache;
mod chat;
mod cli;
mod compose;
mod continuation;
mod dashboard;
mod errors;
mod experiments;
mod export;
mod faults;
mod feedback;
mod flags;
mod grafana;
mod hedging;
mod helpers;
mod keys;
mod learning;
mod lifecycle;
mod metrics;
mod mock;
mod mock_anthropic;
mod mock_raw;
mod otlp;
mod outage;
mod process;
mod python_sdk;
mod redaction;
mod reload;
mod replay_bar;
mod resilience;
mod retention;
mod rollout;
mod rules;
mod scale;
mod soak;
mod sqlite;
mod training;
mod training_pca;
mod warm_start;
