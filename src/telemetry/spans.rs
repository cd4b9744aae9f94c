//! Tracing spans for one request, its decision and each upstream call, with
//! OpenTelemetry GenAI semantic-convention field names (`gen_ai.*`), so an
//! OTLP pipeline maps them without translation (`otlp.rs` exports them
//! when an endpoint is configured; `otel.name` / `otel.kind` /
//! `otel.status_code` set the exported span's name, kind and status, as the
//! GenAI conventions name spans `{operation} {model}`). Only names, counts
//! and ids are recorded: never prompts, completions or keys.

use tracing::field::Empty;
use tracing::Span;

use crate::config::ProviderKind;

/// The span of one chat request; fields are filled as they become known.
pub fn request(request_id: &str) -> Span {
    tracing::info_span!(
        "chat",
        request_id,
        "otel.name" = Empty,
        "otel.kind" = "server",
        "otel.status_code" = Empty,
        "gen_ai.operation.name" = "chat",
        "gen_ai.request.model" = Empty,
        "gen_ai.response.model" = Empty,
        "gen_ai.system" = Empty,
        "gen_ai.provider.name" = Empty,
        "gen_ai.usage.input_tokens" = Empty,
        "gen_ai.usage.output_tokens" = Empty,
        "switchboard.route" = Empty,
        "switchboard.cost_usd" = Empty,
        "error.type" = Empty,
    )
}

/// The span around the policy's decision for a route. Also names the
/// current (request) span `chat {route}` for OTLP export: the exported span
/// starts when its first child does, so its name must be set before this one.
pub fn decision(route: &str) -> Span {
    Span::current().record("otel.name", format!("chat {route}"));
    tracing::info_span!("decide", "switchboard.route" = route)
}

/// The span of one upstream call (one attempt on one model).
pub fn upstream(model: &str, upstream_model: &str, kind: ProviderKind) -> Span {
    tracing::info_span!(
        "upstream",
        "otel.name" = format!("chat {upstream_model}"),
        "otel.kind" = "client",
        "gen_ai.operation.name" = "chat",
        "gen_ai.system" = system(kind),
        "gen_ai.provider.name" = system(kind),
        "gen_ai.request.model" = upstream_model,
        "switchboard.model" = model,
    )
}

/// `gen_ai.system` as the semantic conventions spell it.
pub fn system(kind: ProviderKind) -> &'static str {
    match kind {
        ProviderKind::Openai => "openai",
        ProviderKind::Anthropic => "anthropic",
    }
}

/// What the request asked for.
pub fn record_request(span: &Span, requested_model: &str, route: Option<&str>) {
    span.record("gen_ai.request.model", requested_model);
    if route.is_none() && !span.is_disabled() {
        // A direct model request has no decision span to name it. (Not
        // formatted for a span nothing records: the default, without OTLP.)
        span.record("otel.name", format!("chat {requested_model}"));
    }
    if let Some(r) = route {
        span.record("switchboard.route", r);
    }
}

/// How it ended: the model that answered, its usage and cost, or the error.
pub fn record_outcome(
    span: &Span,
    model: Option<(&str, ProviderKind)>,
    tokens: Option<(u32, u32)>,
    cost_usd: f64,
    error_kind: Option<&str>,
) {
    if let Some((name, kind)) = model {
        span.record("gen_ai.response.model", name);
        span.record("gen_ai.system", system(kind));
        span.record("gen_ai.provider.name", system(kind));
    }
    if let Some((input, output)) = tokens {
        span.record("gen_ai.usage.input_tokens", input);
        span.record("gen_ai.usage.output_tokens", output);
    }
    span.record("switchboard.cost_usd", cost_usd);
    if let Some(k) = error_kind {
        span.record("error.type", k);
        span.record("otel.status_code", "ERROR");
    }
}
