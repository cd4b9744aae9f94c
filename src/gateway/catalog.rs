//! The configured models and routes, resolved once from the config into
//! indexed entries the request path can use without string lookups past the
//! first one.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::{BudgetConfig, Capability, Config, ObjectiveConfig, PolicyKind, RouteConfig};
use crate::domain::ModelName;
use crate::providers::pricing::Prices;
use crate::providers::Provider;

pub struct ModelEntry {
    pub index: usize,
    pub name: ModelName,
    pub upstream_name: String,
    pub provider: Arc<Provider>,
    pub prices: Prices,
    pub context_window: Option<u32>,
    pub capabilities: Option<Vec<Capability>>,
}

impl ModelEntry {
    pub fn supports(&self, needed: Capability) -> bool {
        self.capabilities
            .as_ref()
            .is_none_or(|caps| caps.contains(&needed))
    }
}

pub struct RouteEntry {
    /// Position in `Catalog::routes` (and in `Learning::routes`).
    pub index: usize,
    pub name: ModelName,
    /// Indices into `Catalog::models`, in config order (the policy's arm order).
    pub arms: Vec<usize>,
    pub policy: PolicyKind,
    pub objective: ObjectiveConfig,
    pub budget: Option<BudgetConfig>,
    pub exploration_cap: Option<f64>,
    pub cache: Option<crate::config::CacheConfig>,
    pub latency_slo_ms: Option<u64>,
    /// `ttft_deadline_ms`: when to hedge to a second model.
    pub ttft_deadline: Option<std::time::Duration>,
    pub continue_stream_on_fallback: bool,
}

pub struct Catalog {
    pub models: Vec<ModelEntry>,
    pub routes: Vec<RouteEntry>,
    // foldhash, not SipHash: the keys are the config's names, and every
    // request looks its `model` up here (SipHash was ~400 instructions a
    // request; callgrind, docs/performance.md).
    by_model: Names,
    by_route: Names,
}

type Names = HashMap<String, usize, foldhash::fast::RandomState>;

/// What a request's `model` field named.
pub enum Target<'a> {
    Model(&'a ModelEntry),
    Route(&'a RouteEntry),
}

impl Catalog {
    pub fn build(config: &Config, providers: &HashMap<String, Arc<Provider>>) -> Option<Self> {
        let mut models = Vec::with_capacity(config.models.len());
        for (index, m) in config.models.iter().enumerate() {
            models.push(ModelEntry {
                index,
                name: m.name.clone(),
                upstream_name: m.upstream_name().to_owned(),
                provider: providers.get(&m.provider)?.clone(),
                prices: Prices {
                    input_usd_per_mtok: m.input_usd_per_mtok,
                    output_usd_per_mtok: m.output_usd_per_mtok,
                },
                context_window: m.context_window,
                capabilities: m.capabilities.clone(),
            });
        }
        let by_model: Names = models
            .iter()
            .map(|m| (m.name.as_str().to_owned(), m.index))
            .collect();
        let routes: Vec<RouteEntry> = config
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| route_entry(i, r, &by_model))
            .collect::<Option<_>>()?;
        let by_route = routes
            .iter()
            .enumerate()
            .map(|(i, r)| (r.name.as_str().to_owned(), i))
            .collect();
        Some(Self {
            models,
            routes,
            by_model,
            by_route,
        })
    }

    pub fn resolve(&self, name: &str) -> Option<Target<'_>> {
        if let Some(&i) = self.by_route.get(name) {
            return Some(Target::Route(&self.routes[i]));
        }
        self.by_model
            .get(name)
            .map(|&i| Target::Model(&self.models[i]))
    }

    pub fn route_index(&self, name: &str) -> Option<usize> {
        self.by_route.get(name).copied()
    }

    pub fn model(&self, name: &str) -> Option<&ModelEntry> {
        self.by_model.get(name).map(|&i| &self.models[i])
    }
}

fn route_entry(index: usize, r: &RouteConfig, by_model: &Names) -> Option<RouteEntry> {
    Some(RouteEntry {
        index,
        name: r.name.clone(),
        arms: r
            .models
            .iter()
            .map(|m| by_model.get(m.as_str()).copied())
            .collect::<Option<_>>()?,
        policy: r.policy,
        objective: r.objective,
        budget: r.budget,
        exploration_cap: r.exploration_cap,
        cache: r.cache,
        latency_slo_ms: r.latency_slo_ms,
        ttft_deadline: r.ttft_deadline_ms.map(std::time::Duration::from_millis),
        continue_stream_on_fallback: r.continue_stream_on_fallback,
    })
}
