//! `switchboard train --pca K` against real Postgres and a running server:
//! the logged hashed features have low-rank structure and carry the
//! signal; the candidate stores a projection of the expected shape with its
//! explained variance, a live server swaps to it and back (rollback)
//! without failing a request, and feedback keeps updating it.

use rand::rngs::SmallRng;
use rand::Rng;
use reqwest::Method;
use serde_json::{json, Value};
use switchboard::bandit::PolicySnapshot;
use switchboard::cli::policy::{self as policy_cmd, PolicyCommand};
use switchboard::features::FIXED_FEATURES;
use switchboard_training::job::{summary, train_route, TrainOptions};

use crate::helpers::TestApp;
use crate::training::{log_world_with, options, serving_learned_route, truth};

const N_FIXED: usize = FIXED_FEATURES.len();
const K: usize = 3;

/// A raw vector whose bucket block is `u v1 + w v2` plus a little noise:
/// the signal `u` lives only in the hashed block, along with a nuisance
/// direction `w` of larger spread (so PCA needs both axes).
fn low_rank(d: usize, u: f64, rng: &mut SmallRng) -> Vec<f64> {
    let mut x = vec![0.0; d];
    x[0] = 1.0;
    let w: f64 = rng.random_range(-1.0..1.0);
    for (i, b) in x[1 + N_FIXED..].iter_mut().enumerate() {
        let v1 = if i % 3 == 0 { 0.3 } else { 0.0 };
        let v2 = if i % 2 == 0 { 0.2 } else { -0.2 };
        *b = u * v1 + w * v2 + rng.random_range(-0.01..0.01);
    }
    x
}

fn with_pca(k: usize) -> TrainOptions {
    TrainOptions {
        pca: Some(k),
        ..options()
    }
}

/// One request to `learned`: (status, policy version header, model, id).
async fn send(app: &TestApp, i: usize) -> (u16, String, String, String) {
    let r = app
        .chat(json!({"model": "learned", "messages": [{"role": "user", "content": format!("question {i} about words")}]}))
        .await;
    let h = |n: &str| {
        r.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    (
        r.status().as_u16(),
        h("x-switchboard-policy-version"),
        h("x-switchboard-model"),
        h("x-switchboard-request-id"),
    )
}

/// Sends requests (each must succeed) until the served version is
/// `version`; returns how many it took.
async fn until_served(app: &TestApp, version: &str, from: usize) -> usize {
    let prefix = format!("{version}.");
    for i in from..from + 400 {
        let (status, v, _, _) = send(app, i).await;
        assert_eq!(status, 200, "request {i} failed (serving {v})");
        if v.starts_with(&prefix) {
            return i + 1;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("never served {version}");
}

/// The live policy (admin view).
async fn policy_view(app: &TestApp) -> Value {
    app.admin(Method::GET, "/admin/routes/learned/policy", None)
        .await
        .json()
        .await
        .unwrap()
}

/// `switchboard policy show VERSION`.
async fn show(app: &TestApp, version: &str) -> String {
    policy_cmd::run(
        &app.store,
        PolicyCommand::Show {
            version: version.to_owned(),
        },
    )
    .await
    .unwrap()
}

/// The live policy's feedback count for `model` (admin view).
async fn feedback_count(app: &TestApp, model: &str) -> u64 {
    policy_view(app).await["arms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["model"] == model)
        .and_then(|a| a["counts"]["feedback"].as_u64())
        .unwrap()
}

#[tokio::test]
async fn a_pca_candidate_is_stored_with_its_projection_served_live_learns_and_rolls_back() {
    let (_mocks, app, setup) = serving_learned_route().await;
    let d = setup.spec.dimension;
    let buckets = d - 1 - N_FIXED;
    log_world_with(&app.store, 3000, 11, |u, rng| low_rank(d, u, rng)).await;

    // Bad component counts fail clearly and store nothing.
    for bad in [0, buckets + 1] {
        let e = train_route(&app.store, &setup, &with_pca(bad))
            .await
            .unwrap_err();
        assert!(format!("{e:#}").contains("--pca"), "{e:#}");
    }
    assert!(app.store.list_policies(None).await.unwrap().is_empty());

    // 1. An unprojected version, active (the rollback target).
    let raw = train_route(&app.store, &setup, &options()).await.unwrap();
    println!("{}", summary(&raw));
    assert_eq!(raw.status, "active", "{:?}", raw.guard);
    assert!(raw.pca.is_none());
    until_served(&app, &raw.version, 0).await;

    // 2. The PCA candidate: shape, explained variance, learned world.
    let r = train_route(&app.store, &setup, &with_pca(K)).await.unwrap();
    let text = summary(&r);
    println!("{text}");
    assert!(
        text.contains(&format!("projection {} x {}", N_FIXED + K, d - 1)),
        "{text}"
    );
    let p = r.pca.as_ref().unwrap();
    assert_eq!((p.rows, p.cols), (N_FIXED + K, d - 1));
    assert_eq!(p.explained_variance_ratio.len(), K);
    assert!(p.explained_variance > 0.95, "{p:?}");
    assert_eq!(r.parent.as_deref(), Some(raw.version.as_str()));
    let row = app.store.policy(&r.version).await.unwrap().unwrap();
    let metrics = row.metrics.as_ref().unwrap();
    assert_eq!(metrics["pca"]["rows"], json!(N_FIXED + K));
    assert_eq!(
        metrics["pca"]["explained_variance_ratio"]
            .as_array()
            .unwrap()
            .len(),
        K
    );
    let cand = PolicySnapshot::from_json(&row.parameters)
        .unwrap()
        .prepare(&setup.spec)
        .unwrap();
    let proj = cand.projection().unwrap();
    assert_eq!((proj.rows, proj.cols), (N_FIXED + K, d - 1));
    assert_eq!(cand.inner_dimension(), 1 + N_FIXED + K);
    let mut rng = <SmallRng as rand::SeedableRng>::seed_from_u64(5);
    for arm in ["small", "large"] {
        let i = cand.arm_index(arm).unwrap();
        for k in 0..=4 {
            let u = f64::from(k) / 4.0;
            let (q, _, _) = cand.predict(i, &low_rank(d, u, &mut rng)).unwrap();
            assert!((q - truth(arm, u)).abs() < 0.08, "{arm} at {u}: {q}");
        }
    }
    let shown = show(&app, &r.version).await;
    assert!(
        shown.contains(&format!("projection {} x {}", N_FIXED + K, d - 1)),
        "{shown}"
    );
    let shown_raw = show(&app, &raw.version).await;
    assert!(shown_raw.contains("no projection"), "{shown_raw}");

    // 3. Activated (by hand if the guard kept it), the server swaps live.
    if r.status != "active" {
        policy_cmd::run(
            &app.store,
            PolicyCommand::Activate {
                version: r.version.clone(),
            },
        )
        .await
        .unwrap();
    }
    let next = until_served(&app, &r.version, 1000).await;

    // 4. Feedback on a projected version's decision still updates it.
    let (status, v, model, id) = send(&app, next).await;
    assert_eq!(status, 200);
    assert!(v.starts_with(&format!("{}.", r.version)), "{v}");
    let before = feedback_count(&app, &model).await;
    let f = app
        .http
        .post(format!("{}/v1/feedback", app.url))
        .json(&json!({"request_id": id, "score": 0.7}))
        .send()
        .await
        .unwrap();
    assert_eq!(f.status(), 202);
    let mut after = before;
    for _ in 0..200 {
        after = feedback_count(&app, &model).await;
        if after > before {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(after, before + 1, "feedback for {model} was not learned");
    let view = policy_view(&app).await;
    assert_eq!(
        view["features"],
        json!({"dimension": d, "projection": {"rows": N_FIXED + K, "cols": d - 1},
               "model_dimension": 1 + N_FIXED + K})
    );

    // 5. Rollback returns to the unprojected version, live, no failure.
    let out = policy_cmd::run(
        &app.store,
        PolicyCommand::Rollback {
            route: Some("learned".into()),
        },
    )
    .await
    .unwrap();
    assert!(out.contains(&raw.version), "{out}");
    until_served(&app, &raw.version, 2000).await;
    let view = policy_view(&app).await;
    assert_eq!(view["features"]["projection"], Value::Null);
    assert_eq!(view["features"]["model_dimension"], json!(d));
    for i in 3000..3020 {
        let (status, v, _, _) = send(&app, i).await;
        assert_eq!(status, 200, "request {i} after the rollback failed");
        assert!(v.starts_with(&format!("{}.", raw.version)), "{v}");
    }
    app.shutdown().await;
}
