//! Feature flags per client key: `[[rules]]` select keys by flag, id, name
//! or tenant; an experiment with `key_flag` takes only flagged keys; flags
//! change at run time through the admin API and the CLI, and bad flags are
//! refused without changing anything.

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{spawn, Db, TestApp};
use crate::keys::{chat_with, cli_on_fresh_db, create_key, created_id, keyed_config};
use crate::mock::MockUpstream;

fn ask(route: &str) -> Value {
    json!({"model": route, "messages": [{"role": "user", "content": "hi"}]})
}

async fn served_by(app: &TestApp, key: &str, route: &str) -> (String, String) {
    let r = chat_with(app, Some(key), ask(route)).await;
    assert_eq!(r.status(), 200);
    let h = |n: &str| r.headers()[n].to_str().unwrap().to_owned();
    (h("x-switchboard-model"), h("x-switchboard-policy-version"))
}

async fn scalar(app: &TestApp, sql: &str) -> i64 {
    match &app.store {
        switchboard::store::Store::Postgres(p) => {
            sqlx::query_scalar(sql).fetch_one(p).await.unwrap()
        }
        switchboard::store::Store::Sqlite(switchboard::store::SqliteStore { pool: p, .. }) => {
            sqlx::query_scalar(sql).fetch_one(p).await.unwrap()
        }
    }
}

async fn put_flags(app: &TestApp, id: &str, flags: Value) -> reqwest::Response {
    app.admin(
        Method::PUT,
        &format!("/admin/keys/{id}/flags"),
        Some(json!({ "flags": flags })),
    )
    .await
}

#[tokio::test]
async fn flags_tenants_and_key_names_steer_rules_and_flags_gate_an_experiment() {
    let (a, b) = (
        MockUpstream::start("alpha").await,
        MockUpstream::start("beta").await,
    );
    let cfg = format!(
        "{}\n{}",
        keyed_config(&a.base_url(), &b.base_url()),
        r#"
[[rules]]
route = "auto"
pin = "large"
match = { flags = ["beta"] }

[[rules]]
route = "auto"
pin = "small"
match = { tenant = "acme" }

[[rules]]
route = "auto"
models = ["large"]
match = { key = "nightly-batch" }
"#
    );
    let app = spawn(&cfg, Db::Postgres).await;
    let (_, beta) = create_key(&app, json!({"flags": ["beta"]})).await;
    let (_, acme) = create_key(&app, json!({"tenant": "acme"})).await;
    let (_, named) = create_key(&app, json!({"name": "nightly-batch"})).await;
    let (plain_id, plain) = create_key(&app, json!({})).await;
    for _ in 0..4 {
        assert_eq!(
            served_by(&app, &beta, "auto").await,
            ("large".into(), "rule.0".into())
        );
        assert_eq!(
            served_by(&app, &acme, "auto").await,
            ("small".into(), "rule.1".into())
        );
        assert_eq!(served_by(&app, &named, "auto").await.0, "large");
    }
    // The unflagged key is decided by the route's policy, not a rule.
    assert!(!served_by(&app, &plain, "auto").await.1.starts_with("rule."));

    // Flags change at run time, at once on this replica.
    assert_eq!(
        put_flags(&app, &plain_id, json!(["beta"])).await.status(),
        200
    );
    assert_eq!(
        served_by(&app, &plain, "auto").await,
        ("large".into(), "rule.0".into())
    );

    // Bad flags and unknown keys are refused; nothing stored changes.
    for bad in [json!(["has space"]), json!(["x", "x"]), json!([""])] {
        let r = put_flags(&app, &plain_id, bad).await;
        assert_eq!(r.status(), 422);
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"]["param"], "flags");
    }
    assert_eq!(
        put_flags(&app, "key_nope", json!(["a"])).await.status(),
        404
    );
    let keys: Value = app
        .admin(Method::GET, "/admin/keys", None)
        .await
        .json()
        .await
        .unwrap();
    let stored = keys["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == plain_id.as_str())
        .unwrap();
    assert_eq!(stored["flags"], json!(["beta"]));

    // An experiment limited to keys flagged `canary`: only they take part.
    let r = app
        .admin(
            Method::POST,
            "/admin/experiments/flagged/start",
            Some(
                json!({"route": "ordered", "kind": "canary", "candidate": "large",
                        "share": 1.0, "key_flag": "canary"}),
            ),
        )
        .await;
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    let (canary_id, canary) = create_key(&app, json!({"flags": ["canary"]})).await;
    for _ in 0..5 {
        assert_eq!(served_by(&app, &canary, "ordered").await.0, "large");
        assert_eq!(served_by(&app, &plain, "ordered").await.0, "small");
    }
    app.wait_count("requests", 24).await;
    let in_experiment = scalar(
        &app,
        &format!(
            "SELECT COUNT(*) FROM requests WHERE experiment = 'flagged' \
             AND experiment_arm = 'candidate' AND api_key_id = '{canary_id}'"
        ),
    )
    .await;
    assert_eq!(in_experiment, 5);
    let others = scalar(
        &app,
        &format!("SELECT COUNT(*) FROM requests WHERE experiment = 'flagged' AND api_key_id <> '{canary_id}'"),
    )
    .await;
    assert_eq!(others, 0, "unflagged keys are not in the experiment");
    let report: Value = app
        .admin(Method::GET, "/admin/experiments/flagged", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(report["key_flag"], "canary");
    app.shutdown().await;
}

#[test]
fn the_keys_cli_creates_flagged_keys_and_replaces_flags() {
    let run = cli_on_fresh_db();
    let out = run(&["keys", "create", "--flag", "beta,canary"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = created_id(&out);
    let listed = String::from_utf8_lossy(&run(&["keys", "list"]).stdout).to_string();
    assert!(listed.contains(r#""flags":["beta","canary"]"#), "{listed}");
    assert!(run(&["keys", "flags", &id, "--flag", "gamma"])
        .status
        .success());
    let listed = String::from_utf8_lossy(&run(&["keys", "list"]).stdout).to_string();
    assert!(listed.contains(r#""flags":["gamma"]"#), "{listed}");
    let bad = run(&["keys", "flags", &id, "--flag", "no spaces allowed"]);
    assert!(!bad.status.success());
    let listed = String::from_utf8_lossy(&run(&["keys", "list"]).stdout).to_string();
    assert!(
        listed.contains(r#""flags":["gamma"]"#),
        "a refused change stores nothing"
    );
    assert!(!run(&["keys", "flags", "key_nope", "--flag", "a"])
        .status
        .success());
}
