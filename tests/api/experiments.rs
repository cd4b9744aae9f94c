//! Experiments over HTTP: a sticky 10 % canary, shadow traffic, the
//! blue-green switch of a route under load, and experiment state that
//! survives a restart.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::Method;
use serde_json::{json, Value};
use switchboard::store::{SqliteStore, Store};

use crate::helpers::{spawn, spawn_on, Db, TestApp};
use crate::mock::{Behaviour, MockUpstream};
use crate::reload::config;

/// A count from the test's database.
pub async fn scalar(app: &TestApp, sql: &str) -> i64 {
    match &app.store {
        Store::Postgres(p) => sqlx::query_scalar(sql).fetch_one(p).await.unwrap(),
        Store::Sqlite(SqliteStore { pool: p, .. }) => {
            sqlx::query_scalar(sql).fetch_one(p).await.unwrap()
        }
    }
}

/// Waits (bounded) until `sql` counts at least `n`.
pub async fn wait_scalar(app: &TestApp, sql: &str, n: i64) -> i64 {
    let mut last = 0;
    for _ in 0..400 {
        last = scalar(app, sql).await;
        if last >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    last
}

/// Sends `n` requests to `route` (16 at a time); request `i` carries user
/// `user(i)`. Returns (user, answering model) per request.
pub async fn run(
    app: &TestApp,
    route: &str,
    n: usize,
    user: impl Fn(usize) -> Option<String>,
) -> Vec<(Option<String>, String)> {
    let jobs = (0..n).map(|i| {
        let u = user(i);
        let mut body =
            json!({"model": route, "messages": [{"role": "user", "content": format!("q{i}")}]});
        if let Some(u) = &u {
            body["switchboard"] = json!({"user": u});
        }
        async move {
            let r = app.chat(body).await;
            assert_eq!(r.status(), 200, "{:?}", r.text().await);
            let model = r.headers()["x-switchboard-model"]
                .to_str()
                .unwrap()
                .to_owned();
            (u, model)
        }
    });
    futures_util::stream::iter(jobs)
        .buffer_unordered(16)
        .collect()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ten_percent_canary_gets_ten_percent_and_users_stick() {
    let (a, b) = (
        MockUpstream::start("alpha").await,
        MockUpstream::start("beta").await,
    );
    let cfg = config(&a, &b, r#"["small"]"#, 0)
        + r#"
[[experiments]]
name = "try-large"
route = "main"
kind = "canary"
candidate = "large"
share = 0.10
sticky_by = "user"
"#;
    let app = spawn(&cfg, Db::Postgres).await;
    let out = run(&app, "main", 2000, |i| Some(format!("user-{}", i % 1000))).await;
    let canary = out.iter().filter(|(_, m)| m == "large").count();
    assert!(
        (160..=240).contains(&canary),
        "canary got {canary} of 2000 requests"
    );
    let mut seen: HashMap<String, String> = HashMap::new();
    for (u, m) in &out {
        let prev = seen.entry(u.clone().unwrap()).or_insert_with(|| m.clone());
        assert_eq!(prev, m, "user {u:?} switched arms");
    }
    assert_eq!(b.calls(), canary, "the candidate answered exactly its arm");

    // Every request records its arm, and the report counts them.
    let stored = wait_scalar(
        &app,
        "SELECT COUNT(*) FROM requests WHERE experiment = 'try-large'",
        2000,
    )
    .await;
    assert_eq!(stored, 2000);
    let candidate = scalar(
        &app,
        "SELECT COUNT(*) FROM requests WHERE experiment = 'try-large' AND experiment_arm = 'candidate' AND model = 'large'",
    )
    .await;
    assert_eq!(candidate as usize, canary);
    let r = app
        .admin(Method::GET, "/admin/experiments/try-large", None)
        .await;
    assert_eq!(r.status(), 200);
    let doc: Value = r.json().await.unwrap();
    assert_eq!(doc["status"], "running");
    assert_eq!(doc["arms"]["candidate"]["requests"], canary);
    assert_eq!(doc["arms"]["control"]["requests"], 2000 - canary);
    let view: Value = app
        .http
        .get(format!("{}/admin/routes/main", app.url))
        .bearer_auth(crate::helpers::ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(view["experiments"][0]["name"], "try-large");

    // Stop: back to normal; the state is stored.
    let r = app
        .admin(Method::POST, "/admin/experiments/try-large/stop", None)
        .await;
    assert_eq!(r.status(), 200);
    let out = run(&app, "main", 100, |i| Some(format!("user-{i}"))).await;
    assert!(out.iter().all(|(_, m)| m == "small"));
    app.shutdown().await;
}

#[tokio::test]
async fn shadow_traffic_reaches_the_candidate_without_changing_the_answer() {
    let (a, b) = (
        MockUpstream::start("alpha").await,
        MockUpstream::start("beta").await,
    );
    let cfg = config(&a, &b, r#"["small"]"#, 0)
        + r#"
[[experiments]]
name = "mirror-large"
route = "main"
kind = "shadow"
candidate = "large"
share = 1.0
"#;
    let app = spawn(&cfg, Db::Postgres).await;
    let key: Value = app
        .admin(Method::POST, "/admin/keys", Some(json!({"name": "app"})))
        .await
        .json()
        .await
        .unwrap();
    let key = key["key"].as_str().unwrap().to_owned();
    let mut ids = Vec::new();
    for i in 0..10 {
        let r = app
            .http
            .post(format!("{}/v1/chat/completions", app.url))
            .bearer_auth(&key)
            .json(&json!({"model": "main", "stream": i % 2 == 0,
                "messages": [{"role": "user", "content": format!("q{i}")}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-switchboard-model"], "small");
        ids.push(
            r.headers()["x-switchboard-request-id"]
                .to_str()
                .unwrap()
                .to_owned(),
        );
        let text = r.text().await.unwrap();
        assert!(text.contains("alpha."), "{text}");
        assert!(!text.contains("beta"), "{text}");
    }
    let mirrored = wait_scalar(
        &app,
        "SELECT COUNT(*) FROM requests WHERE shadow AND experiment = 'mirror-large' AND model = 'large' AND status = 'ok'",
        10,
    )
    .await;
    assert_eq!(mirrored, 10);
    assert_eq!(b.calls(), 10, "every request was mirrored to the candidate");
    for body in b.bodies() {
        assert!(body.get("stream").is_none(), "mirrors are not streamed");
        assert!(body.get("switchboard").is_none());
    }
    // Linked to the client's request; never charged to the key.
    let linked = scalar(
        &app,
        "SELECT COUNT(*) FROM requests s JOIN requests o ON o.id = s.shadow_of \
         WHERE s.shadow AND o.model = 'small' AND NOT o.shadow AND o.api_key_id IS NOT NULL",
    )
    .await;
    assert_eq!(linked, 10);
    let charged = scalar(
        &app,
        "SELECT COUNT(*) FROM requests WHERE shadow AND (api_key_id IS NOT NULL OR tenant IS NOT NULL)",
    )
    .await;
    assert_eq!(charged, 0);
    let doc: Value = app
        .admin(Method::GET, "/admin/experiments/mirror-large", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(doc["arms"]["shadow"]["requests"], 10);
    assert_eq!(doc["arms"]["control"]["requests"], 10);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blue_green_switch_under_load_drops_no_request() {
    let (a, b) = (
        MockUpstream::start("alpha").await,
        MockUpstream::start("beta").await,
    );
    for m in [&a, &b] {
        m.set_default(Behaviour::Delay(
            Duration::from_millis(20),
            Box::new(Behaviour::Answer("ok".into())),
        ));
    }
    let cfg = config(&a, &b, r#"["small"]"#, 0)
        + "\n[[routes]]\nname = \"main-green\"\nmodels = [\"large\"]\npolicy = \"fixed\"\n";
    let app = Arc::new(spawn(&cfg, Db::Postgres).await);
    let r = app
        .admin(
            Method::POST,
            "/admin/experiments/bg/start",
            Some(json!({"route": "main", "kind": "ab", "candidate": "main-green", "share": 0.0})),
        )
        .await;
    assert_eq!(r.status(), 200, "{:?}", r.text().await);

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..4 {
        let (app, stop) = (app.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || i < 20 {
                let stream = (w + i) % 2 == 0;
                let r = app
                    .chat(json!({"model": "main", "stream": stream,
                        "messages": [{"role": "user", "content": format!("w{w} q{i}")}]}))
                    .await;
                let status = r.status();
                let model = r
                    .headers()
                    .get("x-switchboard-model")
                    .map(|v| v.to_str().unwrap().to_owned());
                let text = r.text().await.unwrap();
                assert_eq!(status, 200, "{text}");
                if stream {
                    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
                }
                seen.push(model.unwrap());
                i += 1;
            }
            seen
        }));
    }
    // Let traffic flow on blue, switch in one step, let it flow on green.
    while a.calls() < 40 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let r = app
        .admin(Method::POST, "/admin/experiments/bg/promote", None)
        .await;
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    let switched_at = b.calls();
    while b.calls() < switched_at + 40 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for w in workers {
        let seen = w.await.unwrap();
        total += seen.len();
        // Each worker saw blue, then green, never back.
        let first_green = seen.iter().position(|m| m == "large").unwrap_or(seen.len());
        assert!(seen[first_green..].iter().all(|m| m == "large"), "{seen:?}");
        assert_eq!(seen.last().map(String::as_str), Some("large"));
    }
    assert!(total >= 80);
    let view: Value = app
        .admin(Method::GET, "/admin/experiments/bg", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(view["status"], "promoted");

    // Stop undoes the switch.
    let r = app
        .admin(Method::POST, "/admin/experiments/bg/stop", None)
        .await;
    assert_eq!(r.status(), 200);
    let out = crate::experiments::run(&app, "main", 10, |_| None).await;
    assert!(out.iter().all(|(_, m)| m == "small"), "{out:?}");
    match Arc::try_unwrap(app) {
        Ok(app) => app.shutdown().await,
        Err(_) => panic!("workers still hold the app"),
    }
}

#[tokio::test]
async fn experiment_state_survives_a_restart_and_bad_starts_are_refused() {
    let (a, b) = (
        MockUpstream::start("alpha").await,
        MockUpstream::start("beta").await,
    );
    let cfg = config(&a, &b, r#"["small"]"#, 0)
        + r#"
[[experiments]]
name = "all-large"
route = "main"
kind = "canary"
candidate = "large"
share = 1.0
"#;
    let app = spawn(&cfg, Db::Postgres).await;
    assert_eq!(crate::reload::model_of(&app, "main").await, "large");
    let r = app
        .admin(Method::POST, "/admin/experiments/all-large/stop", None)
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(crate::reload::model_of(&app, "main").await, "small");

    // Refused: an unknown candidate, a second acting experiment, a bad share.
    for (body, code) in [
        (
            json!({"route": "main", "kind": "canary", "candidate": "nope", "share": 0.1}),
            422,
        ),
        (
            json!({"route": "main", "kind": "canary", "candidate": "large", "share": 1.5}),
            422,
        ),
        (
            json!({"route": "nowhere", "kind": "canary", "candidate": "large", "share": 0.1}),
            422,
        ),
        (
            json!({"route": "main", "kind": "sideways", "candidate": "large", "share": 0.1}),
            400,
        ),
    ] {
        let r = app
            .admin(Method::POST, "/admin/experiments/x/start", Some(body))
            .await;
        assert_eq!(r.status(), code);
        let e: Value = r.json().await.unwrap();
        assert!(e["error"]["message"].is_string());
    }
    let r = app
        .admin(
            Method::POST,
            "/admin/experiments/shadowing/start",
            Some(json!({"route": "main", "kind": "shadow", "candidate": "large", "share": 0.5})),
        )
        .await;
    assert_eq!(r.status(), 200);
    let r = app
        .admin(Method::POST, "/admin/experiments/all-large/start", None)
        .await;
    assert_eq!(r.status(), 200);
    let r = app
        .admin(
            Method::POST,
            "/admin/experiments/second/start",
            Some(json!({"route": "main", "kind": "canary", "candidate": "large", "share": 0.1})),
        )
        .await;
    assert_eq!(r.status(), 409);
    let r = app
        .admin(Method::POST, "/admin/experiments/all-large/stop", None)
        .await;
    assert_eq!(r.status(), 200);

    // After a restart on the same database: still stopped, the API one still runs.
    let db = app.db_url.clone();
    app.shutdown().await;
    let app = spawn_on(&cfg, &db, tempfile::tempdir().unwrap()).await;
    assert_eq!(crate::reload::model_of(&app, "main").await, "small");
    let list: Value = app
        .admin(Method::GET, "/admin/experiments", None)
        .await
        .json()
        .await
        .unwrap();
    let status = |name: &str| {
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .map(|e| e["status"].clone())
    };
    assert_eq!(status("all-large"), Some(json!("stopped")));
    assert_eq!(status("shadowing"), Some(json!("running")));
    app.shutdown().await;
}

/// `switchboard experiment ...` against the running router's admin API.
async fn cli(app: &TestApp, args: &[&str]) -> (bool, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .arg("experiment")
        .args(args)
        .args(["--url", &app.url])
        .env("SWITCHBOARD_ADMIN_TOKEN", crate::helpers::ADMIN_TOKEN)
        .env("RUST_LOG", "error")
        .output()
        .await
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[tokio::test]
async fn the_experiment_cli_drives_a_canary_to_promotion() {
    let (a, b) = (
        MockUpstream::start("alpha").await,
        MockUpstream::start("beta").await,
    );
    let app = spawn(&config(&a, &b, r#"["small"]"#, 0), Db::Postgres).await;
    let (ok, out) = cli(
        &app,
        &[
            "start",
            "new-large",
            "--route",
            "main",
            "--kind",
            "canary",
            "--candidate",
            "large",
            "--share",
            "0.05",
            "--sticky-by",
            "user",
        ],
    )
    .await;
    assert!(ok, "{out}");
    assert!(
        out.contains("new-large (canary on route main, candidate large, share 0.05): running"),
        "{out}"
    );
    run(&app, "main", 200, |i| Some(format!("u{i}"))).await;
    wait_scalar(
        &app,
        "SELECT COUNT(*) FROM requests WHERE experiment = 'new-large'",
        200,
    )
    .await;
    let (ok, out) = cli(&app, &["status", "new-large"]).await;
    assert!(ok, "{out}");
    assert!(out.contains("candidate"), "{out}");
    // Promote with --replace: `large` joins `main` and `small` retires at once.
    let (ok, out) = cli(&app, &["promote", "new-large", "--replace"]).await;
    assert!(ok, "{out}");
    assert!(out.contains(": promoted"), "{out}");
    let mut only_large = false;
    for _ in 0..200 {
        let view: Value = app
            .admin(Method::GET, "/admin/routes/main", None)
            .await
            .json()
            .await
            .unwrap();
        let models: Vec<&str> = view["models"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["model"].as_str().unwrap())
            .collect();
        if models == ["large"] {
            only_large = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(only_large, "the old model never retired");
    let out = run(&app, "main", 20, |i| Some(format!("u{i}"))).await;
    assert!(out.iter().all(|(_, m)| m == "large"), "{out:?}");
    // Refusals come back as errors with the router's message.
    let (ok, out) = cli(&app, &["stop", "no-such"]).await;
    assert!(!ok);
    assert!(out.contains("No experiment `no-such`"), "{out}");
    app.shutdown().await;
}

/// The control tables, the per-request columns and the results queries on
/// the embedded SQLite store.
#[tokio::test]
async fn experiments_and_controls_work_on_sqlite() {
    let (a, b) = (
        MockUpstream::start("alpha").await,
        MockUpstream::start("beta").await,
    );
    let cfg = config(&a, &b, r#"["small", "large"]"#, 0)
        + r#"
[[experiments]]
name = "half"
route = "main"
kind = "canary"
candidate = "large"
share = 0.5
sticky_by = "user"

[[experiments]]
name = "mirror"
route = "main"
kind = "shadow"
candidate = "large"
share = 1.0
"#;
    let app = spawn(&cfg, Db::Sqlite).await;
    let out = run(&app, "main", 100, |i| Some(format!("u{}", i % 50))).await;
    let large = out.iter().filter(|(_, m)| m == "large").count();
    assert!(large > 0 && large < 100, "{large}");
    wait_scalar(
        &app,
        "SELECT COUNT(*) FROM requests WHERE experiment = 'half'",
        100,
    )
    .await;
    wait_scalar(
        &app,
        "SELECT COUNT(*) FROM requests WHERE shadow AND experiment = 'mirror'",
        100,
    )
    .await;
    let doc: Value = app
        .admin(Method::GET, "/admin/experiments/half", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(doc["arms"]["candidate"]["requests"], large);
    let doc: Value = app
        .admin(Method::GET, "/admin/experiments/mirror", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(doc["arms"]["shadow"]["requests"], 100);
    let rows = scalar(
        &app,
        "SELECT COUNT(*) FROM experiment_results WHERE experiment = 'half'",
    )
    .await;
    assert_eq!(rows, 2);
    let r = app
        .admin(Method::POST, "/admin/experiments/half/stop", None)
        .await;
    assert_eq!(r.status(), 200);
    let r = app
        .admin(Method::POST, "/admin/models/large/disable", None)
        .await;
    assert_eq!(r.status(), 200);
    let r = app
        .admin(
            Method::POST,
            "/admin/routes/main/models/small/retire",
            Some(json!({"window_s": 3600})),
        )
        .await;
    assert_eq!(r.status(), 200);
    let out = run(&app, "auto", 20, |_| None).await;
    assert!(out.iter().all(|(_, m)| m == "small"), "{out:?}");
    app.shutdown().await;
}

/// Premium traffic pinned by a rule and a tier that must never be
/// experimented on stay out of a canary that takes everyone else.
#[tokio::test]
async fn pinned_and_protected_tiers_stay_out_of_experiments() {
    let (a, b) = (
        MockUpstream::start("alpha").await,
        MockUpstream::start("beta").await,
    );
    let cfg = config(&a, &b, r#"["small"]"#, 0)
        + r#"tier_exploration_caps = { batch = 0.0 }

[[rules]]
match = { tier = "premium" }
route = "main"
pin = "small"

[[experiments]]
name = "everyone"
route = "main"
kind = "canary"
candidate = "large"
share = 1.0
"#;
    let app = spawn(&cfg, Db::Postgres).await;
    let tiered = |tier: &str| {
        let app = &app;
        let body = json!({"model": "main", "messages": [{"role": "user", "content": "hi"}],
                          "switchboard": {"tier": tier}});
        async move {
            let r = app.chat(body).await;
            assert_eq!(r.status(), 200);
            (
                r.headers()["x-switchboard-model"]
                    .to_str()
                    .unwrap()
                    .to_owned(),
                r.headers()["x-switchboard-request-id"]
                    .to_str()
                    .unwrap()
                    .to_owned(),
            )
        }
    };
    let (m, _) = tiered("free").await;
    assert_eq!(m, "large", "the canary takes ordinary traffic");
    for tier in ["premium", "batch"] {
        let (m, id) = tiered(tier).await;
        assert_eq!(m, "small", "{tier} was experimented on");
        let row = app.request_row(&id).await;
        assert_eq!(row.model.as_deref(), Some("small"));
        let n = scalar(
            &app,
            &format!("SELECT COUNT(*) FROM requests WHERE id = '{id}' AND experiment IS NULL"),
        )
        .await;
        assert_eq!(n, 1, "{tier} recorded as part of the experiment");
    }
    app.shutdown().await;
}
