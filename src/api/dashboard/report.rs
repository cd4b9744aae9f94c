//! What the dashboard's JSON endpoints return, assembled from the store's
//! rollup reads (src/store/dashboard.rs): shares, means and latency
//! percentiles per model, hour, route and policy version. Takes no axum
//! types; `live_policy_estimates` is the hook for the learning core.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::gateway::Gateway;
use crate::store::dashboard::{
    quantile_from_buckets, ErrorKindRow, ErrorRow, SpendRow, Totals, Window,
};
use crate::store::{Store, StoreError};

#[derive(Debug, Serialize)]
pub struct Summary {
    pub since: DateTime<Utc>,
    pub requests: i64,
    pub errors: i64,
    pub error_rate: Option<f64>,
    pub cost_usd: f64,
    pub mean_cost_usd: Option<f64>,
    pub mean_latency_ms: Option<f64>,
    pub rewarded: i64,
    pub mean_reward: Option<f64>,
    pub feedback_coverage: Option<f64>,
    pub models: usize,
}

#[derive(Debug, Serialize)]
pub struct ModelReport {
    pub model: String,
    pub requests: i64,
    pub share: Option<f64>,
    pub errors: i64,
    pub error_rate: Option<f64>,
    pub cost_usd: f64,
    pub mean_cost_usd: Option<f64>,
    pub mean_latency_ms: Option<f64>,
    /// Estimated from the latency histogram (all routes).
    pub p50_latency_ms: Option<f64>,
    pub p95_latency_ms: Option<f64>,
    pub mean_ttft_ms: Option<f64>,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub rewarded: i64,
    pub mean_reward: Option<f64>,
    pub feedback_coverage: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct Point {
    pub hour: DateTime<Utc>,
    pub model: String,
    pub requests: i64,
    /// This model's share of the hour's requests (within the route filter).
    pub share: f64,
    pub cost_usd: f64,
    pub mean_latency_ms: Option<f64>,
    pub error_rate: Option<f64>,
    pub mean_reward: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct Errors {
    pub recent: Vec<ErrorRow>,
    pub by_kind: Vec<ErrorKindRow>,
}

#[derive(Debug, Serialize)]
pub struct Arm {
    pub model: String,
    pub requests: i64,
    pub share: f64,
    pub mean_reward: Option<f64>,
    pub rewarded: i64,
    pub mean_cost_usd: Option<f64>,
    pub error_rate: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct Version {
    pub policy_version: String,
    pub requests: i64,
    pub share: f64,
    pub mean_reward: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct RoutePolicy {
    pub route: String,
    pub requests: i64,
    /// Observed per arm over the window, from the store.
    pub arms: Vec<Arm>,
    pub versions: Vec<Version>,
    /// The live policy's own estimates per arm; `null` until the learning
    /// core fills `live_policy_estimates`.
    pub live: Option<Value>,
}

pub async fn summary(store: &Store, w: Window) -> Result<Summary, StoreError> {
    let models = store.dashboard_models(w, None).await?;
    let mut t = Totals::default();
    for m in &models {
        t.absorb(&m.totals);
    }
    Ok(Summary {
        since: w.since_time(),
        requests: t.requests,
        errors: t.errors,
        error_rate: t.error_rate(),
        cost_usd: t.cost_usd,
        mean_cost_usd: t.mean_cost_usd(),
        mean_latency_ms: t.mean_latency_ms(),
        rewarded: t.rewarded,
        mean_reward: t.mean_reward(),
        feedback_coverage: t.feedback_coverage(),
        models: models.iter().filter(|m| !m.model.is_empty()).count(),
    })
}

pub async fn models(
    store: &Store,
    w: Window,
    route: Option<&str>,
) -> Result<Vec<ModelReport>, StoreError> {
    let rows = store.dashboard_models(w, route).await?;
    let mut buckets: BTreeMap<String, Vec<(i32, i64)>> = BTreeMap::new();
    for b in store.dashboard_latency_buckets(w).await? {
        buckets
            .entry(b.model)
            .or_default()
            .push((b.bucket, b.requests));
    }
    let total: i64 = rows.iter().map(|r| r.totals.requests).sum();
    Ok(rows
        .into_iter()
        .map(|r| {
            let t = &r.totals;
            let b = buckets.get(&r.model).map(Vec::as_slice).unwrap_or(&[]);
            ModelReport {
                share: (total > 0).then(|| t.requests as f64 / total as f64),
                requests: t.requests,
                errors: t.errors,
                error_rate: t.error_rate(),
                cost_usd: t.cost_usd,
                mean_cost_usd: t.mean_cost_usd(),
                mean_latency_ms: t.mean_latency_ms(),
                p50_latency_ms: quantile_from_buckets(b, 0.5),
                p95_latency_ms: quantile_from_buckets(b, 0.95),
                mean_ttft_ms: t.mean_ttft_ms(),
                prompt_tokens: t.prompt_tokens,
                completion_tokens: t.completion_tokens,
                rewarded: t.rewarded,
                mean_reward: t.mean_reward(),
                feedback_coverage: t.feedback_coverage(),
                model: r.model,
            }
        })
        .collect())
}

pub async fn timeseries(
    store: &Store,
    w: Window,
    route: Option<&str>,
) -> Result<Vec<Point>, StoreError> {
    let rows = store.dashboard_timeseries(w, route).await?;
    let mut per_hour: BTreeMap<i64, i64> = BTreeMap::new();
    for r in &rows {
        *per_hour.entry(r.hour).or_default() += r.totals.requests;
    }
    Ok(rows
        .into_iter()
        .map(|r| {
            let hour_total = per_hour.get(&r.hour).copied().unwrap_or(0);
            let t = &r.totals;
            Point {
                hour: DateTime::from_timestamp(r.hour, 0).unwrap_or_default(),
                share: if hour_total > 0 {
                    t.requests as f64 / hour_total as f64
                } else {
                    0.0
                },
                requests: t.requests,
                cost_usd: t.cost_usd,
                mean_latency_ms: t.mean_latency_ms(),
                error_rate: t.error_rate(),
                mean_reward: t.mean_reward(),
                model: r.model,
            }
        })
        .collect())
}

pub async fn errors(store: &Store, w: Window, limit: i64) -> Result<Errors, StoreError> {
    Ok(Errors {
        recent: store.dashboard_recent_errors(w, limit).await?,
        by_kind: store.dashboard_error_kinds(w).await?,
    })
}

pub async fn spend(store: &Store, w: Window, limit: i64) -> Result<Vec<SpendRow>, StoreError> {
    store.dashboard_spend(w, limit).await
}

pub async fn policy(gw: &Gateway, w: Window) -> Result<Vec<RoutePolicy>, StoreError> {
    // Per route: totals per arm (model) and per policy version.
    type PerKey = BTreeMap<String, Totals>;
    let mut routes: BTreeMap<String, (PerKey, PerKey)> = BTreeMap::new();
    for a in gw.store.dashboard_arms(w).await? {
        let (arms, versions) = routes.entry(a.route).or_default();
        arms.entry(a.model).or_default().absorb(&a.totals);
        versions
            .entry(a.policy_version)
            .or_default()
            .absorb(&a.totals);
    }
    Ok(routes
        .into_iter()
        .map(|(route, (arms, versions))| {
            let total: i64 = arms.values().map(|t| t.requests).sum();
            let share = |n: i64| {
                if total > 0 {
                    n as f64 / total as f64
                } else {
                    0.0
                }
            };
            RoutePolicy {
                live: live_policy_estimates(gw, &route),
                requests: total,
                arms: arms
                    .into_iter()
                    .map(|(model, t)| Arm {
                        share: share(t.requests),
                        requests: t.requests,
                        mean_reward: t.mean_reward(),
                        rewarded: t.rewarded,
                        mean_cost_usd: t.mean_cost_usd(),
                        error_rate: t.error_rate(),
                        model,
                    })
                    .collect(),
                versions: versions
                    .into_iter()
                    .map(|(policy_version, t)| Version {
                        share: share(t.requests),
                        requests: t.requests,
                        mean_reward: t.mean_reward(),
                        policy_version,
                    })
                    .collect(),
                route,
            }
        })
        .collect())
}

/// The live policy's current state for a route (a lock-free snapshot
/// load): version, algorithm, the pacing multiplier, and per arm how often it
/// was tried, failed and got feedback, its drift flags, and its estimates at
/// the feature-space origin (the prompt-independent part of each model:
/// per-prompt estimates live in each request's decision receipt).
pub fn live_policy_estimates(gw: &Gateway, route: &str) -> Option<Value> {
    let index = gw.catalog.route_index(route)?;
    let learner = gw.learning.routes.get(index)?;
    let snapshot = learner.policy.load();
    // The origin is the bias alone in the raw and in any projected space
    // (a projection is linear), so it is built at the models' own width.
    let mut origin = vec![0.0; snapshot.inner_dimension()];
    if let Some(bias) = origin.first_mut() {
        *bias = 1.0;
    }
    let arms: Vec<Value> = (0..snapshot.arm_count())
        .filter_map(|i| snapshot.arm(i))
        .map(|arm| {
            let e = arm.estimate(&origin);
            let c = arm.counts();
            serde_json::json!({
                "model": arm.name().as_str(),
                "outcomes": c.outcomes,
                "errors": c.errors,
                "feedback": c.feedback,
                "quality": e.quality,
                "quality_sd": e.quality_sd,
                "cost_usd": e.cost_usd,
                "latency_s": e.latency_s,
                "drift": arm.drift_flags(),
            })
        })
        .collect();
    Some(serde_json::json!({
        "version": crate::gateway::learning::RouteLearner::version(&snapshot),
        "algorithm": snapshot.config().algorithm,
        "pacing_lambda": snapshot.pacing().lambda(),
        "target_usd_per_request": snapshot.budget().target_usd_per_request,
        "arms": arms,
    }))
}
