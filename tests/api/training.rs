//! Batch retraining against real Postgres: a synthetic linear world logged
//! by a known (uniform) policy; the job recovers the arms' quality models,
//! activates a better candidate, refuses one that is not proven better,
//! rollback restores the previous version, and a running server hot-swaps.

use chrono::{Duration, Utc};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use switchboard::bandit::PolicySnapshot;
use switchboard::cli::policy::{self as policy_cmd, PolicyCommand};
use switchboard::config::{load_str, Env};
use switchboard::store::{Event, FeedbackRecord, RequestRecord, Store};
use switchboard_training::job::{publish, train_route, RouteSetup, TrainOptions};

use crate::helpers::{fresh_postgres, request_record, spawn, two_providers, Db, TestApp};
use crate::mock::MockUpstream;

pub(crate) fn config_text(a: &str, b: &str) -> String {
    format!(
        "{}\n[[routes]]\nname = \"learned\"\nmodels = [\"small\", \"large\"]\npolicy = \"linucb\"\n[routes.objective]\ncost_weight = 0.0\n",
        two_providers(a, b)
    )
}

/// True mean quality: `small` is good on low u, `large` on high u.
pub(crate) fn truth(arm: &str, u: f64) -> f64 {
    if arm == "small" {
        0.8 - 0.6 * u
    } else {
        0.2 + 0.6 * u
    }
}

fn features(d: usize, u: f64) -> Vec<f64> {
    let mut x = vec![0.0; d];
    x[0] = 1.0;
    x[1] = u;
    x
}

/// `n` decisions by a uniform logging policy, each with quality feedback.
async fn log_world(store: &Store, d: usize, n: usize, seed: u64) {
    log_world_with(store, n, seed, |u, _| features(d, u)).await;
}

/// `log_world` with the logged feature vector of each row made by `make`
/// from its signal `u` (quality depends on `u` only).
pub(crate) async fn log_world_with(
    store: &Store,
    n: usize,
    seed: u64,
    make: impl Fn(f64, &mut SmallRng) -> Vec<f64>,
) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let start = Utc::now() - Duration::hours(1);
    let mut events = Vec::new();
    for i in 0..n {
        let u: f64 = rng.random();
        let arm = if rng.random::<bool>() {
            "small"
        } else {
            "large"
        };
        let id = format!("chatcmpl-train-{seed}-{i}");
        let created_at = start + Duration::milliseconds(i as i64);
        events.push(Event::Request(Box::new(RequestRecord {
            route: Some("learned".into()),
            requested_model: "learned".into(),
            model: Some(arm.into()),
            provider: None,
            eligible_models: vec!["small".into(), "large".into()],
            propensity: Some(0.5),
            features: Some(make(u, &mut rng)),
            prompt_tokens: Some(10),
            completion_tokens: Some(10),
            cost_usd: if arm == "small" { 1e-4 } else { 1e-3 },
            latency_ms: 100.0,
            ..request_record(&id, created_at)
        })));
        let q = (truth(arm, u) + rng.random_range(-0.1..0.1)).clamp(0.0, 1.0);
        events.push(Event::Feedback(FeedbackRecord {
            request_id: id,
            created_at: created_at + Duration::seconds(1),
            metric: "quality".into(),
            value: q,
            source: None,
            comment: None,
            feedback_id: None,
        }));
        if events.len() >= 1000 {
            store.write_batch(&events).await.unwrap();
            events.clear();
        }
    }
    store.write_batch(&events).await.unwrap();
}

pub(crate) fn options() -> TrainOptions {
    TrainOptions {
        since: Utc::now() - Duration::days(1),
        until: Utc::now() + Duration::minutes(1),
        attribution_s: 3600.0,
        margin: 0.0,
        holdout: 5,
        seed: 1,
        progress: false,
        pca: None,
    }
}

#[tokio::test]
async fn training_recovers_the_world_activates_better_refuses_unproven_and_rolls_back() {
    let env = Env::new();
    let config = load_str(
        &config_text("http://127.0.0.1:9", "http://127.0.0.1:9"),
        "t.toml",
        &env,
    )
    .unwrap();
    let store = Store::connect_lazy(&fresh_postgres().await).unwrap();
    store.migrate().await.unwrap();
    let setup = RouteSetup::new(&config, "learned").unwrap();
    let d = setup.spec.dimension;
    log_world(&store, d, 3000, 7).await;

    // 1. A better candidate is activated, and it learned the world.
    let r1 = train_route(&store, &setup, &options()).await.unwrap();
    println!("{}", switchboard_training::job::summary(&r1));
    assert_eq!(r1.status, "active", "{:?}", r1.guard);
    assert!(r1.rows_trained > 2000 && r1.candidate.rows > 400);
    // Best-arm routing is worth 0.65 on average; uniform logging 0.5.
    assert!(r1.candidate.dr.value > 0.6, "{:?}", r1.candidate.dr);
    assert!(r1.candidate.dr.lo <= 0.65 && 0.65 <= r1.candidate.dr.hi + 0.01);
    let row = store.active_policy("learned").await.unwrap().unwrap();
    assert_eq!(row.version, r1.version);
    let cand = PolicySnapshot::from_json(&row.parameters)
        .unwrap()
        .prepare(&setup.spec)
        .unwrap();
    for arm in ["small", "large"] {
        let i = cand.arm_index(arm).unwrap();
        for k in 0..=10 {
            let u = f64::from(k) / 10.0;
            let (q, _, _) = cand.predict(i, &features(d, u)).unwrap();
            assert!((q - truth(arm, u)).abs() < 0.05, "{arm} at {u}: {q}");
        }
    }

    // 2. Retraining on the same log is not proven better: kept as candidate.
    let r2 = train_route(&store, &setup, &options()).await.unwrap();
    println!("{}", switchboard_training::job::summary(&r2));
    assert_eq!(r2.status, "candidate", "{:?}", r2.guard);
    assert_eq!(r2.parent.as_deref(), Some(r1.version.as_str()));
    let active = store.active_policy("learned").await.unwrap().unwrap();
    assert_eq!(active.version, r1.version);

    // 3. Activate it by hand, then roll back to its parent.
    policy_cmd::run(
        &store,
        PolicyCommand::Activate {
            version: r2.version.clone(),
        },
    )
    .await
    .unwrap();
    assert_eq!(
        store
            .active_policy("learned")
            .await
            .unwrap()
            .unwrap()
            .version,
        r2.version
    );
    let out = policy_cmd::run(
        &store,
        PolicyCommand::Rollback {
            route: Some("learned".into()),
        },
    )
    .await
    .unwrap();
    assert!(out.contains(&r1.version), "{out}");
    assert_eq!(
        store
            .active_policy("learned")
            .await
            .unwrap()
            .unwrap()
            .version,
        r1.version
    );
    let statuses: Vec<(String, String)> = store
        .list_policies(Some("learned"))
        .await
        .unwrap()
        .into_iter()
        .map(|p| (p.version, p.status))
        .collect();
    assert_eq!(
        statuses.iter().filter(|(_, s)| s == "active").count(),
        1,
        "{statuses:?}"
    );
}

/// The job reads the embedded SQLite store the same way (same columns,
/// its own window arithmetic): the same world is learned and activated.
#[tokio::test]
async fn training_on_sqlite_learns_the_same_world() {
    let env = Env::new();
    let config = load_str(
        &config_text("http://127.0.0.1:9", "http://127.0.0.1:9"),
        "t.toml",
        &env,
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store =
        Store::connect_lazy(&format!("sqlite://{}/train.db", dir.path().display())).unwrap();
    store.migrate().await.unwrap();
    let setup = RouteSetup::new(&config, "learned").unwrap();
    let d = setup.spec.dimension;
    log_world(&store, d, 3000, 7).await;
    let r = train_route(&store, &setup, &options()).await.unwrap();
    println!("{}", switchboard_training::job::summary(&r));
    assert_eq!(r.status, "active", "{:?}", r.guard);
    assert_eq!(r.rows_read, 3000);
    assert!(r.candidate.dr.value > 0.6, "{:?}", r.candidate.dr);
    let row = store.active_policy("learned").await.unwrap().unwrap();
    let cand = PolicySnapshot::from_json(&row.parameters)
        .unwrap()
        .prepare(&setup.spec)
        .unwrap();
    for arm in ["small", "large"] {
        let i = cand.arm_index(arm).unwrap();
        let (q, _, _) = cand.predict(i, &features(d, 0.9)).unwrap();
        assert!((q - truth(arm, 0.9)).abs() < 0.05, "{arm}: {q}");
    }
}

/// Two mock upstreams, a server on Postgres for `config_text`, and its
/// "learned" route as the trainer sets it up (keep the mocks alive).
pub(crate) async fn serving_learned_route() -> ([MockUpstream; 2], TestApp, RouteSetup) {
    let (a, b) = (
        MockUpstream::start("alpha").await,
        MockUpstream::start("beta").await,
    );
    let text = config_text(&a.base_url(), &b.base_url());
    let app = spawn(&text, Db::Postgres).await;
    let config = load_str(&text, "t.toml", &Env::new()).unwrap();
    let setup = RouteSetup::new(&config, "learned").unwrap();
    ([a, b], app, setup)
}

#[tokio::test]
async fn a_running_server_hot_swaps_to_an_activated_version_without_failing_requests() {
    let (_mocks, app, setup) = serving_learned_route().await;
    let snapshot = PolicySnapshot::from_fitted(&setup.spec, "v1", vec![]).unwrap();

    let send = |i: usize| {
        let app = &app;
        async move {
            let r = app
                .chat(json!({"model": "learned", "messages": [{"role": "user", "content": format!("question {i}")}]}))
                .await;
            assert_eq!(r.status(), 200, "request {i} failed during the swap");
            r.headers()["x-switchboard-policy-version"]
                .to_str()
                .unwrap()
                .to_owned()
        }
    };
    let before = send(0).await;
    assert!(before.starts_with("online."), "{before}");
    publish(
        &app.store,
        "learned",
        &snapshot,
        &json!({"kind": "test"}),
        None,
        true,
    )
    .await
    .unwrap();
    let mut seen = Vec::new();
    for i in 1..400 {
        let v = send(i).await;
        let swapped = v.starts_with("v1.");
        seen.push(v);
        if swapped {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(
        seen.last().unwrap().starts_with("v1."),
        "never swapped: {seen:?}"
    );
    app.shutdown().await;
}
