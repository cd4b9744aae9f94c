//! Deciding for a route: the request's needs, the first matching rule (pin,
//! restricted arms, objective or cost-ceiling override), the eligible models,
//! then the policy. Everything that narrowed the set goes into the receipt.

use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Map, Value};

use super::catalog::RouteEntry;
use super::decide::{Decision, RouteDecision};
use super::eligible::{apply_latency_slo, eligible, Exclusion};
use super::options::{Needs, RouterOptions};
use super::plan::{Plan, Target};
use super::receipt::Receipt;
use super::rules::first_match;
use super::Gateway;
use crate::bandit::{Objective, PolicySnapshot};
use crate::error::ApiError;
use crate::experiments::assign;
use crate::store::Assignment;
use crate::telemetry::spans;

/// The decision, the names of the models that were eligible, and the
/// route that decided (an A/B experiment may hand a request to another).
pub struct Routed {
    pub decision: Decision,
    pub eligible: Vec<String>,
    pub route: usize,
}

pub fn decide_for_route(
    gw: &Gateway,
    route: &RouteEntry,
    body: &Map<String, Value>,
    options: &RouterOptions,
) -> Result<Routed, ApiError> {
    let plan = gw.plan.load();
    let acting = plan.routes.get(route.index).and_then(|p| p.acting.as_ref());
    let Some(a) =
        acting.filter(|a| in_scope(&a.key_flag, options) && !kept_out(gw, route, body, options))
    else {
        return decide_on(gw, &plan, route, body, options, None);
    };
    let user = options.user.as_deref().filter(|_| a.sticky);
    let candidate = assign::in_candidate(&a.name, a.share, user, &mut rand::rng());
    let mark = |arm: &str| Assignment {
        experiment: Some(a.name.to_string()),
        experiment_arm: Some(arm.to_owned()),
        ..Assignment::default()
    };
    let mut routed = match (&a.target, candidate) {
        (_, false) => decide_on(gw, &plan, route, body, options, None)?,
        (Target::Route(c), true) => {
            let other = &gw.catalog.routes[*c];
            decide_on(gw, &plan, other, body, options, None)?
        }
        (Target::Policy { snapshot, .. }, true) => {
            decide_on(gw, &plan, route, body, options, Some(snapshot))?
        }
        (Target::Model(m), true) => {
            let mut routed = decide_on(gw, &plan, route, body, options, None)?;
            if let Some(why) = unfit(gw, &plan, *m, options, body) {
                // The candidate cannot serve this request: the control arm does.
                tracing::debug!(experiment = %a.name, reason = why, "Canary candidate skipped.");
                routed.decision.assignment.experiment = Some(a.name.to_string());
                routed.decision.assignment.experiment_arm = Some("control".into());
                return Ok(routed);
            }
            let d = &mut routed.decision;
            let model_name = gw.catalog.models[*m].name.as_str();
            // Sticky: fixed by the user. Else the model is drawn with
            // probability `share`, or by the policy in the control arm.
            d.propensity = if user.is_some() {
                1.0
            } else {
                (a.share + (1.0 - a.share) * d.receipt.policy_probability(model_name))
                    .clamp(f64::MIN_POSITIVE, 1.0)
            };
            d.ranking.retain(|&x| x != *m);
            d.ranking.insert(0, *m);
            d.policy_version = format!("experiment.{}", a.name);
            d.summary = Some(format!(
                "chosen={};experiment={}",
                gw.catalog.models[*m].name.as_str(),
                a.name
            ));
            if let Some(p) = d.receipt.as_policy_mut() {
                p.experiment = Some(json!({"name": &*a.name, "arm": "candidate"}));
            }
            let name = gw.catalog.models[*m].name.as_str().to_owned();
            if !routed.eligible.contains(&name) {
                routed.eligible.push(name);
            }
            routed
        }
    };
    let arm = if candidate { "candidate" } else { "control" };
    metrics::counter!(crate::telemetry::names::EXPERIMENT_ASSIGNMENTS,
        "experiment" => a.name.to_string(), "arm" => arm)
    .increment(1);
    let shadowed = routed.decision.assignment.counterfactual.take();
    routed.decision.assignment = mark(arm);
    routed.decision.assignment.counterfactual = shadowed;
    Ok(routed)
}

/// Whether a request takes part in an experiment limited to keys with a
/// feature flag (every request does when the experiment names none).
pub(super) fn in_scope(key_flag: &Option<Arc<str>>, options: &RouterOptions) -> bool {
    key_flag.as_deref().is_none_or(|f| options.has_flag(f))
}

/// Requests a rule pins, and tiers whose exploration cap on the route is 0
/// (`tier_exploration_caps`: "never experiment on these"), stay out of
/// canaries and A/B splits: they follow their own rules throughout.
fn kept_out(
    gw: &Gateway,
    route: &RouteEntry,
    body: &Map<String, Value>,
    options: &RouterOptions,
) -> bool {
    let tier_cap = options.tier.as_deref().and_then(|t| {
        gw.learning.routes[route.index]
            .tier_exploration_caps
            .get(t)
            .copied()
    });
    if tier_cap == Some(0.0) {
        return true;
    }
    let needs = Needs::of(body);
    let cx = options.rule_context(&needs);
    first_match(&gw.rules, route.name.as_str(), &cx).is_some_and(|(_, r)| r.pin.is_some())
}

/// Why model `m` cannot serve this request (disabled, circuit open,
/// missing capability, context too small), if it cannot.
fn unfit(
    gw: &Gateway,
    plan: &Plan,
    m: usize,
    options: &RouterOptions,
    body: &Map<String, Value>,
) -> Option<&'static str> {
    let model = &gw.catalog.models[m];
    let needs = Needs::of(body);
    if plan.is_disabled(m) {
        Some("disabled")
    } else if options
        .exclude_models
        .iter()
        .any(|x| x == model.name.as_str())
    {
        Some("excluded by the request")
    } else if needs.capabilities.iter().any(|c| !model.supports(*c)) {
        Some("lacks a capability")
    } else if model
        .context_window
        .is_some_and(|w| needs.prompt_tokens_estimate > w)
    {
        Some("context window")
    } else if !gw.breakers.is_available(m, Instant::now()) {
        Some("circuit open")
    } else {
        None
    }
}

/// A direct request for a model (`"model": "<model name>"`).
pub fn check_direct(gw: &Gateway, model: usize) -> Result<(), ApiError> {
    if gw.plan.load().is_disabled(model) {
        return Err(ApiError::unavailable(
            "model_disabled",
            format!(
                "The model `{}` is disabled by an operator.",
                gw.catalog.models[model].name.as_str()
            ),
        ));
    }
    Ok(())
}

/// Decides on `route` with its own policy, or `candidate` in its place.
fn decide_on(
    gw: &Gateway,
    plan: &Plan,
    route: &RouteEntry,
    body: &Map<String, Value>,
    options: &RouterOptions,
    candidate: Option<&PolicySnapshot>,
) -> Result<Routed, ApiError> {
    let name = route.name.as_str();
    let needs = Needs::of(body);
    let cx = options.rule_context(&needs);
    let rule = first_match(&gw.rules, name, &cx);
    let now = Instant::now();

    if let Some((i, pin)) = rule.and_then(|(i, r)| r.pin.as_ref().map(|p| (i, p))) {
        let model = gw
            .catalog
            .model(pin.as_str())
            .ok_or_else(|| ApiError::internal("a rule pins a model that is not configured"))?;
        if plan.is_disabled(model.index) {
            return Err(ApiError::unavailable(
                "no_available_model",
                format!(
                    "Rule {i} pins `{}`, which an operator disabled.",
                    pin.as_str()
                ),
            ));
        }
        if !gw.breakers.is_available(model.index, now) {
            return Err(ApiError::unavailable(
                "no_available_model",
                format!("Rule {i} pins `{}`, whose circuit is open.", pin.as_str()),
            ));
        }
        return Ok(Routed {
            decision: Decision {
                ranking: vec![model.index],
                propensity: 1.0,
                policy_version: format!("rule.{i}"),
                features: None,
                receipt: Receipt::fixed(
                    json!({"rule": i, "pin": pin.as_str()}),
                    format!("chosen={};p=1;rule={i}", pin.as_str()),
                ),
                summary: None,
                assignment: Assignment::default(),
                mirror: None,
            },
            eligible: vec![pin.as_str().to_owned()],
            route: route.index,
        });
    }

    let route_plan = plan.routes.get(route.index);
    let mut el = eligible(&gw.catalog, route, &gw.breakers, options, &needs, now);
    exclude_stopped(&mut el, &gw.catalog, plan, route_plan);
    if let Some(slo) = route.latency_slo_ms {
        apply_latency_slo(&mut el, &gw.catalog, slo, &gw.latency);
    }
    let mut options = options.clone();
    let learner = &gw.learning.routes[route.index];
    let mut objective = learner.objective;
    if let Some((i, r)) = rule {
        if let Some(allowed) = &r.models {
            let (keep, drop): (Vec<usize>, Vec<usize>) = el
                .models
                .iter()
                .partition(|&&m| allowed.iter().any(|a| a == &gw.catalog.models[m].name));
            el.excluded.extend(drop.into_iter().map(|m| Exclusion {
                model: gw.catalog.models[m].name.as_str().to_owned(),
                reason: format!("not allowed by rule {i}"),
            }));
            el.models = keep;
        }
        if let Some(o) = r.objective {
            objective = Objective {
                cost_weight: o.cost_weight,
                latency_weight: o.latency_weight,
            };
        }
        if let Some(b) = &r.budget {
            options.max_cost_usd = Some(
                options
                    .max_cost_usd
                    .map_or(b.max_cost_usd, |c| c.min(b.max_cost_usd)),
            );
        }
    }
    if el.models.is_empty() {
        return Err(no_eligible_model(name, &el.excluded));
    }
    let decider = RouteDecision {
        route: name,
        learner,
        catalog: &gw.catalog,
        objective,
        plan: route_plan,
        candidate,
        user: options.user.as_deref(),
    };
    let mut decision = spans::decision(name)
        .in_scope(|| decider.decide(body, &el.models, &el.excluded, &options))?;
    if let (Some((i, _)), Some(p)) = (rule, decision.receipt.as_policy_mut()) {
        p.rule = Some(i);
    }
    let mirror = route_plan.and_then(|p| p.shadow.as_ref());
    if let Some(m) = mirror.filter(|m| in_scope(&m.key_flag, &options)) {
        let user = options.user.as_deref().filter(|_| m.sticky);
        if assign::in_candidate(&m.name, m.share, user, &mut rand::rng()) {
            decision.mirror = Some((m.name.clone(), m.model));
        }
    }
    let eligible = el
        .models
        .iter()
        .map(|&i| gw.catalog.models[i].name.as_str().to_owned())
        .collect();
    Ok(Routed {
        decision,
        eligible,
        route: route.index,
    })
}

/// Takes out models an operator disabled and retiring models whose window
/// has run out (they never answer, not even as a fallback).
fn exclude_stopped(
    el: &mut super::eligible::Eligible,
    catalog: &super::catalog::Catalog,
    plan: &Plan,
    route_plan: Option<&super::plan::RoutePlan>,
) {
    let retiring = route_plan.map_or(&[][..], |p| &p.retiring[..]);
    if retiring.is_empty() && !el.models.iter().any(|&m| plan.is_disabled(m)) {
        return;
    }
    let now = chrono::Utc::now();
    let retired = |m: usize| {
        retiring
            .iter()
            .any(|r| r.model == m && r.weight(now) <= 0.0)
    };
    let (keep, out): (Vec<usize>, Vec<usize>) = el
        .models
        .iter()
        .partition(|&&m| !plan.is_disabled(m) && !retired(m));
    for m in out {
        el.excluded.push(Exclusion {
            model: catalog.models[m].name.as_str().to_owned(),
            reason: if plan.is_disabled(m) {
                "disabled by an operator".into()
            } else {
                "retired".into()
            },
        });
    }
    el.models = keep;
}

fn no_eligible_model(route: &str, excluded: &[Exclusion]) -> ApiError {
    let reasons: Vec<String> = excluded
        .iter()
        .map(|e| format!("{}: {}", e.model, e.reason))
        .collect();
    let msg = format!(
        "No model on route `{route}` can serve this request ({}).",
        reasons.join("; ")
    );
    if excluded.iter().all(|e| e.reason == "circuit open") {
        ApiError::unavailable("no_available_model", msg)
    } else {
        ApiError::bad_request("no_eligible_model", msg)
    }
}
