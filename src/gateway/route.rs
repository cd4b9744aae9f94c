//! Deciding for a route: the request's needs, the first matching rule (pin,
//! restricted arms, objective or cost-ceiling override), the eligible models,
//! then the policy. Everything that narrowed the set goes into the receipt.

use std::time::Instant;

use serde_json::{json, Map, Value};

use super::catalog::RouteEntry;
use super::decide::{Decision, RouteDecision};
use super::eligible::{apply_latency_slo, eligible, Exclusion};
use super::options::{Needs, RouterOptions};
use super::rules::{first_match, RuleContext};
use super::Gateway;
use crate::bandit::Objective;
use crate::error::ApiError;
use crate::telemetry::spans;

/// The decision and the names of the models that were eligible.
pub struct Routed {
    pub decision: Decision,
    pub eligible: Vec<String>,
}

pub fn decide_for_route(
    gw: &Gateway,
    route: &RouteEntry,
    body: &Map<String, Value>,
    options: &RouterOptions,
) -> Result<Routed, ApiError> {
    let name = route.name.as_str();
    let needs = Needs::of(body);
    let cx = RuleContext {
        key: None,
        tenant: None,
        tier: options.tier.as_deref(),
        tags: Some(&options.tags),
        prompt_tokens: needs.prompt_tokens_estimate,
        needs: &needs.capabilities,
    };
    let rule = first_match(&gw.rules, name, &cx);
    let now = Instant::now();

    if let Some((i, pin)) = rule.and_then(|(i, r)| r.pin.as_ref().map(|p| (i, p))) {
        let model = gw
            .catalog
            .model(pin.as_str())
            .ok_or_else(|| ApiError::internal("a rule pins a model that is not configured"))?;
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
                receipt: json!({"rule": i, "pin": pin.as_str()}),
                summary: format!("chosen={};p=1;rule={i}", pin.as_str()),
            },
            eligible: vec![pin.as_str().to_owned()],
        });
    }

    let mut el = eligible(&gw.catalog, route, &gw.breakers, options, &needs, now);
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
    };
    let mut decision = spans::decision(name)
        .in_scope(|| decider.decide(body, &el.models, &el.excluded, &options))?;
    if let (Some((i, _)), Value::Object(receipt)) = (rule, &mut decision.receipt) {
        receipt.insert("rule".into(), json!(i));
    }
    let eligible = el
        .models
        .iter()
        .map(|&i| gw.catalog.models[i].name.as_str().to_owned())
        .collect();
    Ok(Routed { decision, eligible })
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
