//! The live gateway: the current `Gateway` behind an `ArcSwap`, replaced
//! whole by a configuration reload (`POST /admin/config/reload`, SIGHUP, or
//! a change of the file, see `config_watch.rs`).
//!
//! A reload reads the file the router was started with, parses and
//! validates it with the same loader as at start, builds the next gateway
//! (`generation.rs`) and swaps it in with one `ArcSwap::store`. A request
//! holds the `Arc<Gateway>` it started with until its answer (or stream)
//! ends, so nothing in flight is dropped or sees a mix of two
//! configurations. An invalid file changes nothing: the error names the
//! file, the key and the reason, is logged and counted, and the old
//! configuration stays in force.
//!
//! Invariant: one reload at a time (`lock`); the hot path only `load`s.

use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde::Serialize;

use super::control::load_rows;
use super::learning::LearningError;
use super::{Gateway, GatewayBuildError};
use crate::config::{load_str, Config, ConfigError, Env};
use crate::experiments::Control;
use crate::providers::ProviderSetupError;
use crate::telemetry::names;

/// What asked for a reload (a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Api,
    Signal,
    File,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Trigger::Api => "api",
            Trigger::Signal => "signal",
            Trigger::File => "file",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("the router was started without a configuration file, so there is none to reload")]
    NoFile,
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{file}: {key}: {reason}")]
    Build {
        file: String,
        key: String,
        reason: String,
    },
}

impl ReloadError {
    /// The offending key, when there is one (the error's `param`).
    pub fn key(&self) -> Option<&str> {
        match self {
            ReloadError::Config(ConfigError::Invalid { key, .. })
            | ReloadError::Build { key, .. } => Some(key),
            _ => None,
        }
    }
}

/// What a successful reload did.
#[derive(Debug, Clone, Serialize)]
pub struct Reloaded {
    /// The generation now serving.
    pub generation: u64,
    /// False when the file parsed to the configuration already in force.
    pub changed: bool,
    /// Keys whose change only takes effect at the next start.
    pub needs_restart: Vec<&'static str>,
}

pub struct Live {
    current: ArcSwap<Gateway>,
    env: Env,
    /// The file the router was started with; `None` for built-in defaults.
    path: Option<PathBuf>,
    lock: tokio::sync::Mutex<()>,
    /// Hash of the file text last read (at start or by a reload), so the
    /// file watcher tries each new content once.
    seen: AtomicU64,
}

impl Live {
    pub fn new(gateway: Gateway, env: Env) -> Self {
        let path = gateway.config.source.clone();
        let seen = path
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .map_or(0, |t| text_hash(&t));
        metrics::gauge!(names::CONFIG_GENERATION).set(gateway.generation as f64);
        Self {
            current: ArcSwap::from_pointee(gateway),
            env,
            path,
            lock: tokio::sync::Mutex::new(()),
            seen: AtomicU64::new(seen),
        }
    }

    /// The gateway new requests use. Wait-free.
    pub fn current(&self) -> Arc<Gateway> {
        self.current.load_full()
    }

    /// Held by whatever rebuilds or re-plans the gateway.
    pub(super) async fn lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.lock.lock().await
    }

    pub(super) fn env(&self) -> &Env {
        &self.env
    }

    /// Serves `next` from now on (the caller holds the lock).
    pub(super) fn swap(&self, next: Gateway) {
        metrics::gauge!(names::CONFIG_GENERATION).set(next.generation as f64);
        self.current.store(Arc::new(next));
    }

    pub fn config_path(&self) -> Option<&PathBuf> {
        self.path.as_ref()
    }

    /// Has the file's text changed since it was last read? (For the file
    /// watcher; an unreadable file counts as unchanged until it is back.)
    pub async fn file_changed(&self) -> bool {
        let Some(path) = &self.path else {
            return false;
        };
        match tokio::fs::read_to_string(path).await {
            Ok(text) => text_hash(&text) != self.seen.load(Ordering::Relaxed),
            Err(_) => false,
        }
    }

    /// Re-reads the configuration file and, if it is valid, swaps in a
    /// gateway built from it. On error the old configuration stays.
    pub async fn reload(&self, trigger: Trigger) -> Result<Reloaded, ReloadError> {
        let _one_at_a_time = self.lock.lock().await;
        let result = self.reload_locked().await;
        let outcome = match &result {
            Ok(r) if r.changed => "applied",
            Ok(_) => "unchanged",
            Err(_) => "refused",
        };
        metrics::counter!(names::CONFIG_RELOADS, "trigger" => trigger.as_str(), "result" => outcome)
            .increment(1);
        match &result {
            Ok(r) => {
                metrics::gauge!(names::CONFIG_GENERATION).set(r.generation as f64);
                tracing::info!(trigger = trigger.as_str(), generation = r.generation, changed = r.changed,
                    needs_restart = ?r.needs_restart, "Configuration reloaded.");
            }
            Err(e) => tracing::error!(trigger = trigger.as_str(), error = %e,
                "Configuration reload refused; the previous configuration stays in force."),
        }
        result
    }

    async fn reload_locked(&self) -> Result<Reloaded, ReloadError> {
        let path = self.path.as_ref().ok_or(ReloadError::NoFile)?;
        let file = path.display().to_string();
        let text = tokio::fs::read_to_string(path)
            .await
            .map_err(|e| ConfigError::Read {
                file: file.clone(),
                reason: e.to_string(),
            })?;
        self.seen.store(text_hash(&text), Ordering::Relaxed);
        let mut config = load_str(&text, &file, &self.env)?;
        config.source = Some(path.clone());
        let old = self.current();
        if same(old.config.as_ref(), &config) {
            return Ok(Reloaded {
                generation: old.generation,
                changed: false,
                needs_restart: Vec::new(),
            });
        }
        let needs_restart = needs_restart(&old.config, &config);
        // New `[[experiments]]` and retirements are recorded; with the
        // store down, the stored controls last read still apply.
        let rows = match load_rows(&old.store, &config).await {
            Ok(rows) => Arc::new(rows),
            Err(e) => {
                tracing::warn!(error = %e, "Reading the live controls failed; using the last ones read.");
                old.plan.load().rows.clone()
            }
        };
        let control = Arc::new(Control::from_rows(&rows, &config));
        let next = old
            .next(config.clone(), control, rows, &self.env)
            .await
            .map_err(|e| build_error(&file, &config, e))?;
        let generation = next.generation;
        self.swap(next);
        Ok(Reloaded {
            generation,
            changed: true,
            needs_restart,
        })
    }
}

fn text_hash(text: &str) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

fn same<T: Serialize>(a: &T, b: &T) -> bool {
    match (serde_json::to_value(a), serde_json::to_value(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Settings read once at start (the listener, the body limits, the store,
/// client-key mode): a reload that changes them says so.
fn needs_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    let (o, n) = (&old.server, &new.server);
    let mut keys = Vec::new();
    let checks = [
        ("server.listen", o.listen != n.listen),
        (
            "server.max_body_bytes",
            o.max_body_bytes != n.max_body_bytes,
        ),
        (
            "server.header_timeout_ms",
            o.header_timeout_ms != n.header_timeout_ms,
        ),
        (
            "server.body_timeout_ms",
            o.body_timeout_ms != n.body_timeout_ms,
        ),
        (
            "server.shutdown_grace_ms",
            o.shutdown_grace_ms != n.shutdown_grace_ms,
        ),
        (
            "server.require_api_keys",
            o.require_api_keys != n.require_api_keys,
        ),
        ("server.key_refresh_s", o.key_refresh_s != n.key_refresh_s),
        (
            "server.config_watch_ms",
            o.config_watch_ms != n.config_watch_ms,
        ),
        ("store", !same_store(old, new)),
        // Replication (and with it shared budgets) is set up once, at start.
        ("scale", !same(&old.scale, &new.scale)),
    ];
    for (key, changed) in checks {
        if changed {
            keys.push(key);
        }
    }
    keys
}

fn same_store(a: &Config, b: &Config) -> bool {
    same(&a.store, &b.store)
}

/// Names the key behind a failure to build the new gateway.
fn build_error(file: &str, config: &Config, e: GatewayBuildError) -> ReloadError {
    let provider_key = |name: &str, field: &str| {
        config
            .providers
            .iter()
            .position(|p| p.name == name)
            .map_or_else(
                || "providers".to_owned(),
                |i| format!("providers[{i}].{field}"),
            )
    };
    let route_key = |name: &str, field: &str| {
        config
            .routes
            .iter()
            .position(|r| r.name.as_str() == name)
            .map_or_else(|| "routes".to_owned(), |i| format!("routes[{i}].{field}"))
    };
    let (key, reason) = match &e {
        GatewayBuildError::Provider(ProviderSetupError::KeyFile { provider, .. }) => {
            (provider_key(provider, "api_key_file"), e.to_string())
        }
        GatewayBuildError::Provider(ProviderSetupError::Client { provider, .. }) => {
            (provider_key(provider, "base_url"), e.to_string())
        }
        GatewayBuildError::Catalog => ("models".to_owned(), e.to_string()),
        GatewayBuildError::Learning(LearningError::Features { route, .. }) => {
            (route_key(route, "features"), e.to_string())
        }
        GatewayBuildError::Learning(LearningError::Policy { route, .. }) => {
            (route_key(route, "bandit"), e.to_string())
        }
    };
    ReloadError::Build {
        file: file.to_owned(),
        key,
        reason,
    }
}
