use serde_json::{json, Value};

use crate::helpers::{spawn, two_providers, Db};
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

/// The rollup trigger finds a request's latency bucket by an index probe
/// (migration 20261206000060); every latency, on a bound, between bounds
/// and past the last one, lands where the bounds table says it should:
/// the largest bucket whose lower bound is at or below it.
#[tokio::test]
async fn the_latency_rollup_puts_each_request_in_the_bucket_its_bounds_give() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("rollup.db").display());
    let store = switchboard::store::Store::connect_lazy(&url).unwrap();
    store.migrate().await.unwrap();
    let switchboard::store::Store::Sqlite(pool) = &store else {
        unreachable!("a sqlite:// URL opens SQLite");
    };
    let latencies = [
        0.0, 0.4, 4.999, 5.0, 7.0, 99.9, 100.0, 119_999.0, 120_000.0, 1e9,
    ];
    for (i, ms) in latencies.iter().enumerate() {
        sqlx::query(
            "INSERT INTO requests (id, created_at, requested_model, model, stream, latency_ms, \
             status, status_code) VALUES (?, '2026-12-06T10:00:00Z', 'm', ?, false, ?, 'ok', 200)",
        )
        .bind(format!("req-{i}"))
        .bind(format!("model-{i}"))
        .bind(ms)
        .execute(pool)
        .await
        .unwrap();
    }
    for (i, ms) in latencies.iter().enumerate() {
        let (bucket, requests): (i64, i64) =
            sqlx::query_as("SELECT bucket, requests FROM rollup_latency_hourly WHERE model = ?")
                .bind(format!("model-{i}"))
                .fetch_one(pool)
                .await
                .unwrap();
        let want: i64 =
            sqlx::query_scalar("SELECT max(bucket) FROM latency_bucket_bounds WHERE lower_ms <= ?")
                .bind(ms)
                .fetch_one(pool)
                .await
                .unwrap();
        assert_eq!((bucket, requests), (want, 1), "latency {ms} ms");
    }
}
