//! SQLite batch writes: one transaction per batch through a connection of
//! the outbox's own, multi-row inserts, and the hourly rollups of the
//! request rows the batch inserted. (Postgres writes with
//! one array per column instead, `batch_pg.rs`, and keeps its rollups with
//! statement-level triggers.)
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
//!
//! Why rusqlite and a connection of its own rather than sqlx's pool:
//! sqlx copied every borrowed value of a row into an owned one, cleared
//! all of a statement's bindings after each run, and handed each statement
//! to a connection's own thread; and the pool gave each batch whichever of
//! its connections was idle, whose page cache the previous batch's commit
//! on another connection had made stale, so SQLite read the B-trees' pages
//! back from the file (docs/performance.md, session 19). Here the batch is
//! written on the thread that calls, each value is bound where it lies
//! (SQLite copies it once), and the one connection's cache stays warm.
//! Multi-row rather than one prepared row at a time: each run of a
//! statement opens its cursors afresh and seeks every index from its root,
//! where one statement's rows append behind the cursor's last position
//! (one-row statements cost ~6,500 more instructions a request, callgrind).

mod rollup;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use chrono::SecondsFormat;
use foldhash::fast::RandomState;
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OpenFlags, Statement, ToSql, TransactionBehavior};
use serde::Serialize;

use super::records::{Event, FeedbackRecord, JsonText, LazyJson, RequestRecord};
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

/// The outbox's connection, opened on the first batch and again after a
/// batch failed (a connection in an unknown state is not reused).
#[derive(Debug)]
pub(super) struct Writer {
    path: PathBuf,
    conn: Mutex<Option<Connection>>,
}

impl Writer {
    /// For the database file `path`, which the pool creates and migrates.
    pub(super) fn new(path: PathBuf) -> Self {
        Self {
            path,
            conn: Mutex::new(None),
        }
    }

    /// Writes a batch in one transaction: its requests, their rollups, then
    /// its feedback (which may refer to the requests, and whose own rollup
    /// trigger finds them). Blocks; call it from a thread that may.
    pub(super) fn write_events(&self, events: &[Event]) -> rusqlite::Result<()> {
        let mut held = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        let conn = match held.as_mut() {
            Some(conn) => conn,
            None => held.insert(open(&self.path)?),
        };
        let written = write(conn, events);
        if written.is_err() {
            *held = None;
        }
        written
    }
}

/// The same settings as the pool's connections (`Store::connect_lazy`).
fn open(path: &Path) -> rusqlite::Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    // The journal mode is the file's (the pool set WAL); these two are
    // the connection's own.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    // Nine sizes of each insert, the rollups' upserts and the credit.
    conn.set_prepared_statement_cache_capacity(32);
    Ok(conn)
}

fn write(conn: &mut Connection, events: &[Event]) -> rusqlite::Result<()> {
    let (requests, feedback) = split(events);
    if write_as(conn, &requests, &feedback, Skipped::Unexpected)? == Written::SawStoredRow {
        // Rolled back (the transaction was dropped): again, asking which
        // rows are new.
        write_as(conn, &requests, &feedback, Skipped::Expected)?;
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

fn write_as(
    conn: &mut Connection,
    requests: &[&RequestRecord],
    feedback: &[&FeedbackRecord],
    skipped: Skipped,
) -> rusqlite::Result<Written> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut rollup = Rollup::default();
    // The smallest rowid this transaction gave a request row. Rowids go up
    // by one per row (nothing here sets one, and the largest possible is
    // never reached), so the rows inserted are exactly those at or above it.
    let mut first_rowid: Option<i64> = None;
    let mut json = Vec::new();
    for chunk in statement_chunks(requests) {
        if skipped == Skipped::Expected {
            let mut insert = tx.prepare_cached(INSERT_REQUESTS_RETURNING.for_rows(chunk.len()))?;
            bind_requests(&mut insert, chunk, &mut json)?;
            let mut inserted: HashMap<String, i64, RandomState> = HashMap::default();
            let mut rows = insert.raw_query();
            while let Some(row) = rows.next()? {
                inserted.insert(row.get(1)?, row.get(0)?);
            }
            first_rowid = first_rowid
                .into_iter()
                .chain(inserted.values().copied())
                .min();
            for r in chunk.iter().filter(|r| inserted.contains_key(&r.id)) {
                rollup.add(r);
            }
            continue;
        }
        let mut insert = tx.prepare_cached(INSERT_REQUESTS.for_rows(chunk.len()))?;
        bind_requests(&mut insert, chunk, &mut json)?;
        // SQLite's change count: the rows this statement inserted.
        if insert.raw_execute()? != chunk.len() {
            return Ok(Written::SawStoredRow);
        }
        first_rowid = first_rowid.or(Some(tx.last_insert_rowid() - chunk.len() as i64 + 1));
        for r in chunk {
            rollup.add(r);
        }
    }
    rollup.write(&tx)?;
    if let Some(first) = first_rowid {
        tx.prepare_cached(CREDIT_EARLY_FEEDBACK)?.execute([first])?;
    }
    for chunk in statement_chunks(feedback) {
        let mut insert = tx.prepare_cached(INSERT_FEEDBACK.for_rows(chunk.len()))?;
        let mut b = Binder::new(&mut insert);
        for f in chunk {
            b.bind(f.request_id.as_str())?;
            b.bind(timestamp(&f.created_at))?;
            b.bind(f.metric.as_str())?;
            b.bind(f.value)?;
            b.bind(f.source.as_deref())?;
            b.bind(f.comment.as_deref())?;
            b.bind(f.feedback_id.as_deref())?;
        }
        b.done();
        insert.raw_execute()?;
    }
    tx.commit()?;
    Ok(Written::Committed)
}

/// Binds a statement's parameters in order, where each value lies.
struct Binder<'s, 'c> {
    stmt: &'s mut Statement<'c>,
    next: usize,
}

impl<'s, 'c> Binder<'s, 'c> {
    fn new(stmt: &'s mut Statement<'c>) -> Self {
        Self { stmt, next: 0 }
    }

    /// Every parameter has its value (a statement's text and its binds
    /// are written apart).
    fn done(&self) {
        debug_assert_eq!(self.next, self.stmt.parameter_count());
    }

    fn bind<T: ToSql>(&mut self, value: T) -> rusqlite::Result<()> {
        self.next += 1;
        self.stmt.raw_bind_parameter(self.next, value)
    }

    /// `value` as JSON text, the text sqlx's `Json` wrote before (serde_json's).
    /// `scratch` is reused: SQLite copies the text when it is bound.
    fn bind_json<T: Serialize>(
        &mut self,
        value: Option<&T>,
        scratch: &mut Vec<u8>,
    ) -> rusqlite::Result<()> {
        let Some(value) = value else {
            return self.bind(None::<&str>);
        };
        scratch.clear();
        serde_json::to_writer(&mut *scratch, value)
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        self.bind(ToSqlOutput::Borrowed(ValueRef::Text(scratch)))
    }
}

/// The text sqlx's chrono encoding wrote, which the rollups' and readers'
/// `strftime` and the text order of `created_at` rely on.
fn timestamp(at: &chrono::DateTime<chrono::Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::AutoSi, false)
}

fn bind_requests(
    stmt: &mut Statement<'_>,
    rows: &[&RequestRecord],
    json: &mut Vec<u8>,
) -> rusqlite::Result<()> {
    let mut b = Binder::new(stmt);
    for r in rows {
        bind_request(&mut b, r, json)?;
    }
    b.done();
    Ok(())
}

fn bind_request(
    b: &mut Binder<'_, '_>,
    r: &RequestRecord,
    json: &mut Vec<u8>,
) -> rusqlite::Result<()> {
    b.bind(r.id.as_str())?;
    b.bind(timestamp(&r.created_at))?;
    b.bind(r.api_key_id.as_deref())?;
    b.bind(r.tenant.as_deref())?;
    b.bind(r.route.as_deref())?;
    b.bind(r.tier.as_deref())?;
    b.bind(r.user_id.as_deref())?;
    b.bind(r.requested_model.as_str())?;
    b.bind(r.model.as_deref())?;
    b.bind(r.provider.as_deref())?;
    b.bind_json(Some(&r.eligible_models), json)?;
    b.bind(r.policy_version.as_deref())?;
    b.bind(r.propensity)?;
    b.bind_json(r.features.as_ref(), json)?;
    // The receipt's text as it is (rendered here when it was handed over
    // unrendered).
    let decision = r.decision.as_ref().and_then(LazyJson::text);
    b.bind(decision.as_deref().map(JsonText::get))?;
    b.bind(r.stream)?;
    b.bind(r.prompt_tokens)?;
    b.bind(r.completion_tokens)?;
    b.bind(r.tokens_counted_locally)?;
    b.bind(r.cost_usd)?;
    b.bind(r.latency_ms)?;
    b.bind(r.ttft_ms)?;
    b.bind(r.status())?;
    b.bind(r.status_code)?;
    b.bind(r.error_kind.as_deref())?;
    b.bind_json(Some(&r.fallback_chain), json)?;
    b.bind(r.attempts)?;
    b.bind(r.cache_hit)?;
    b.bind_json(r.tags.as_ref(), json)?;
    b.bind(r.assignment.experiment.as_deref())?;
    b.bind(r.assignment.experiment_arm.as_deref())?;
    b.bind(r.assignment.shadow)?;
    b.bind(r.assignment.shadow_of.as_deref())?;
    b.bind_json(r.assignment.counterfactual.as_ref(), json)?;
    Ok(())
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
