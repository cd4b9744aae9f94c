//! The decision for a route: encode the prompt, read the route's policy
//! snapshot (lock-free), decide over the eligible models, and turn the
//! bandit's answer into a ranking (chosen first, then the fallback order by
//! estimated utility), a propensity, a version and a receipt.

use serde_json::{json, Map, Value};

use super::catalog::Catalog;
use super::eligible::Exclusion;
use super::learning::RouteLearner;
use super::options::RouterOptions;
use super::prompt::prompt_view;
use crate::bandit::{Decision as BanditDecision, DecisionRequest, Objective};
use crate::domain::Usd;
use crate::error::ApiError;
use crate::features::Features;
use crate::telemetry::names;

#[derive(Debug, Clone)]
pub struct Decision {
    /// Catalog model indices, best first; `ranking[0]` is the choice.
    pub ranking: Vec<usize>,
    /// Probability that the policy would have chosen `ranking[0]`.
    pub propensity: f64,
    pub policy_version: String,
    pub features: Option<Features>,
    /// Why: per-arm estimates, the pacing multiplier, what narrowed the set.
    pub receipt: Value,
    /// One-line form of the receipt, for `x-switchboard-decision`.
    pub summary: String,
}

pub struct RouteDecision<'a> {
    pub route: &'a str,
    pub learner: &'a RouteLearner,
    pub catalog: &'a Catalog,
    /// The route's objective, or a rule's override.
    pub objective: Objective,
}

impl RouteDecision<'_> {
    pub fn decide(
        &self,
        body: &Map<String, Value>,
        eligible: &[usize],
        excluded: &[Exclusion],
        opts: &RouterOptions,
    ) -> Result<Decision, ApiError> {
        let learner = self.learner;
        let mut x = Vec::with_capacity(learner.encoder.dimension());
        learner.encoder.encode(&prompt_view(body), &mut x);
        let arms: Vec<usize> = eligible
            .iter()
            .filter_map(|&m| learner.arm_of_model(m))
            .collect();
        let snapshot = learner.policy.load();
        let req = DecisionRequest {
            features: &x,
            eligible: &arms,
            objective: self.objective,
            max_cost_usd: opts.max_cost_usd.and_then(|c| Usd::new(c).ok()),
            exploration_cap: learner.exploration_cap_for(opts.tier.as_deref()),
            exploration_floor: None,
        };
        let d = snapshot.decide(&req, &mut rand::rng()).map_err(|e| {
            tracing::error!(route = self.route, error = %e, "The policy could not decide.");
            ApiError::internal(format!("The route's policy could not decide: {e}"))
        })?;
        let chosen = learner.arm_models[d.arm];
        metrics::counter!(names::DECISIONS,
            "route" => self.route.to_owned(),
            "model" => self.catalog.models[chosen].name.as_str().to_owned(),
            "greedy" => if d.greedy { "true" } else { "false" })
        .increment(1);
        let mut others: Vec<(usize, f64)> = d
            .receipt
            .arms
            .iter()
            .filter(|a| a.arm != d.arm)
            .map(|a| (learner.arm_models[a.arm], a.utility))
            .collect();
        others.sort_by(|a, b| b.1.total_cmp(&a.1));
        let mut ranking = Vec::with_capacity(others.len() + 1);
        ranking.push(chosen);
        ranking.extend(others.into_iter().map(|(m, _)| m));
        let version = super::learning::RouteLearner::version(&snapshot);
        Ok(Decision {
            ranking,
            propensity: d.propensity,
            summary: self.summary(&d),
            receipt: self.receipt(&d, &version, excluded),
            policy_version: version,
            features: Some(x.into()),
        })
    }

    fn name_of_arm(&self, arm: usize) -> &str {
        self.catalog.models[self.learner.arm_models[arm]]
            .name
            .as_str()
    }

    fn receipt(&self, d: &BanditDecision, version: &str, excluded: &[Exclusion]) -> Value {
        let arms: Vec<Value> = d
            .receipt
            .arms
            .iter()
            .map(|a| {
                let mut v = serde_json::to_value(a).unwrap_or(Value::Null);
                if let Value::Object(o) = &mut v {
                    o.insert("model".into(), json!(self.name_of_arm(a.arm)));
                }
                v
            })
            .collect();
        json!({
            "policy_version": version,
            "algorithm": d.receipt.algorithm,
            "chosen": self.name_of_arm(d.arm),
            "propensity": d.propensity,
            "greedy": d.greedy,
            "pacing_lambda": d.receipt.pacing_lambda,
            "effective_cost_weight": d.receipt.cost_weight,
            "budget_fallback": d.receipt.budget_fallback,
            "arms": arms,
            "excluded": excluded,
        })
    }

    fn summary(&self, d: &BanditDecision) -> String {
        let mut s = format!(
            "chosen={};p={:.4};greedy={};lambda={:.4}",
            self.name_of_arm(d.arm),
            d.propensity,
            d.greedy,
            d.receipt.pacing_lambda
        );
        for a in &d.receipt.arms {
            s.push_str(&format!(
                ";{}:q={:.3},c={:.6},u={:.4},b={:.3}",
                self.name_of_arm(a.arm),
                a.quality,
                a.cost_usd,
                a.utility,
                a.bonus
            ));
        }
        s
    }
}
