//! What the admin API shows of the serving gateway: routes (arms, their
//! lifecycle, the experiments in effect, the policy version), models
//! (prices, capabilities, disabled, circuit, recent p95) and a route's
//! policy state with per-arm estimates. Read-only; no axum types.

use std::time::Instant;

use serde_json::{json, Value};

use super::prompt::prompt_view;
use super::Gateway;
use crate::bandit::{DecisionRequest, Objective};
use crate::experiments::Status;

pub fn routes(gw: &Gateway) -> Vec<Value> {
    gw.catalog
        .routes
        .iter()
        .map(|r| route(gw, r.index))
        .collect()
}

pub fn route(gw: &Gateway, index: usize) -> Value {
    let r = &gw.catalog.routes[index];
    let cfg = &gw.effective.routes[index];
    let file = gw.config.routes.iter().find(|f| f.name == r.name).map(|f| {
        f.models
            .iter()
            .map(|m| m.as_str().to_owned())
            .collect::<Vec<_>>()
    });
    let plan = gw.plan.load();
    let rp = plan.routes.get(index);
    let now = chrono::Utc::now();
    let arms: Vec<Value> = r
        .arms
        .iter()
        .map(|&m| {
            let name = gw.catalog.models[m].name.as_str();
            let onboarding = rp.and_then(|p| p.onboarding.iter().find(|o| o.model == m));
            let retiring = rp.and_then(|p| p.retiring.iter().find(|o| o.model == m));
            let state = if plan.is_disabled(m) {
                "disabled"
            } else if retiring.is_some() {
                "retiring"
            } else if onboarding.is_some_and(|o| o.has_quota()) {
                "onboarding"
            } else {
                "active"
            };
            json!({
                "model": name,
                "state": state,
                "share_weight": retiring.map(|r| r.weight(now)),
                "retire_started_at": retiring.map(|r| r.started),
                "retire_window_s": retiring.map(|r| r.window.as_secs()),
                "forced_decisions": onboarding.map(|o| o.used.load(std::sync::atomic::Ordering::Relaxed)),
                "forced_quota": onboarding.map(|o| o.quota),
                "forced_share": onboarding.map(|o| o.share),
                "prior_quality": cfg.onboard.get(&gw.catalog.models[m].name).and_then(|o| o.prior_quality),
            })
        })
        .collect();
    let experiments: Vec<Value> = plan
        .control
        .experiments
        .iter()
        .filter(|e| e.route == r.name.as_str() && e.status != Status::Stopped)
        .map(|e| json!({"name": e.name, "kind": e.kind, "candidate": e.candidate, "share": e.share, "status": e.status}))
        .collect();
    let retired: Vec<&str> = plan
        .control
        .arms
        .iter()
        .filter(|a| a.route == r.name.as_str() && a.state == crate::experiments::ArmState::Retired)
        .map(|a| a.model.as_str())
        .collect();
    let snapshot = gw.learning.routes[index].policy.load();
    json!({
        "name": r.name.as_str(),
        "models": arms,
        "file_models": file,
        "retired_models": retired,
        "policy": r.policy,
        "policy_version": super::learning::RouteLearner::version(&snapshot),
        "objective": r.objective,
        "budget": r.budget,
        "latency_slo_ms": r.latency_slo_ms,
        "exploration_cap": r.exploration_cap,
        "cache": r.cache,
        "experiments": experiments,
    })
}

pub fn models(gw: &Gateway) -> Vec<Value> {
    let plan = gw.plan.load();
    let now = Instant::now();
    gw.catalog
        .models
        .iter()
        .map(|m| {
            let routes: Vec<&str> = gw
                .catalog
                .routes
                .iter()
                .filter(|r| r.arms.contains(&m.index))
                .map(|r| r.name.as_str())
                .collect();
            json!({
                "name": m.name.as_str(),
                "provider": m.provider.name,
                "upstream_name": m.upstream_name,
                "input_usd_per_mtok": m.prices.input_usd_per_mtok,
                "output_usd_per_mtok": m.prices.output_usd_per_mtok,
                "context_window": m.context_window,
                "capabilities": m.capabilities,
                "disabled": plan.is_disabled(m.index),
                "disabled_reason": plan.control.disabled.get(m.name.as_str()).cloned().flatten(),
                "circuit_open": gw.breakers.is_open(m.index, now),
                "p95_latency_ms": gw.latency.p95_ms(m.index),
                "routes": routes,
            })
        })
        .collect()
}

/// The route's policy: version, pacing, per-arm counts, drift, and the
/// estimates (quality, cost, latency, utility, choice probability) at
/// `prompt` over all of the route's arms; with scale-out, how far the
/// merged state has come (`scale::view::route_policy`; `full`: the whole
/// serving and merged snapshots too).
pub fn policy(gw: &Gateway, index: usize, prompt: &str, full: bool) -> Value {
    let learner = &gw.learning.routes[index];
    let snapshot = learner.policy.load();
    let mut body = serde_json::Map::new();
    body.insert(
        "messages".into(),
        json!([{"role": "user", "content": prompt}]),
    );
    let mut x = Vec::with_capacity(learner.encoder.dimension());
    learner.encoder.encode(&prompt_view(&body), &mut x);
    let all: Vec<usize> = (0..snapshot.arm_count()).collect();
    let req = DecisionRequest::new(&x, &all, learner.objective);
    let estimates = snapshot
        .decide(&req, &mut rand::rng())
        .map(|mut d| {
            d.receipt.complete();
            d.receipt
        })
        .ok();
    let arms: Vec<Value> = (0..snapshot.arm_count())
        .filter_map(|i| {
            let arm = snapshot.arm(i)?;
            let e = estimates
                .as_ref()
                .and_then(|r| r.arms.iter().find(|a| a.arm == i));
            Some(json!({
                "model": arm.name().as_str(),
                "counts": arm.counts(),
                "drift": arm.drift_flags(),
                "estimate": e.map(|e| json!({
                    "quality": e.quality,
                    "quality_sd": e.bonus,
                    "cost_usd": e.cost_usd,
                    "latency_s": e.latency_s,
                    "utility": e.utility,
                    "probability": e.probability,
                })),
            }))
        })
        .collect();
    let Objective {
        cost_weight,
        latency_weight,
    } = learner.objective;
    let mut view = json!({
        "route": gw.catalog.routes[index].name.as_str(),
        "version": super::learning::RouteLearner::version(&snapshot),
        "algorithm": snapshot.config().algorithm,
        "pacing_lambda": snapshot.pacing().lambda(),
        "objective": {"cost_weight": cost_weight, "latency_weight": latency_weight},
        "prompt": prompt,
        "arms": arms,
        // A trained version may project the raw features (`train --pca`).
        "features": {
            "dimension": snapshot.dimension(),
            "projection": snapshot.projection().map(|p| json!({"rows": p.rows, "cols": p.cols})),
            "model_dimension": snapshot.inner_dimension(),
        },
    });
    if let Value::Object(m) = &mut view {
        m.extend(super::scale::view::route_policy(gw, index, full));
    }
    view
}
