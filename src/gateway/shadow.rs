//! Shadow traffic: a share of a route's requests is also sent, in the
//! background, to a candidate model. Its answer is recorded in `requests`
//! (`shadow = true`, `shadow_of` = the client's request) and thrown away:
//! the client's answer, latency and cost are untouched, no client key is
//! charged, the policy learns nothing from it, and breakers are not moved
//! (the mirror observes the candidate; it does not judge it for traffic).
//!
//! At most `MAX_IN_FLIGHT` mirrors run at once per process; past that a
//! mirror is skipped and counted, never queued behind client traffic.

use std::sync::{Arc, LazyLock};
use std::time::Instant;

use serde_json::{json, Map, Value};
use tokio::sync::Semaphore;

use super::Gateway;
use crate::domain::RequestId;
use crate::providers::{tokens, ClientBody, Completion, Reply, UpstreamRequest};
use crate::store::{Assignment, AttemptRecord, Event, RequestRecord};
use crate::telemetry::names;

const MAX_IN_FLIGHT: usize = 64;

static SLOTS: LazyLock<Arc<Semaphore>> = LazyLock::new(|| Arc::new(Semaphore::new(MAX_IN_FLIGHT)));

/// Mirrors `body` (already stripped of router options) to `model`.
pub fn spawn(
    gw: &Arc<Gateway>,
    experiment: Arc<str>,
    model: usize,
    body: &Map<String, Value>,
    original: &str,
    route: Option<&str>,
) {
    let Ok(permit) = SLOTS.clone().try_acquire_owned() else {
        metrics::counter!(names::SHADOW_SKIPPED).increment(1);
        return;
    };
    let mut body = body.clone();
    body.remove("stream");
    body.remove("stream_options");
    let gw = gw.clone();
    let original = original.to_owned();
    let route = route.map(str::to_owned);
    tokio::spawn(async move {
        let _permit = permit;
        call(&gw, &experiment, model, &body, original, route).await;
    });
}

async fn call(
    gw: &Gateway,
    experiment: &str,
    model: usize,
    body: &Map<String, Value>,
    original: String,
    route: Option<String>,
) {
    let Some(entry) = gw.catalog.models.get(model) else {
        return;
    };
    let created_at = chrono::Utc::now();
    let started = Instant::now();
    let req = UpstreamRequest {
        body: ClientBody::tree(body),
        upstream_model: &entry.upstream_name,
        stream: false,
    };
    let result = tokio::time::timeout(gw.request_timeout, entry.provider.call(req)).await;
    let (status, error, usage) = match result {
        Ok(Ok(Reply::Complete {
            body: answer,
            usage,
        })) => {
            let usage = usage
                .unwrap_or_else(|| tokens::estimate(body.get("messages"), &answer_text(&answer)));
            (200u16, None, Some(usage))
        }
        Ok(Ok(Reply::Stream(_))) => (502, Some("protocol".to_owned()), None),
        Ok(Err(e)) => (
            e.status.unwrap_or(502),
            Some(e.kind.as_str().to_owned()),
            None,
        ),
        Err(_) => (504, Some("deadline".to_owned()), None),
    };
    let ok = error.is_none();
    metrics::counter!(names::SHADOW_REQUESTS,
        "model" => entry.name.as_str().to_owned(),
        "status" => if ok { "ok" } else { "error" })
    .increment(1);
    let cost = usage.map_or(0.0, |u| entry.prices.cost_usd(&u));
    let record = RequestRecord {
        id: RequestId::generate().to_string(),
        created_at,
        api_key_id: None,
        tenant: None,
        route,
        tier: None,
        user_id: None,
        requested_model: entry.name.as_str().to_owned(),
        model: Some(entry.name.as_str().to_owned()),
        provider: Some(entry.provider.name.clone()),
        eligible_models: vec![entry.name.as_str().to_owned()],
        policy_version: Some("shadow".into()),
        propensity: None,
        features: None,
        decision: Some(json!({"shadow_of": original, "experiment": experiment}).into()),
        stream: false,
        prompt_tokens: usage.map(|u| i32::try_from(u.prompt_tokens).unwrap_or(i32::MAX)),
        completion_tokens: usage.map(|u| i32::try_from(u.completion_tokens).unwrap_or(i32::MAX)),
        tokens_counted_locally: usage.is_some_and(|u| u.counted_locally),
        cost_usd: cost,
        latency_ms: started.elapsed().as_secs_f64() * 1000.0,
        ttft_ms: None,
        ok,
        status_code: i32::from(status),
        error_kind: error.clone(),
        fallback_chain: vec![AttemptRecord {
            model: entry.name.as_str().to_owned(),
            error,
            status: (!ok).then_some(status),
            cost_usd: None,
            elapsed_ms: None,
        }],
        attempts: 1,
        cache_hit: false,
        tags: None,
        assignment: Assignment {
            experiment: Some(experiment.to_owned()),
            experiment_arm: Some("shadow".into()),
            shadow: true,
            shadow_of: Some(original),
            counterfactual: None,
        },
    };
    gw.outbox.send(Event::Request(Box::new(record)));
}

fn answer_text(body: &Completion) -> String {
    body.text()
}
