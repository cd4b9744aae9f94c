//! Turning what happened to one request into its `requests` row. A `Draft`
//! is filled as the pipeline goes; `finish` prices the usage and hands the
//! row to the outbox. Never waits on the database.

use std::time::Instant;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::catalog::ModelEntry;
use super::options::RouterOptions;
use super::receipt::Receipt;
use crate::providers::{tokens, Usage};
use crate::store::outbox::Outbox;
use crate::store::{Assignment, AttemptRecord, Event, LazyJson, RequestRecord};
use crate::telemetry::request_metrics::RequestMetrics;
use crate::telemetry::spans;

pub struct Draft {
    pub id: String,
    pub created_at: DateTime<Utc>,
    pub started: Instant,
    pub requested_model: String,
    pub route: Option<String>,
    pub options: RouterOptions,
    pub eligible_models: Vec<String>,
    pub policy_version: Option<String>,
    pub propensity: Option<f64>,
    pub features: Option<Vec<f64>>,
    pub decision: Option<Receipt>,
    pub stream: bool,
    pub chain: Vec<AttemptRecord>,
    /// Served from the response cache: zero cost, and nothing to learn.
    pub cache_hit: bool,
    /// The prompt, set when usage may have to be counted locally: a
    /// stream (its usage comes last, if at all) or an answer without usage.
    pub messages: Option<Value>,
    /// The request's span (`telemetry::spans::request`): a stream finishes
    /// outside it, so the draft carries it to record the outcome.
    pub span: tracing::Span,
    /// The client key behind the request, with its budget reservation.
    pub key: Option<super::admission::KeyUse>,
    /// The experiment and arm the request was assigned to.
    pub assignment: Assignment,
}

/// How the request ended.
pub struct Ending<'a> {
    pub model: Option<&'a ModelEntry>,
    pub usage: Option<Usage>,
    /// The answer's text, for local counting when `usage` is `None`.
    pub completion_text: &'a str,
    pub ttft_ms: Option<f64>,
    pub status_code: u16,
    pub error_kind: Option<&'a str>,
}

/// What the policy learns from a finished request.
#[derive(Debug, Clone, Copy)]
pub struct Settled {
    /// The answering model's own cost (not what other attempts were billed).
    pub cost_usd: f64,
    pub latency_s: f64,
}

impl Draft {
    pub fn finish(mut self, end: Ending<'_>, outbox: &Outbox) -> Settled {
        let key = self.key.take();
        let (api_key_id, tenant) = key.as_ref().map_or((None, None), |k| {
            (Some(k.caller.key.id.clone()), k.caller.key.tenant.clone())
        });
        let latency = self.started.elapsed();
        let ok = end.error_kind.is_none();
        let usage = match (end.usage, end.model, ok) {
            (Some(u), _, _) => Some(u),
            (None, Some(_), true) => Some(tokens::estimate(
                self.messages.as_ref(),
                end.completion_text,
            )),
            _ => None,
        };
        let cost = match (end.model, usage) {
            (Some(m), Some(u)) if !self.cache_hit => m.prices.cost_usd(&u),
            _ => 0.0,
        };
        // Attempts that did not give the answer but were probably billed (a
        // hedge's loser, a broken stream continued elsewhere) count towards
        // the request's cost and the key's spend; their metrics were
        // recorded when they ended, under their own model.
        let billed_elsewhere: f64 = self.chain.iter().filter_map(|a| a.cost_usd).sum();
        let total_cost = cost + billed_elsewhere;
        let model_name = end.model.map(|m| m.name.as_str().to_owned());
        let provider = end.model.map(|m| m.provider.name.clone());
        spans::record_outcome(
            &self.span,
            end.model.map(|m| (m.name.as_str(), m.provider.kind)),
            usage.map(|u| (u.prompt_tokens, u.completion_tokens)),
            total_cost,
            end.error_kind,
        );
        record_metrics(
            self.route.as_deref(),
            end.model,
            &end,
            usage,
            cost,
            latency.as_secs_f64(),
        );
        let record = RequestRecord {
            id: self.id,
            created_at: self.created_at,
            api_key_id,
            tenant,
            route: self.route,
            tier: self.options.tier,
            user_id: self.options.user,
            requested_model: self.requested_model,
            model: model_name,
            provider,
            eligible_models: self.eligible_models,
            policy_version: self.policy_version,
            propensity: self.propensity,
            features: self.features,
            decision: self.decision.map(LazyJson::later),
            stream: self.stream,
            prompt_tokens: usage.map(|u| i32::try_from(u.prompt_tokens).unwrap_or(i32::MAX)),
            completion_tokens: usage
                .map(|u| i32::try_from(u.completion_tokens).unwrap_or(i32::MAX)),
            tokens_counted_locally: usage.is_some_and(|u| u.counted_locally),
            cost_usd: total_cost,
            latency_ms: latency.as_secs_f64() * 1000.0,
            ttft_ms: end.ttft_ms,
            ok,
            status_code: i32::from(end.status_code),
            error_kind: end.error_kind.map(str::to_owned),
            attempts: i32::try_from(self.chain.len()).unwrap_or(i32::MAX),
            fallback_chain: self.chain,
            cache_hit: self.cache_hit,
            tags: (!self.options.tags.is_empty()).then(|| serde_json::json!(self.options.tags)),
            assignment: self.assignment,
        };
        if let Some(k) = key {
            k.settle(total_cost, usage.map_or(0, |u| u.completion_tokens));
        }
        outbox.send(Event::Request(Box::new(record)));
        Settled {
            cost_usd: cost,
            latency_s: latency.as_secs_f64(),
        }
    }
}

/// Counters and histograms by `route`, `model`, `provider` (low cardinality:
/// configured names only, "-" when there is none), through handles cached
/// per combination (`telemetry::request_metrics`).
fn record_metrics(
    route: Option<&str>,
    model: Option<&ModelEntry>,
    end: &Ending<'_>,
    usage: Option<Usage>,
    cost: f64,
    latency_s: f64,
) {
    let series = RequestMetrics::global().series(
        route.unwrap_or("-"),
        model.map_or("-", |m| m.name.as_str()),
        model.map_or("-", |m| m.provider.name.as_str()),
    );
    series.request(end.status_code);
    series.latency(latency_s);
    if let Some(kind) = end.error_kind {
        series.error(kind);
    }
    if let Some(u) = usage {
        series.tokens(u.prompt_tokens, u.completion_tokens);
    }
    if cost > 0.0 {
        // The `metrics` crate's counters are integers: count micro-dollars.
        series.cost_microusd((cost * 1e6).round() as u64);
    }
    if let Some(t) = end.ttft_ms {
        series.ttft(t / 1000.0);
    }
}
