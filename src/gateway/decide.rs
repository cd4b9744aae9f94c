//! The decision for a route: encode the prompt, read the route's policy
//! snapshot (lock-free), decide over the eligible models, and turn the
//! bandit's answer into a ranking (chosen first, then the fallback order by
//! estimated utility), a propensity, a version and a receipt.
//!
//! Arms entering or leaving the route adjust the policy's distribution
//! (`experiments::mix`) before the draw, so the logged propensity stays
//! exact; a shadow policy scores the same request without acting.

use serde_json::{json, Map, Value};

use super::catalog::Catalog;
use super::eligible::Exclusion;
use super::learning::RouteLearner;
use super::options::RouterOptions;
use super::prompt::prompt_view;
use super::receipt::Receipt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::plan::{RoutePlan, ShadowPolicy};
use crate::bandit::{Decision as BanditDecision, DecisionRequest, Objective, PolicySnapshot};
use crate::domain::Usd;
use crate::error::ApiError;
use crate::experiments::{assign, mix};
use crate::features::Features;
use crate::store::Assignment;
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
    pub receipt: Receipt,
    /// A one-line form that replaces the receipt's own (an experiment's
    /// forced model), for `x-switchboard-decision`.
    pub summary: Option<String>,
    /// The experiment and arm the request is in, if any.
    pub assignment: Assignment,
    /// A shadow experiment wants this request mirrored to a model.
    pub mirror: Option<(Arc<str>, usize)>,
}

impl Decision {
    /// The one-line form for `x-switchboard-decision` (built on demand).
    pub fn summary(&self) -> String {
        match &self.summary {
            Some(s) => s.clone(),
            None => self.receipt.summary(),
        }
    }
}

pub struct RouteDecision<'a> {
    pub route: &'a str,
    pub learner: &'a RouteLearner,
    pub catalog: &'a Catalog,
    /// The route's objective, or a rule's override.
    pub objective: Objective,
    /// Experiments and arm lifecycles of the route.
    pub plan: Option<&'a RoutePlan>,
    /// A candidate policy version deciding instead of the route's own
    /// (a policy canary or A/B arm).
    pub candidate: Option<&'a PolicySnapshot>,
    /// The request's user, for sticky assignment.
    pub user: Option<&'a str>,
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
        let own = learner.policy.load();
        let snapshot: &PolicySnapshot = self.candidate.unwrap_or(&own);
        let req = DecisionRequest {
            features: &x,
            eligible: &arms,
            objective: self.objective,
            max_cost_usd: opts.max_cost_usd.and_then(|c| Usd::new(c).ok()),
            exploration_cap: learner.exploration_cap_for(opts.tier.as_deref()),
            exploration_floor: None,
        };
        let mut rng = rand::rng();
        let mut d = snapshot.decide(&req, &mut rng).map_err(|e| {
            tracing::error!(route = self.route, error = %e, "The policy could not decide.");
            ApiError::internal(format!("The route's policy could not decide: {e}"))
        })?;
        let mut assignment = Assignment::default();
        // A tier that must never be experimented on is never forced onto
        // an onboarding model (retirement still applies: it is not a test).
        let no_tests = opts
            .tier
            .as_deref()
            .and_then(|t| learner.tier_exploration_caps.get(t))
            == Some(&0.0);
        if let Some(plan) = self.plan {
            if let Some(forced) = self.lifecycle(plan, no_tests, &mut d, &mut rng) {
                assignment = forced;
            }
        }
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
        let version = super::learning::RouteLearner::version(snapshot);
        let shadow_policy = self.plan.and_then(|p| p.shadow_policy.as_ref());
        if let Some(sp) = shadow_policy.filter(|sp| super::route::in_scope(&sp.key_flag, opts)) {
            if assign::in_candidate(
                &sp.name,
                sp.share,
                self.user.filter(|_| sp.sticky),
                &mut rng,
            ) {
                assignment.counterfactual = self.counterfactual(sp, &req, chosen);
            }
        }
        Ok(Decision {
            ranking,
            propensity: d.propensity,
            receipt: Receipt::policy(d, version.clone(), learner.arm_names.clone(), excluded),
            summary: None,
            policy_version: version,
            features: Some(x.into()),
            assignment,
            mirror: None,
        })
    }

    /// Onboarding and retiring arms: redraws from the adjusted distribution
    /// (`experiments::mix`) and returns the assignment of a forced draw.
    fn lifecycle(
        &self,
        plan: &RoutePlan,
        no_tests: bool,
        d: &mut BanditDecision,
        rng: &mut impl rand::Rng,
    ) -> Option<Assignment> {
        if plan.onboarding.is_empty() && plan.retiring.is_empty() {
            return None;
        }
        // The adjustment needs every arm's probability (a Thompson
        // decision computed only its own).
        d.receipt.complete();
        let arm_of = |model: usize| self.learner.arm_of_model(model);
        let now = chrono::Utc::now();
        let weights: Vec<(usize, f64)> = plan
            .retiring
            .iter()
            .filter_map(|r| Some((arm_of(r.model)?, r.weight(now))))
            .collect();
        let forced: Vec<(usize, f64)> = plan
            .onboarding
            .iter()
            .filter(|o| !no_tests && o.has_quota())
            .filter_map(|o| Some((arm_of(o.model)?, o.share)))
            .collect();
        let pi: Vec<(usize, f64)> = d
            .receipt
            .arms
            .iter()
            .map(|a| (a.arm, a.probability))
            .collect();
        // The receipt keeps the policy's own probabilities; `propensity`
        // is the adjusted one the arm was drawn with.
        let choice = mix::adjust(&pi, &weights, &forced, rng)?;
        d.greedy = d.greedy && d.arm == choice.arm;
        d.arm = choice.arm;
        d.propensity = choice.propensity;
        if !choice.forced {
            return None;
        }
        let model = self.learner.arm_models[choice.arm];
        let o = plan.onboarding.iter().find(|o| o.model == model)?;
        o.used.fetch_add(1, Ordering::Relaxed);
        Some(Assignment {
            experiment: Some(o.experiment.to_string()),
            experiment_arm: Some("forced".into()),
            ..Assignment::default()
        })
    }

    /// What the shadow policy would have done here, and its probability of
    /// the model actually chosen (for off-policy scoring).
    fn counterfactual(
        &self,
        sp: &ShadowPolicy,
        req: &DecisionRequest<'_>,
        chosen: usize,
    ) -> Option<Value> {
        let probs = match sp.snapshot.probabilities(req) {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(error = %e, "The shadow policy could not score this request.");
                return None;
            }
        };
        let logged = self.learner.arm_of_model(chosen)?;
        let p_logged = probs
            .iter()
            .find(|(a, _)| *a == logged)
            .map_or(0.0, |(_, p)| *p);
        let (best, p_best) = probs.iter().copied().max_by(|a, b| a.1.total_cmp(&b.1))?;
        Some(json!({
            "experiment": &*sp.name,
            "version": sp.version,
            "choice": self.name_of_arm(best),
            "p_choice": p_best,
            "p_logged": p_logged,
        }))
    }

    fn name_of_arm(&self, arm: usize) -> &str {
        self.catalog.models[self.learner.arm_models[arm]]
            .name
            .as_str()
    }
}
