//! Multi-row inserts for a batch of events, one transaction per batch.
//! Written once, generic over the backend (built with
//! `QueryBuilder::push_bind`, never `format!`); SQLite writes with these,
//! Postgres with one array per column instead (`batch_pg.rs`).

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::{Database, Encode, QueryBuilder, Type};

use super::records::{AttemptRecord, Event, FeedbackRecord, JsonText, LazyJson, RequestRecord};

/// Most rows per statement: keeps bind parameters under SQLite's limit
/// (256 rows x 29 columns = 7,424 binds of at most 32,766).
pub(super) const ROWS_PER_STATEMENT: usize = 256;

/// Cuts `rows` into statements of power-of-two sizes (256, 128, ..., 1),
/// largest first. The statement text depends only on its row count, so
/// there are at most nine texts per table and every one stays in the
/// connection's prepared-statement cache. Cutting at whatever size a batch
/// happened to have made nearly every batch a new text: SQLite parsed and
/// planned a ~26-row insert (with its triggers) for each, ~400,000
/// instructions a time, about 36,000 per request at one request in flight
/// (callgrind, docs/performance.md).
pub(super) fn statement_chunks<T>(mut rows: &[T]) -> impl Iterator<Item = &[T]> {
    std::iter::from_fn(move || {
        if rows.is_empty() {
            return None;
        }
        let n = ROWS_PER_STATEMENT.min(1 << rows.len().ilog2());
        let (head, tail) = rows.split_at(n);
        rows = tail;
        Some(head)
    })
}

/// Splits a batch into its request rows and feedback rows, in order.
pub(super) fn split(events: &[Event]) -> (Vec<&RequestRecord>, Vec<&FeedbackRecord>) {
    let mut requests = Vec::new();
    let mut feedback = Vec::new();
    for e in events {
        match e {
            Event::Request(r) => requests.push(r.as_ref()),
            Event::Feedback(f) => feedback.push(f),
        }
    }
    (requests, feedback)
}

/// `INSERT INTO requests ... VALUES (...), (...) ON CONFLICT DO NOTHING`: the
/// key is (id, created_at) on partitioned Postgres, id on SQLite; a replayed
/// record repeats both, so no conflict target is named.
pub(super) fn insert_requests<'a, DB>(rows: &[&RequestRecord]) -> QueryBuilder<'a, DB>
where
    DB: Database,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Encode<'q, DB> + Type<DB>,
    for<'q> f64: Encode<'q, DB> + Type<DB>,
    for<'q> Option<f64>: Encode<'q, DB> + Type<DB>,
    for<'q> i32: Encode<'q, DB> + Type<DB>,
    for<'q> Option<i32>: Encode<'q, DB> + Type<DB>,
    for<'q> bool: Encode<'q, DB> + Type<DB>,
    for<'q> DateTime<Utc>: Encode<'q, DB> + Type<DB>,
    for<'q> Json<serde_json::Value>: Encode<'q, DB> + Type<DB>,
    for<'q> Option<Json<serde_json::Value>>: Encode<'q, DB> + Type<DB>,
    for<'q> Json<Vec<String>>: Encode<'q, DB> + Type<DB>,
    for<'q> Json<Vec<AttemptRecord>>: Encode<'q, DB> + Type<DB>,
    for<'q> Option<Json<Vec<f64>>>: Encode<'q, DB> + Type<DB>,
    for<'q> Option<Json<JsonText>>: Encode<'q, DB> + Type<DB>,
{
    // Typed values go to `Json` as they are: no `serde_json::Value` per
    // element in between (a feature vector was 64 of them per row).
    let mut qb = QueryBuilder::<DB>::new(
        "INSERT INTO requests (id, created_at, api_key_id, tenant, route, tier, user_id, \
         requested_model, model, provider, eligible_models, policy_version, propensity, \
         features, decision, stream, prompt_tokens, completion_tokens, \
         tokens_counted_locally, cost_usd, latency_ms, ttft_ms, status, status_code, \
         error_kind, fallback_chain, attempts, cache_hit, tags, experiment, experiment_arm, \
         shadow, shadow_of, counterfactual) ",
    );
    qb.push_values(rows.iter().copied(), |mut row, r| {
        row.push_bind(r.id.clone())
            .push_bind(r.created_at)
            .push_bind(r.api_key_id.clone())
            .push_bind(r.tenant.clone())
            .push_bind(r.route.clone())
            .push_bind(r.tier.clone())
            .push_bind(r.user_id.clone())
            .push_bind(r.requested_model.clone())
            .push_bind(r.model.clone())
            .push_bind(r.provider.clone())
            .push_bind(Json(r.eligible_models.clone()))
            .push_bind(r.policy_version.clone())
            .push_bind(r.propensity)
            .push_bind(r.features.clone().map(Json))
            .push_bind(
                r.decision
                    .as_ref()
                    .and_then(LazyJson::text)
                    .map(|t| Json(t.into_owned())),
            )
            .push_bind(r.stream)
            .push_bind(r.prompt_tokens)
            .push_bind(r.completion_tokens)
            .push_bind(r.tokens_counted_locally)
            .push_bind(r.cost_usd)
            .push_bind(r.latency_ms)
            .push_bind(r.ttft_ms)
            .push_bind(r.status().to_owned())
            .push_bind(r.status_code)
            .push_bind(r.error_kind.clone())
            .push_bind(Json(r.fallback_chain.clone()))
            .push_bind(r.attempts)
            .push_bind(r.cache_hit)
            .push_bind(r.tags.clone().map(Json))
            .push_bind(r.assignment.experiment.clone())
            .push_bind(r.assignment.experiment_arm.clone())
            .push_bind(r.assignment.shadow)
            .push_bind(r.assignment.shadow_of.clone())
            .push_bind(r.assignment.counterfactual.clone().map(Json));
    });
    qb.push(" ON CONFLICT DO NOTHING");
    qb
}

/// `INSERT INTO feedback ... ON CONFLICT (feedback_id) DO NOTHING`: a
/// repeated idempotency key is accepted and stored once.
pub(super) fn insert_feedback<'a, DB>(rows: &[&FeedbackRecord]) -> QueryBuilder<'a, DB>
where
    DB: Database,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Encode<'q, DB> + Type<DB>,
    for<'q> f64: Encode<'q, DB> + Type<DB>,
    for<'q> Option<f64>: Encode<'q, DB> + Type<DB>,
    for<'q> i32: Encode<'q, DB> + Type<DB>,
    for<'q> Option<i32>: Encode<'q, DB> + Type<DB>,
    for<'q> bool: Encode<'q, DB> + Type<DB>,
    for<'q> DateTime<Utc>: Encode<'q, DB> + Type<DB>,
    for<'q> Json<serde_json::Value>: Encode<'q, DB> + Type<DB>,
    for<'q> Option<Json<serde_json::Value>>: Encode<'q, DB> + Type<DB>,
{
    let mut qb = QueryBuilder::<DB>::new(
        "INSERT INTO feedback (request_id, created_at, metric, value, source, comment, feedback_id) ",
    );
    qb.push_values(rows.iter().copied(), |mut row, f| {
        row.push_bind(f.request_id.clone())
            .push_bind(f.created_at)
            .push_bind(f.metric.clone())
            .push_bind(f.value)
            .push_bind(f.source.clone())
            .push_bind(f.comment.clone())
            .push_bind(f.feedback_id.clone());
    });
    qb.push(" ON CONFLICT (feedback_id) DO NOTHING");
    qb
}

/// Writes a batch in one transaction on a concrete pool (the generic
/// builders above produce the statements).
macro_rules! write_events {
    ($pool:expr, $db:ty, $events:expr) => {{
        let (requests, feedback) = $crate::store::batch::split($events);
        let mut tx = $pool.begin().await?;
        // Requests first: feedback in the same batch may refer to them.
        for chunk in $crate::store::batch::statement_chunks(&requests) {
            let mut qb = $crate::store::batch::insert_requests::<$db>(chunk);
            qb.build().execute(&mut *tx).await?;
        }
        for chunk in $crate::store::batch::statement_chunks(&feedback) {
            let mut qb = $crate::store::batch::insert_feedback::<$db>(chunk);
            qb.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }};
}
pub(super) use write_events;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_powers_of_two_in_order_and_cover_every_row() {
        for n in [0usize, 1, 2, 3, 26, 255, 256, 257, 500, 1000, 1023] {
            let rows: Vec<usize> = (0..n).collect();
            let chunks: Vec<&[usize]> = statement_chunks(&rows).collect();
            assert!(chunks
                .iter()
                .all(|c| c.len().is_power_of_two() && c.len() <= ROWS_PER_STATEMENT));
            assert!(chunks.windows(2).all(|w| w[0].len() >= w[1].len()));
            let flat: Vec<usize> = chunks.concat();
            assert_eq!(flat, rows, "n = {n}");
        }
        let rows = vec![0u8; 26];
        let sizes: Vec<usize> = statement_chunks(&rows).map(<[u8]>::len).collect();
        assert_eq!(sizes, [16, 8, 2]);
    }
}
