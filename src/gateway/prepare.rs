//! Preparing one route to serve: its feature encoder, its policy shape
//! (`route_spec`) and the snapshot it starts from — the store's saved state
//! when it still fits, reconciled with the active stored version, else a
//! fresh policy at its priors. Used at start (`Learning::build`) and on a
//! reload (`Learning::reshaped`).

use super::learning::{route_spec, LearningError, RouteLearner};
use crate::bandit::{Objective, PolicyHandle, PolicySnapshot, RouteSpec};
use crate::config::{Config, RouteConfig};
use crate::domain::ModelName;
use crate::features::Encoder;
use crate::store::Store;

/// A route ready to serve: its feature encoder, policy shape and the
/// snapshot to start from.
pub(super) struct PreparedRoute {
    pub spec: RouteSpec,
    pub snapshot: PolicySnapshot,
    pub parts: LearnerParts,
}

/// Everything of a `RouteLearner` but the policy handle and indices.
pub(super) struct LearnerParts {
    encoder: Encoder,
    objective: Objective,
    exploration_cap: Option<f64>,
    tier_exploration_caps: std::collections::BTreeMap<String, f64>,
    arm_names: Vec<ModelName>,
}

impl LearnerParts {
    pub(super) fn learner(
        self,
        policy: PolicyHandle,
        arm_models: Vec<usize>,
        slot: usize,
    ) -> RouteLearner {
        RouteLearner {
            encoder: self.encoder,
            policy,
            objective: self.objective,
            exploration_cap: self.exploration_cap,
            tier_exploration_caps: self.tier_exploration_caps,
            arm_models,
            arm_names: self.arm_names,
            slot,
        }
    }
}

/// Builds a route's encoder and spec and the snapshot it starts from: the
/// store's saved state when it fits the route as configured now (reconciled
/// with the active stored version), else a fresh policy at the priors.
pub(super) async fn prepare_route(
    r: &RouteConfig,
    config: &Config,
    store: &Store,
) -> Result<PreparedRoute, LearningError> {
    let name = r.name.as_str().to_owned();
    let encoder = Encoder::new(r.features.clone().unwrap_or_default()).map_err(|source| {
        LearningError::Features {
            route: name.clone(),
            source,
        }
    })?;
    let spec = route_spec(r, &encoder, config);
    let fresh = || {
        PolicySnapshot::new(&spec).map_err(|e| LearningError::Policy {
            route: name.clone(),
            reason: e.to_string(),
        })
    };
    let snapshot = match store.load_policy_state(&name).await {
        Ok(Some(text)) => match PolicySnapshot::from_json(&text).and_then(|s| s.prepare(&spec)) {
            Ok(s) => {
                tracing::info!(route = %name, version = s.version(), "Resumed the route's policy from the store.");
                s
            }
            Err(e) => {
                tracing::warn!(route = %name, error = %e, "The saved policy does not fit the route any more; starting fresh.");
                fresh()?
            }
        },
        Ok(None) => fresh()?,
        Err(e) => {
            tracing::warn!(route = %name, error = %e, "The saved policy could not be read; starting fresh.");
            fresh()?
        }
    };
    let snapshot = super::policy_watch::reconcile(store, &name, &spec, snapshot).await;
    let parts = LearnerParts {
        encoder,
        objective: Objective {
            cost_weight: r.objective.cost_weight,
            latency_weight: r.objective.latency_weight,
        },
        exploration_cap: r.exploration_cap,
        tier_exploration_caps: r.tier_exploration_caps.clone(),
        arm_names: spec.arms.iter().map(|a| a.name.clone()).collect(),
    };
    Ok(PreparedRoute {
        spec,
        snapshot,
        parts,
    })
}
