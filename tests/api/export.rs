//! `switchboard export` then `--import`: traffic served by a real router on
//! Postgres (decisions, outcomes, feedback, a policy version) is exported to
//! JSONL, imported into a fresh Postgres and a fresh SQLite database, and
//! exported again from each: the files are identical, and so are the
//! dashboards' rollups. An import into a database with history, or of a
//! damaged export, is refused and stores nothing.

use std::path::Path;

use serde_json::json;
use switchboard::bandit::PolicySnapshot;
use switchboard::cli::export::{run, ExportArgs};
use switchboard::config::{load_str, Env};
use switchboard::store::{SqliteStore, Store};
use switchboard_training::job::{publish, RouteSetup};

use crate::helpers::{fresh_postgres, spawn, two_providers, Db, TestApp};
use crate::mock::MockUpstream;

fn config_text(a: &str, b: &str) -> String {
    format!(
        "{}\n[[routes]]\nname = \"learned\"\nmodels = [\"small\", \"large\"]\npolicy = \"linucb\"\n",
        two_providers(a, b)
    )
}

fn env_for(url: &str) -> Env {
    let mut env = Env::new();
    env.insert("DATABASE_URL".into(), url.to_owned());
    env
}

async fn export_to(url: &str, config: &Path, out: &Path) -> String {
    let args = ExportArgs {
        config: Some(config.to_owned()),
        since: None,
        out: Some(out.to_owned()),
        import: None,
    };
    run(&args, &env_for(url)).await.unwrap()
}

async fn import_from(url: &str, dir: &Path) -> anyhow::Result<String> {
    let args = ExportArgs {
        config: None,
        since: None,
        out: None,
        import: Some(dir.to_owned()),
    };
    run(&args, &env_for(url)).await
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap()
}

/// Per-hour totals of the requests rollup: what the dashboards read.
/// Costs in micro-micro-dollars: the triggers add the same costs in
/// another order on import, so the float sums may differ in the last bit.
async fn rollup(store: &Store) -> Vec<(i64, String, i64, i64, i64)> {
    let sql = "SELECT hour, model, CAST(SUM(requests) AS BIGINT), SUM(cost_usd), \
               CAST(SUM(rewarded) AS BIGINT) FROM rollup_hourly \
               GROUP BY hour, model ORDER BY hour, model";
    let rows: Vec<(i64, String, i64, f64, i64)> = match store {
        Store::Postgres(p) => sqlx::query_as(sql).fetch_all(p).await.unwrap(),
        Store::Sqlite(SqliteStore { pool: p, .. }) => {
            sqlx::query_as(sql).fetch_all(p).await.unwrap()
        }
    };
    rows.into_iter()
        .map(|(h, m, n, c, r)| (h, m, n, (c * 1e12).round() as i64, r))
        .collect()
}

/// Line by line, the same JSON values (object key order is not meaningful:
/// Postgres's JSONB keeps its own); names the first difference.
fn same_records(a: &str, b: &str, name: &str) {
    assert_eq!(a.lines().count(), b.lines().count(), "{name}: line counts");
    for (i, (x, y)) in a.lines().zip(b.lines()).enumerate() {
        let (x, y): (serde_json::Value, serde_json::Value) = (
            serde_json::from_str(x).unwrap(),
            serde_json::from_str(y).unwrap(),
        );
        if x != y {
            let fields = x.as_object().unwrap();
            let differing: Vec<String> = fields
                .iter()
                .filter(|(k, v)| y.get(k.as_str()) != Some(v))
                .map(|(k, v)| format!("{k}: {v} vs {:?}", y.get(k.as_str())))
                .collect();
            panic!("{name} line {}: {differing:?}", i + 1);
        }
    }
}

async fn serve_some_traffic(app: &TestApp) {
    for i in 0..12 {
        let model = ["auto", "learned", "small"][i % 3];
        let r = app
            .chat(json!({"model": model, "messages": [{"role": "user", "content": format!("question {i}")}]}))
            .await;
        assert_eq!(r.status(), 200);
        let id = r.headers()["x-switchboard-request-id"]
            .to_str()
            .unwrap()
            .to_owned();
        app.request_row(&id).await;
        if i % 2 == 0 {
            let fb = json!({"request_id": id, "score": (i as f64) / 12.0, "feedback_id": format!("fb-{i}"), "comment": "ok"});
            let r = app
                .http
                .post(format!("{}/v1/feedback", app.url))
                .json(&fb)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 202);
        }
    }
    app.wait_count("feedback", 6).await;
}

#[tokio::test]
async fn export_then_import_round_trips_on_postgres_and_sqlite() {
    let (a, b) = (
        MockUpstream::start("alpha").await,
        MockUpstream::start("beta").await,
    );
    let text = config_text(&a.base_url(), &b.base_url());
    let app = spawn(&text, Db::Postgres).await;
    serve_some_traffic(&app).await;
    let config = load_str(&text, "t.toml", &Env::new()).unwrap();
    let setup = RouteSetup::new(&config, "learned").unwrap();
    let snapshot = PolicySnapshot::from_fitted(&setup.spec, "v1", vec![]).unwrap();
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
    let source_rollup = rollup(&app.store).await;
    let source_url = app.db_url.clone();
    app.shutdown().await;

    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("switchboard.toml");
    std::fs::write(&config_path, &text).unwrap();
    let first = dir.path().join("first");
    let out = export_to(&source_url, &config_path, &first).await;
    assert!(
        out.contains("exported 12 requests, 6 feedback and 1 policy versions"),
        "{out}"
    );
    let requests = read(&first, "requests.jsonl");
    assert_eq!(requests.lines().count(), 12);
    assert!(requests.contains("\"eligible_models\":[\"small\",\"large\"]"));
    assert!(requests.contains("\"propensity\":"));
    assert!(requests.contains("\"features\":["));
    assert!(!requests.contains("question"), "prompts are not stored");
    assert!(!requests.contains("sk-test-secret"));
    // The exported configuration loads as it was.
    let exported = load_str(&read(&first, "config.toml"), "config.toml", &Env::new()).unwrap();
    assert_eq!(exported.routes.len(), config.routes.len());
    assert_eq!(exported.models.len(), config.models.len());

    let sqlite_dir = tempfile::tempdir().unwrap();
    let targets = [
        fresh_postgres().await,
        format!("sqlite://{}/restored.db", sqlite_dir.path().display()),
    ];
    for (i, url) in targets.iter().enumerate() {
        let out = import_from(url, &first).await.unwrap();
        assert!(
            out.contains("imported 12 requests, 6 feedback and 1 policy versions"),
            "{out}"
        );
        let again = dir.path().join(format!("again-{i}"));
        export_to(url, &config_path, &again).await;
        for name in ["requests.jsonl", "feedback.jsonl", "policies.jsonl"] {
            same_records(&read(&first, name), &read(&again, name), name);
        }
        let store = Store::connect_lazy(url).unwrap();
        assert_eq!(
            rollup(&store).await,
            source_rollup,
            "rollups after import into {url}"
        );
        let active = store.active_policy("learned").await.unwrap().unwrap();
        assert_eq!(active.version, "v1");

        // A second import into a database with history is refused.
        let err = import_from(url, &first).await.unwrap_err().to_string();
        assert!(err.contains("import into a fresh database"), "{err}");
        assert_eq!(rollup(&store).await, source_rollup);
        store.close().await;
    }
}

#[tokio::test]
async fn a_damaged_export_is_refused_and_stores_nothing() {
    let (a, b) = (
        MockUpstream::start("alpha").await,
        MockUpstream::start("beta").await,
    );
    let text = config_text(&a.base_url(), &b.base_url());
    let app = spawn(&text, Db::Postgres).await;
    serve_some_traffic(&app).await;
    let source_url = app.db_url.clone();
    app.shutdown().await;
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("switchboard.toml");
    std::fs::write(&config_path, &text).unwrap();
    let out = dir.path().join("out");
    export_to(&source_url, &config_path, &out).await;

    // A truncated feedback file: the manifest's counts no longer match.
    let feedback = read(&out, "feedback.jsonl");
    let kept: Vec<&str> = feedback.lines().take(3).collect();
    std::fs::write(out.join("feedback.jsonl"), kept.join("\n")).unwrap();
    let target = fresh_postgres().await;
    let err = import_from(&target, &out).await.unwrap_err().to_string();
    assert!(err.contains("incomplete"), "{err}");

    // A corrupt line: named with its line number.
    let requests =
        read(&out, "requests.jsonl").replacen("\"stream\":false", "\"stream\":\"no\"", 1);
    std::fs::write(out.join("requests.jsonl"), requests).unwrap();
    let err = format!("{:#}", import_from(&target, &out).await.unwrap_err());
    assert!(err.contains("requests.jsonl line 1"), "{err}");

    let store = Store::connect_lazy(&target).unwrap();
    assert_eq!(store.history_rows().await.unwrap(), 0);
    store.close().await;
}
