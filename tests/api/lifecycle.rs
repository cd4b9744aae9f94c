//! Models entering and leaving routes without a restart: disabled models
//! are never chosen (and stay disabled across a reload), a retired model
//! stops receiving traffic, an onboarded model gets exactly its forced
//! exploration quota, and learned state carries over a reload.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::experiments::{run, scalar, wait_scalar};
use crate::helpers::{spawn, spawn_file, Db, TestApp};
use crate::mock::{Behaviour, MockUpstream};
use crate::reload::{config, model_of};

async fn get(app: &TestApp, path: &str) -> Value {
    let r = app.admin(Method::GET, path, None).await;
    assert_eq!(r.status(), 200, "{path}");
    r.json().await.unwrap()
}

/// The models route `route` lists now.
async fn arms(app: &TestApp, route: &str) -> Vec<String> {
    get(app, &format!("/admin/routes/{route}")).await["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["model"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_disabled_model_is_never_chosen_nor_fallen_back_to() {
    let (a, b) = (
        MockUpstream::start("alpha").await,
        MockUpstream::start("beta").await,
    );
    let app = spawn_file(&config(&a, &b, r#"["small", "large"]"#, 0), Db::Postgres).await;
    let r = app
        .admin(
            Method::POST,
            "/admin/models/large/disable",
            Some(json!({"reason": "provider incident"})),
        )
        .await;
    assert_eq!(r.status(), 200);
    let models = get(&app, "/admin/models").await;
    let large = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "large")
        .unwrap()
        .clone();
    assert_eq!(large["disabled"], true);
    assert_eq!(large["disabled_reason"], "provider incident");

    // `auto` picks at random over both: never `large` now.
    let out = run(&app, "auto", 40, |_| None).await;
    assert!(out.iter().all(|(_, m)| m == "small"), "{out:?}");
    // When `small` fails, `large` is not the fallback.
    a.set_default(Behaviour::Status(500, None));
    let r = app
        .chat(json!({"model": "main", "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(r.status(), 502);
    // Asked for by name, it is refused.
    let r = app
        .chat(json!({"model": "large", "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(r.status(), 503);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "model_disabled");
    assert_eq!(b.calls(), 0);

    // The flag outlives a reload.
    app.write_config(&config(&a, &b, r#"["large", "small"]"#, 0));
    let r = app.admin(Method::POST, "/admin/config/reload", None).await;
    assert_eq!(r.status(), 200);
    a.set_default(Behaviour::Answer("back".into()));
    let out = run(&app, "main", 10, |_| None).await;
    assert!(out.iter().all(|(_, m)| m == "small"), "{out:?}");
    assert_eq!(b.calls(), 0);

    let r = app
        .admin(Method::POST, "/admin/models/large/enable", None)
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(model_of(&app, "main").await, "large");
    let r = app
        .admin(Method::POST, "/admin/models/huge/disable", None)
        .await;
    assert_eq!(r.status(), 404);
    app.shutdown().await;
}

#[tokio::test]
async fn a_retired_model_stops_receiving_traffic_and_keeps_its_history() {
    let (a, b) = (
        MockUpstream::start("alpha").await,
        MockUpstream::start("beta").await,
    );
    let app = spawn(&config(&a, &b, r#"["small", "large"]"#, 0), Db::Postgres).await;
    let out = run(&app, "auto", 40, |_| None).await;
    let before = out.iter().filter(|(_, m)| m == "large").count();
    assert!(before > 0, "random routing used `large`");

    // The last model of a route cannot retire.
    let r = app
        .admin(
            Method::POST,
            "/admin/routes/ordered/models/small/retire",
            Some(json!({"window_s": 1})),
        )
        .await;
    assert_eq!(r.status(), 200);
    let r = app
        .admin(
            Method::POST,
            "/admin/routes/ordered/models/large/retire",
            Some(json!({"window_s": 1})),
        )
        .await;
    assert_eq!(r.status(), 409);

    let r = app
        .admin(
            Method::POST,
            "/admin/routes/auto/models/large/retire",
            Some(json!({"window_s": 1})),
        )
        .await;
    assert_eq!(r.status(), 200);
    let view: Value = r.json().await.unwrap();
    let large = view["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["model"] == "large")
        .unwrap()
        .clone();
    assert_eq!(large["state"], "retiring");
    // Once its window has run out it leaves the route.
    let mut left = false;
    for _ in 0..200 {
        if !arms(&app, "auto").await.contains(&"large".to_owned()) {
            left = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(left, "`large` never left the route");
    let calls = b.calls();
    let out = run(&app, "auto", 40, |_| None).await;
    assert!(out.iter().all(|(_, m)| m == "small"), "{out:?}");
    assert_eq!(b.calls(), calls, "the retired model got traffic");
    let view = get(&app, "/admin/routes/auto").await;
    assert_eq!(view["retired_models"], json!(["large"]));
    // Its history stays.
    let kept = wait_scalar(
        &app,
        "SELECT COUNT(*) FROM requests WHERE route = 'auto' AND model = 'large'",
        before as i64,
    )
    .await;
    assert_eq!(kept, before as i64);
    // The other route still has it; restoring puts it back.
    assert!(arms(&app, "main").await.contains(&"large".to_owned()));
    let r = app
        .admin(Method::DELETE, "/admin/routes/auto/models/large", None)
        .await;
    assert_eq!(r.status(), 200);
    assert!(arms(&app, "auto").await.contains(&"large".to_owned()));
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_onboarded_model_gets_its_prior_and_exactly_its_forced_quota() {
    let (a, b) = (
        MockUpstream::start("alpha").await,
        MockUpstream::start("beta").await,
    );
    // `main` is fixed on `small`: only forced exploration can reach `large`.
    let app = spawn(&config(&a, &b, r#"["small"]"#, 0), Db::Postgres).await;
    let r = app
        .admin(
            Method::POST,
            "/admin/routes/main/models/large/onboard",
            Some(json!({"prior_quality": 0.9, "explore_quota": 15, "explore_share": 0.5})),
        )
        .await;
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    let view: Value = r.json().await.unwrap();
    let large = view["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["model"] == "large")
        .unwrap()
        .clone();
    assert_eq!(large["state"], "onboarding");
    assert_eq!(large["prior_quality"], 0.9);
    let policy = get(&app, "/admin/routes/main/policy").await;
    let prior = policy["arms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["model"] == "large")
        .unwrap()["estimate"]["quality"]
        .as_f64()
        .unwrap();
    assert!((prior - 0.9).abs() < 0.05, "prior {prior}");

    let out = run(&app, "main", 200, |_| None).await;
    let forced = out.iter().filter(|(_, m)| m == "large").count();
    assert_eq!(forced, 15, "the quota caps forced exploration");
    let logged = wait_scalar(
        &app,
        "SELECT COUNT(*) FROM requests WHERE experiment = 'onboard:large' AND experiment_arm = 'forced'",
        15,
    )
    .await;
    assert_eq!(logged, 15);
    // Propensities stay exact: 0.5 for a forced draw on a fixed route.
    let bad = scalar(
        &app,
        "SELECT COUNT(*) FROM requests WHERE experiment = 'onboard:large' AND abs(propensity - 0.5) > 1e-9",
    )
    .await;
    assert_eq!(bad, 0);
    let view = get(&app, "/admin/routes/main").await;
    let large = view["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["model"] == "large")
        .unwrap()
        .clone();
    assert_eq!(large["forced_decisions"], 15);
    assert_eq!(large["state"], "active");
    app.shutdown().await;
}

#[tokio::test]
async fn learned_state_carries_over_a_reload_for_arms_that_remain() {
    let (a, b) = (
        MockUpstream::start("alpha").await,
        MockUpstream::start("beta").await,
    );
    let app = spawn_file(&config(&a, &b, r#"["small"]"#, 0), Db::Postgres).await;
    run(&app, "main", 20, |_| None).await;
    let outcomes = |doc: &Value, model: &str| {
        doc["arms"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["model"] == model)
            .map(|a| a["counts"]["outcomes"].as_u64().unwrap())
    };
    let mut learned = 0;
    for _ in 0..200 {
        learned = outcomes(&get(&app, "/admin/routes/main/policy").await, "small").unwrap();
        if learned >= 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(learned, 20);

    app.write_config(&config(&a, &b, r#"["small", "large"]"#, 0));
    let r = app.admin(Method::POST, "/admin/config/reload", None).await;
    assert_eq!(r.status(), 200);
    let doc = get(&app, "/admin/routes/main/policy").await;
    assert_eq!(outcomes(&doc, "small"), Some(20), "kept");
    assert_eq!(outcomes(&doc, "large"), Some(0), "new arm at its prior");

    app.write_config(&config(&a, &b, r#"["large"]"#, 0));
    let r = app.admin(Method::POST, "/admin/config/reload", None).await;
    assert_eq!(r.status(), 200);
    let doc = get(&app, "/admin/routes/main/policy").await;
    assert_eq!(outcomes(&doc, "small"), None, "removed arm dropped");
    assert_eq!(doc["arms"].as_array().unwrap().len(), 1);
    app.shutdown().await;
}

/// A control changed on one replica reaches another on the same database
/// (LISTEN/NOTIFY), without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_replica_follows_controls_made_on_the_first() {
    let (a, b) = (
        MockUpstream::start("alpha").await,
        MockUpstream::start("beta").await,
    );
    let cfg = config(&a, &b, r#"["large", "small"]"#, 0);
    let first = spawn(&cfg, Db::Postgres).await;
    let second = crate::helpers::spawn_on(&cfg, &first.db_url, tempfile::tempdir().unwrap()).await;
    assert_eq!(model_of(&second, "main").await, "large");
    let r = first
        .admin(Method::POST, "/admin/models/large/disable", None)
        .await;
    assert_eq!(r.status(), 200);
    let mut followed = false;
    for _ in 0..200 {
        if model_of(&second, "main").await == "small" {
            followed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(followed, "the second replica never saw the disabled model");
    let r = first
        .admin(
            Method::POST,
            "/admin/experiments/all/start",
            Some(json!({"route": "main", "kind": "canary", "candidate": "small", "share": 1.0})),
        )
        .await;
    assert_eq!(r.status(), 200);
    let mut seen = false;
    for _ in 0..200 {
        let list = get(&second, "/admin/experiments").await;
        if list["data"][0]["name"] == "all" {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(seen, "the second replica never saw the experiment");
    second.shutdown().await;
    first.shutdown().await;
}
