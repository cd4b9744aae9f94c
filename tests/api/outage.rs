//! The database goes away under load, and the router is killed or stopped:
//! serving never fails, and every request and feedback event reaches
//! Postgres exactly once. The outage blocks only the test's own database
//! (`ALLOW_CONNECTIONS false` and its sessions terminated), never the
//! cluster other tests share. Process tests run the real binary.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;

use crate::chat::sse_data;
use crate::helpers::{fresh_postgres, metrics_at, series_value, spawn, two_providers, Db};
use crate::mock::MockUpstream;
use crate::mock_raw::{chunk, head, Raw, RawUpstream};
use crate::process::{sigterm, spill, start_binary};

/// Blocks and unblocks one database from the outside.
pub struct Outage {
    admin: sqlx::PgPool,
    name: String,
}

impl Outage {
    pub async fn new(db_url: &str) -> Self {
        let base = db_url.rsplit_once('/').unwrap().0;
        let admin = sqlx::PgPool::connect(&format!("{base}/postgres"))
            .await
            .unwrap();
        let name = db_url.rsplit_once('/').unwrap().1.to_owned();
        Self { admin, name }
    }

    pub async fn begin(&self) {
        sqlx::query(&format!(
            "ALTER DATABASE {} ALLOW_CONNECTIONS false",
            self.name
        ))
        .execute(&self.admin)
        .await
        .unwrap();
        sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()")
            .bind(&self.name)
            .execute(&self.admin)
            .await
            .unwrap();
    }

    pub async fn end(&self) {
        sqlx::query(&format!(
            "ALTER DATABASE {} ALLOW_CONNECTIONS true",
            self.name
        ))
        .execute(&self.admin)
        .await
        .unwrap();
    }
}

/// Waits (bounded) until `sql` (a count) reaches `n` on `url`.
async fn wait_for_count(url: &str, sql: &str, n: i64) -> i64 {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    let mut last = 0;
    for _ in 0..600 {
        last = sqlx::query_scalar(sql).fetch_one(&pool).await.unwrap();
        if last >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    pool.close().await;
    last
}

async fn chat_and_feedback(http: &reqwest::Client, base: &str, i: usize) -> String {
    let r = http
        .post(format!("{base}/v1/chat/completions"))
        .json(&json!({"model": "auto", "messages": [{"role": "user", "content": format!("question {i}")}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "serving never fails during the outage");
    let id = r.headers()["x-switchboard-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let f = http
        .post(format!("{base}/v1/feedback"))
        .json(&json!({"request_id": id, "score": 0.5}))
        .send()
        .await
        .unwrap();
    assert_eq!(f.status(), 202);
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_flows_through_a_database_outage_and_every_event_lands_exactly_once() {
    let (a, b) = (
        MockUpstream::start("alpha").await,
        MockUpstream::start("beta").await,
    );
    let app = spawn(&two_providers(&a.base_url(), &b.base_url()), Db::Postgres).await;
    let outage = Outage::new(&app.db_url).await;
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(chat_and_feedback(&app.http, &app.url, i).await);
    }
    outage.begin().await;
    for wave in 0..6 {
        let calls = (0..5).map(|j| chat_and_feedback(&app.http, &app.url, 100 + wave * 5 + j));
        ids.extend(futures_util::future::join_all(calls).await);
    }
    // Let the writer fail and spill before the database returns.
    tokio::time::sleep(Duration::from_secs(1)).await;
    outage.end().await;

    let n = ids.len() as i64;
    let got = wait_for_count(&app.db_url, "SELECT COUNT(*) FROM requests", n).await;
    assert_eq!(got, n);
    let got = wait_for_count(&app.db_url, "SELECT COUNT(*) FROM feedback", n).await;
    assert_eq!(got, n);
    let pool = sqlx::PgPool::connect(&app.db_url).await.unwrap();
    let (rows, distinct): (i64, i64) =
        sqlx::query_as("SELECT COUNT(*), COUNT(DISTINCT id) FROM requests")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((rows, distinct), (n, n), "each request exactly once");
    let per_request: Vec<i64> =
        sqlx::query_scalar("SELECT COUNT(*) FROM feedback GROUP BY request_id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert!(
        per_request.iter().all(|&c| c == 1),
        "each feedback exactly once"
    );
    let stored: Vec<String> = sqlx::query_scalar("SELECT id FROM requests")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert!(ids.iter().all(|id| stored.contains(id)));
    pool.close().await;
    app.shutdown().await;
}

/// Lines held in the spill file and in a replay in progress.
fn spilled_lines(dir: &Path) -> usize {
    let replaying = PathBuf::from(format!("{}.replaying", spill(dir).display()));
    [spill(dir), replaying]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|t| t.lines().count())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_holding_spilled_events_then_restart_and_they_arrive() {
    let (a, b) = (
        MockUpstream::start("alpha").await,
        MockUpstream::start("beta").await,
    );
    let config = two_providers(&a.base_url(), &b.base_url());
    let db_url = fresh_postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let mut first = start_binary(&config, dir.path(), &db_url).await;
    let outage = Outage::new(&db_url).await;
    outage.begin().await;
    let http = reqwest::Client::new();
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(chat_and_feedback(&http, &first.base, i).await);
    }
    for _ in 0..600 {
        if spilled_lines(dir.path()) >= 40 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        spilled_lines(dir.path()),
        40,
        "every event is on disk before the kill"
    );
    // The counter moves once the append is synced to disk, which can be
    // after its lines show in the file: wait for it too.
    let mut spilled = 0.0;
    for _ in 0..600 {
        let metrics = metrics_at(&http, &first.base).await;
        spilled = series_value(&metrics, "switchboard_events_spilled_total");
        if spilled >= 40.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(spilled >= 40.0, "metrics show the spill: {spilled}");
    first.child.kill().unwrap(); // SIGKILL
    first.child.wait().unwrap();
    outage.end().await;

    let mut second = start_binary(&config, dir.path(), &db_url).await;
    assert_eq!(
        wait_for_count(&db_url, "SELECT COUNT(*) FROM requests", 20).await,
        20
    );
    assert_eq!(
        wait_for_count(&db_url, "SELECT COUNT(*) FROM feedback", 20).await,
        20
    );
    let pool = sqlx::PgPool::connect(&db_url).await.unwrap();
    let stored: Vec<String> = sqlx::query_scalar("SELECT id FROM requests")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert!(ids.iter().all(|id| stored.contains(id)));
    pool.close().await;
    sigterm(&second.child);
    assert!(second.child.wait().unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_an_in_flight_stream_finish_and_records_it() {
    let raw = RawUpstream::start(vec![
        head(200, "text/event-stream"),
        chunk("one "),
        Raw::Sleep(Duration::from_millis(800)),
        chunk("two"),
        Raw::Bytes(b"data: [DONE]\n\n".to_vec()),
        Raw::Close,
    ])
    .await;
    let beta = MockUpstream::start("beta").await;
    let db_url = fresh_postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let mut router = start_binary(
        &two_providers(&raw.base_url(), &beta.base_url()),
        dir.path(),
        &db_url,
    )
    .await;
    let mut r = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", router.base))
        .json(&json!({"model": "small", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    let id = r.headers()["x-switchboard-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let mut body = String::from_utf8(r.chunk().await.unwrap().unwrap().to_vec()).unwrap();
    assert!(body.contains("one"));
    sigterm(&router.child);
    while let Some(c) = r.chunk().await.unwrap() {
        body.push_str(&String::from_utf8_lossy(&c));
    }
    let frames = sse_data(&body);
    assert_eq!(frames.last().map(String::as_str), Some("[DONE]"), "{body}");
    assert!(body.contains("two"));
    assert!(router.child.wait().unwrap().success());
    let pool = sqlx::PgPool::connect(&db_url).await.unwrap();
    let status: String = sqlx::query_scalar("SELECT status FROM requests WHERE id = $1")
        .bind(&id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(status, "ok", "the outbox was flushed before exit");
    pool.close().await;
}
