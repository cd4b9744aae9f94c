//! Spawning the real app on a random port against a fresh database.

use std::time::Duration;

use serde_json::Value;
use sqlx::Row;
use switchboard::config::{load, load_str, Env};
use switchboard::startup::{self, Running};
use switchboard::store::{Event, FeedbackRecord, RequestRecord, SqliteStore, Store};

pub const ADMIN_TOKEN: &str = "admin-test-token";

/// A quality score for request `id`, idempotency key `fid`, as stored.
pub fn quality_feedback(
    id: &str,
    fid: &str,
    at: chrono::DateTime<chrono::Utc>,
    value: f64,
) -> Event {
    Event::Feedback(FeedbackRecord {
        request_id: id.into(),
        created_at: at,
        metric: "quality".into(),
        value,
        source: None,
        comment: None,
        feedback_id: Some(fid.into()),
    })
}

/// A stored request row as the outbox writes one: an answered `auto`
/// request served by `small` on `alpha`, 12 ms, $0.001, 3 + 4 tokens.
/// Tests change what they look at with struct update syntax.
pub fn request_record(id: &str, at: chrono::DateTime<chrono::Utc>) -> RequestRecord {
    RequestRecord {
        id: id.into(),
        created_at: at,
        api_key_id: None,
        tenant: None,
        route: Some("auto".into()),
        tier: None,
        user_id: None,
        requested_model: "auto".into(),
        model: Some("small".into()),
        provider: Some("alpha".into()),
        eligible_models: vec!["small".into()],
        policy_version: Some("online.1".into()),
        propensity: Some(1.0),
        features: Some(vec![1.0, 0.5]),
        decision: None,
        stream: false,
        prompt_tokens: Some(3),
        completion_tokens: Some(4),
        tokens_counted_locally: false,
        cost_usd: 0.001,
        latency_ms: 12.0,
        ttft_ms: None,
        ok: true,
        status_code: 200,
        error_kind: None,
        fallback_chain: vec![],
        attempts: 1,
        cache_hit: false,
        tags: None,
        assignment: Default::default(),
    }
}

pub enum Db {
    Postgres,
    Sqlite,
}

pub struct TestApp {
    pub url: String,
    pub db_url: String,
    pub http: reqwest::Client,
    pub store: Store,
    running: Option<Running>,
    /// The configuration file, for apps started with `spawn_file`.
    pub config_path: Option<std::path::PathBuf>,
    _dir: tempfile::TempDir,
}

/// A new, empty database on the local Postgres (`TEST_DATABASE_ADMIN_URL`
/// names the server; by default the machine's trust-auth one).
/// The Prometheus text of the router at `base` (an app or a binary).
pub async fn metrics_at(http: &reqwest::Client, base: &str) -> String {
    http.get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of one unlabelled series in Prometheus text (0 when absent).
pub fn series_value(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

pub async fn fresh_postgres() -> String {
    let admin = std::env::var("TEST_DATABASE_ADMIN_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let name = format!("sb_test_{}", uuid::Uuid::new_v4().simple());
    let pool = sqlx::PgPool::connect(&admin)
        .await
        .expect("Postgres must be running for the tests");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap();
    format!("{base}/{name}")
}

pub async fn spawn(config_toml: &str, db: Db) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let url = match db {
        Db::Postgres => fresh_postgres().await,
        Db::Sqlite => format!("sqlite://{}/switchboard.db", dir.path().display()),
    };
    spawn_on(config_toml, &url, dir).await
}

/// The test's config text with the store section every test app uses.
fn with_store(config_toml: &str, dir: &std::path::Path) -> String {
    format!(
        "{config_toml}\n[store]\nspill_path = \"{}/spill.jsonl\"\nflush_interval_ms = 20\n",
        dir.display()
    )
}

fn test_env(url: &str) -> Env {
    let mut env = Env::new();
    env.insert("DATABASE_URL".into(), url.to_owned());
    env.insert("SWITCHBOARD_ADMIN_TOKEN".into(), ADMIN_TOKEN.into());
    env.insert("MOCK_KEY".into(), "sk-test-secret".into());
    env.insert("ANTHROPIC_TEST_KEY".into(), "sk-ant-test".into());
    env
}

/// Starts the app from a configuration file in its temp dir, as `serve
/// --config FILE` does, so it can be reloaded (`write_config`).
pub async fn spawn_file(config_toml: &str, db: Db) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let url = match db {
        Db::Postgres => fresh_postgres().await,
        Db::Sqlite => format!("sqlite://{}/switchboard.db", dir.path().display()),
    };
    let path = dir.path().join("switchboard.toml");
    std::fs::write(&path, with_store(config_toml, dir.path())).unwrap();
    let env = test_env(&url);
    let config = load(Some(&path), &env).unwrap();
    let running = startup::start(config, &env).await.unwrap();
    TestApp {
        db_url: url,
        url: format!("http://{}", running.addr),
        http: reqwest::Client::new(),
        store: running.gateway().store.clone(),
        running: Some(running),
        config_path: Some(path),
        _dir: dir,
    }
}

/// Starts the app on an existing database (e.g. to restart on the same one).
pub async fn spawn_on(config_toml: &str, url: &str, dir: tempfile::TempDir) -> TestApp {
    let text = with_store(config_toml, dir.path());
    let env = test_env(url);
    let config = load_str(&text, "test.toml", &env).unwrap();
    let running = startup::start(config, &env).await.unwrap();
    TestApp {
        db_url: url.to_owned(),
        url: format!("http://{}", running.addr),
        http: reqwest::Client::new(),
        store: running.gateway().store.clone(),
        running: Some(running),
        config_path: None,
        _dir: dir,
    }
}

impl TestApp {
    /// Rewrites the configuration file of a `spawn_file` app (atomically,
    /// as editors do: a new file renamed over the old one).
    pub fn write_config(&self, config_toml: &str) {
        let path = self.config_path.as_ref().expect("started with spawn_file");
        let dir = path.parent().unwrap();
        let tmp = dir.join("switchboard.toml.new");
        std::fs::write(&tmp, with_store(config_toml, dir)).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }

    /// An admin API call with the test's admin token.
    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> reqwest::Response {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(ADMIN_TOKEN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        req.send().await.unwrap()
    }

    /// The app's Prometheus text.
    pub async fn metrics_text(&self) -> String {
        metrics_at(&self.http, &self.url).await
    }

    pub async fn chat(&self, body: Value) -> reqwest::Response {
        self.http
            .post(format!("{}/v1/chat/completions", self.url))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    pub async fn post_raw(&self, path: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.url))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap()
    }

    /// Waits (bounded) until the outbox has written the request's row.
    pub async fn request_row(&self, id: &str) -> RequestRow {
        for _ in 0..200 {
            if let Some(r) = self.try_request_row(id).await {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("request {id} never reached the database");
    }

    async fn try_request_row(&self, id: &str) -> Option<RequestRow> {
        let sql = "SELECT model, route, status, status_code, cost_usd, prompt_tokens, completion_tokens, \
                   tokens_counted_locally, error_kind, policy_version, propensity, CAST(fallback_chain AS TEXT) AS chain, \
                   ttft_ms, stream FROM requests WHERE id = $1";
        macro_rules! read {
            ($row:expr) => {
                $row.map(|r| RequestRow {
                    model: r.get("model"),
                    route: r.get("route"),
                    status: r.get("status"),
                    status_code: r.get("status_code"),
                    cost_usd: r.get("cost_usd"),
                    prompt_tokens: r.get("prompt_tokens"),
                    completion_tokens: r.get("completion_tokens"),
                    tokens_counted_locally: r.get("tokens_counted_locally"),
                    error_kind: r.get("error_kind"),
                    policy_version: r.get("policy_version"),
                    propensity: r.get("propensity"),
                    fallback_chain: serde_json::from_str(&r.get::<String, _>("chain")).unwrap(),
                    ttft_ms: r.get("ttft_ms"),
                    stream: r.get("stream"),
                })
            };
        }
        match &self.store {
            Store::Postgres(p) => read!(sqlx::query(sql).bind(id).fetch_optional(p).await.unwrap()),
            Store::Sqlite(SqliteStore { pool: p, .. }) => {
                read!(sqlx::query(sql).bind(id).fetch_optional(p).await.unwrap())
            }
        }
    }

    pub async fn count(&self, table: &str) -> i64 {
        let sql = format!("SELECT COUNT(*) FROM {table}");
        match &self.store {
            Store::Postgres(p) => sqlx::query_scalar(&sql).fetch_one(p).await.unwrap(),
            Store::Sqlite(SqliteStore { pool: p, .. }) => {
                sqlx::query_scalar(&sql).fetch_one(p).await.unwrap()
            }
        }
    }

    /// Waits (bounded) until `table` holds at least `n` rows.
    pub async fn wait_count(&self, table: &str, n: i64) {
        for _ in 0..200 {
            if self.count(table).await >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("{table} never reached {n} rows");
    }

    /// Feedback values stored for a request, oldest first.
    pub async fn feedback_values(&self, request_id: &str) -> Vec<f64> {
        let sql = "SELECT value FROM feedback WHERE request_id = $1 ORDER BY id";
        match &self.store {
            Store::Postgres(p) => sqlx::query_scalar(sql)
                .bind(request_id)
                .fetch_all(p)
                .await
                .unwrap(),
            Store::Sqlite(SqliteStore { pool: p, .. }) => sqlx::query_scalar(sql)
                .bind(request_id)
                .fetch_all(p)
                .await
                .unwrap(),
        }
    }

    /// Waits (bounded) for `n` feedback rows.
    pub async fn wait_feedback(&self, request_id: &str, n: usize) -> Vec<f64> {
        for _ in 0..200 {
            let v = self.feedback_values(request_id).await;
            if v.len() >= n {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("feedback for {request_id} never reached the database");
    }

    pub fn forget_recent_decisions(&self) {
        if let Some(r) = &self.running {
            r.gateway().recent.clear();
        }
    }

    pub async fn shutdown(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }
}

#[derive(Debug)]
pub struct RequestRow {
    pub model: Option<String>,
    pub route: Option<String>,
    pub status: String,
    pub status_code: i32,
    pub cost_usd: f64,
    pub prompt_tokens: Option<i32>,
    pub completion_tokens: Option<i32>,
    pub tokens_counted_locally: bool,
    pub error_kind: Option<String>,
    pub policy_version: Option<String>,
    pub propensity: Option<f64>,
    pub fallback_chain: Value,
    pub ttft_ms: Option<f64>,
    pub stream: bool,
}

/// Two OpenAI-compatible providers, one model each, and routes over both.
pub fn two_providers(a: &str, b: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
request_timeout_ms = 5000

[resilience]
max_attempts_per_model = 2
backoff_base_ms = 1
backoff_max_ms = 5
breaker_failure_threshold = 3
breaker_cooldown_ms = 300

[[providers]]
name = "alpha"
kind = "openai"
base_url = "{a}"
api_key_env = "MOCK_KEY"

[[providers]]
name = "beta"
kind = "openai"
base_url = "{b}"

[[models]]
name = "small"
provider = "alpha"
upstream_name = "alpha-small-2024"
input_usd_per_mtok = 1.0
output_usd_per_mtok = 2.0

[[models]]
name = "large"
provider = "beta"
upstream_name = "beta-large"
input_usd_per_mtok = 10.0
output_usd_per_mtok = 30.0

[[routes]]
name = "auto"
models = ["small", "large"]
policy = "random"

[[routes]]
name = "ordered"
models = ["small", "large"]
policy = "fixed"
"#
    )
}
