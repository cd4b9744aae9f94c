//! `requests` partitioned by month on Postgres (migration 31 converts an
//! existing table, keeping rows, rollups, indexes and views), rows outside
//! the months created caught by the default partition and moved when their
//! month is made, replays still skipped, lookups by id working; and the
//! retention settings: old months dropped, older rows and feedback deleted,
//! rollups kept unless they have their own setting (SQLite by DELETE).

use std::borrow::Cow;

use chrono::{DateTime, Duration, Utc};
use switchboard::config::StoreConfig;
use switchboard::store::{Event, FeedbackRecord, SqliteStore, Store};

use crate::helpers::{fresh_postgres, request_record};

fn request(id: &str, at: DateTime<Utc>) -> Event {
    Event::Request(Box::new(request_record(id, at)))
}

fn feedback(id: &str, at: DateTime<Utc>) -> Event {
    Event::Feedback(FeedbackRecord {
        request_id: id.into(),
        created_at: at + Duration::seconds(5),
        metric: "quality".into(),
        value: 0.75,
        source: None,
        comment: None,
        feedback_id: Some(format!("fb-{id}")),
    })
}

/// Requests now, 40 days, 100 days and 3 years ago, each with feedback.
fn history(now: DateTime<Utc>) -> Vec<Event> {
    let mut events = Vec::new();
    for (id, days) in [("now", 0), ("d40", 40), ("d100", 100), ("y3", 1100)] {
        let at = now - Duration::days(days);
        events.push(request(id, at));
        events.push(feedback(id, at));
    }
    events
}

async fn scalar(store: &Store, sql: &str) -> i64 {
    match store {
        Store::Postgres(p) => sqlx::query_scalar(sql).fetch_one(p).await.unwrap(),
        Store::Sqlite(SqliteStore { pool: p, .. }) => {
            sqlx::query_scalar(sql).fetch_one(p).await.unwrap()
        }
    }
}

async fn rollup_requests(store: &Store) -> i64 {
    scalar(
        store,
        "SELECT CAST(COALESCE(SUM(requests), 0) AS BIGINT) FROM rollup_hourly",
    )
    .await
}

async fn ids(store: &Store) -> Vec<String> {
    let sql = "SELECT id FROM requests ORDER BY created_at";
    match store {
        Store::Postgres(p) => sqlx::query_scalar(sql).fetch_all(p).await.unwrap(),
        Store::Sqlite(SqliteStore { pool: p, .. }) => {
            sqlx::query_scalar(sql).fetch_all(p).await.unwrap()
        }
    }
}

fn retention(days: u32, rollup_days: Option<u32>) -> StoreConfig {
    StoreConfig {
        retention_days: Some(days),
        rollup_retention_days: rollup_days,
        ..StoreConfig::default()
    }
}

#[tokio::test]
async fn migration_partitions_an_existing_requests_table_and_retention_drops_old_months() {
    let now = Utc::now();
    let store = Store::connect_lazy(&fresh_postgres().await).unwrap();
    let Store::Postgres(pool) = &store else {
        unreachable!()
    };
    // A database from before migration 31, holding history.
    let mut before = sqlx::migrate!("migrations/postgres");
    before.migrations = Cow::Owned(
        before
            .migrations
            .iter()
            .filter(|m| m.version < 20261122000031)
            .cloned()
            .collect(),
    );
    before.run(pool).await.unwrap();
    let events = history(now);
    store.write_batch(&events[..6]).await.unwrap(); // all but the 3-year-old one
    assert_eq!(rollup_requests(&store).await, 3);

    store.migrate().await.unwrap();
    let partitioned = scalar(
        &store,
        "SELECT COUNT(*) FROM pg_partitioned_table WHERE partrelid = 'requests'::regclass",
    )
    .await;
    assert_eq!(partitioned, 1);
    assert_eq!(ids(&store).await, ["d100", "d40", "now"]);
    assert_eq!(
        rollup_requests(&store).await,
        3,
        "copied rows are not counted again"
    );
    // Months from the oldest row to two ahead, and the default partition.
    let months = scalar(
        &store,
        "SELECT COUNT(*) FROM pg_inherits WHERE inhparent = 'requests'::regclass",
    )
    .await;
    assert!((6..=8).contains(&months), "{months} partitions");
    let views = scalar(
        &store,
        "SELECT COUNT(*) FROM pg_views WHERE viewname IN ('model_hourly', 'route_share_hourly', 'policy_version_stats', 'key_spend_hourly')",
    )
    .await;
    assert_eq!(views, 4, "the dashboards' views are re-created");
    assert_eq!(
        scalar(
            &store,
            "SELECT CAST(SUM(requests) AS BIGINT) FROM model_hourly"
        )
        .await,
        3
    );

    // New writes: the 3-year-old row lands in the default partition; a
    // replayed batch is skipped as before.
    store.write_batch(&events).await.unwrap();
    store.write_batch(&events).await.unwrap();
    assert_eq!(ids(&store).await, ["y3", "d100", "d40", "now"]);
    assert_eq!(rollup_requests(&store).await, 4);
    assert_eq!(scalar(&store, "SELECT COUNT(*) FROM feedback").await, 4);
    assert_eq!(
        scalar(&store, "SELECT COUNT(*) FROM requests_default").await,
        1
    );
    for id in ["y3", "d100", "d40", "now"] {
        assert!(store.request_exists(id).await.unwrap(), "{id}");
    }
    // Creating its month moves it out of the default partition.
    let made: i32 = sqlx::query_scalar("SELECT sb_ensure_request_partitions($1, $2)")
        .bind(now - Duration::days(1100))
        .bind(now - Duration::days(1099))
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(made, 1);
    assert_eq!(
        scalar(&store, "SELECT COUNT(*) FROM requests_default").await,
        0
    );
    assert!(store.request_exists("y3").await.unwrap());
    assert_eq!(
        rollup_requests(&store).await,
        4,
        "moving rows does not count them"
    );

    // Retention of 60 days: the old months go whole, the rest by age.
    let pruned = store.maintain(&retention(60, None), now).await.unwrap();
    assert!(
        pruned.partitions_dropped.len() >= 2,
        "{:?}",
        pruned.partitions_dropped
    );
    assert_eq!(ids(&store).await, ["d40", "now"]);
    assert_eq!(scalar(&store, "SELECT COUNT(*) FROM feedback").await, 2);
    assert_eq!(
        rollup_requests(&store).await,
        4,
        "rollups are kept by default"
    );
    // Months ahead exist, so today's and next month's writes have a home.
    assert_eq!(
        scalar(&store, "SELECT COUNT(*) FROM requests_default").await,
        0
    );

    // Rollups with their own setting.
    let pruned = store.maintain(&retention(60, Some(30)), now).await.unwrap();
    assert!(pruned.rollup_rows > 0);
    assert_eq!(rollup_requests(&store).await, 1);
    // Idempotent.
    let again = store.maintain(&retention(60, Some(30)), now).await.unwrap();
    assert_eq!(again, Default::default());
}

#[tokio::test]
async fn sqlite_retention_deletes_by_age() {
    let now = Utc::now();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect_lazy(&format!("sqlite://{}/r.db", dir.path().display())).unwrap();
    store.migrate().await.unwrap();
    let events = history(now);
    store.write_batch(&events).await.unwrap();
    store.write_batch(&events).await.unwrap();
    assert_eq!(ids(&store).await, ["y3", "d100", "d40", "now"]);
    let pruned = store.maintain(&retention(60, None), now).await.unwrap();
    assert_eq!((pruned.requests, pruned.feedback), (2, 2));
    assert_eq!(ids(&store).await, ["d40", "now"]);
    assert_eq!(rollup_requests(&store).await, 4);
    store.maintain(&retention(60, Some(30)), now).await.unwrap();
    assert_eq!(rollup_requests(&store).await, 1);
}
