//! What replicas learn on changes: an activated version (a new epoch) and
//! a configuration reload that adds or removes a route.

use super::*;

/// An activated version starts a new epoch on every replica: they swap to
/// it, and what they learn on top of it merges as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_swap_to_an_activated_version_and_keep_learning_as_one() {
    let c = cluster(&["r0", "r1"]).await;
    let (replicas, db) = (&c.replicas, &c.db);
    let http = reqwest::Client::new();
    for i in 0..10 {
        teach(&http, &replicas[i % 2].base, i).await;
    }
    let views = converged(&http, &replicas.iter().collect::<Vec<_>>(), 10).await;
    // A "trained" version: the merged state so far, activated.
    let store = switchboard::store::Store::connect_lazy(db).unwrap();
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
    for r in replicas {
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
        assert!(
            v["version"].as_str().unwrap().starts_with("v7."),
            "{}",
            v["version"]
        );
        assert_eq!(
            v["merged"]["state"]["arms"],
            views[0]["merged"]["state"]["arms"]
        );
    }
    store.close().await;
}

/// The route a reload adds to (and removes from) a replica's file.
const ADDED: &str = "
[[routes]]
name = \"added\"
models = [\"small\", \"large\"]
policy = \"linucb\"
[routes.bandit]
forgetting = 1.0
[routes.bandit.drift]
forgetting = 1.0
";

/// Rewrites the replica's file with or without the route `added` and
/// reloads it through the admin API (the file watch may get there first:
/// then the reload finds it unchanged).
async fn reload(http: &reqwest::Client, r: &Replica, with_added: bool) {
    let text = std::fs::read_to_string(&r.path).unwrap().replace(ADDED, "");
    let text = if with_added {
        text.replacen("\n[scale]\n", &format!("{ADDED}\n[scale]\n"), 1)
    } else {
        text
    };
    std::fs::write(&r.path, text).unwrap();
    let resp = http
        .post(format!("{}/admin/config/reload", r.base))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
}

/// A reload that adds a route on replicated routers: the replica that
/// reloads first ships the new route's deltas and merges them; one that
/// reloads later starts it from the checkpoint and the log, and from then
/// on both learn on it as one. A replica that removes it again stops
/// serving it while the other goes on, and the route they both kept learns
/// as one throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_added_by_a_reload_ships_and_merges_its_deltas() {
    let c = cluster(&["r0", "r1"]).await;
    let replicas = &c.replicas;
    let all: Vec<&Replica> = replicas.iter().collect();
    let http = reqwest::Client::new();
    for i in 0..6 {
        teach(&http, &replicas[i % 2].base, i).await;
    }
    converged(&http, &all, 6).await;

    reload(&http, &replicas[0], true).await;
    for i in 0..6 {
        teach_on(&http, &replicas[0].base, "added", i).await;
    }
    // Shipped and merged back from the log before the other replica has
    // the route at all.
    converged_on(&http, &all[..1], "added", 6).await;

    reload(&http, &replicas[1], true).await;
    for i in 6..12 {
        teach_on(&http, &replicas[i % 2].base, "added", i).await;
    }
    let views = converged_on(&http, &all, "added", 12).await;
    assert_eq!(
        views[0]["merged"]["state"]["arms"],
        views[1]["merged"]["state"]["arms"]
    );
    same_statistics(&views[0]["serving"], &views[1]["serving"]);

    reload(&http, &replicas[1], false).await;
    let gone = http
        .get(format!("{}/admin/routes/added/policy", replicas[1].base))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 404);
    for i in 12..15 {
        teach_on(&http, &replicas[0].base, "added", i).await;
    }
    converged_on(&http, &all[..1], "added", 15).await;

    for i in 6..10 {
        teach(&http, &replicas[i % 2].base, i).await;
    }
    let views = converged(&http, &all, 10).await;
    same_statistics(&views[0]["serving"], &views[1]["serving"]);
    let list = admin(&http, &replicas[1].base, "/admin/replicas").await;
    let routes: Vec<&str> = list["self"]["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["route"].as_str().unwrap())
        .collect();
    assert!(
        routes.contains(&"learned") && !routes.contains(&"added"),
        "{list}"
    );
}
