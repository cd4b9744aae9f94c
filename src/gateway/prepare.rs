//! Preparing one route to serve: its feature encoder, its policy shape
//! (`route_spec`) and the snapshot it starts from — the store's saved state
//! when it still fits, reconciled with the active stored version, else a
//! fresh policy at its priors. Used at start (`Learning::build`) and on a
//! reload (`Learning::reshaped`). With scale-out the saved state is the
//! replicas' checkpoint, and the log position it covers (its watermark) is
//! where the replica task starts folding the route's deltas. Also what the
//! request path reads for a prepared route (`RouteLearner`).

use super::learning::LearningError;
use super::scale;
use crate::bandit::{
    Algorithm, ArmSpec, BudgetConfig, Objective, PolicyConfig, PolicyHandle, PolicySnapshot,
    RouteSpec,
};
use crate::config::{Config, RouteConfig};
use crate::domain::ModelName;
use crate::features::Encoder;
use crate::store::Store;

/// Label of snapshots learned online (a training job writes its own).
const ONLINE_LABEL: &str = "online";

/// What the request path needs to decide for one route.
pub struct RouteLearner {
    pub encoder: Encoder,
    pub policy: PolicyHandle,
    pub objective: Objective,
    pub exploration_cap: Option<f64>,
    pub tier_exploration_caps: std::collections::BTreeMap<String, f64>,
    /// Snapshot arm position -> catalog model index.
    pub arm_models: Vec<usize>,
    /// By arm position; shared with every decision's receipt.
    pub(super) arm_names: std::sync::Arc<[ModelName]>,
    /// The route's slot in the writer: stable across config reloads (a
    /// catalog index is not), so updates from requests begun under an older
    /// config still reach the right route.
    pub slot: usize,
}

impl RouteLearner {
    pub fn arm_of_model(&self, model: usize) -> Option<usize> {
        self.arm_models.iter().position(|&m| m == model)
    }

    /// The exploration cap for a request: its tier's, else the route's.
    pub fn exploration_cap_for(&self, tier: Option<&str>) -> Option<f64> {
        tier.and_then(|t| self.tier_exploration_caps.get(t).copied())
            .or(self.exploration_cap)
    }

    pub fn arm_name(&self, model: usize) -> Option<&ModelName> {
        self.arm_of_model(model).map(|a| &self.arm_names[a])
    }

    /// The version string clients see in `x-switchboard-policy-version`.
    pub fn version(snapshot: &PolicySnapshot) -> String {
        let label = if snapshot.label().is_empty() {
            ONLINE_LABEL
        } else {
            snapshot.label()
        };
        format!("{label}.{}", snapshot.version())
    }
}

/// A route ready to serve: its feature encoder, policy shape and the
/// snapshot to start from.
pub(super) struct PreparedRoute {
    pub spec: RouteSpec,
    pub snapshot: PolicySnapshot,
    /// Scale-out: the delta-log position `snapshot` covers (0 when it is
    /// fresh, an activated version, or replication is off).
    pub watermark: i64,
    pub parts: LearnerParts,
}

/// Everything of a `RouteLearner` but the policy handle and indices.
pub(super) struct LearnerParts {
    encoder: Encoder,
    objective: Objective,
    exploration_cap: Option<f64>,
    tier_exploration_caps: std::collections::BTreeMap<String, f64>,
    arm_names: std::sync::Arc<[ModelName]>,
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
/// `replicated`: read the replicas' checkpoint and its watermark.
pub(super) async fn prepare_route(
    r: &RouteConfig,
    config: &Config,
    store: &Store,
    replicated: bool,
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
    let saved = if replicated {
        scale::load_checkpoint(store, &name).await
    } else {
        store
            .load_policy_state(&name)
            .await
            .map(|t| t.map(|t| (t, 0)))
    };
    let mut watermark = 0;
    let snapshot = match saved {
        Ok(Some((text, w))) => {
            match PolicySnapshot::from_json(&text).and_then(|s| s.prepare(&spec)) {
                Ok(s) => {
                    watermark = w;
                    tracing::info!(route = %name, version = s.version(), "Resumed the route's policy from the store.");
                    s
                }
                Err(e) => {
                    tracing::warn!(route = %name, error = %e, "The saved policy does not fit the route any more; starting fresh.");
                    fresh()?
                }
            }
        }
        Ok(None) => fresh()?,
        Err(e) => {
            tracing::warn!(route = %name, error = %e, "The saved policy could not be read; starting fresh.");
            fresh()?
        }
    };
    let label = snapshot.label().to_owned();
    let snapshot = super::policy_watch::reconcile(store, &name, &spec, snapshot).await;
    if snapshot.label() != label {
        watermark = 0; // an activated version: its deltas from the start of the log
    }
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
        watermark,
        parts,
    })
}

/// The bandit configuration a route asks for: its `[routes.bandit]` table
/// with the route-level `policy` and `exploration_cap` on top.
pub fn policy_config(r: &RouteConfig) -> PolicyConfig {
    let mut config: PolicyConfig = r.bandit.clone().unwrap_or_default();
    config.algorithm = r.policy;
    if let Some(cap) = r.exploration_cap {
        config.exploration_cap = cap;
    }
    if config.algorithm == Algorithm::Fixed && config.fixed_arm.is_none() {
        config.fixed_arm = r.models.first().cloned();
    }
    config
}

/// The policy shape serving builds for a route (the training job builds the
/// same one, so its snapshots `prepare` cleanly in serving).
pub fn route_spec(r: &RouteConfig, encoder: &Encoder, all: &Config) -> RouteSpec {
    let config = policy_config(r);
    let arms = r
        .models
        .iter()
        .map(|m| {
            let mut arm = ArmSpec::new(m.clone());
            // A new arm's cost prior: a typical exchange (~500 tokens in,
            // ~250 out) at its list prices, until it has been observed.
            if let Some(p) = all.models.iter().find(|c| c.name == *m) {
                arm.prior_cost_usd = Some(
                    ((500.0 * p.input_usd_per_mtok + 250.0 * p.output_usd_per_mtok) / 1e6)
                        .max(1e-9),
                );
            }
            // A model onboarded with a prior (optimistic, or an offline
            // evaluation's score) starts from it instead of the route's.
            arm.prior_quality = r.onboard.get(m).and_then(|o| o.prior_quality);
            arm
        })
        .collect();
    RouteSpec {
        dimension: encoder.dimension(),
        feature_fingerprint: encoder.fingerprint(),
        config,
        budget: BudgetConfig {
            target_usd_per_request: r.budget.map(|b| b.target_usd_per_request),
        },
        arms,
    }
}
