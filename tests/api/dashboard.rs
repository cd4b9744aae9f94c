//! The dashboard's numbers on a seeded database, on Postgres and SQLite:
//! rows go in through the store's real batch writer (so the rollup triggers
//! run, replays included), then `/api/dashboard/*` and the SQL views are
//! checked against values worked out by hand.

use chrono::{DateTime, Duration, DurationRound, Utc};
use serde_json::Value;
use sqlx::Row;
use switchboard::store::{Event, RequestRecord, SqliteStore, Store};

use crate::helpers::{quality_feedback as feedback, spawn, two_providers, Db, TestApp};

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[allow(clippy::too_many_arguments)]
fn request(
    id: &str,
    at: DateTime<Utc>,
    model: &str,
    version: &str,
    latency_ms: f64,
    cost_usd: f64,
    error: Option<&str>,
    key: &str,
) -> Event {
    Event::Request(Box::new(RequestRecord {
        id: id.into(),
        created_at: at,
        api_key_id: Some(key.into()),
        tenant: Some(format!("tenant-of-{key}")),
        route: Some("auto".into()),
        tier: None,
        user_id: None,
        requested_model: "auto".into(),
        model: Some(model.into()),
        provider: Some("alpha".into()),
        eligible_models: vec!["a".into(), "b".into()],
        policy_version: Some(version.into()),
        propensity: Some(0.5),
        features: None,
        decision: None,
        stream: false,
        prompt_tokens: Some(10),
        completion_tokens: Some(5),
        tokens_counted_locally: false,
        cost_usd,
        latency_ms,
        ttft_ms: None,
        ok: error.is_none(),
        status_code: if error.is_some() { 502 } else { 200 },
        error_kind: error.map(str::to_owned),
        fallback_chain: vec![],
        attempts: 1,
        cache_hit: false,
        tags: None,
        assignment: Default::default(),
    }))
}

/// Six requests in the current hour: model `a` (v1, key-1) 100..400 ms at
/// $0.001, one of them an error; model `b` (v2, key-2) 1000 and 3000 ms at
/// $0.01. Latest quality: a1 0.8 (0.2 before it, and a late older 0.1),
/// a2 0.4, b1 1.0. The first batch is written twice (a replay).
pub async fn seed(store: &Store) {
    let t0 = Utc::now().duration_trunc(Duration::hours(1)).unwrap();
    let s = |n: i64| t0 + Duration::seconds(n);
    let first = vec![
        request("a1", s(1), "a", "v1", 100.0, 0.001, None, "key-1"),
        request("a2", s(2), "a", "v1", 200.0, 0.001, None, "key-1"),
        request("a3", s(3), "a", "v1", 300.0, 0.001, None, "key-1"),
        request(
            "a4",
            s(4),
            "a",
            "v1",
            400.0,
            0.001,
            Some("server_error"),
            "key-1",
        ),
        feedback("a1", "f1", s(10), 0.2),
    ];
    store.write_batch(&first).await.unwrap();
    store.write_batch(&first).await.unwrap();
    let second = vec![
        request("b1", s(5), "b", "v2", 1000.0, 0.01, None, "key-2"),
        request("b2", s(6), "b", "v2", 3000.0, 0.01, None, "key-2"),
        feedback("a1", "f2", s(20), 0.8),
        feedback("a2", "f3", s(21), 0.4),
        feedback("b1", "f4", s(22), 1.0),
    ];
    store.write_batch(&second).await.unwrap();
    // Older than f2: must not replace it.
    store
        .write_batch(&[feedback("a1", "f5", s(15), 0.1)])
        .await
        .unwrap();
}

async fn get(app: &TestApp, path: &str) -> Value {
    let r = app
        .http
        .get(format!("{}{path}", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{path}");
    r.json().await.unwrap()
}

fn by_model<'a>(list: &'a Value, model: &str) -> &'a Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|m| m["model"] == model)
        .unwrap_or_else(|| panic!("no {model} in {list}"))
}

async fn check_api(app: &TestApp) {
    let s = &get(app, "/api/dashboard/summary?hours=1").await["summary"];
    assert_eq!(s["requests"], 6);
    assert_eq!(s["errors"], 1);
    assert!(close(s["cost_usd"].as_f64().unwrap(), 0.024), "{s}");
    assert_eq!(s["rewarded"], 3);
    assert!(close(s["mean_reward"].as_f64().unwrap(), 2.2 / 3.0), "{s}");
    assert!(close(s["feedback_coverage"].as_f64().unwrap(), 0.5));
    assert_eq!(s["models"], 2);

    let m = get(app, "/api/dashboard/models?hours=24&route=auto").await;
    let a = by_model(&m["models"], "a");
    assert_eq!(a["requests"], 4);
    assert!(close(a["share"].as_f64().unwrap(), 4.0 / 6.0));
    assert!(close(a["error_rate"].as_f64().unwrap(), 0.25));
    assert!(close(a["mean_cost_usd"].as_f64().unwrap(), 0.001));
    assert!(close(a["mean_latency_ms"].as_f64().unwrap(), 250.0));
    assert!(close(a["mean_reward"].as_f64().unwrap(), 0.6), "{a}");
    assert_eq!(a["prompt_tokens"], 40);
    // Histogram estimates: the true p50 is 250 ms, p95 385 ms.
    let p50 = a["p50_latency_ms"].as_f64().unwrap();
    let p95 = a["p95_latency_ms"].as_f64().unwrap();
    assert!((200.0..=300.0).contains(&p50), "{p50}");
    assert!((300.0..=500.0).contains(&p95), "{p95}");
    let b = by_model(&m["models"], "b");
    assert!(close(b["mean_reward"].as_f64().unwrap(), 1.0));
    assert_eq!(b["rewarded"], 1);
    let none = get(app, "/api/dashboard/models?route=elsewhere").await;
    assert_eq!(none["models"], Value::Array(vec![]));

    let t = get(app, "/api/dashboard/timeseries?hours=3").await;
    let pa = by_model(&t["points"], "a");
    assert!(close(pa["share"].as_f64().unwrap(), 4.0 / 6.0));
    assert_eq!(t["points"].as_array().unwrap().len(), 2);

    let e = &get(app, "/api/dashboard/errors").await["errors"];
    assert_eq!(e["recent"].as_array().unwrap().len(), 1);
    assert_eq!(e["recent"][0]["id"], "a4");
    assert_eq!(e["recent"][0]["error_kind"], "server_error");
    assert_eq!(e["by_kind"][0]["requests"], 1);

    let p = get(app, "/api/dashboard/policy").await;
    let route = &p["routes"][0];
    assert_eq!(route["route"], "auto");
    assert_eq!(route["requests"], 6);
    // The live policy: its version and one entry per configured arm.
    assert!(route["live"]["version"]
        .as_str()
        .unwrap()
        .starts_with("online."));
    assert_eq!(route["live"]["arms"].as_array().unwrap().len(), 2);
    let arm_a = by_model(&route["arms"], "a");
    assert!(close(arm_a["share"].as_f64().unwrap(), 4.0 / 6.0));
    assert!(close(arm_a["mean_reward"].as_f64().unwrap(), 0.6));
    assert!(close(arm_a["mean_cost_usd"].as_f64().unwrap(), 0.001));
    let v2 = &route["versions"][1];
    assert_eq!(v2["policy_version"], "v2");
    assert!(close(v2["share"].as_f64().unwrap(), 2.0 / 6.0));
    assert!(close(v2["mean_reward"].as_f64().unwrap(), 1.0));

    let k = get(app, "/api/dashboard/spend").await;
    assert_eq!(k["keys"][0]["api_key_id"], "key-2");
    assert!(close(k["keys"][0]["cost_usd"].as_f64().unwrap(), 0.02));
    assert_eq!(k["keys"][1]["tenant"], "tenant-of-key-1");
    assert_eq!(k["keys"][1]["requests"], 4);

    let bad = app
        .http
        .get(format!("{}/api/dashboard/models?hours=0", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let body: Value = bad.json().await.unwrap();
    assert_eq!(body["error"]["param"], "hours");
}

/// (requests, errors, error_rate, cost, p50, p95, mean_reward, rewarded, coverage)
type ViewRow = (i64, i64, f64, f64, f64, f64, f64, i64, f64);

async fn check_views(store: &Store) {
    let sql = "SELECT requests, errors, error_rate, cost_usd, p50_latency_ms, p95_latency_ms, \
               mean_reward, rewarded, feedback_coverage FROM model_hourly WHERE model = 'a'";
    macro_rules! read {
        ($r:expr) => {{
            let r = $r;
            let v: ViewRow = (
                r.get(0),
                r.get(1),
                r.get(2),
                r.get(3),
                r.get(4),
                r.get(5),
                r.get(6),
                r.get(7),
                r.get(8),
            );
            v
        }};
    }
    let share_sql = "SELECT share FROM route_share_hourly WHERE route = 'auto' AND model = 'a'";
    let version_sql =
        "SELECT share, mean_reward FROM policy_version_stats WHERE policy_version = 'v1'";
    let spend_sql = "SELECT requests, cost_usd FROM key_spend_hourly WHERE api_key_id = 'key-2'";
    let (row, share, version, spend): (ViewRow, f64, (f64, f64), (i64, f64)) = match store {
        Store::Postgres(p) => (
            read!(sqlx::query(sql).fetch_one(p).await.unwrap()),
            sqlx::query_scalar(share_sql).fetch_one(p).await.unwrap(),
            sqlx::query_as(version_sql).fetch_one(p).await.unwrap(),
            sqlx::query_as(spend_sql).fetch_one(p).await.unwrap(),
        ),
        Store::Sqlite(SqliteStore { pool: p, .. }) => (
            read!(sqlx::query(sql).fetch_one(p).await.unwrap()),
            sqlx::query_scalar(share_sql).fetch_one(p).await.unwrap(),
            sqlx::query_as(version_sql).fetch_one(p).await.unwrap(),
            sqlx::query_as(spend_sql).fetch_one(p).await.unwrap(),
        ),
    };
    let (n, errors, error_rate, cost, p50, p95, reward, rewarded, coverage) = row;
    assert_eq!((n, errors, rewarded), (4, 1, 2));
    assert!(close(error_rate, 0.25) && close(cost, 0.004));
    // percentile_cont over 100, 200, 300, 400.
    assert!(close(p50, 250.0), "{p50}");
    assert!(close(p95, 385.0), "{p95}");
    assert!(
        close(reward, 0.6) && close(coverage, 0.5),
        "{reward} {coverage}"
    );
    assert!(close(share, 4.0 / 6.0));
    assert!(
        close(version.0, 4.0 / 6.0) && close(version.1, 0.6),
        "{version:?}"
    );
    assert_eq!(spend.0, 2);
    assert!(close(spend.1, 0.02));
}

async fn seeded(db: Db) -> TestApp {
    let app = spawn(
        &two_providers("http://127.0.0.1:9/v1", "http://127.0.0.1:9/v1"),
        db,
    )
    .await;
    seed(&app.store).await;
    app
}

#[tokio::test]
async fn dashboard_numbers_on_postgres() {
    let app = seeded(Db::Postgres).await;
    check_api(&app).await;
    check_views(&app.store).await;
    app.shutdown().await;
}

#[tokio::test]
async fn dashboard_numbers_on_sqlite() {
    let app = seeded(Db::Sqlite).await;
    check_api(&app).await;
    check_views(&app.store).await;
    app.shutdown().await;
}

#[tokio::test]
async fn the_dashboard_page_is_served_from_the_binary() {
    let app = seeded(Db::Sqlite).await;
    let r = app
        .http
        .get(format!("{}/dashboard", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let html = r.text().await.unwrap();
    assert!(html.contains("/api/dashboard/"));
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no CDN"
    );
    app.shutdown().await;
}
