//! Postgres batch inserts with one array per column:
//! `INSERT INTO t (...) SELECT ... FROM UNNEST($1::text[], $2::timestamptz[], ...)`.
//!
//! Why not the generic multi-row `VALUES` of `batch/` (which SQLite still
//! uses): there every row costs 34 bind parameters (500 rows = 17,000 binds,
//! each described, encoded and decoded on its own) and batches are cut into
//! 500-row statements, each firing the rollup triggers. Here a table's rows
//! are 34 (or 7) parameters in one statement whatever the batch size; the
//! single Postgres backend that writes the outbox's batches one after the
//! other does far less per row (docs/performance.md, "Postgres writes").
//!
//! Same semantics as `batch/`: one transaction per batch, requests before
//! feedback, rows in batch order, `ON CONFLICT DO NOTHING` so a replayed
//! batch is harmless. JSON columns travel as text and are cast to `jsonb` by
//! the server, exactly the text `sqlx::types::Json` would send.

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, Transaction};

use super::batch::split;
use super::records::{Event, FeedbackRecord, LazyJson, RequestRecord};

const INSERT_REQUESTS: &str = "INSERT INTO requests (id, created_at, api_key_id, tenant, route, \
    tier, user_id, requested_model, model, provider, eligible_models, policy_version, propensity, \
    features, decision, stream, prompt_tokens, completion_tokens, tokens_counted_locally, \
    cost_usd, latency_ms, ttft_ms, status, status_code, error_kind, fallback_chain, attempts, \
    cache_hit, tags, experiment, experiment_arm, shadow, shadow_of, counterfactual) \
    SELECT id, created_at, api_key_id, tenant, route, tier, user_id, requested_model, model, \
    provider, eligible_models::jsonb, policy_version, propensity, features::jsonb, \
    decision::jsonb, stream, prompt_tokens, completion_tokens, tokens_counted_locally, cost_usd, \
    latency_ms, ttft_ms, status, status_code, error_kind, fallback_chain::jsonb, attempts, \
    cache_hit, tags::jsonb, experiment, experiment_arm, shadow, shadow_of, \
    counterfactual::jsonb \
    FROM UNNEST($1::text[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::text[], \
    $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::float8[], \
    $14::text[], $15::text[], $16::bool[], $17::int4[], $18::int4[], $19::bool[], \
    $20::float8[], $21::float8[], $22::float8[], $23::text[], $24::int4[], $25::text[], \
    $26::text[], $27::int4[], $28::bool[], $29::text[], $30::text[], $31::text[], \
    $32::bool[], $33::text[], $34::text[]) \
    AS u(id, created_at, api_key_id, tenant, route, tier, user_id, requested_model, model, \
    provider, eligible_models, policy_version, propensity, features, decision, stream, \
    prompt_tokens, completion_tokens, tokens_counted_locally, cost_usd, latency_ms, ttft_ms, \
    status, status_code, error_kind, fallback_chain, attempts, cache_hit, tags, experiment, \
    experiment_arm, shadow, shadow_of, counterfactual) \
    ON CONFLICT DO NOTHING";

const INSERT_FEEDBACK: &str = "INSERT INTO feedback (request_id, created_at, metric, value, \
    source, comment, feedback_id) \
    SELECT * FROM UNNEST($1::text[], $2::timestamptz[], $3::text[], $4::float8[], $5::text[], \
    $6::text[], $7::text[]) \
    ON CONFLICT (feedback_id) DO NOTHING";

/// Writes a batch in one transaction: one statement for its requests, one
/// for its feedback.
pub(super) async fn write_events(pool: &PgPool, events: &[Event]) -> Result<(), sqlx::Error> {
    let (requests, feedback) = split(events);
    let mut tx = pool.begin().await?;
    // Requests first: feedback in the same batch may refer to them.
    if !requests.is_empty() {
        insert_requests(&mut tx, &requests).await?;
    }
    if !feedback.is_empty() {
        insert_feedback(&mut tx, &feedback).await?;
    }
    tx.commit().await
}

fn json_text<T: serde::Serialize + ?Sized>(v: &T) -> Result<String, sqlx::Error> {
    serde_json::to_string(v).map_err(|e| sqlx::Error::Encode(Box::new(e)))
}

/// The request rows as columns (struct of arrays), in batch order,
/// borrowing the records' strings.
#[derive(Default)]
struct RequestColumns<'a> {
    id: Vec<&'a str>,
    created_at: Vec<DateTime<Utc>>,
    api_key_id: Vec<Option<&'a str>>,
    tenant: Vec<Option<&'a str>>,
    route: Vec<Option<&'a str>>,
    tier: Vec<Option<&'a str>>,
    user_id: Vec<Option<&'a str>>,
    requested_model: Vec<&'a str>,
    model: Vec<Option<&'a str>>,
    provider: Vec<Option<&'a str>>,
    eligible_models: Vec<String>,
    policy_version: Vec<Option<&'a str>>,
    propensity: Vec<Option<f64>>,
    features: Vec<Option<String>>,
    decision: Vec<Option<String>>,
    stream: Vec<bool>,
    prompt_tokens: Vec<Option<i32>>,
    completion_tokens: Vec<Option<i32>>,
    tokens_counted_locally: Vec<bool>,
    cost_usd: Vec<f64>,
    latency_ms: Vec<f64>,
    ttft_ms: Vec<Option<f64>>,
    status: Vec<&'static str>,
    status_code: Vec<i32>,
    error_kind: Vec<Option<&'a str>>,
    fallback_chain: Vec<String>,
    attempts: Vec<i32>,
    cache_hit: Vec<bool>,
    tags: Vec<Option<String>>,
    experiment: Vec<Option<&'a str>>,
    experiment_arm: Vec<Option<&'a str>>,
    shadow: Vec<bool>,
    shadow_of: Vec<Option<&'a str>>,
    counterfactual: Vec<Option<String>>,
}

impl<'a> RequestColumns<'a> {
    fn push(&mut self, r: &'a RequestRecord) -> Result<(), sqlx::Error> {
        self.id.push(&r.id);
        self.created_at.push(r.created_at);
        self.api_key_id.push(r.api_key_id.as_deref());
        self.tenant.push(r.tenant.as_deref());
        self.route.push(r.route.as_deref());
        self.tier.push(r.tier.as_deref());
        self.user_id.push(r.user_id.as_deref());
        self.requested_model.push(&r.requested_model);
        self.model.push(r.model.as_deref());
        self.provider.push(r.provider.as_deref());
        self.eligible_models.push(json_text(&r.eligible_models)?);
        self.policy_version.push(r.policy_version.as_deref());
        self.propensity.push(r.propensity);
        self.features
            .push(r.features.as_deref().map(json_text).transpose()?);
        self.decision.push(
            r.decision
                .as_ref()
                .and_then(LazyJson::text)
                .map(|t| t.get().to_owned()),
        );
        self.stream.push(r.stream);
        self.prompt_tokens.push(r.prompt_tokens);
        self.completion_tokens.push(r.completion_tokens);
        self.tokens_counted_locally.push(r.tokens_counted_locally);
        self.cost_usd.push(r.cost_usd);
        self.latency_ms.push(r.latency_ms);
        self.ttft_ms.push(r.ttft_ms);
        self.status.push(r.status());
        self.status_code.push(r.status_code);
        self.error_kind.push(r.error_kind.as_deref());
        self.fallback_chain.push(json_text(&r.fallback_chain)?);
        self.attempts.push(r.attempts);
        self.cache_hit.push(r.cache_hit);
        self.tags.push(r.tags.as_ref().map(json_text).transpose()?);
        let a = &r.assignment;
        self.experiment.push(a.experiment.as_deref());
        self.experiment_arm.push(a.experiment_arm.as_deref());
        self.shadow.push(a.shadow);
        self.shadow_of.push(a.shadow_of.as_deref());
        self.counterfactual
            .push(a.counterfactual.as_ref().map(json_text).transpose()?);
        Ok(())
    }
}

async fn insert_requests(
    tx: &mut Transaction<'_, Postgres>,
    rows: &[&RequestRecord],
) -> Result<(), sqlx::Error> {
    let mut c = RequestColumns::default();
    for r in rows {
        c.push(r)?;
    }
    sqlx::query(INSERT_REQUESTS)
        .bind(c.id)
        .bind(c.created_at)
        .bind(c.api_key_id)
        .bind(c.tenant)
        .bind(c.route)
        .bind(c.tier)
        .bind(c.user_id)
        .bind(c.requested_model)
        .bind(c.model)
        .bind(c.provider)
        .bind(c.eligible_models)
        .bind(c.policy_version)
        .bind(c.propensity)
        .bind(c.features)
        .bind(c.decision)
        .bind(c.stream)
        .bind(c.prompt_tokens)
        .bind(c.completion_tokens)
        .bind(c.tokens_counted_locally)
        .bind(c.cost_usd)
        .bind(c.latency_ms)
        .bind(c.ttft_ms)
        .bind(c.status)
        .bind(c.status_code)
        .bind(c.error_kind)
        .bind(c.fallback_chain)
        .bind(c.attempts)
        .bind(c.cache_hit)
        .bind(c.tags)
        .bind(c.experiment)
        .bind(c.experiment_arm)
        .bind(c.shadow)
        .bind(c.shadow_of)
        .bind(c.counterfactual)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn insert_feedback(
    tx: &mut Transaction<'_, Postgres>,
    rows: &[&FeedbackRecord],
) -> Result<(), sqlx::Error> {
    let n = rows.len();
    let (mut request_id, mut created_at, mut metric, mut value) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut source, mut comment, mut feedback_id) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for f in rows {
        request_id.push(f.request_id.as_str());
        created_at.push(f.created_at);
        metric.push(f.metric.as_str());
        value.push(f.value);
        source.push(f.source.as_deref());
        comment.push(f.comment.as_deref());
        feedback_id.push(f.feedback_id.as_deref());
    }
    sqlx::query(INSERT_FEEDBACK)
        .bind(request_id)
        .bind(created_at)
        .bind(metric)
        .bind(value)
        .bind(source)
        .bind(comment)
        .bind(feedback_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}
