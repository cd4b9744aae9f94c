use serde_json::{json, Value};
use sqlx::SqlitePool;
use switchboard::store::{Event, RequestRecord, SqliteStore, Store};

use crate::helpers::{quality_feedback, request_record, spawn, two_providers, Db};
use crate::mock::MockUpstream;

#[tokio::test]
async fn the_embedded_sqlite_store_records_requests_and_feedback() {
    let (a, b) = (
        MockUpstream::start("alpha").await,
        MockUpstream::start("beta").await,
    );
    let app = spawn(&two_providers(&a.base_url(), &b.base_url()), Db::Sqlite).await;
    let resp = app
        .chat(json!({"model": "ordered", "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(resp.status(), 200);
    let id = resp.headers()["x-switchboard-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let row = app.request_row(&id).await;
    assert_eq!(row.model.as_deref(), Some("small"));
    assert!((row.cost_usd - 22e-6).abs() < 1e-12);
    let r = app
        .http
        .post(format!("{}/v1/feedback", app.url))
        .json(&json!({"request_id": id, "score": 0.5, "feedback_id": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(app.wait_feedback(&id, 1).await, vec![0.5]);
    let ready: Value = app
        .http
        .get(format!("{}/readyz", app.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["database"], "sqlite");
    app.shutdown().await;
}

/// A row of the model `model` at 10:00:30 on 2026-12-06, `ms` long.
fn row(id: &str, model: &str, ms: f64) -> Event {
    let at = chrono::DateTime::parse_from_rfc3339("2026-12-06T10:00:30.5Z")
        .unwrap()
        .to_utc();
    Event::Request(Box::new(RequestRecord {
        policy_version: None,
        model: Some(model.into()),
        eligible_models: vec![model.into()],
        completion_tokens: None,
        cost_usd: 0.25,
        latency_ms: ms,
        ..request_record(id, at)
    }))
}

async fn sqlite_store(dir: &tempfile::TempDir) -> (Store, SqlitePool) {
    let url = format!("sqlite://{}", dir.path().join("rollup.db").display());
    let store = Store::connect_lazy(&url).unwrap();
    store.migrate().await.unwrap();
    let Store::Sqlite(SqliteStore { pool, .. }) = &store else {
        unreachable!("a sqlite:// URL opens SQLite");
    };
    let pool = pool.clone();
    (store, pool)
}

/// The writer sums a batch's latency rollup (src/store/batch/rollup.rs); every
/// latency, on a bound, between bounds and past the last one, lands where
/// the database's bounds table says it should: the largest bucket whose
/// lower bound is at or below it.
#[tokio::test]
async fn the_latency_rollup_puts_each_request_in_the_bucket_its_bounds_give() {
    let dir = tempfile::tempdir().unwrap();
    let (store, pool) = sqlite_store(&dir).await;
    let latencies = [
        0.0, 0.4, 4.999, 5.0, 7.0, 99.9, 100.0, 119_999.0, 120_000.0, 1e9,
    ];
    let batch: Vec<Event> = latencies
        .iter()
        .enumerate()
        .map(|(i, &ms)| row(&format!("req-{i}"), &format!("model-{i}"), ms))
        .collect();
    store.write_batch(&batch).await.unwrap();
    for (i, ms) in latencies.iter().enumerate() {
        let (hour, bucket, requests): (i64, i64, i64) = sqlx::query_as(
            "SELECT hour, bucket, requests FROM rollup_latency_hourly WHERE model = ?",
        )
        .bind(format!("model-{i}"))
        .fetch_one(&pool)
        .await
        .unwrap();
        let want: i64 =
            sqlx::query_scalar("SELECT max(bucket) FROM latency_bucket_bounds WHERE lower_ms <= ?")
                .bind(ms)
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!((bucket, requests), (want, 1), "latency {ms} ms");
        // The hour the feedback and error triggers key the same row by.
        let trigger_hour: i64 = sqlx::query_scalar(
            "SELECT CAST(strftime('%s', created_at) AS INTEGER) / 3600 * 3600 FROM requests \
             WHERE id = ?",
        )
        .bind(format!("req-{i}"))
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!((hour, trigger_hour), (1_796_551_200, 1_796_551_200));
    }
}

/// The hourly rollup summed per batch counts what the rows say, counts a
/// replayed batch once, and still credits quality feedback that was stored
/// before its request row (the trigger kept for it) as well as feedback
/// stored after (the feedback trigger).
#[tokio::test]
async fn the_hourly_rollup_counts_each_row_once_and_credits_early_and_late_feedback() {
    let dir = tempfile::tempdir().unwrap();
    let (store, pool) = sqlite_store(&dir).await;
    let at = chrono::Utc::now();
    let quality = |id: &str, fid: &str, value: f64| quality_feedback(id, fid, at, value);
    // Feedback for `early` lands a batch before its request row.
    store
        .write_batch(&[quality("early", "f-early", 0.25)])
        .await
        .unwrap();
    let batch = vec![
        row("early", "m", 10.0),
        row("late", "m", 20.0),
        row("none", "m", 30.0),
    ];
    store.write_batch(&batch).await.unwrap();
    store.write_batch(&batch).await.unwrap(); // a replay: skipped rows count nothing
    store
        .write_batch(&[quality("late", "f-late", 0.5)])
        .await
        .unwrap();
    let sums: (i64, i64, f64, i64, f64, i64, f64) = sqlx::query_as(
        "SELECT requests, errors, cost_usd, prompt_tokens, latency_ms_sum, rewarded, reward_sum          FROM rollup_hourly WHERE model = 'm' AND route = 'auto' AND provider = 'alpha'          AND policy_version = '' AND api_key_id = '' AND tenant = ''",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(sums, (3, 0, 0.75, 9, 60.0, 2, 0.75));
    let buckets: i64 = sqlx::query_scalar(
        "SELECT CAST(sum(requests) AS INTEGER) FROM rollup_latency_hourly WHERE model = 'm'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(buckets, 3);
}

/// A batch that repeats one stored row in its second statement (300 rows
/// go as 256 + 32 + 8 + 4): the rows before it are not left counted twice
/// by the attempt that found it, and the other 299 count once.
#[tokio::test]
async fn a_batch_repeating_a_stored_row_counts_only_its_new_rows() {
    let dir = tempfile::tempdir().unwrap();
    let (store, pool) = sqlite_store(&dir).await;
    let batch: Vec<Event> = (0..300)
        .map(|i| row(&format!("req-{i}"), "m", 10.0))
        .collect();
    store.write_batch(&batch[280..281]).await.unwrap();
    store.write_batch(&batch).await.unwrap();
    let (rows, requests, latency_ms_sum): (i64, i64, f64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM requests), sum(requests), sum(latency_ms_sum) \
         FROM rollup_hourly WHERE model = 'm'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((rows, requests, latency_ms_sum), (300, 300, 3000.0));
    let buckets: i64 = sqlx::query_scalar(
        "SELECT CAST(sum(requests) AS INTEGER) FROM rollup_latency_hourly WHERE model = 'm'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(buckets, 300);
}

/// The error rollup, summed by the writer since no trigger keeps it on
/// SQLite, counts what the rows say per hour, model and kind, and a replayed
/// batch (a stored row among new ones) adds only its new rows; feedback
/// stored before its request is credited on that path too.
#[tokio::test]
async fn errors_and_early_feedback_are_rolled_up_once_per_row() {
    let dir = tempfile::tempdir().unwrap();
    let (store, pool) = sqlite_store(&dir).await;
    let failed = |id: &str, model: &str, kind: Option<&str>| {
        let Event::Request(mut r) = row(id, model, 5.0) else {
            unreachable!()
        };
        r.ok = false;
        r.status_code = 502;
        r.error_kind = kind.map(str::to_owned);
        Event::Request(r)
    };
    let at = chrono::Utc::now();
    store
        .write_batch(&[quality_feedback("e3", "f-e3", at, 0.75)])
        .await
        .unwrap();
    let first = vec![
        failed("e1", "m", Some("upstream_5xx")),
        failed("e2", "m", Some("upstream_5xx")),
        row("ok1", "m", 5.0),
    ];
    store.write_batch(&first).await.unwrap();
    let second = vec![
        failed("e1", "m", Some("upstream_5xx")), // stored already
        failed("e3", "m", Some("timeout")),
        failed("e4", "n", None),
        row("ok2", "m", 5.0),
    ];
    store.write_batch(&second).await.unwrap();
    let mut rolled: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT model, error_kind, requests FROM rollup_errors_hourly ORDER BY model, error_kind",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let mut counted: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT COALESCE(model, ''), COALESCE(error_kind, ''), count(*) FROM requests \
         WHERE status = 'error' GROUP BY 1, 2 ORDER BY 1, 2",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    rolled.sort();
    counted.sort();
    assert_eq!(rolled, counted);
    assert_eq!(
        rolled,
        [
            ("m".into(), "timeout".into(), 1),
            ("m".into(), "upstream_5xx".into(), 2),
            ("n".into(), String::new(), 1),
        ]
    );
    let (requests, errors, rewarded, reward_sum): (i64, i64, i64, f64) = sqlx::query_as(
        "SELECT sum(requests), sum(errors), sum(rewarded), sum(reward_sum) FROM rollup_hourly",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((requests, errors, rewarded, reward_sum), (6, 4, 1, 0.75));
}

/// Quality feedback arriving in any order, several per request, some at
/// the same instant: the hourly rollup counts each request once and sums
/// its latest value (the newest `created_at`, then the later stored), as the
/// exact views do. Guards the `feedback_rollup` trigger's rewrite (migration
/// 20261207000100), which must keep the old body's answers.
#[tokio::test]
async fn the_feedback_rollup_sums_each_requests_latest_quality() {
    let dir = tempfile::tempdir().unwrap();
    let (store, pool) = sqlite_store(&dir).await;
    let ids: Vec<String> = (0..6).map(|i| format!("q{i}")).collect();
    let rows: Vec<Event> = ids.iter().map(|id| row(id, "m", 5.0)).collect();
    store.write_batch(&rows).await.unwrap();
    let t0 = chrono::DateTime::parse_from_rfc3339("2026-12-06T10:10:00Z")
        .unwrap()
        .to_utc();
    // A fixed xorshift sequence: the same interleaving every run.
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    };
    // Per request: (created_at, order stored, value) of the latest so far.
    let mut latest: Vec<Option<(i64, usize, f64)>> = vec![None; ids.len()];
    let mut stored = 0;
    for batch in 0..12 {
        let mut events = Vec::new();
        for _ in 0..=next(4) {
            let r = next(5) as usize; // q5 never gets feedback
            let secs = next(4) as i64; // few instants, so ties happen
            let value = next(9) as f64 / 8.0; // exact sums
            events.push(quality_feedback(
                &ids[r],
                &format!("f{batch}-{stored}"),
                t0 + chrono::Duration::seconds(secs),
                value,
            ));
            if latest[r].is_none_or(|(s, _, _)| secs >= s) {
                latest[r] = Some((secs, stored, value));
            }
            stored += 1;
        }
        store.write_batch(&events).await.unwrap();
    }
    let expected_rewarded = latest.iter().flatten().count() as i64;
    let expected_sum: f64 = latest.iter().flatten().map(|l| l.2).sum();
    assert!(expected_rewarded >= 3, "the sequence reaches most requests");
    let (rewarded, reward_sum): (i64, f64) =
        sqlx::query_as("SELECT sum(rewarded), sum(reward_sum) FROM rollup_hourly")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((rewarded, reward_sum), (expected_rewarded, expected_sum));
    let exact: (i64, f64) = sqlx::query_as(
        "SELECT sum(rewarded), sum(mean_reward * rewarded) FROM model_hourly WHERE model = 'm'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(exact.0, expected_rewarded);
    assert!((exact.1 - expected_sum).abs() < 1e-12, "{exact:?}");
}

/// The bundled SQLite is built with the options `.cargo/config.toml` sets
/// for the outbox writer (no allocation statistics, a lookaside sized for
/// a 256-row insert's values; docs/performance.md): a build that lost them
/// still works, only slower, so nothing else would notice.
#[tokio::test]
async fn the_bundled_sqlite_has_the_writers_compile_options() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, pool) = sqlite_store(&dir).await;
    for option in ["DEFAULT_MEMSTATUS=0", "DEFAULT_LOOKASIDE=256,1700"] {
        let used: i64 = sqlx::query_scalar("SELECT sqlite_compileoption_used(?)")
            .bind(option)
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(used, 1, "{option} is not compiled in");
    }
}
