//! The request pipeline (DESIGN.md "Data flow"): resolve the model or route,
//! narrow the arms, decide, call upstream with retries and fallbacks, return
//! or stream the answer, and record the outcome. Takes no axum types.

mod admission;
mod attempt;
pub mod breaker;
pub mod cache;
mod cached;
pub mod catalog;
pub mod config_watch;
mod continuation;
pub mod control;
mod decide;
mod eligible;
pub mod experiment_ops;
pub mod feedback;
mod generation;
mod hedge;
pub mod latency;
pub mod learning;
pub mod live;
pub mod operate;
pub mod options;
mod outcome;
mod pipeline;
pub mod plan;
mod policy_watch;
mod prepare;
mod prompt;
mod receipt;
pub mod recent;
pub mod report;
mod reshape;
mod rollout;
pub mod route;
pub mod rules;
pub mod scale;
mod shadow;
mod stream;
mod validate;
pub mod views;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

pub use pipeline::{chat, chat_as, ChatReply, Meta, Routed};

use arc_swap::ArcSwap;

use crate::bandit::Outcome;
use crate::config::{Config, Env, ResilienceConfig};
use crate::domain::Usd;
use crate::experiments::Control;
use crate::providers::{Provider, ProviderSetupError};
use crate::store::control::ControlRows;
use crate::store::outbox::Outbox;
use crate::store::Store;
use breaker::Breakers;
use catalog::Catalog;
use learning::{Learning, LearningError, LearningWriter, Update};
use recent::{DecisionMemo, RecentDecisions};

pub struct Gateway {
    pub catalog: Catalog,
    pub breakers: Breakers,
    pub resilience: ResilienceConfig,
    pub request_timeout: Duration,
    pub outbox: Outbox,
    pub store: Store,
    pub recent: RecentDecisions,
    pub learning: Learning,
    pub rules: Vec<rules::RuleConfig>,
    pub cache: cache::ResponseCache,
    pub latency: latency::LatencyStats,
    /// Client keys, limits and budgets (`src/auth`).
    pub keys: Arc<crate::auth::KeyRing>,
    pub reserve_output_tokens: u32,
    /// The configuration file this gateway was built from. A reload builds
    /// a new `Gateway` (`generation.rs`) and swaps it in (`live.rs`);
    /// requests keep the one they started with to their end.
    pub config: Arc<Config>,
    /// `config` with the operators' arm changes applied (`Control::effective`):
    /// what the catalog and the policies were built from.
    pub effective: Arc<Config>,
    /// Experiments, flags and arm lifecycles in force (`plan.rs`); replaced
    /// whole when a control changes without changing any route's arms.
    pub plan: ArcSwap<plan::Plan>,
    /// Forced-exploration counts of onboarding arms, kept across reloads.
    pub quota: Arc<plan::QuotaCounters>,
    /// 1 at start, +1 per applied reload.
    pub generation: u64,
    /// The previous generation's recent decisions (feedback across a reload).
    previous: Option<recent::Previous>,
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayBuildError {
    #[error(transparent)]
    Provider(#[from] ProviderSetupError),
    #[error("a model refers to a provider that is not configured")]
    Catalog,
    #[error(transparent)]
    Learning(#[from] LearningError),
}

impl Gateway {
    /// Builds providers, the catalog and every route's policy (resumed from
    /// the store when possible). Run the returned writer in its own task.
    pub async fn build(
        file: &Config,
        control: Arc<Control>,
        rows: Arc<ControlRows>,
        env: &Env,
        store: Store,
        outbox: Outbox,
    ) -> Result<(Self, LearningWriter), GatewayBuildError> {
        let effective = control.effective(file);
        let config = &effective;
        let mut providers = HashMap::new();
        for p in &config.providers {
            providers.insert(p.name.clone(), Arc::new(Provider::new(p, env)?));
        }
        let catalog = Catalog::build(config, &providers).ok_or(GatewayBuildError::Catalog)?;
        let (learning, writer) = Learning::build(config, &catalog, &store).await?;
        let r = &config.resilience;
        let gateway = Self {
            breakers: Breakers::new(
                catalog.models.len(),
                r.breaker_failure_threshold,
                Duration::from_millis(r.breaker_cooldown_ms),
            )
            .named(
                catalog
                    .models
                    .iter()
                    .map(|m| m.name.as_str().to_owned())
                    .collect(),
            ),
            catalog,
            resilience: r.clone(),
            request_timeout: Duration::from_millis(config.server.request_timeout_ms),
            outbox,
            keys: Arc::new(crate::auth::KeyRing::new(
                store.clone(),
                config.server.require_api_keys,
                Duration::from_secs(config.server.key_refresh_s),
                // Shared budgets go with scale-out (docs/scaling.md).
                learning.replica.as_ref().map(|_| {
                    crate::auth::Leases::new(store.clone(), config.scale.budget_lease_fraction)
                }),
            )),
            reserve_output_tokens: config.server.reserve_output_tokens,
            store,
            // Bounded so memory stays flat (~1 KiB per entry); older feedback
            // joins through the stored row instead.
            recent: RecentDecisions::new(100_000, Duration::from_secs(3600)),
            learning,
            rules: config.rules.clone(),
            cache: cache::ResponseCache::new(100_000),
            latency: latency::LatencyStats::new(config.models.len()),
            config: Arc::new(file.clone()),
            plan: ArcSwap::from_pointee(plan::Plan::empty(control.clone(), rows.clone())),
            quota: Arc::default(),
            effective: Arc::new(effective.clone()),
            generation: 1,
            previous: None,
        };
        gateway
            .plan
            .store(Arc::new(plan::Plan::build(&gateway, control, rows).await));
        Ok((gateway, writer))
    }

    /// The decision memo for feedback: this generation's, else the
    /// previous one's (translated to this configuration's indices).
    pub(crate) fn recall(&self, request_id: &str) -> Option<Arc<DecisionMemo>> {
        self.recent.get(request_id).or_else(|| {
            self.previous
                .as_ref()
                .and_then(|p| p.recall(request_id))
                .map(Arc::new)
        })
    }

    /// Records which model finally answered a request, for feedback to join.
    fn remember(&self, request_id: &str, memo: DecisionMemo) {
        self.recent.insert(request_id, memo);
    }

    /// A request ended on `model` (which answered, or failed): the route's
    /// policy learns its cost and latency, and a failure counts as quality 0.
    pub(crate) fn learn_outcome(
        &self,
        request_id: &str,
        model: usize,
        ok: bool,
        cost_usd: f64,
        latency_s: f64,
    ) {
        if ok {
            self.latency.record(model, latency_s * 1000.0);
        }
        let Some(memo) = self.recent.get(request_id) else {
            return;
        };
        let (Some(route), Some(x)) = (memo.route, memo.features.clone()) else {
            return;
        };
        let Some(learner) = self.learning.routes.get(route) else {
            return;
        };
        let Some(arm) = learner.arm_name(model) else {
            return;
        };
        self.learning.send(Update::Outcome {
            route: learner.slot,
            outcome: Outcome {
                arm: arm.clone(),
                x,
                cost_usd: Usd::new(cost_usd).unwrap_or(Usd::ZERO),
                latency_s: if latency_s.is_finite() {
                    latency_s.max(0.0)
                } else {
                    0.0
                },
                ok,
            },
        });
        if ok {
            if memo.model != Some(model) {
                // A fallback answered: feedback now concerns this model.
                self.remember(
                    request_id,
                    DecisionMemo {
                        model: Some(model),
                        quality_taught: false,
                        ..(*memo).clone()
                    },
                );
            }
        } else if memo.model == Some(model) {
            // The failure already taught quality 0; later feedback is stored only.
            self.remember(
                request_id,
                DecisionMemo {
                    quality_taught: true,
                    ..(*memo).clone()
                },
            );
        }
    }
}
