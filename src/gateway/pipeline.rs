//! One chat completion from parsed body to answer: validation, resolution,
//! decision, attempts, and the hand-off to the outcome recorder.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures_util::Stream;
use http::HeaderMap;
use serde_json::{Map, Value};
use tracing::Instrument;

use super::admission;
use super::attempt::{Answer, Attempts, Failure};
use super::cache;
use super::cached;
use super::catalog::Target;
use super::continuation::Continuation;
use super::decide::Decision;
use super::hedge::{self, Hedging};
use super::options::RouterOptions;
use super::outcome::{Draft, Ending};
use super::receipt::Receipt;
use super::recent::DecisionMemo;
use super::route::decide_for_route;
use super::stream::{client_stream, StreamParts};
use super::validate::check;
use super::Gateway;
use crate::domain::RequestId;
use crate::error::ApiError;
use crate::providers::{ClientBody, Completion, UpstreamError};
use crate::telemetry::spans;

/// What was decided, for the response headers (also on errors).
#[derive(Debug, Clone, Default)]
pub struct Meta {
    pub request_id: String,
    pub model: Option<String>,
    pub route: Option<String>,
    pub policy_version: Option<String>,
    /// The compact decision receipt, when the request asked for it
    /// (`x-switchboard-explain: true`).
    pub decision_summary: Option<String>,
}

pub enum ChatReply {
    Complete(Completion),
    Stream(Pin<Box<dyn Stream<Item = Result<Bytes, Infallible>> + Send>>),
}

pub struct Routed {
    pub meta: Meta,
    pub reply: Result<ChatReply, ApiError>,
}

pub async fn chat(gw: Arc<Gateway>, body: Map<String, Value>, headers: &HeaderMap) -> Routed {
    chat_as(gw, body, None, headers, None).await
}

/// `chat` on behalf of an authenticated client key (limits, budget, and the
/// key and tenant recorded on the request's row). `text` is the JSON text
/// `body` was read from, when there is one: an OpenAI-compatible upstream
/// is then sent the client's own bytes but for `model`.
pub async fn chat_as(
    gw: Arc<Gateway>,
    mut body: Map<String, Value>,
    text: Option<Bytes>,
    headers: &HeaderMap,
    caller: Option<crate::auth::Caller>,
) -> Routed {
    let request_id = RequestId::generate();
    let mut meta = Meta {
        request_id: request_id.to_string(),
        ..Meta::default()
    };
    let span = spans::request(request_id.as_str());
    let reply = run(&gw, &mut body, text.as_deref(), headers, &mut meta, caller)
        .instrument(span)
        .await;
    Routed { meta, reply }
}

async fn run(
    gw: &Arc<Gateway>,
    body: &mut Map<String, Value>,
    text: Option<&[u8]>,
    headers: &HeaderMap,
    meta: &mut Meta,
    caller: Option<crate::auth::Caller>,
) -> Result<ChatReply, ApiError> {
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + gw.request_timeout;
    let checked = check(body)?;
    let mut options = RouterOptions::extract(body, headers)?;
    let target = gw
        .catalog
        .resolve(&checked.requested)
        .ok_or_else(|| ApiError::model_not_found(&checked.requested))?;
    // Client key: access and rates; the key's tier overrides the request's.
    let prompt_tokens = admission::admit_caller(
        caller.as_ref(),
        &checked.requested,
        matches!(target, Target::Route(_)),
        body,
        &mut options,
    )?;
    let cache_key = match &target {
        Target::Route(r) => r
            .cache
            .and_then(|c| cache::key(r.name.as_str(), body, c.cache_sampled).map(|k| (k, c.ttl_s))),
        Target::Model(_) => None,
    };
    if let Target::Route(r) = &target {
        let hit = cache_key.and_then(|(k, _)| gw.cache.get(k));
        // An answer from a model an operator disabled is not replayed.
        let hit = hit.filter(|h| !gw.plan.load().is_disabled(h.model));
        if let Some(hit) = hit {
            meta.route = Some(r.name.as_str().to_owned());
            let key = caller.map(|caller| admission::KeyUse {
                caller,
                reservation: None,
            });
            let draft = cached::draft(
                &meta.request_id,
                started,
                &checked,
                options,
                body,
                &hit,
                gw,
                key,
            );
            return Ok(cached::serve(gw, &hit, draft, meta, &checked));
        }
    }

    let (hedge_after, continue_streams) = match &target {
        Target::Route(r) => (
            r.ttft_deadline,
            r.continue_stream_on_fallback && checked.stream,
        ),
        Target::Model(_) => (None, false),
    };
    let (decision, route_index, eligible_names) = match target {
        Target::Model(m) => {
            super::route::check_direct(gw, m.index)?;
            (
                Decision {
                    ranking: vec![m.index],
                    propensity: 1.0,
                    policy_version: "direct".into(),
                    features: None,
                    receipt: Receipt::fixed(
                        serde_json::json!({"policy": "direct"}),
                        format!("chosen={};p=1;direct", m.name.as_str()),
                    ),
                    summary: None,
                    assignment: Default::default(),
                    mirror: None,
                },
                None,
                vec![m.name.as_str().to_owned()],
            )
        }
        Target::Route(route) => {
            meta.route = Some(route.name.as_str().to_owned());
            let routed = decide_for_route(gw, route, body, &options)?;
            // An A/B experiment may have handed the request to another route.
            meta.route = Some(gw.catalog.routes[routed.route].name.as_str().to_owned());
            (routed.decision, Some(routed.route), routed.eligible)
        }
    };
    meta.policy_version = Some(decision.policy_version.clone());
    if wants_explanation(headers) {
        meta.decision_summary = Some(decision.summary());
    }
    spans::record_request(
        &tracing::Span::current(),
        &checked.requested,
        meta.route.as_deref(),
    );
    meta.model = decision
        .ranking
        .first()
        .map(|&i| gw.catalog.models[i].name.as_str().to_owned());
    gw.remember(
        &meta.request_id,
        DecisionMemo {
            route: route_index,
            model: decision.ranking.first().copied(),
            features: decision.features.clone(),
            quality_taught: false,
        },
    );

    // Client key: hold the worst-case cost before any upstream call.
    let extra = admission::Extra {
        hedged: hedge_after.is_some(),
        continued: continue_streams,
    };
    let key = admission::hold(gw, caller, &decision.ranking, body, prompt_tokens, extra).await?;
    if let Some((experiment, model)) = &decision.mirror {
        super::shadow::spawn(
            gw,
            experiment.clone(),
            *model,
            body,
            &meta.request_id,
            meta.route.as_deref(),
        );
    }
    let mut draft = Draft {
        id: meta.request_id.clone(),
        created_at: chrono::Utc::now(),
        started,
        requested_model: checked.requested.clone(),
        route: meta.route.clone(),
        options,
        eligible_models: eligible_names,
        policy_version: Some(decision.policy_version.clone()),
        propensity: Some(decision.propensity),
        features: decision.features.as_ref().map(|f| f.to_vec()),
        decision: Some(decision.receipt),
        stream: checked.stream,
        chain: Vec::new(),
        messages: None,
        span: tracing::Span::current(),
        key,
        cache_hit: false,
        assignment: decision.assignment.clone(),
    };
    let attempts = Attempts {
        catalog: &gw.catalog,
        breakers: &gw.breakers,
        resilience: &gw.resilience,
    };
    let hedging = hedge_after.map(|after| Hedging {
        route: meta.route.as_deref().unwrap_or("-"),
        after,
    });
    // The tree is the text's but for `switchboard`, which `extract` took
    // out; nothing else changes it before the answer.
    let client_body = ClientBody { tree: body, text };
    let answer = hedge::answer(
        &attempts,
        hedging,
        &decision.ranking,
        client_body,
        checked.stream,
        deadline,
        &mut draft.chain,
    )
    .await;
    teach_failed_attempts(gw, &meta.request_id, &draft.chain, started);
    match answer {
        Ok(Answer::Complete {
            model,
            body: answer,
            usage,
        }) => {
            let entry = &gw.catalog.models[model];
            meta.model = Some(entry.name.as_str().to_owned());
            let answer = answer.with_identity(&meta.request_id, Some(entry.name.as_str()));
            if let Some((key, ttl_s)) = cache_key {
                gw.cache.put(
                    key,
                    answer.clone(),
                    model,
                    std::time::Duration::from_secs(ttl_s),
                );
            }
            // Counted locally only when the upstream sent no usage.
            let text = if usage.is_none() {
                draft.messages = body.get("messages").cloned();
                answer.text()
            } else {
                String::new()
            };
            let settled = draft.finish(
                Ending {
                    model: Some(entry),
                    usage,
                    completion_text: &text,
                    ttft_ms: None,
                    status_code: 200,
                    error_kind: None,
                },
                &gw.outbox,
            );
            gw.learn_outcome(
                &meta.request_id,
                model,
                true,
                settled.cost_usd,
                settled.latency_s,
            );
            Ok(ChatReply::Complete(answer))
        }
        Ok(Answer::Stream {
            model,
            first,
            rest,
            ttft,
        }) => {
            meta.model = Some(gw.catalog.models[model].name.as_str().to_owned());
            // The usage arrives (or not) at the stream's end: keep the prompt.
            draft.messages = body.get("messages").cloned();
            let continuation = continue_streams
                .then(|| {
                    let route = meta.route.clone().unwrap_or_default();
                    let body = std::mem::take(body);
                    Continuation::new(gw, &decision.ranking, &draft.chain, body, route)
                })
                .flatten();
            let parts = StreamParts {
                gateway: gw.clone(),
                model,
                request_id: meta.request_id.clone(),
                include_usage: checked.include_usage,
                ttft_ms: ttft.as_secs_f64() * 1000.0,
                continuation,
            };
            Ok(ChatReply::Stream(Box::pin(client_stream(
                parts, draft, first, rest,
            ))))
        }
        Err(failure) => {
            let err = failure_to_api(&failure);
            let last_model = draft.chain.last().and_then(|a| gw.catalog.model(&a.model));
            if let Some(m) = last_model {
                meta.model = Some(m.name.as_str().to_owned());
            }
            draft.finish(
                Ending {
                    model: last_model,
                    usage: None,
                    completion_text: "",
                    ttft_ms: None,
                    status_code: err.status.as_u16(),
                    error_kind: Some(failure_kind(&failure)),
                },
                &gw.outbox,
            );
            Err(err)
        }
    }
}

/// Every model that failed on its own account (not the client's) learns
/// quality 0 for this prompt, whether or not a fallback then answered. A
/// hedge cancelled early teaches nothing; one overtaken after missing the
/// TTFT deadline is a failure, and its censored time counts in the
/// latency-SLO statistics as a lower bound (`hedge`).
pub(super) fn teach_failed_attempts(
    gw: &Gateway,
    request_id: &str,
    chain: &[crate::store::AttemptRecord],
    started: Instant,
) {
    let mut taught: Vec<&str> = Vec::new();
    for a in chain {
        let Some(kind) = a.error.as_deref() else {
            continue;
        };
        if matches!(
            kind,
            "invalid_request" | "too_large" | "deadline" | hedge::CANCELLED_HEDGE
        ) || taught.contains(&a.model.as_str())
        {
            continue;
        }
        if let Some(m) = gw.catalog.model(&a.model) {
            if let (hedge::OVERTAKEN, Some(ms)) = (kind, a.elapsed_ms) {
                gw.latency.record(m.index, ms);
            }
            gw.learn_outcome(
                request_id,
                m.index,
                false,
                0.0,
                started.elapsed().as_secs_f64(),
            );
            taught.push(&a.model);
        }
    }
}

fn wants_explanation(headers: &HeaderMap) -> bool {
    headers
        .get("x-switchboard-explain")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| matches!(v.trim(), "1" | "true" | "yes"))
}

fn failure_kind(f: &Failure) -> &'static str {
    match f {
        Failure::Client(e) | Failure::Exhausted(e) => e.kind.as_str(),
        Failure::Deadline => "deadline",
        Failure::NoneAvailable => "no_available_model",
    }
}

fn failure_to_api(f: &Failure) -> ApiError {
    match f {
        Failure::Client(e) => client_fault(e),
        Failure::Deadline => {
            ApiError::timeout("The request's deadline passed before any model answered.")
        }
        Failure::NoneAvailable => ApiError::unavailable(
            "no_available_model",
            "Every model this request may use is temporarily unavailable (circuit open).",
        ),
        Failure::Exhausted(e) => {
            let msg = format!("Every model tried failed; the last said: {}", e.message);
            match e.kind {
                crate::providers::FailureKind::RateLimited
                | crate::providers::FailureKind::Overloaded => {
                    let mut err = ApiError::unavailable("upstream_unavailable", msg);
                    err.retry_after_s = e.retry_after.map(|d| d.as_secs().max(1));
                    err
                }
                _ => ApiError::bad_gateway(msg),
            }
        }
    }
}

fn client_fault(e: &UpstreamError) -> ApiError {
    let msg = format!("The upstream refused the request: {}", e.message);
    if e.kind == crate::providers::FailureKind::TooLarge {
        ApiError {
            status: http::StatusCode::PAYLOAD_TOO_LARGE,
            ..ApiError::bad_request("upstream_rejected", msg)
        }
    } else {
        ApiError::bad_request("upstream_rejected", msg)
    }
}
