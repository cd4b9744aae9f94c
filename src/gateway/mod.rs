//! The request pipeline (DESIGN.md "Data flow"): resolve the model or route,
//! narrow the arms, decide, call upstream with retries and fallbacks, return
//! or stream the answer, and record the outcome. Takes no axum types.

mod attempt;
pub mod breaker;
pub mod catalog;
mod decide;
mod eligible;
pub mod feedback;
pub mod options;
mod outcome;
mod pipeline;
pub mod recent;
mod stream;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

pub use pipeline::{chat, ChatReply, Meta, Routed};

use crate::config::{Config, Env, ResilienceConfig};
use crate::providers::{Provider, ProviderSetupError};
use crate::store::outbox::Outbox;
use crate::store::Store;
use breaker::Breakers;
use catalog::Catalog;
use recent::{DecisionMemo, RecentDecisions};

pub struct Gateway {
    pub catalog: Catalog,
    pub breakers: Breakers,
    pub resilience: ResilienceConfig,
    pub request_timeout: Duration,
    pub outbox: Outbox,
    pub store: Store,
    pub recent: RecentDecisions,
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayBuildError {
    #[error(transparent)]
    Provider(#[from] ProviderSetupError),
    #[error("a model refers to a provider that is not configured")]
    Catalog,
}

impl Gateway {
    pub fn build(
        config: &Config,
        env: &Env,
        store: Store,
        outbox: Outbox,
    ) -> Result<Self, GatewayBuildError> {
        let mut providers = HashMap::new();
        for p in &config.providers {
            providers.insert(p.name.clone(), Arc::new(Provider::new(p, env)?));
        }
        let catalog = Catalog::build(config, &providers).ok_or(GatewayBuildError::Catalog)?;
        let r = &config.resilience;
        Ok(Self {
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
            store,
            recent: RecentDecisions::new(1_000_000, Duration::from_secs(24 * 3600)),
        })
    }

    /// Records which model finally answered a request, for feedback to join.
    fn remember(&self, request_id: &str, memo: DecisionMemo) {
        self.recent.insert(request_id, memo);
    }

    /// A request ended (successfully or not) on `model`.
    pub(crate) fn learn_outcome(&self, model: usize, request_id: &str, ok: bool) {
        if let Some(memo) = self.recent.get(request_id) {
            if memo.model != Some(model) {
                self.remember(
                    request_id,
                    DecisionMemo {
                        model: Some(model),
                        ..(*memo).clone()
                    },
                );
            }
        }
        let _ = ok;
    }
}
