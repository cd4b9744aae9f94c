//! SQLite batch writes: multi-row inserts, one transaction per batch, and
//! the hourly rollups of the request rows the batch inserted. (Postgres
//! writes with one array per column instead, `batch_pg.rs`, and keeps its
//! rollups with statement-level triggers.)
//!
//! Why the rollups are summed here and not by a trigger: SQLite has only
//! row-level triggers, and the one that kept `rollup_hourly` and
//! `rollup_latency_hourly` ran two upserts, two `strftime` parses and two
//! feedback probes for every row: ~26,000 of the ~67,000 instructions a
//! request row cost SQLite (callgrind, docs/performance.md). Summed per
//! batch, it is one upsert per (hour, route, model, ...) group. What only
//! the database knows stays in a trigger (migration 20261207000070): the
//! quality feedback stored before its request, credited when the request
//! row arrives.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use foldhash::fast::RandomState;
use sqlx::sqlite::SqliteArguments;
use sqlx::types::Json;
use sqlx::{Arguments, Sqlite, SqlitePool, Transaction};

use super::dashboard::LATENCY_BUCKETS_MS;
use super::records::{Event, FeedbackRecord, LazyJson, RequestRecord};

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

/// The same insert for a batch that repeats a stored row: the ids of the
/// rows actually inserted come back, so the rollups count only those.
/// `RETURNING` fills a temporary table and hands back a row per id, which
/// cost every batch ~4,000 instructions a request when it was the only
/// insert (callgrind, docs/performance.md); replays are rare.
static INSERT_REQUESTS_RETURNING: InsertText =
    InsertText::new(REQUEST_COLUMNS, 34, " ON CONFLICT DO NOTHING RETURNING id");

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
    /// Insert with `RETURNING id`, and count only the rows that went in.
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
    for chunk in statement_chunks(requests) {
        let args = request_arguments(chunk)?;
        if skipped == Skipped::Expected {
            let sql = INSERT_REQUESTS_RETURNING.for_rows(chunk.len());
            let inserted: Vec<String> = sqlx::query_scalar_with(sql, args)
                .fetch_all(&mut *tx)
                .await?;
            rollup.add_inserted(chunk, &inserted);
            continue;
        }
        let sql = INSERT_REQUESTS.for_rows(chunk.len());
        let done = sqlx::query_with(sql, args).execute(&mut *tx).await?;
        // SQLite's change count: rows this statement inserted, not those
        // its triggers wrote.
        if done.rows_affected() != chunk.len() as u64 {
            return Ok(Written::SawStoredRow);
        }
        rollup.add_all(chunk);
    }
    rollup.write(&mut tx).await?;
    for chunk in statement_chunks(&feedback) {
        let sql = INSERT_FEEDBACK.for_rows(chunk.len());
        sqlx::query_with(sql, feedback_arguments(chunk)?)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(Written::Committed)
}

/// `rollup_hourly`'s key: the hour's first second, then route, model,
/// provider, policy version, API key and tenant ('' for none).
type HourKey<'a> = (i64, [&'a str; 6]);

/// One `rollup_hourly` group's sums over the rows of a batch (quality is
/// credited by the feedback triggers, not here).
#[derive(Default)]
struct Sums {
    requests: i64,
    errors: i64,
    cost_usd: f64,
    prompt_tokens: i64,
    completion_tokens: i64,
    latency_ms_sum: f64,
    ttft_ms_sum: f64,
    ttft_count: i64,
}

/// The rollup rows a batch adds to, summed in the writer.
#[derive(Default)]
struct Rollup<'a> {
    // foldhash, not SipHash: the keys are our own rows' text, and SipHash
    // was ~1,400 instructions a request here (callgrind, c = 64).
    hourly: HashMap<HourKey<'a>, Sums, RandomState>,
    /// (hour, model, latency bucket) -> requests.
    latency: HashMap<(i64, &'a str, i64), i64, RandomState>,
}

/// The hour a row counts in, as the dashboards read it: Unix seconds of
/// the hour's start (SQLite's `strftime('%s', created_at) / 3600 * 3600`).
fn hour_of(r: &RequestRecord) -> i64 {
    r.created_at.timestamp() / 3600 * 3600
}

/// The largest bucket whose lower bound is at or below `latency_ms`.
fn latency_bucket(latency_ms: f64) -> i64 {
    let above = LATENCY_BUCKETS_MS.partition_point(|&lower| lower <= latency_ms);
    above.saturating_sub(1) as i64
}

impl<'a> Rollup<'a> {
    /// Counts the rows of `chunk` whose ids are in `inserted` (a replayed
    /// row was skipped by the insert and is not counted again).
    fn add_inserted(&mut self, chunk: &[&'a RequestRecord], inserted: &[String]) {
        let new: HashSet<&str, RandomState> = inserted.iter().map(String::as_str).collect();
        for r in chunk.iter().filter(|r| new.contains(r.id.as_str())) {
            self.add(r);
        }
    }

    fn add_all(&mut self, chunk: &[&'a RequestRecord]) {
        for r in chunk {
            self.add(r);
        }
    }

    fn add(&mut self, r: &'a RequestRecord) {
        let hour = hour_of(r);
        let text = |v: &'a Option<String>| v.as_deref().unwrap_or("");
        let model = text(&r.model);
        let key = [
            text(&r.route),
            model,
            text(&r.provider),
            text(&r.policy_version),
            text(&r.api_key_id),
            text(&r.tenant),
        ];
        let s = self.hourly.entry((hour, key)).or_default();
        s.requests += 1;
        s.errors += i64::from(!r.ok);
        s.cost_usd += r.cost_usd;
        s.prompt_tokens += i64::from(r.prompt_tokens.unwrap_or(0));
        s.completion_tokens += i64::from(r.completion_tokens.unwrap_or(0));
        s.latency_ms_sum += r.latency_ms;
        s.ttft_ms_sum += r.ttft_ms.unwrap_or(0.0);
        s.ttft_count += i64::from(r.ttft_ms.is_some());
        *self
            .latency
            .entry((hour, model, latency_bucket(r.latency_ms)))
            .or_default() += 1;
    }

    /// One upsert per group, each a cached one-row statement.
    async fn write(&self, tx: &mut Transaction<'_, Sqlite>) -> Result<(), sqlx::Error> {
        const HOURLY: &str = "INSERT INTO rollup_hourly (hour, route, model, provider, \
            policy_version, api_key_id, tenant, requests, errors, cost_usd, prompt_tokens, \
            completion_tokens, latency_ms_sum, ttft_ms_sum, ttft_count) \
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
            ON CONFLICT (hour, route, model, provider, policy_version, api_key_id, tenant) \
            DO UPDATE SET requests = requests + excluded.requests, \
            errors = errors + excluded.errors, cost_usd = cost_usd + excluded.cost_usd, \
            prompt_tokens = prompt_tokens + excluded.prompt_tokens, \
            completion_tokens = completion_tokens + excluded.completion_tokens, \
            latency_ms_sum = latency_ms_sum + excluded.latency_ms_sum, \
            ttft_ms_sum = ttft_ms_sum + excluded.ttft_ms_sum, \
            ttft_count = ttft_count + excluded.ttft_count";
        const LATENCY: &str = "INSERT INTO rollup_latency_hourly (hour, model, bucket, requests) \
            VALUES (?, ?, ?, ?) \
            ON CONFLICT (hour, model, bucket) DO UPDATE SET requests = requests + excluded.requests";
        for ((hour, key), s) in &self.hourly {
            let mut q = sqlx::query(HOURLY).bind(hour);
            for part in key {
                q = q.bind(*part);
            }
            q.bind(s.requests)
                .bind(s.errors)
                .bind(s.cost_usd)
                .bind(s.prompt_tokens)
                .bind(s.completion_tokens)
                .bind(s.latency_ms_sum)
                .bind(s.ttft_ms_sum)
                .bind(s.ttft_count)
                .execute(&mut **tx)
                .await?;
        }
        for ((hour, model, bucket), requests) in &self.latency {
            sqlx::query(LATENCY)
                .bind(hour)
                .bind(*model)
                .bind(bucket)
                .bind(requests)
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }
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

    #[test]
    fn a_latency_lands_in_the_largest_bucket_at_or_below_it() {
        let last = LATENCY_BUCKETS_MS.len() as i64 - 1;
        for (ms, want) in [
            (0.0, 0),
            (4.999, 0),
            (5.0, 1),
            (7.0, 1),
            (99.9, 6),
            (100.0, 7),
            (119_999.0, last - 1),
            (120_000.0, last),
            (1e9, last),
        ] {
            assert_eq!(latency_bucket(ms), want, "{ms} ms");
        }
    }
}
