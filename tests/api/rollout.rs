//! Policy rollouts: a stored policy version decides for a canary share, is
//! rolled back automatically when it does worse, is promoted automatically
//! only when its offline lower bound and its online interval both beat the
//! incumbent, and in shadow is scored off-policy without acting.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use switchboard::bandit::PolicySnapshot;
use switchboard::config::{load_str, Env};
use switchboard_training::job::{publish, RouteSetup};

use crate::experiments::{scalar, wait_scalar};
use crate::helpers::{spawn, two_providers, Db, TestApp};
use crate::mock::MockUpstream;

/// A greedy LinUCB route `smart` over both models, cost ignored.
fn config(a: &MockUpstream, b: &MockUpstream) -> String {
    two_providers(&a.base_url(), &b.base_url())
        + r#"
[[routes]]
name = "smart"
models = ["small", "large"]
policy = "linucb"
exploration_cap = 0.0
objective = { cost_weight = 0.0 }
[routes.bandit]
exploration_floor = 0.0
"#
}

/// Stores candidate `version` for `smart`, preferring `favourite`, with
/// an offline report whose DR lower bound is `offline_lo` against an
/// incumbent at 0.5.
async fn candidate(app: &TestApp, cfg: &str, version: &str, favourite: &str, offline_lo: f64) {
    let config = load_str(cfg, "t.toml", &Env::new()).unwrap();
    let mut spec = RouteSetup::new(&config, "smart").unwrap().spec;
    for arm in &mut spec.arms {
        arm.prior_quality = Some(if arm.name.as_str() == favourite {
            0.95
        } else {
            0.05
        });
    }
    let snapshot = PolicySnapshot::from_fitted(&spec, version, vec![]).unwrap();
    let report = json!({"candidate": {"dr": {"value": offline_lo + 0.05, "lo": offline_lo, "hi": offline_lo + 0.1}},
                        "active": {"dr": {"value": 0.5, "lo": 0.45, "hi": 0.55}}});
    publish(&app.store, "smart", &snapshot, &report, None, false)
        .await
        .unwrap();
}

/// One request with its feedback; `score(policy_version, model)`.
async fn exchange(app: &TestApp, i: usize, score: &impl Fn(&str, &str) -> f64) -> (String, String) {
    let r = app
        .chat(json!({"model": "smart", "messages": [{"role": "user", "content": format!("question {i}")}]}))
        .await;
    assert_eq!(r.status(), 200);
    let h = |n: &str| r.headers()[n].to_str().unwrap().to_owned();
    let (id, version, model) = (
        h("x-switchboard-request-id"),
        h("x-switchboard-policy-version"),
        h("x-switchboard-model"),
    );
    let f = app
        .http
        .post(format!("{}/v1/feedback", app.url))
        .json(&json!({"request_id": id, "score": score(&version, &model)}))
        .send()
        .await
        .unwrap();
    assert_eq!(f.status(), 202);
    (version, model)
}

async fn experiment(app: &TestApp, name: &str) -> Value {
    app.admin(Method::GET, &format!("/admin/experiments/{name}"), None)
        .await
        .json()
        .await
        .unwrap()
}

/// Sends traffic with feedback until the experiment leaves `running`
/// (bounded); returns its document.
async fn until_decided(app: &TestApp, name: &str, score: impl Fn(&str, &str) -> f64) -> Value {
    let mut i = 0;
    for _ in 0..60 {
        for _ in 0..20 {
            exchange(app, i, &score).await;
            i += 1;
        }
        let doc = experiment(app, name).await;
        if doc["status"] != "running" {
            return doc;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("{name} was never decided: {}", experiment(app, name).await);
}

fn auto(share: f64, candidate: &str) -> Value {
    json!({"route": "smart", "kind": "canary", "candidate": candidate, "share": share,
           "auto_promote": {"enabled": true, "min_samples": 30, "confidence": 0.95}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_canary_that_does_worse_is_rolled_back() {
    let (a, b) = (
        MockUpstream::start("alpha").await,
        MockUpstream::start("beta").await,
    );
    let cfg = config(&a, &b);
    let app = spawn(&cfg, Db::Postgres).await;
    candidate(&app, &cfg, "prefers-large", "large", 0.8).await;
    let r = app
        .admin(
            Method::POST,
            "/admin/experiments/pc/start",
            Some(auto(0.5, "prefers-large")),
        )
        .await;
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    // `small` answers well, `large` badly: the candidate (always `large`)
    // does worse than the route's own policy.
    let doc = until_decided(&app, "pc", |_, m| if m == "small" { 1.0 } else { 0.0 }).await;
    assert_eq!(doc["status"], "rolled_back", "{doc}");
    assert!(
        doc["note"].as_str().unwrap().contains("does worse"),
        "{doc}"
    );
    let candidate_rows = scalar(
        &app,
        "SELECT COUNT(*) FROM requests WHERE experiment = 'pc' AND experiment_arm = 'candidate' \
         AND policy_version LIKE 'prefers-large.%' AND model = 'large'",
    )
    .await;
    assert!(candidate_rows >= 30, "{candidate_rows}");
    // Back to normal: nothing decides by the candidate any more.
    for i in 0..20 {
        let (version, _) = exchange(&app, 1000 + i, &|_, _| 1.0).await;
        assert!(!version.starts_with("prefers-large"), "{version}");
    }
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_canary_is_promoted_only_when_offline_and_online_both_beat_the_incumbent() {
    let (a, b) = (
        MockUpstream::start("alpha").await,
        MockUpstream::start("beta").await,
    );
    let cfg = config(&a, &b);
    let app = spawn(&cfg, Db::Postgres).await;
    // Rated by arm: the candidate's answers 0.9-1.0, the control's 0.4-0.5.
    let score = |v: &str, m: &str| {
        let base = if v.starts_with("unproven") || v.starts_with("proven") {
            0.9
        } else {
            0.4
        };
        base + if m == "small" { 0.1 } else { 0.0 }
    };

    // Online it wins, but its offline lower bound (0.4) does not beat the
    // incumbent (0.5): it waits.
    candidate(&app, &cfg, "unproven", "large", 0.4).await;
    let r = app
        .admin(
            Method::POST,
            "/admin/experiments/u/start",
            Some(auto(0.5, "unproven")),
        )
        .await;
    assert_eq!(r.status(), 200);
    for i in 0..120 {
        exchange(&app, i, &score).await;
    }
    let doc = experiment(&app, "u").await;
    assert_eq!(doc["status"], "running", "{doc}");
    assert_eq!(doc["auto_promote_verdict"]["verdict"], "wait", "{doc}");
    let reason = doc["auto_promote_verdict"]["reason"].as_str().unwrap();
    assert!(reason.contains("does not beat the incumbent"), "{reason}");
    let r = app
        .admin(Method::POST, "/admin/experiments/u/stop", None)
        .await;
    assert_eq!(r.status(), 200);

    // Both beat the incumbent: promoted, and it becomes the active version.
    candidate(&app, &cfg, "proven", "large", 0.8).await;
    let r = app
        .admin(
            Method::POST,
            "/admin/experiments/p/start",
            Some(auto(0.5, "proven")),
        )
        .await;
    assert_eq!(r.status(), 200);
    let doc = until_decided(&app, "p", score).await;
    assert_eq!(doc["status"], "promoted", "{doc}");
    let active = app.store.active_policy("smart").await.unwrap().unwrap();
    assert_eq!(active.version, "proven");
    let mut swapped = false;
    for i in 0..200 {
        let (version, _) = exchange(&app, 5000 + i, &|_, _| 1.0).await;
        if version.starts_with("proven.") {
            swapped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(swapped, "serving never followed the promoted version");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_policy_is_scored_off_policy_without_acting() {
    let (a, b) = (
        MockUpstream::start("alpha").await,
        MockUpstream::start("beta").await,
    );
    let cfg = config(&a, &b);
    let app = spawn(&cfg, Db::Postgres).await;
    candidate(&app, &cfg, "shadowed", "large", 0.8).await;
    let r = app
        .admin(
            Method::POST,
            "/admin/experiments/sp/start",
            Some(json!({"route": "smart", "kind": "shadow_policy", "candidate": "shadowed", "share": 1.0})),
        )
        .await;
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    let mut models = Vec::new();
    for i in 0..40 {
        let (version, model) =
            exchange(&app, i, &|_, m| if m == "small" { 1.0 } else { 0.0 }).await;
        assert!(
            version.starts_with("online."),
            "the shadow acted: {version}"
        );
        models.push(model);
    }
    // The greedy route keeps to `small` (ties go to the first arm, and it
    // is rewarded); the shadow would have picked `large` every time.
    assert!(models.iter().all(|m| m == "small"), "{models:?}");
    assert_eq!(b.calls(), 0, "the shadow policy never calls a model");
    let scored = wait_scalar(
        &app,
        "SELECT COUNT(*) FROM requests WHERE counterfactual IS NOT NULL",
        40,
    )
    .await;
    assert_eq!(scored, 40);
    let mut doc = Value::Null;
    for _ in 0..100 {
        doc = experiment(&app, "sp").await;
        if doc["off_policy"]["value"]["n"] == 40 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(doc["off_policy"]["value"]["n"], 40, "{doc}");
    // It would never have chosen what was chosen: its IPS value is 0, and
    // it agrees on no decision.
    assert_eq!(doc["off_policy"]["value"]["mean"], 0.0, "{doc}");
    assert_eq!(doc["off_policy"]["agreement"], 0.0, "{doc}");
    assert_eq!(doc["arms"]["logged"]["reward"]["mean"], 1.0, "{doc}");
    app.shutdown().await;
}
