//! Replicas learn what one process learns, rejoin after SIGKILL, learn
//! through a database outage; on SQLite scale-out is off.

use super::*;
use crate::outage::Outage;

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
    let mut seen: (i64, i64) = (0, -1);
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
    assert_eq!(
        seen,
        (mark, 0),
        "checkpoint at {mark}, every delta compacted"
    );
    let state: String = sqlx::query_scalar(
        "SELECT CAST(snapshot AS TEXT) FROM policy_state WHERE route = 'learned'",
    )
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
    crate::process::sigterm(&replicas[2].child);
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
    let c = cluster(&["r0", "r1"]).await;
    let (replicas, db) = (&c.replicas, &c.db);
    let http = reqwest::Client::new();
    for i in 0..10 {
        teach(&http, &replicas[i % 2].base, i).await;
    }
    converged(&http, &replicas.iter().collect::<Vec<_>>(), 10).await;
    let outage = Outage::new(db).await;
    outage.begin().await;
    for i in 10..30 {
        teach(&http, &replicas[i % 2].base, i).await;
    }
    // Each serves what it learned itself meanwhile (the learner applies
    // feedback asynchronously: wait, bounded, for the last one to land).
    for r in replicas {
        let mut seen = 0;
        for _ in 0..200 {
            seen = total(&policy(&http, &r.base).await["serving"], "feedback");
            if seen >= 20 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert_eq!(seen, 20);
    }
    let list = policy(&http, &replicas[0].base).await;
    assert_eq!(total(&list["merged"]["state"], "feedback"), 10);
    tokio::time::sleep(Duration::from_millis(500)).await;
    outage.end().await;
    let views = converged(&http, &replicas.iter().collect::<Vec<_>>(), 30).await;
    same_statistics(&views[0]["serving"], &views[1]["serving"]);
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
    assert!(
        list["reason"].as_str().unwrap().contains("SQLite"),
        "{list}"
    );
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
