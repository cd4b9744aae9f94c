//! Scale-out (docs/scaling.md): `serve` processes (the real binary) sharing
//! one Postgres database learn as one (`learn`); a replica killed with -9
//! rejoins; a database outage only delays the merge; a key's budget holds
//! across them (`budget`); activated versions and configuration reloads
//! change what they learn on, and they follow as one (`routes`).
//!
//! Updates are made deterministic by pinning each request to one arm
//! (`exclude_models`), so the same stream can be replayed on a single
//! process. Compared: everything order-free (Gram matrices, targets of
//! quality and cost, counts, request and spend totals); not the latency
//! target (wall-clock, differs run to run) or the prequential noise sums.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{fresh_postgres, two_providers, ADMIN_TOKEN};
use crate::mock::MockUpstream;
use crate::process::{start_binary_with, Launch};

pub fn config(a: &str, b: &str) -> String {
    format!(
        "{}
[[routes]]
name = \"learned\"
models = [\"small\", \"large\"]
policy = \"linucb\"
[routes.bandit]
forgetting = 1.0
[routes.bandit.drift]
forgetting = 1.0

[scale]
delta_flush_ms = 150
stale_after_ms = 3000
checkpoint_ms = 500
",
        two_providers(a, b)
    )
}

/// One `switchboard serve` process of the cluster.
pub type Replica = crate::process::Router;

/// Replica `id`: its own spill file, `SWITCHBOARD_REPLICA_ID = id`.
pub async fn start(config: &str, dir: &Path, db_url: &str, id: &str) -> Replica {
    start_binary_with(
        config,
        dir,
        db_url,
        Launch {
            env: vec![
                ("SWITCHBOARD_REPLICA_ID", id.to_owned()),
                ("SWITCHBOARD_ADMIN_TOKEN", ADMIN_TOKEN.to_owned()),
            ],
            output: None,
            name: Some(id),
        },
    )
    .await
}

const PROMPTS: [&str; 4] = [
    "Explain the proof of the four colour theorem in detail.",
    "What is 17 times 23?",
    "Write a python function that reverses a linked list.",
    "Which of the following is a prime number? A) 4 B) 6 C) 7 D) 9",
];

/// Request `i` to the route `learned`, pinned to one arm, and its
/// feedback, both on `base`.
pub async fn teach(http: &reqwest::Client, base: &str, i: usize) {
    teach_on(http, base, "learned", i).await;
}

/// `teach` on `route`.
pub async fn teach_on(http: &reqwest::Client, base: &str, route: &str, i: usize) {
    let (arm, other) = if i % 3 == 0 {
        ("small", "large")
    } else {
        ("large", "small")
    };
    let r = http
        .post(format!("{base}/v1/chat/completions"))
        .json(&json!({
            "model": route,
            "messages": [{"role": "user", "content": format!("{} (#{i})", PROMPTS[i % 4])}],
            "switchboard": {"exclude_models": [other]},
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-switchboard-model"], arm);
    let id = r.headers()["x-switchboard-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let score = ((i * 37) % 101) as f64 / 100.0;
    let f = http
        .post(format!("{base}/v1/feedback"))
        .json(&json!({"request_id": id, "score": score}))
        .send()
        .await
        .unwrap();
    assert_eq!(f.status(), 202);
}

async fn admin(http: &reqwest::Client, base: &str, path: &str) -> Value {
    let r = http
        .get(format!("{base}{path}"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{path}");
    r.json().await.unwrap()
}

async fn policy(http: &reqwest::Client, base: &str) -> Value {
    policy_of(http, base, "learned").await
}

/// The route's policy with its whole serving and merged states.
async fn policy_of(http: &reqwest::Client, base: &str, route: &str) -> Value {
    admin(
        http,
        base,
        &format!("/admin/routes/{route}/policy?state=true"),
    )
    .await
}

/// Sum over arms of one of `counts` (outcomes, feedback).
fn total(state: &Value, what: &str) -> u64 {
    state["arms"]
        .as_array()
        .map(|arms| {
            arms.iter()
                .map(|a| a["counts"][what].as_u64().unwrap())
                .sum()
        })
        .unwrap_or(0)
}

/// Waits (bounded) until every replica serves, and has merged from the
/// log, `n` outcomes and `n` feedbacks at one common watermark.
async fn converged(http: &reqwest::Client, replicas: &[&Replica], n: u64) -> Vec<Value> {
    converged_on(http, replicas, "learned", n).await
}

/// `converged` on `route`.
async fn converged_on(
    http: &reqwest::Client,
    replicas: &[&Replica],
    route: &str,
    n: u64,
) -> Vec<Value> {
    let mut last = Vec::new();
    for _ in 0..400 {
        last = Vec::new();
        for r in replicas {
            last.push(policy_of(http, &r.base, route).await);
        }
        let done = last.iter().all(|p| {
            let merged = &p["merged"]["state"];
            [&p["serving"], merged]
                .iter()
                .all(|s| total(s, "outcomes") == n && total(s, "feedback") == n)
        });
        let marks: Vec<&Value> = last.iter().map(|p| &p["merged"]["watermark"]).collect();
        if done && marks.windows(2).all(|w| w[0] == w[1]) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let summary: Vec<_> = last
        .iter()
        .map(|p| {
            (
                total(&p["serving"], "feedback"),
                total(&p["merged"]["state"], "feedback"),
                p["merged"]["watermark"].clone(),
            )
        })
        .collect();
    panic!("replicas never converged on {n} updates of {route}: {summary:?}");
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_str()
        .unwrap()
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect()
}

fn close(a: &[f64], b: &[f64], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}");
    let scale = a.iter().chain(b).fold(1.0f64, |m, v| m.max(v.abs()));
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() <= 1e-9 * scale, "{what}: {x} vs {y}");
    }
}

/// The order-free statistics of two snapshots agree.
fn same_statistics(a: &Value, b: &Value) {
    let (arms_a, arms_b) = (a["arms"].as_array().unwrap(), b["arms"].as_array().unwrap());
    assert_eq!(arms_a.len(), arms_b.len());
    for (x, y) in arms_a.iter().zip(arms_b) {
        let name = x["name"].as_str().unwrap();
        assert_eq!(x["name"], y["name"]);
        assert_eq!(x["counts"], y["counts"], "{name} counts");
        for (path, what) in [
            (&["quality", "design", "a"][..], "quality A"),
            (&["quality", "target", "b"][..], "quality b"),
            (&["outcome", "design", "a"][..], "outcome A"),
            (&["outcome", "log_cost", "b"][..], "log-cost b"),
        ] {
            let get = |s: &Value| path.iter().fold(s.clone(), |v, k| v[*k].clone());
            close(
                &floats(&get(x)),
                &floats(&get(y)),
                &format!("{name} {what}"),
            );
        }
        for m in ["quality", "outcome"] {
            assert_eq!(x[m]["design"]["updates"], y[m]["design"]["updates"]);
        }
    }
    assert_eq!(a["pacing"]["requests"], b["pacing"]["requests"]);
    close(
        &[floats(&a["pacing"]["spend_usd"])[0]],
        &[floats(&b["pacing"]["spend_usd"])[0]],
        "spend",
    );
}

async fn mocks() -> (MockUpstream, MockUpstream) {
    (
        MockUpstream::start("alpha").await,
        MockUpstream::start("beta").await,
    )
}

/// Replicas `ids` of the two-model configuration on one fresh database.
/// Holds the mocks and the directory they use for as long as it lives
/// (fields drop in order: the replicas stop first).
pub struct Cluster {
    pub replicas: Vec<Replica>,
    pub db: String,
    _dir: tempfile::TempDir,
    _mocks: (MockUpstream, MockUpstream),
}

async fn cluster(ids: &[&str]) -> Cluster {
    let (a, b) = mocks().await;
    let cfg = config(&a.base_url(), &b.base_url());
    let dir = tempfile::tempdir().unwrap();
    let db = fresh_postgres().await;
    let mut replicas = Vec::new();
    for id in ids {
        replicas.push(start(&cfg, dir.path(), &db, id).await);
    }
    Cluster {
        replicas,
        db,
        _dir: dir,
        _mocks: (a, b),
    }
}

mod budget;
mod learn;
mod routes;
