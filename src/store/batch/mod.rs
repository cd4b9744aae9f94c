//! SQLite batch writes: multi-row inserts, one transaction per batch, and
//! the hourly rollups of the request rows the batch inserted. (Postgres
//! writes with one array per column instead, `batch_pg.rs`, and keeps its
//! rollups with statement-level triggers.)
//!
//! Why the rollups are summed here and not by triggers: SQLite has only
//! row-level triggers. The one that kept `rollup_hourly` and
//! `rollup_latency_hourly` ran two upserts, two `strftime` parses and two
//! feedback probes for every row: ~26,000 of the ~67,000 instructions a
//! request row cost SQLite (callgrind, docs/performance.md). Summed per
//! batch, it is one upsert per (hour, route, model, ...) group. And any
//! row-level trigger on `requests` makes SQLite copy each inserted row
//! through a temporary table, so the error rollup and the credit of
//! feedback stored before its request (the last two triggers, dropped by
//! migration 20261207000080) are done here too, once per batch.

mod rollup;

use std::sync::OnceLock;

use sqlx::sqlite::SqliteArguments;
use sqlx::types::Json;
use sqlx::{Arguments, Sqlite, SqlitePool};

use super::records::{Event, FeedbackRecord, LazyJson, RequestRecord};
use rollup::Rollup;

/// Most rows per statement: keeps bind parameters under SQLite's limit
/// (256 rows x 34 columns = 8,704 binds of at most 32,766).
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

/// `INSERT INTO <table> (<columns>) VALUES (?, ...), ... <tail>` for each
/// power-of-two row count, written the first time it is needed and kept:
/// building it with a query builder formatted every placeholder and
/// separator again for every row of every batch.
struct InsertText {
    head: &'static str,
    width: usize,
    tail: &'static str,
    by_log2_rows: OnceLock<Vec<String>>,
}

impl InsertText {
    const fn new(head: &'static str, width: usize, tail: &'static str) -> Self {
        Self {
            head,
            width,
            tail,
            by_log2_rows: OnceLock::new(),
        }
    }

    /// The text for `rows` rows, a power of two up to `ROWS_PER_STATEMENT`.
    fn for_rows(&self, rows: usize) -> &str {
        let texts = self.by_log2_rows.get_or_init(|| {
            let tuple = format!("({})", vec!["?"; self.width].join(", "));
            (0..=ROWS_PER_STATEMENT.ilog2())
                .map(|log| {
                    let values = vec![tuple.as_str(); 1 << log].join(", ");
                    format!("{} VALUES {values}{}", self.head, self.tail)
                })
                .collect()
        });
        debug_assert!(rows.is_power_of_two() && rows <= ROWS_PER_STATEMENT);
        &texts[rows.ilog2() as usize]
    }
}

const REQUEST_COLUMNS: &str = "INSERT INTO requests (id, created_at, api_key_id, tenant, route, \
     tier, user_id, requested_model, model, provider, eligible_models, policy_version, \
     propensity, features, decision, stream, prompt_tokens, completion_tokens, \
     tokens_counted_locally, cost_usd, latency_ms, ttft_ms, status, status_code, error_kind, \
     fallback_chain, attempts, cache_hit, tags, experiment, experiment_arm, shadow, shadow_of, \
     counterfactual)";

/// The key is `id`; a replayed record repeats it and is skipped. How many
/// rows went in comes back as the statement's change count: when that is
/// every row of the chunk, the rollups count them all.
static INSERT_REQUESTS: InsertText =
    InsertText::new(REQUEST_COLUMNS, 34, " ON CONFLICT DO NOTHING");

/// The same insert for a batch that repeats a stored row: the rowids and
/// ids of the rows actually inserted come back, so the rollups count only
/// those. `RETURNING` fills a temporary table and hands back a row per id,
/// which cost every batch ~4,000 instructions a request when it was the
/// only insert (callgrind, docs/performance.md); replays are rare.
static INSERT_REQUESTS_RETURNING: InsertText = InsertText::new(
    REQUEST_COLUMNS,
    34,
    " ON CONFLICT DO NOTHING RETURNING rowid, id",
);

/// Quality feedback stored before its request row (a stream whose feedback
/// came before its end, or a batch replayed after a later one) is credited
/// to the request's hour when the row arrives, with its latest value;
/// feedback stored after its row is credited by the `feedback_rollup`
/// trigger. Once per batch, over the rows it inserted (rowid at or above
/// the bound). A row-level trigger on `requests` did this before
/// (migration 20261207000080), and any such trigger makes SQLite copy
/// every row of a multi-row insert through a temporary table first.
const CREDIT_EARLY_FEEDBACK: &str = "INSERT INTO rollup_hourly (hour, route, model, provider, \
    policy_version, api_key_id, tenant, rewarded, reward_sum) \
    SELECT CAST(strftime('%s', r.created_at) AS INTEGER) / 3600 * 3600, COALESCE(r.route, ''), \
        COALESCE(r.model, ''), COALESCE(r.provider, ''), COALESCE(r.policy_version, ''), \
        COALESCE(r.api_key_id, ''), COALESCE(r.tenant, ''), 1, \
        (SELECT value FROM feedback WHERE request_id = r.id AND metric = 'quality' \
            ORDER BY created_at DESC, id DESC LIMIT 1) \
    FROM requests r \
    WHERE r.rowid >= ? \
        AND EXISTS (SELECT 1 FROM feedback WHERE request_id = r.id AND metric = 'quality') \
    ON CONFLICT (hour, route, model, provider, policy_version, api_key_id, tenant) DO UPDATE SET \
        rewarded = rewarded + excluded.rewarded, reward_sum = reward_sum + excluded.reward_sum";

/// A repeated idempotency key is accepted and stored once.
static INSERT_FEEDBACK: InsertText = InsertText::new(
    "INSERT INTO feedback (request_id, created_at, metric, value, source, comment, feedback_id)",
    7,
    " ON CONFLICT (feedback_id) DO NOTHING",
);

/// Adds one value to `args`, as the error type of the statement.
fn add<'q, T>(args: &mut SqliteArguments<'q>, value: T) -> Result<(), sqlx::Error>
where
    T: 'q + sqlx::Encode<'q, Sqlite> + sqlx::Type<Sqlite>,
{
    args.add(value).map_err(sqlx::Error::Encode)
}

fn request_arguments<'q>(rows: &[&'q RequestRecord]) -> Result<SqliteArguments<'q>, sqlx::Error> {
    let mut args = SqliteArguments::default();
    args.reserve(rows.len() * INSERT_REQUESTS.width, 0);
    for r in rows {
        add(&mut args, r.id.as_str())?;
        add(&mut args, r.created_at)?;
        add(&mut args, r.api_key_id.as_deref())?;
        add(&mut args, r.tenant.as_deref())?;
        add(&mut args, r.route.as_deref())?;
        add(&mut args, r.tier.as_deref())?;
        add(&mut args, r.user_id.as_deref())?;
        add(&mut args, r.requested_model.as_str())?;
        add(&mut args, r.model.as_deref())?;
        add(&mut args, r.provider.as_deref())?;
        add(&mut args, Json(&r.eligible_models))?;
        add(&mut args, r.policy_version.as_deref())?;
        add(&mut args, r.propensity)?;
        add(&mut args, r.features.as_ref().map(Json))?;
        // The receipt's text as it is (a `Json` of it would copy it through
        // the serializer to the same text).
        let decision = r.decision.as_ref().and_then(LazyJson::text);
        add(&mut args, decision.map(|t| t.get().to_owned()))?;
        add(&mut args, r.stream)?;
        add(&mut args, r.prompt_tokens)?;
        add(&mut args, r.completion_tokens)?;
        add(&mut args, r.tokens_counted_locally)?;
        add(&mut args, r.cost_usd)?;
        add(&mut args, r.latency_ms)?;
        add(&mut args, r.ttft_ms)?;
        add(&mut args, r.status())?;
        add(&mut args, r.status_code)?;
        add(&mut args, r.error_kind.as_deref())?;
        add(&mut args, Json(&r.fallback_chain))?;
        add(&mut args, r.attempts)?;
        add(&mut args, r.cache_hit)?;
        add(&mut args, r.tags.as_ref().map(Json))?;
        add(&mut args, r.assignment.experiment.as_deref())?;
        add(&mut args, r.assignment.experiment_arm.as_deref())?;
        add(&mut args, r.assignment.shadow)?;
        add(&mut args, r.assignment.shadow_of.as_deref())?;
        add(&mut args, r.assignment.counterfactual.as_ref().map(Json))?;
    }
    Ok(args)
}

fn feedback_arguments<'q>(rows: &[&'q FeedbackRecord]) -> Result<SqliteArguments<'q>, sqlx::Error> {
    let mut args = SqliteArguments::default();
    args.reserve(rows.len() * INSERT_FEEDBACK.width, 0);
    for f in rows {
        add(&mut args, f.request_id.as_str())?;
        add(&mut args, f.created_at)?;
        add(&mut args, f.metric.as_str())?;
        add(&mut args, f.value)?;
        add(&mut args, f.source.as_deref())?;
        add(&mut args, f.comment.as_deref())?;
        add(&mut args, f.feedback_id.as_deref())?;
    }
    Ok(args)
}

/// Writes a batch in one transaction: its requests, their rollups, then its
/// feedback (which may refer to the requests, and whose own rollup trigger
/// finds them).
pub(super) async fn write_events(pool: &SqlitePool, events: &[Event]) -> Result<(), sqlx::Error> {
    let (requests, feedback) = split(events);
    if write(pool, &requests, &feedback, Skipped::Unexpected).await? == Written::SawStoredRow {
        // Rolled back (the transaction was dropped): again, asking which
        // rows are new.
        write(pool, &requests, &feedback, Skipped::Expected).await?;
    }
    Ok(())
}

/// Whether a batch may repeat rows already stored (a replay of one whose
/// commit was not known to have happened).
#[derive(Clone, Copy, PartialEq)]
enum Skipped {
    /// Insert without `RETURNING`; give up on the first chunk that skipped
    /// a row.
    Unexpected,
    /// Insert with `RETURNING rowid, id`, and count only the rows that went in.
    Expected,
}

#[derive(PartialEq)]
enum Written {
    Committed,
    /// A chunk skipped a stored row and nothing was committed.
    SawStoredRow,
}

async fn write(
    pool: &SqlitePool,
    requests: &[&RequestRecord],
    feedback: &[&FeedbackRecord],
    skipped: Skipped,
) -> Result<Written, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let mut rollup = Rollup::default();
    // The smallest rowid this transaction gave a request row. Rowids go up
    // by one per row (nothing here sets one, and the largest possible is
    // never reached), so the rows inserted are exactly those at or above it.
    let mut first_rowid: Option<i64> = None;
    for chunk in statement_chunks(requests) {
        let args = request_arguments(chunk)?;
        if skipped == Skipped::Expected {
            let sql = INSERT_REQUESTS_RETURNING.for_rows(chunk.len());
            let inserted: Vec<(i64, String)> =
                sqlx::query_as_with(sql, args).fetch_all(&mut *tx).await?;
            let lowest = inserted.iter().map(|(rowid, _)| *rowid).min();
            first_rowid = first_rowid.or(lowest);
            rollup.add_inserted(chunk, inserted.iter().map(|(_, id)| id.as_str()));
            continue;
        }
        let sql = INSERT_REQUESTS.for_rows(chunk.len());
        let done = sqlx::query_with(sql, args).execute(&mut *tx).await?;
        // SQLite's change count: the rows this statement inserted.
        if done.rows_affected() != chunk.len() as u64 {
            return Ok(Written::SawStoredRow);
        }
        first_rowid = first_rowid.or(Some(done.last_insert_rowid() - chunk.len() as i64 + 1));
        rollup.add_all(chunk);
    }
    rollup.write(&mut tx).await?;
    if let Some(first) = first_rowid {
        sqlx::query(CREDIT_EARLY_FEEDBACK)
            .bind(first)
            .execute(&mut *tx)
            .await?;
    }
    for chunk in statement_chunks(feedback) {
        let sql = INSERT_FEEDBACK.for_rows(chunk.len());
        sqlx::query_with(sql, feedback_arguments(chunk)?)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(Written::Committed)
}

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

    #[test]
    fn insert_texts_have_one_placeholder_per_column_per_row_and_are_built_once() {
        for text in [
            &INSERT_REQUESTS,
            &INSERT_REQUESTS_RETURNING,
            &INSERT_FEEDBACK,
        ] {
            let columns = text.head.split('(').nth(1).unwrap().split(',').count();
            assert_eq!(columns, text.width, "{}", text.head);
            for log in 0..=ROWS_PER_STATEMENT.ilog2() {
                let rows = 1usize << log;
                let sql = text.for_rows(rows);
                assert_eq!(sql.matches('?').count(), rows * text.width, "{rows} rows");
                assert!(sql.starts_with(text.head) && sql.ends_with(text.tail));
                assert!(std::ptr::eq(sql, text.for_rows(rows)));
            }
        }
    }
}
