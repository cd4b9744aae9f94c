//! The next `Gateway` after a configuration reload, built from the current
//! one. What is rebuilt and what is kept:
//!
//! | part | on reload |
//! |---|---|
//! | providers | kept when their `[[providers]]` entry is unchanged (warm connection pools), else rebuilt |
//! | catalog, rules, resilience, timeouts | rebuilt from the new file |
//! | per-route policies | the single writer carries learned state over by route and arm name (`reshape.rs`); with scale-out the replica task follows slot by slot |
//! | circuit breakers, latency windows | kept per model name (shared cells), new models start fresh |
//! | recent decisions | a new table; the old one stays readable (translated) for feedback |
//! | response cache | kept when models and every route's arms and cache settings are unchanged, else emptied |
//! | experiments, flags, arm lifecycles | a new plan for the new catalog (`plan.rs`) |
//! | forced-exploration counts | shared |
//! | outbox, store, client keys (and budget leases), learner task, replica task | shared, never rebuilt (`[scale]` is read at start) |
//!
//! Nothing here touches the live gateway: the caller swaps the result in.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use super::breaker::Breakers;
use super::catalog::Catalog;
use super::plan::Plan;
use super::recent::{Previous, RecentDecisions};
use super::{cache, latency, Gateway, GatewayBuildError};
use crate::config::{Config, Env};
use crate::experiments::Control;
use crate::providers::Provider;
use crate::store::control::ControlRows;

impl Gateway {
    /// Builds the gateway for `config`, carrying over from `self` what
    /// outlives a reload (see the module docs). The learner takes the new
    /// route set before this returns; nothing else changes until the caller
    /// swaps the result in.
    pub async fn next(
        &self,
        file: Config,
        control: Arc<Control>,
        rows: Arc<ControlRows>,
        env: &Env,
    ) -> Result<Gateway, GatewayBuildError> {
        let config = control.effective(&file);
        let mut providers = HashMap::new();
        for p in &config.providers {
            let unchanged = self
                .config
                .providers
                .iter()
                .find(|o| o.name == p.name)
                .is_some_and(|o| same(o, p));
            let reused = unchanged
                .then(|| {
                    self.catalog
                        .models
                        .iter()
                        .find(|m| m.provider.name == p.name)
                        .map(|m| m.provider.clone())
                })
                .flatten();
            let provider = match reused {
                Some(p) => p,
                None => Arc::new(Provider::new(p, env)?),
            };
            providers.insert(p.name.clone(), provider);
        }
        let catalog = Catalog::build(&config, &providers).ok_or(GatewayBuildError::Catalog)?;
        let learning = self
            .learning
            .reshaped(&config, &catalog, &self.store)
            .await?;

        let names: Vec<&str> = catalog.models.iter().map(|m| m.name.as_str()).collect();
        let old_names: Vec<&str> = self
            .catalog
            .models
            .iter()
            .map(|m| m.name.as_str())
            .collect();
        let r = &config.resilience;
        let mut breakers = Breakers::new(
            names.len(),
            r.breaker_failure_threshold,
            Duration::from_millis(r.breaker_cooldown_ms),
        )
        .named(names.iter().map(|n| (*n).to_owned()).collect());
        breakers.adopt(&self.breakers);
        let latency = latency::LatencyStats::carried(&names, &self.latency, &old_names);

        let previous = Previous {
            table: self.recent.clone(),
            routes: self
                .catalog
                .routes
                .iter()
                .map(|r| catalog.route_index(r.name.as_str()))
                .collect(),
            models: self
                .catalog
                .models
                .iter()
                .map(|m| catalog.model(m.name.as_str()).map(|e| e.index))
                .collect(),
        };
        let cache = if cache_survives(&self.effective, &config) {
            self.cache.clone()
        } else {
            cache::ResponseCache::new(100_000)
        };
        let next = Gateway {
            breakers,
            catalog,
            resilience: config.resilience.clone(),
            request_timeout: Duration::from_millis(config.server.request_timeout_ms),
            outbox: self.outbox.clone(),
            store: self.store.clone(),
            recent: RecentDecisions::new(100_000, Duration::from_secs(3600)),
            learning,
            rules: config.rules.clone(),
            cache,
            latency,
            keys: self.keys.clone(),
            reserve_output_tokens: config.server.reserve_output_tokens,
            generation: self.generation + 1,
            previous: Some(previous),
            plan: ArcSwap::from_pointee(Plan::empty(control.clone(), rows.clone())),
            quota: self.quota.clone(),
            effective: Arc::new(config),
            config: Arc::new(file),
        };
        next.plan
            .store(Arc::new(Plan::build(&next, control, rows).await));
        Ok(next)
    }
}

fn same<T: serde::Serialize>(a: &T, b: &T) -> bool {
    match (serde_json::to_value(a), serde_json::to_value(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Cached answers name their model by catalog index and were given under
/// a route's arm set: keep them only when neither changed.
fn cache_survives(old: &Config, new: &Config) -> bool {
    let names = |c: &Config| c.models.iter().map(|m| m.name.clone()).collect::<Vec<_>>();
    let routes = |c: &Config| {
        c.routes
            .iter()
            .map(|r| (r.name.clone(), r.models.clone(), r.cache))
            .collect::<Vec<_>>()
    };
    names(old) == names(new) && routes(old) == routes(new)
}
