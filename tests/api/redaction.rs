//! Provider keys never leave the router: not in its logs (at trace level),
//! not in what clients get back, not in `/metrics`, `/admin/*` or the
//! dashboard API, not in any stored row — even when upstreams echo the
//! request's `Authorization` / `x-api-key` back in their error bodies.
//! Keys come from the environment and from secret files; the router is the
//! real binary so its output can be read whole.

use serde_json::{json, Value};

use crate::helpers::{fresh_postgres, ADMIN_TOKEN};
use crate::mock::{Behaviour, MockUpstream};
use crate::mock_anthropic::MockAnthropic;
use crate::process::{sigterm, start_binary_with, Launch};

/// The key the Anthropic mock accepts (it checks it); the router reads it from a file.
const ANTHROPIC_KEY: &str = "sk-ant-test";

fn config(alpha: &str, beta: &str, claude: &str, beta_key: &str, claude_key: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
request_timeout_ms = 5000

[resilience]
max_attempts_per_model = 1
backoff_base_ms = 1
backoff_max_ms = 2
breaker_failure_threshold = 100

[[providers]]
name = "alpha"
kind = "openai"
base_url = "{alpha}"
api_key_env = "REDACTION_TEST_KEY"

[[providers]]
name = "beta"
kind = "openai"
base_url = "{beta}"
api_key_file = "{beta_key}"

[[providers]]
name = "claude"
kind = "anthropic"
base_url = "{claude}"
api_key_file = "{claude_key}"

[[models]]
name = "small"
provider = "alpha"
input_usd_per_mtok = 1.0
output_usd_per_mtok = 2.0

[[models]]
name = "large"
provider = "beta"
input_usd_per_mtok = 10.0
output_usd_per_mtok = 30.0

[[models]]
name = "haiku"
provider = "claude"
upstream_name = "claude-3-5-haiku"
input_usd_per_mtok = 0.8
output_usd_per_mtok = 4.0

[[routes]]
name = "ordered"
models = ["small", "large", "haiku"]
policy = "fixed"
"#
    )
}

fn ask(model: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "hello"}]})
}

/// Everything a database holds, as text: every table and view, as JSON.
async fn dump_database(url: &str) -> String {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(names.iter().any(|n| n == "requests"), "{names:?}");
    let mut out = String::new();
    for name in names {
        // Names come from the catalogue, not from input.
        let sql = format!("SELECT COALESCE(CAST(json_agg(t) AS TEXT), '') FROM \"{name}\" t");
        let text: String = sqlx::query_scalar(&sql).fetch_one(&pool).await.unwrap();
        out.push_str(&text);
    }
    pool.close().await;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_keys_never_reach_logs_clients_metrics_admin_or_rows() {
    let env_key = format!("sk-env-{}", uuid::Uuid::new_v4().simple());
    let file_key = format!("sk-file-{}", uuid::Uuid::new_v4().simple());
    let keys = [env_key.as_str(), file_key.as_str(), ANTHROPIC_KEY];
    let (alpha, beta, claude) = (
        MockUpstream::start("alpha").await,
        MockUpstream::start("beta").await,
        MockAnthropic::start().await,
    );
    let dir = tempfile::tempdir().unwrap();
    let (beta_key, claude_key) = (dir.path().join("beta.key"), dir.path().join("claude.key"));
    std::fs::write(&beta_key, format!("{file_key}\n")).unwrap();
    std::fs::write(&claude_key, ANTHROPIC_KEY).unwrap();
    let cfg = config(
        &alpha.base_url(),
        &beta.base_url(),
        &claude.base_url(),
        &beta_key.display().to_string(),
        &claude_key.display().to_string(),
    );
    let db_url = fresh_postgres().await;
    let log = dir.path().join("router.log");
    let router = start_binary_with(
        &cfg,
        dir.path(),
        &db_url,
        Launch {
            env: vec![
                ("REDACTION_TEST_KEY", env_key.clone()),
                ("SWITCHBOARD_ADMIN_TOKEN", ADMIN_TOKEN.to_owned()),
                ("RUST_LOG", "trace".to_owned()),
            ],
            output: Some(&log),
            name: None,
        },
    )
    .await;
    let http = reqwest::Client::new();
    let base = router.base.clone();
    let chat = |body: Value| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            let r = http
                .post(format!("{base}/v1/chat/completions"))
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let id = r.headers()["x-switchboard-request-id"]
                .to_str()
                .unwrap()
                .to_owned();
            (status, id, r.text().await.unwrap())
        }
    };

    // Upstreams that echo the request's headers (the key among them) back.
    let mut seen = String::new();
    let mut ids = Vec::new();
    alpha.script([Behaviour::EchoHeaders(401)]);
    let (status, id, body) = chat(ask("small", false)).await;
    assert_eq!(status, 502, "{body}");
    assert!(
        body.contains("[REDACTED]"),
        "the echo was scrubbed, not dropped: {body}"
    );
    seen.push_str(&body);
    ids.push(id);
    beta.script([Behaviour::EchoHeaders(500)]);
    let (status, id, body) = chat(ask("large", false)).await;
    assert_eq!(status, 502, "{body}");
    seen.push_str(&body);
    ids.push(id);
    alpha.script([Behaviour::EchoHeaders(500)]);
    let (status, id, body) = chat(ask("ordered", false)).await;
    assert_eq!(status, 200, "a fallback answered: {body}");
    seen.push_str(&body);
    ids.push(id);
    alpha.script([Behaviour::StreamErrorEchoingHeaders]);
    let (status, id, body) = chat(ask("small", true)).await;
    assert_eq!(status, 200);
    assert!(
        body.contains("[REDACTED]") && !body.contains("[DONE]"),
        "{body}"
    );
    seen.push_str(&body);
    ids.push(id);
    claude.fail_next_echoing_key(500);
    let (status, id, body) = chat(ask("haiku", false)).await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("[REDACTED]"), "{body}");
    seen.push_str(&body);
    ids.push(id);
    for model in ["small", "large", "haiku"] {
        for stream in [false, true] {
            let (status, id, body) = chat(ask(model, stream)).await;
            assert_eq!(status, 200, "{model}: {body}");
            seen.push_str(&body);
            ids.push(id);
        }
    }
    // The keys did travel to the upstreams, so an unscrubbed echo would have leaked them.
    let auth = |m: &MockUpstream| {
        m.last_headers()["authorization"]
            .to_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(auth(&alpha), format!("Bearer {env_key}"));
    assert_eq!(auth(&beta), format!("Bearer {file_key}"));

    // Operator surfaces.
    let get = |path: String| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            let r = http
                .get(format!("{base}{path}"))
                .bearer_auth(ADMIN_TOKEN)
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "{path}: {}", r.status());
            r.text().await.unwrap()
        }
    };
    let created = http
        .post(format!("{base}/admin/keys"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"name": "ci"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    seen.push_str(&created.text().await.unwrap());
    // Let the outbox write every row before reading the stored surfaces.
    let pool = sqlx::PgPool::connect(&db_url).await.unwrap();
    for _ in 0..400 {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM requests")
            .fetch_one(&pool)
            .await
            .unwrap();
        if n >= ids.len() as i64 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    pool.close().await;
    for id in &ids {
        seen.push_str(&get(format!("/admin/decisions/{id}")).await);
    }
    for path in [
        "/metrics",
        "/admin/keys",
        "/v1/models",
        "/readyz",
        "/api/dashboard/summary",
        "/api/dashboard/models",
        "/api/dashboard/timeseries",
        "/api/dashboard/errors",
        "/api/dashboard/spend",
        "/api/dashboard/policy",
    ] {
        seen.push_str(&get(path.to_owned()).await);
    }
    assert!(
        seen.contains("switchboard_requests_total"),
        "metrics were read"
    );
    let stored = dump_database(&db_url).await;
    assert!(stored.contains(&ids[0]), "the rows were read");

    // Stop the router so its log is complete, then read it.
    sigterm(&router.child);
    let mut router = router;
    assert!(router.child.wait().unwrap().success());
    let logs = std::fs::read_to_string(&log).unwrap();
    assert!(logs.contains("TRACE"), "the log is at trace level");
    assert!(
        logs.contains("[REDACTED]"),
        "the failures were logged, scrubbed"
    );

    for key in keys {
        for (what, text) in [
            ("client or operator output", &seen),
            ("stored rows", &stored),
            ("logs", &logs),
        ] {
            if let Some(at) = text.find(key) {
                let from = text[..at]
                    .char_indices()
                    .rev()
                    .nth(200)
                    .map_or(0, |(i, _)| i);
                panic!(
                    "a provider key leaked into {what}: …{}…",
                    &text[from..(at + key.len()).min(text.len())]
                );
            }
        }
    }
}
