//! Scale-out (docs/scaling.md): `serve` processes (the real binary) sharing
//! one Postgres database learn as one; a replica killed with -9 rejoins;
//! a database outage only delays the merge.
//!
//! Updates are made deterministic by pinning each request to one arm
//! (`exclude_models`), so the same stream can be replayed on a single
//! process. Compared: everything order-free (Gram matrices, targets of
//! quality and cost, counts, request and spend totals); not the latency
//! target (wall-clock, differs run to run) or the prequential noise sums.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{fresh_postgres, two_providers, ADMIN_TOKEN};
use crate::mock::MockUpstream;
use crate::outage::Outage;

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

/// One `switchboard serve` process.
pub struct Replica {
    pub child: Child,
    pub base: String,
}

impl Drop for Replica {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub async fn start(config: &str, dir: &Path, db_url: &str, id: &str) -> Replica {
    let port = free_port();
    let text = config.replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:{port}\""),
    ) + &format!(
        "\n[store]\nspill_path = \"{}\"\nflush_interval_ms = 20\n",
        dir.join(format!("spill-{id}.jsonl")).display()
    );
    let path: PathBuf = dir.join(format!("{id}-{port}.toml"));
    std::fs::write(&path, text).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["serve", "--config"])
        .arg(&path)
        .env("DATABASE_URL", db_url)
        .env("SWITCHBOARD_REPLICA_ID", id)
        .env("SWITCHBOARD_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("MOCK_KEY", "sk-test-secret")
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    for _ in 0..400 {
        if reqwest::get(format!("{base}/healthz"))
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            return Replica { child, base };
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    panic!("replica {id} never became healthy");
}

const PROMPTS: [&str; 4] = [
    "Explain the proof of the four colour theorem in detail.",
    "What is 17 times 23?",
    "Write a python function that reverses a linked list.",
    "Which of the following is a prime number? A) 4 B) 6 C) 7 D) 9",
];

/// Request `i`, pinned to one arm, and its feedback, both on `base`.
pub async fn teach(http: &reqwest::Client, base: &str, i: usize) {
    let (arm, other) = if i % 3 == 0 {
        ("small", "large")
    } else {
        ("large", "small")
    };
    let r = http
        .post(format!("{base}/v1/chat/completions"))
        .json(&json!({
            "model": "learned",
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
    admin(http, base, "/admin/routes/learned/policy").await
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
    let mut last = Vec::new();
    for _ in 0..400 {
        last = Vec::new();
        for r in replicas {
            last.push(policy(http, &r.base).await);
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
    panic!("replicas never converged on {n} updates: {summary:?}");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_learn_what_one_process_that_saw_everything_learns() {
    let (a, b) = mocks().await;
    let cfg = config(&a.base_url(), &b.base_url());
    let dir = tempfile::tempdir().unwrap();
    let (shared, alone) = (fresh_postgres().await, fresh_postgres().await);
    let single = start(&cfg, dir.path(), &alone, "single").await;
    let mut replicas = Vec::new();
    for id in ["r0", "r1", "r2"] {
        replicas.push(start(&cfg, dir.path(), &shared, id).await);
    }
    let http = reqwest::Client::new();
    let n = 45;
    for i in 0..n {
        teach(&http, &replicas[i % 3].base, i).await;
        teach(&http, &single.base, i).await;
    }
    let views = converged(&http, &replicas.iter().collect::<Vec<_>>(), n as u64).await;
    let one = converged(&http, &[&single], n as u64).await;
    for v in &views {
        same_statistics(&v["serving"], &one[0]["serving"]);
        // Every replica folded the same log: the merged states are the same bits.
        assert_eq!(
            v["merged"]["state"]["arms"],
            views[0]["merged"]["state"]["arms"]
        );
        assert_eq!(
            v["merged"]["state"]["pacing"],
            views[0]["merged"]["state"]["pacing"]
        );
    }

    // The merged state is checkpointed and the deltas it covers compacted.
    let mark = views[0]["merged"]["watermark"].as_i64().unwrap();
    let pool = sqlx::PgPool::connect(&shared).await.unwrap();
    let mut seen = (0, -1);
    for _ in 0..200 {
        seen = sqlx::query_as(
            "SELECT (SELECT watermark FROM policy_state WHERE route = 'learned'), \
             (SELECT COUNT(*) FROM policy_deltas WHERE route = 'learned')",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        if seen == (mark, 0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(seen, (mark, 0), "checkpoint at {mark}, every delta compacted");
    let state: String =
        sqlx::query_scalar("SELECT CAST(snapshot AS TEXT) FROM policy_state WHERE route = 'learned'")
            .fetch_one(&pool)
            .await
            .unwrap();
    let state: Value = serde_json::from_str(&state).unwrap();
    assert_eq!(state["arms"], views[0]["merged"]["state"]["arms"]);
    pool.close().await;

    let list = admin(&http, &replicas[0].base, "/admin/replicas").await;
    assert_eq!(list["enabled"], true);
    assert_eq!(list["self"]["id"], "r0");
    assert_eq!(list["live"], 3, "{list}");
    let metrics = http
        .get(format!("{}/metrics", replicas[1].base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("switchboard_scale_deltas_merged_total{origin=\"foreign\"}"),
        "{metrics}"
    );

    // A clean stop signs off: the replica is listed, stopped, not live.
    let pid = replicas[2].child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    assert!(replicas[2].child.wait().unwrap().success());
    let list = admin(&http, &replicas[0].base, "/admin/replicas").await;
    let r2 = list["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == "r2")
        .unwrap()
        .clone();
    assert_eq!(r2["live"], false, "{r2}");
    assert!(!r2["stopped_at"].is_null());
    assert_eq!(list["live"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_with_sigkill_rejoins_and_converges() {
    let (a, b) = mocks().await;
    let cfg = config(&a.base_url(), &b.base_url());
    let dir = tempfile::tempdir().unwrap();
    let db = fresh_postgres().await;
    let mut replicas = Vec::new();
    for id in ["r0", "r1", "r2"] {
        replicas.push(start(&cfg, dir.path(), &db, id).await);
    }
    let http = reqwest::Client::new();
    for i in 0..30 {
        teach(&http, &replicas[i % 3].base, i).await;
    }
    converged(&http, &replicas.iter().collect::<Vec<_>>(), 30).await;

    // Updates r2 may not have shipped when it dies: at most these few.
    for i in 30..33 {
        teach(&http, &replicas[2].base, i).await;
    }
    replicas[2].child.kill().unwrap(); // SIGKILL
    replicas[2].child.wait().unwrap();
    for i in 33..63 {
        teach(&http, &replicas[i % 2].base, i).await;
    }
    let restarted = start(&cfg, dir.path(), &db, "r2").await;
    replicas[2] = restarted;

    // The rejoined replica reaches the others' state; what r2 had not
    // shipped before the kill is the only possible loss (bounded by one
    // flush interval of its traffic, here at most 3 updates).
    let mut views = Vec::new();
    for _ in 0..400 {
        views = Vec::new();
        for r in &replicas {
            views.push(policy(&http, &r.base).await);
        }
        let counts: Vec<u64> = views
            .iter()
            .map(|v| total(&v["merged"]["state"], "feedback"))
            .collect();
        let serving: Vec<u64> = views
            .iter()
            .map(|v| total(&v["serving"], "feedback"))
            .collect();
        let same = counts.windows(2).all(|w| w[0] == w[1])
            && serving.iter().all(|s| *s == counts[0])
            && views
                .windows(2)
                .all(|w| w[0]["merged"]["watermark"] == w[1]["merged"]["watermark"]);
        if same && counts[0] >= 60 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let learned = total(&views[0]["merged"]["state"], "feedback");
    assert!((60..=63).contains(&learned), "learned {learned} of 63");
    for v in &views {
        assert_eq!(
            v["merged"]["state"]["arms"],
            views[0]["merged"]["state"]["arms"]
        );
        same_statistics(&v["serving"], &views[0]["merged"]["state"]);
    }
    let list = admin(&http, &replicas[2].base, "/admin/replicas").await;
    assert_eq!(list["live"], 3);
    assert!(list["self"]["rejoins"].as_u64().unwrap() >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_learn_locally_through_a_database_outage_and_merge_after_it() {
    let (a, b) = mocks().await;
    let cfg = config(&a.base_url(), &b.base_url());
    let dir = tempfile::tempdir().unwrap();
    let db = fresh_postgres().await;
    let mut replicas = Vec::new();
    for id in ["r0", "r1"] {
        replicas.push(start(&cfg, dir.path(), &db, id).await);
    }
    let http = reqwest::Client::new();
    for i in 0..10 {
        teach(&http, &replicas[i % 2].base, i).await;
    }
    converged(&http, &replicas.iter().collect::<Vec<_>>(), 10).await;
    let outage = Outage::new(&db).await;
    outage.begin().await;
    for i in 10..30 {
        teach(&http, &replicas[i % 2].base, i).await;
    }
    // Each serves what it learned itself meanwhile.
    for r in &replicas {
        assert_eq!(
            total(&policy(&http, &r.base).await["serving"], "feedback"),
            20
        );
    }
    let list = admin(&http, &replicas[0].base, "/admin/routes/learned/policy").await;
    assert_eq!(total(&list["merged"]["state"], "feedback"), 10);
    tokio::time::sleep(Duration::from_millis(500)).await;
    outage.end().await;
    let views = converged(&http, &replicas.iter().collect::<Vec<_>>(), 30).await;
    same_statistics(&views[0]["serving"], &views[1]["serving"]);
}

/// Budgets across replicas (docs/scaling.md, "Budgets"): leases from one
/// shared ledger, so the documented overshoot bound is what real costs
/// exceed their reservations — zero here, where every answer costs less
/// than its reservation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_budget_spread_over_three_replicas_is_not_overshot() {
    let (a, b) = mocks().await;
    // Slow answers keep the whole burst in flight at once.
    a.set_default(crate::mock::Behaviour::Delay(
        Duration::from_millis(300),
        Box::new(crate::mock::Behaviour::Answer("ok".into())),
    ));
    let cfg = config(&a.base_url(), &b.base_url()).replace(
        "request_timeout_ms = 5000",
        "request_timeout_ms = 20000\nrequire_api_keys = true",
    );
    let dir = tempfile::tempdir().unwrap();
    let db = fresh_postgres().await;
    let mut replicas = Vec::new();
    for id in ["r0", "r1", "r2"] {
        replicas.push(start(&cfg, dir.path(), &db, id).await);
    }
    let http = reqwest::Client::new();
    // `small` costs $1 / $2 per Mtok; the mock reports 12 + 5 tokens
    // ($22e-6); the reservation (local prompt count + 10 output tokens) is
    // larger. Unbounded by leases, 3 replicas x 20 requests would spend $1,320e-6.
    let budget = 300e-6;
    let created: Value = http
        .post(format!("{}/admin/keys", replicas[0].base))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"budget_usd_per_day": budget}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (key_id, key) = (
        created["id"].as_str().unwrap().to_owned(),
        created["key"].as_str().unwrap().to_owned(),
    );
    let body = json!({"model": "small", "max_tokens": 10,
        "messages": [{"role": "user", "content": "Say hello to the three replicas."}]});
    let call = |base: String| {
        let (http, key, body) = (http.clone(), key.clone(), body.clone());
        async move {
            let r = http
                .post(format!("{base}/v1/chat/completions"))
                .bearer_auth(key)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let v: Value = r.json().await.unwrap();
            (status, v["error"]["code"].as_str().unwrap_or("").to_owned())
        }
    };
    // Each replica meets the key once (its first use reads the key store).
    for r in &replicas {
        assert_eq!(call(r.base.clone()).await.0, 200);
    }
    let burst = (0..60).map(|i| call(replicas[i % 3].base.clone()));
    let results = futures_util::future::join_all(burst).await;
    let ok = results.iter().filter(|(s, _)| *s == 200).count() + 3;
    for (status, code) in &results {
        match status {
            200 => {}
            429 => assert_eq!(code, "budget_exceeded"),
            s => panic!("unexpected status {s} ({code})"),
        }
    }
    assert!(ok < 63, "some requests were refused");

    let pool = sqlx::PgPool::connect(&db).await.unwrap();
    for _ in 0..200 {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM requests WHERE api_key_id = $1")
            .bind(&key_id)
            .fetch_one(&pool)
            .await
            .unwrap();
        if n >= ok as i64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let spent: f64 =
        sqlx::query_scalar("SELECT COALESCE(SUM(cost_usd), 0) FROM requests WHERE api_key_id = $1")
            .bind(&key_id)
            .fetch_one(&pool)
            .await
            .unwrap();
    let granted: f64 = sqlx::query_scalar(
        "SELECT COALESCE(SUM(granted_usd), 0) FROM budget_leases WHERE key_id = $1 AND period LIKE 'day:%'",
    )
    .bind(&key_id)
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;
    assert!(spent <= budget + 1e-12, "spent {spent} over a budget of {budget}");
    assert!(granted <= budget + 1e-12, "granted {granted} of {budget}");
    // Leases strand at most about one lease and one reservation per replica.
    assert!(spent >= budget / 2.0, "only {spent} of {budget} was usable");
}

#[tokio::test]
async fn on_sqlite_scale_out_is_off_and_says_so() {
    let (a, b) = mocks().await;
    let app = crate::helpers::spawn(
        &config(&a.base_url(), &b.base_url()),
        crate::helpers::Db::Sqlite,
    )
    .await;
    let list = admin(&app.http, &app.url, "/admin/replicas").await;
    assert_eq!(list["enabled"], false);
    assert!(list["reason"].as_str().unwrap().contains("SQLite"), "{list}");
    teach(&app.http, &app.url, 0).await;
    let p = policy(&app.http, &app.url).await;
    assert!(p["merged"].is_null());
    assert_eq!(total(&p["serving"], "outcomes"), 1);
    let r = app
        .http
        .get(format!("{}/admin/routes/nope/policy", app.url))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let unauth = app
        .http
        .get(format!("{}/admin/replicas", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(unauth.status(), 401);
    app.shutdown().await;
}

/// An activated version starts a new epoch on every replica: they swap to
/// it, and what they learn on top of it merges as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_swap_to_an_activated_version_and_keep_learning_as_one() {
    let (a, b) = mocks().await;
    let cfg = config(&a.base_url(), &b.base_url());
    let dir = tempfile::tempdir().unwrap();
    let db = fresh_postgres().await;
    let mut replicas = Vec::new();
    for id in ["r0", "r1"] {
        replicas.push(start(&cfg, dir.path(), &db, id).await);
    }
    let http = reqwest::Client::new();
    for i in 0..10 {
        teach(&http, &replicas[i % 2].base, i).await;
    }
    let views = converged(&http, &replicas.iter().collect::<Vec<_>>(), 10).await;
    // A "trained" version: the merged state so far, activated.
    let store = switchboard::store::Store::connect_lazy(&db).unwrap();
    store
        .insert_policy(&switchboard::store::policies::NewPolicy {
            version: "v7",
            route: "learned",
            algorithm: "linucb",
            parameters: &views[0]["merged"]["state"],
            metrics: &json!({}),
            parent: None,
            active: true,
        })
        .await
        .unwrap();
    for r in &replicas {
        let mut epoch = Value::Null;
        for _ in 0..200 {
            epoch = policy(&http, &r.base).await["merged"]["epoch"].clone();
            if epoch == "v7" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(epoch, "v7");
    }
    for i in 10..20 {
        teach(&http, &replicas[i % 2].base, i).await;
    }
    let views = converged(&http, &replicas.iter().collect::<Vec<_>>(), 20).await;
    for v in &views {
        assert!(v["version"].as_str().unwrap().starts_with("v7."), "{}", v["version"]);
        assert_eq!(v["merged"]["state"]["arms"], views[0]["merged"]["state"]["arms"]);
    }
    store.close().await;
}
