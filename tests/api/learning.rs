use serde_json::{json, Value};

use crate::helpers::{spawn, spawn_on, two_providers, Db, TestApp};
use crate::mock::MockUpstream;

fn config(a: &str, b: &str) -> String {
    format!(
        "{}\n[[routes]]\nname = \"learned\"\nmodels = [\"small\", \"large\"]\npolicy = \"linucb\"\n[routes.objective]\ncost_weight = 10.0\n",
        two_providers(a, b)
    )
}

const PROMPTS: [&str; 4] = [
    "Explain the proof of the four colour theorem in detail.",
    "What is 17 times 23?",
    "Write a python function that reverses a linked list.",
    "Which of the following is a prime number? A) 4 B) 6 C) 7 D) 9",
];

/// Sends one request to `learned` and answers with feedback: `large` is
/// good (0.9), `small` poor (0.1). Returns the model that answered.
async fn round(app: &TestApp, i: usize) -> String {
    let r = app
        .chat(json!({"model": "learned", "messages": [{"role": "user", "content": PROMPTS[i % PROMPTS.len()]}]}))
        .await;
    assert_eq!(r.status(), 200);
    let model = header(&r, "x-switchboard-model");
    let id = header(&r, "x-switchboard-request-id");
    let score = if model == "large" { 0.9 } else { 0.1 };
    let f = app
        .http
        .post(format!("{}/v1/feedback", app.url))
        .json(&json!({"request_id": id, "score": score}))
        .send()
        .await
        .unwrap();
    assert_eq!(f.status(), 202);
    // Let the single writer apply and publish it (at most every 5 ms)
    // before the next decision.
    tokio::time::sleep(std::time::Duration::from_millis(12)).await;
    model
}

fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers()[name].to_str().unwrap().to_owned()
}

/// A chat request to `learned` that asks for the decision's summary header.
async fn explained(app: &TestApp, content: &str) -> reqwest::Response {
    let r = app
        .http
        .post(format!("{}/v1/chat/completions", app.url))
        .header("x-switchboard-explain", "true")
        .json(&json!({"model": "learned", "messages": [{"role": "user", "content": content}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r
}

/// `GET /admin/decisions/{id}` with the admin token.
async fn stored_decision(app: &TestApp, id: &str) -> Value {
    app.admin(
        reqwest::Method::GET,
        &format!("/admin/decisions/{id}"),
        None,
    )
    .await
    .json()
    .await
    .unwrap()
}

#[tokio::test]
async fn feedback_through_http_shifts_traffic_to_the_better_model() {
    let (a, b) = (
        MockUpstream::start("alpha").await,
        MockUpstream::start("beta").await,
    );
    let app = spawn(&config(&a.base_url(), &b.base_url()), Db::Postgres).await;
    let mut models = Vec::new();
    for i in 0..60 {
        models.push(round(&app, i).await);
    }
    let late_large = models[40..].iter().filter(|m| *m == "large").count();
    assert!(
        late_large >= 17,
        "the last 20 decisions sent only {late_large} to the better model: {models:?}"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn every_decision_has_a_receipt_and_the_policy_survives_a_restart() {
    let (a, b) = (
        MockUpstream::start("alpha").await,
        MockUpstream::start("beta").await,
    );
    let cfg = config(&a.base_url(), &b.base_url());
    let app = spawn(&cfg, Db::Postgres).await;
    for i in 0..10 {
        round(&app, i).await;
    }
    let r = explained(&app, "hello").await;
    let id = header(&r, "x-switchboard-request-id");
    let version = header(&r, "x-switchboard-policy-version");
    let summary = header(&r, "x-switchboard-decision");
    assert!(summary.starts_with("chosen="), "{summary}");
    assert!(
        summary.contains("small:q=") && summary.contains("large:q="),
        "{summary}"
    );
    let n: u64 = version.strip_prefix("online.").unwrap().parse().unwrap();
    assert!(
        n >= 10,
        "ten outcomes and feedbacks were published: {version}"
    );

    // The stored row carries the decision: eligible arms, propensity, features, receipt.
    let row = app.request_row(&id).await;
    assert_eq!(row.policy_version.as_deref(), Some(version.as_str()));
    let p = row.propensity.unwrap();
    assert!(p > 0.0 && p <= 1.0);
    let unauth = app
        .http
        .get(format!("{}/admin/decisions/{id}", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(unauth.status(), 401);
    let receipt = stored_decision(&app, &id).await;
    assert_eq!(receipt["policy_version"], version.as_str());
    let arms = receipt["receipt"]["arms"].as_array().unwrap();
    assert_eq!(arms.len(), 2);
    for arm in arms {
        for key in [
            "model",
            "quality",
            "cost_usd",
            "latency_s",
            "bonus",
            "utility",
            "probability",
        ] {
            assert!(arm.get(key).is_some(), "receipt arm lacks {key}: {arm}");
        }
    }
    let total: f64 = arms
        .iter()
        .map(|a| a["probability"].as_f64().unwrap())
        .sum();
    assert!((total - 1.0).abs() < 1e-9, "propensities sum to {total}");

    // Restart on the same database: the learned state is resumed, not reset.
    let url = app.db_url.clone();
    app.shutdown().await;
    let again = spawn_on(&cfg, &url, tempfile::tempdir().unwrap()).await;
    let r = again
        .chat(json!({"model": "learned", "messages": [{"role": "user", "content": "hello"}]}))
        .await;
    let resumed = header(&r, "x-switchboard-policy-version");
    let m: u64 = resumed.strip_prefix("online.").unwrap().parse().unwrap();
    assert!(
        m >= n,
        "version went from {version} to {resumed} across a restart"
    );
    again.shutdown().await;
}

/// A Thompson decision integrates only its own arm's probability; the
/// stored receipt gets every arm's when the row is written.
#[tokio::test]
async fn a_thompson_receipt_is_stored_with_every_arms_probability() {
    let (a, b) = (
        MockUpstream::start("alpha").await,
        MockUpstream::start("beta").await,
    );
    let cfg = config(&a.base_url(), &b.base_url())
        .replace("policy = \"linucb\"", "policy = \"thompson\"");
    let app = spawn(&cfg, Db::Postgres).await;
    for i in 0..6 {
        round(&app, i).await;
    }
    let r = explained(&app, PROMPTS[1]).await;
    let id = header(&r, "x-switchboard-request-id");
    let chosen = header(&r, "x-switchboard-model");
    let summary = header(&r, "x-switchboard-decision");
    assert!(
        summary.starts_with(&format!("chosen={chosen};p=")),
        "{summary}"
    );
    let row = app.request_row(&id).await;
    let stored = stored_decision(&app, &id).await;
    let receipt = &stored["receipt"];
    assert_eq!(receipt["algorithm"], "thompson", "{receipt}");
    assert_eq!(receipt["chosen"], chosen.as_str());
    let arms = receipt["arms"].as_array().unwrap();
    assert_eq!(arms.len(), 2);
    let p = |model: &str| {
        arms.iter()
            .find(|a| a["model"] == model)
            .and_then(|a| a["probability"].as_f64())
            .unwrap()
    };
    // Each arm keeps at least the exploration floor's share; together one.
    assert!(p("small") > 0.0 && p("large") > 0.0, "{receipt}");
    assert!((p("small") + p("large") - 1.0).abs() < 1e-6, "{receipt}");
    assert!((p(&chosen) - row.propensity.unwrap()).abs() < 1e-12);
    app.shutdown().await;
}

#[tokio::test]
async fn a_tier_with_a_zero_exploration_cap_is_never_experimented_on() {
    let (a, b) = (
        MockUpstream::start("alpha").await,
        MockUpstream::start("beta").await,
    );
    let cfg = format!(
        "{}\n[routes.tier_exploration_caps]\npremium = 0.0\n",
        config(&a.base_url(), &b.base_url())
    );
    let app = spawn(&cfg, Db::Postgres).await;
    let mut free_propensities = Vec::new();
    for i in 0..12 {
        for tier in ["premium", "free"] {
            let r = app
                .http
                .post(format!("{}/v1/chat/completions", app.url))
                .header("x-switchboard-explain", "1")
                .header("x-switchboard-tier", tier)
                .json(&json!({"model": "learned", "messages": [{"role": "user", "content": PROMPTS[i % 4]}]}))
                .send()
                .await
                .unwrap();
            let summary = r.headers()["x-switchboard-decision"]
                .to_str()
                .unwrap()
                .to_owned();
            let p: f64 = summary
                .split(";p=")
                .nth(1)
                .unwrap()
                .split(';')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            if tier == "premium" {
                assert!(
                    summary.contains(";greedy=true;"),
                    "premium explored: {summary}"
                );
                assert_eq!(p, 1.0, "premium decisions are deterministic: {summary}");
            } else {
                free_propensities.push(p);
            }
        }
    }
    // Other tiers keep a positive floor on every arm, so their greedy choice has p < 1.
    assert!(
        free_propensities.iter().all(|p| *p < 1.0),
        "{free_propensities:?}"
    );
    app.shutdown().await;
}
