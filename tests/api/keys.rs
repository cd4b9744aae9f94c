//! Client keys: missing, wrong, revoked and over-budget keys; a key limited
//! to one route cannot reach another; rates; admin endpoints need the admin
//! token; a burst of parallel requests cannot overshoot a key's budget.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{fresh_postgres, spawn, two_providers, Db, TestApp, ADMIN_TOKEN};
use crate::mock::{Behaviour, MockUpstream};

pub(crate) fn keyed_config(a: &str, b: &str) -> String {
    two_providers(a, b).replace(
        "request_timeout_ms = 5000",
        "request_timeout_ms = 5000\nrequire_api_keys = true",
    )
}

pub(crate) async fn create_key(app: &TestApp, spec: Value) -> (String, String) {
    let r = app
        .http
        .post(format!("{}/admin/keys", app.url))
        .bearer_auth(ADMIN_TOKEN)
        .json(&spec)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let body: Value = r.json().await.unwrap();
    (
        body["id"].as_str().unwrap().to_owned(),
        body["key"].as_str().unwrap().to_owned(),
    )
}

pub(crate) async fn chat_with(app: &TestApp, key: Option<&str>, body: Value) -> reqwest::Response {
    let mut req = app
        .http
        .post(format!("{}/v1/chat/completions", app.url))
        .json(&body);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    req.send().await.unwrap()
}

fn hi(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})
}

async fn code_of(r: reqwest::Response) -> String {
    let v: Value = r.json().await.unwrap();
    v["error"]["code"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn missing_wrong_and_revoked_keys_are_refused_and_a_good_key_is_recorded() {
    let (a, b) = (
        MockUpstream::start("alpha").await,
        MockUpstream::start("beta").await,
    );
    let app = spawn(&keyed_config(&a.base_url(), &b.base_url()), Db::Postgres).await;
    let (id, key) = create_key(&app, json!({"name": "ci", "tenant": "acme"})).await;
    assert!(key.starts_with("sk-sb-"));

    let r = chat_with(&app, None, hi("small")).await;
    assert_eq!(r.status(), 401);
    assert_eq!(code_of(r).await, "invalid_api_key");
    let r = chat_with(&app, Some("sk-sb-not-a-real-key"), hi("small")).await;
    assert_eq!(r.status(), 401);
    let models = app
        .http
        .get(format!("{}/v1/models", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(models.status(), 401, "every /v1 route needs the key");
    assert_eq!(a.calls(), 0, "nothing refused reached an upstream");
    assert_eq!(app.count("requests").await, 0, "nothing refused was stored");

    let r = chat_with(&app, Some(&key), hi("small")).await;
    assert_eq!(r.status(), 200);
    let rid = r.headers()["x-switchboard-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    app.request_row(&rid).await;
    let (key_id, tenant): (Option<String>, Option<String>) = match &app.store {
        switchboard::store::Store::Postgres(p) => {
            sqlx::query_as("SELECT api_key_id, tenant FROM requests WHERE id = $1")
                .bind(&rid)
                .fetch_one(p)
                .await
                .unwrap()
        }
        switchboard::store::Store::Sqlite(_) => unreachable!(),
    };
    assert_eq!(key_id.as_deref(), Some(id.as_str()));
    assert_eq!(tenant.as_deref(), Some("acme"));

    // The stored hash is not the key, and listing never shows either.
    let listed: Value = app
        .http
        .get(format!("{}/admin/keys", app.url))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let text = listed.to_string();
    assert!(!text.contains(&key) && !text.contains("key_hash"));
    assert_eq!(listed["data"][0]["id"], id.as_str());

    let r = app
        .http
        .delete(format!("{}/admin/keys/{id}", app.url))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = chat_with(&app, Some(&key), hi("small")).await;
    assert_eq!(r.status(), 401, "revocation is immediate on this replica");
    let v: Value = r.json().await.unwrap();
    assert!(v["error"]["message"].as_str().unwrap().contains("revoked"));
    app.shutdown().await;
}

#[tokio::test]
async fn admin_key_endpoints_need_the_admin_token() {
    let (a, b) = (
        MockUpstream::start("alpha").await,
        MockUpstream::start("beta").await,
    );
    let app = spawn(&keyed_config(&a.base_url(), &b.base_url()), Db::Postgres).await;
    let url = format!("{}/admin/keys", app.url);
    assert_eq!(app.http.get(&url).send().await.unwrap().status(), 401);
    let r = app
        .http
        .post(&url)
        .bearer_auth("wrong")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = app
        .http
        .delete(format!("{url}/key_x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(app.count("api_keys").await, 0);
    // A bad spec is refused with the field named.
    let r = app
        .http
        .post(&url)
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"budget_usd_per_day": -1.0}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["param"], "budget_usd_per_day");
    app.shutdown().await;
}

#[tokio::test]
async fn a_key_limited_to_one_route_cannot_reach_another_or_a_model() {
    let (a, b) = (
        MockUpstream::start("alpha").await,
        MockUpstream::start("beta").await,
    );
    let app = spawn(&keyed_config(&a.base_url(), &b.base_url()), Db::Postgres).await;
    let (_, key) = create_key(&app, json!({"allowed_routes": ["ordered"], "tier": "free"})).await;
    assert_eq!(
        chat_with(&app, Some(&key), hi("ordered")).await.status(),
        200
    );
    for other in ["auto", "large"] {
        let r = chat_with(&app, Some(&key), hi(other)).await;
        assert_eq!(r.status(), 403, "{other}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["type"], "permission_error");
    }
    assert_eq!(a.calls() + b.calls(), 1);
    app.shutdown().await;
}

#[tokio::test]
async fn a_key_over_its_request_rate_gets_429_with_retry_after() {
    let (a, b) = (
        MockUpstream::start("alpha").await,
        MockUpstream::start("beta").await,
    );
    let app = spawn(&keyed_config(&a.base_url(), &b.base_url()), Db::Postgres).await;
    let (_, key) = create_key(&app, json!({"requests_per_minute": 2})).await;
    assert_eq!(chat_with(&app, Some(&key), hi("small")).await.status(), 200);
    assert_eq!(chat_with(&app, Some(&key), hi("small")).await.status(), 200);
    let r = chat_with(&app, Some(&key), hi("small")).await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(code_of(r).await, "rate_limit_exceeded");
    assert_eq!(a.calls(), 2);
    app.shutdown().await;
}

#[tokio::test]
async fn a_burst_of_parallel_requests_cannot_overshoot_the_budget() {
    let (a, b) = (
        MockUpstream::start("alpha").await,
        MockUpstream::start("beta").await,
    );
    // Every answer is slow, so the whole burst is in flight at once.
    a.set_default(Behaviour::Delay(
        Duration::from_millis(300),
        Box::new(Behaviour::Answer("ok".into())),
    ));
    let app = spawn(&keyed_config(&a.base_url(), &b.base_url()), Db::Postgres).await;
    // `small`: $1 / $2 per Mtok; the mock reports 12 + 5 tokens = $22e-6 a
    // request; the reservation (prompt estimate + 10 output tokens) is larger.
    let budget = 100e-6;
    let (id, key) = create_key(&app, json!({"budget_usd_per_day": budget})).await;
    let body = json!({"model": "small", "max_tokens": 10,
        "messages": [{"role": "user", "content": "hi"}]});
    let burst = (0..12).map(|_| chat_with(&app, Some(&key), body.clone()));
    let results = futures_util::future::join_all(burst).await;
    let mut ok = 0;
    let mut refused = 0;
    for r in results {
        match r.status().as_u16() {
            200 => ok += 1,
            429 => {
                assert_eq!(code_of(r).await, "budget_exceeded");
                refused += 1;
            }
            s => panic!("unexpected status {s}: {}", r.text().await.unwrap()),
        }
    }
    assert!(ok >= 1 && refused >= 1, "ok {ok}, refused {refused}");
    assert_eq!(a.calls(), ok, "refused requests never reach the upstream");
    app.wait_count("requests", ok as i64).await;
    let spent: f64 = match &app.store {
        switchboard::store::Store::Postgres(p) => {
            sqlx::query_scalar("SELECT SUM(cost_usd) FROM requests WHERE api_key_id = $1")
                .bind(&id)
                .fetch_one(p)
                .await
                .unwrap()
        }
        switchboard::store::Store::Sqlite(_) => unreachable!(),
    };
    assert!(spent <= budget, "spent {spent} over a budget of {budget}");
    app.shutdown().await;
}

/// The `switchboard` CLI against a fresh Postgres database.
pub(crate) fn cli_on_fresh_db() -> impl Fn(&[&str]) -> std::process::Output {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let url = rt.block_on(fresh_postgres());
    move |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args(args)
            .env("DATABASE_URL", &url)
            .output()
            .unwrap()
    }
}

/// The id line `keys create` prints.
pub(crate) fn created_id(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("id:  "))
        .unwrap()
        .to_owned()
}

#[test]
fn the_keys_cli_creates_lists_and_revokes() {
    let run = cli_on_fresh_db();
    let out = run(&[
        "keys",
        "create",
        "--tenant",
        "acme",
        "--route",
        "auto,ordered",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let id = created_id(&out);
    let key = text
        .lines()
        .find_map(|l| l.strip_prefix("key: "))
        .unwrap()
        .to_owned();
    let listed = String::from_utf8_lossy(&run(&["keys", "list"]).stdout).to_string();
    assert!(listed.contains(&id) && listed.contains("acme") && !listed.contains(&key));
    assert!(run(&["keys", "revoke", &id]).status.success());
    assert!(
        !run(&["keys", "revoke", &id]).status.success(),
        "already revoked"
    );
    let listed = String::from_utf8_lossy(&run(&["keys", "list"]).stdout).to_string();
    assert!(!listed.contains("\"revoked_at\":null"));
}
