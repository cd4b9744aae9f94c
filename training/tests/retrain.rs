//! The trainer as operators run it: the `switchboard-train` binary under the
//! trainer lock, and `serve --retrain-every`'s schedule against real
//! Postgres with replicas following the new version live.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use chrono::Utc;
use switchboard::config::{load_str, Env};
use switchboard::retrain::{run_once, RunOutcome, Schedule};
use switchboard::startup;
use switchboard::store::{SqliteStore, Store};
use switchboard_training::synthetic::{seed, World};
use tokio::sync::watch;

const TRAINER: &str = env!("CARGO_BIN_EXE_switchboard-train");

/// A new, empty database on the local Postgres.
async fn fresh_postgres() -> String {
    let admin = std::env::var("TEST_DATABASE_ADMIN_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let name = format!("sb_test_train_{:016x}", rand::random::<u64>());
    let pool = sqlx::PgPool::connect(&admin).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap();
    format!("{base}/{name}")
}

fn config_text(dir: &Path) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"

[[providers]]
name = "p"
kind = "openai"
base_url = "http://127.0.0.1:9/v1"

[[models]]
name = "small"
provider = "p"
input_usd_per_mtok = 1.0
output_usd_per_mtok = 2.0

[[models]]
name = "large"
provider = "p"
input_usd_per_mtok = 10.0
output_usd_per_mtok = 30.0

[[routes]]
name = "learned"
models = ["small", "large"]
policy = "linucb"
[routes.objective]
cost_weight = 0.0

[store]
spill_path = "{}/spill.jsonl"
flush_interval_ms = 20
"#,
        dir.display()
    )
}

/// A database with a logged world on route `learned`, and the config file.
async fn setup(rows: u64) -> (String, Store, PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switchboard.toml");
    let text = config_text(dir.path());
    std::fs::write(&path, &text).unwrap();
    let config = load_str(&text, "switchboard.toml", &Env::new()).unwrap();
    let setup = switchboard_training::job::RouteSetup::new(&config, "learned").unwrap();
    let url = fresh_postgres().await;
    let store = Store::connect_lazy(&url).unwrap();
    store.migrate().await.unwrap();
    let Store::Postgres(pool) = &store else {
        unreachable!()
    };
    seed(
        pool,
        &World {
            route: "learned",
            arms: &["small", "large"],
            dimension: setup.spec.dimension,
            rows,
            start: Utc::now() - chrono::Duration::hours(2),
            tag: "t",
        },
    )
    .await
    .unwrap();
    (url, store, path, dir)
}

fn trainer(url: &str, config: &Path) -> std::process::Output {
    trainer_with(url, config, &[])
}

fn trainer_with(url: &str, config: &Path, extra: &[&str]) -> std::process::Output {
    Command::new(TRAINER)
        .args(["train", "--config"])
        .arg(config)
        .args(extra)
        .env("DATABASE_URL", url)
        .env_remove("SWITCHBOARD_CONFIG")
        .output()
        .unwrap()
}

#[tokio::test]
async fn a_trainer_started_while_another_holds_the_lock_skips_then_trains_once_free() {
    let (url, store, config, _dir) = setup(3_000).await;

    // Replica A's trainer is running (it holds the lock).
    let held = store.try_trainer_lock().await.unwrap().unwrap();
    assert!(store.try_trainer_lock().await.unwrap().is_none());

    // Replica B's run starts meanwhile: it skips and stores nothing.
    let out = trainer(&url, &config);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("skipped:"), "{stdout}");
    assert!(store.list_policies(None).await.unwrap().is_empty());

    // A finishes; the next run trains and, being proven better than the
    // uniform logging policy, activates its version.
    held.release().await.unwrap();
    let out = trainer(&url, &config);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("v1 stored as active"), "{stdout}");
    assert_eq!(store.list_policies(None).await.unwrap().len(), 1);
    // The run released the lock behind it.
    let again = store.try_trainer_lock().await.unwrap();
    assert!(again.is_some());
    again.unwrap().release().await.unwrap();
}

#[tokio::test]
async fn a_bad_pca_fails_clearly_and_stores_nothing_and_a_good_one_stores_its_projection() {
    let (url, store, config, _dir) = setup(2_000).await;
    // The default features: 35 hand-made ones and 64 hash buckets.
    for (k, says) in [("0", "between 1 and"), ("65", "hash_buckets (64)")] {
        let out = trainer_with(&url, &config, &["--pca", k]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "--pca {k} was accepted");
        assert!(stderr.contains(&format!("--pca {k}")), "{stderr}");
        assert!(stderr.contains(says), "{stderr}");
        assert!(store.list_policies(None).await.unwrap().is_empty());
    }
    let out = trainer_with(&url, &config, &["--pca", "4", "--seed", "3"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("pca: 4 components, projection 39 x 99"),
        "{stdout}"
    );
    let stored = store.list_policies(None).await.unwrap();
    assert_eq!(stored.len(), 1);
    let p = store.policy(&stored[0].version).await.unwrap().unwrap();
    let ratios = p.metrics.as_ref().unwrap()["pca"]["explained_variance_ratio"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect::<Vec<_>>();
    // Noise buckets: four axes keep some, not all, of the variance.
    assert_eq!(ratios.len(), 4);
    assert!(ratios.iter().all(|r| *r > 0.0 && *r < 0.5), "{ratios:?}");
    let snapshot = switchboard::bandit::PolicySnapshot::from_json(&p.parameters).unwrap();
    assert_eq!(snapshot.inner_dimension(), 1 + 35 + 4);
}

#[tokio::test]
async fn a_dead_trainer_does_not_keep_the_lock() {
    let url = fresh_postgres().await;
    let store = Store::connect_lazy(&url).unwrap();
    store.migrate().await.unwrap();
    let held = store.try_trainer_lock().await.unwrap().unwrap();
    // Dropped without `release` (the process died): its connection closes
    // and Postgres frees the lock.
    drop(held);
    let mut taken = None;
    for _ in 0..100 {
        taken = store.try_trainer_lock().await.unwrap();
        if taken.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    taken
        .expect("the lock was never freed")
        .release()
        .await
        .unwrap();
}

#[tokio::test]
async fn sqlite_trainer_lock_is_a_lease_taken_over_only_when_expired() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect_lazy(&format!("sqlite://{}/t.db", dir.path().display())).unwrap();
    store.migrate().await.unwrap();
    let held = store.try_trainer_lock().await.unwrap().unwrap();
    assert!(store.try_trainer_lock().await.unwrap().is_none());
    held.release().await.unwrap();
    let held = store.try_trainer_lock().await.unwrap().unwrap();
    drop(held); // a trainer that died: its lease stays until it expires
    assert!(store.try_trainer_lock().await.unwrap().is_none());
    let Store::Sqlite(SqliteStore { pool, .. }) = &store else {
        unreachable!()
    };
    sqlx::query("UPDATE trainer_lock SET expires_at = expires_at - 7200")
        .execute(pool)
        .await
        .unwrap();
    let taken = store.try_trainer_lock().await.unwrap();
    assert!(taken.is_some(), "an expired lease must be taken over");
}

/// The label each replica serves for route `learned`.
fn label(r: &startup::Running) -> String {
    r.gateway().learning.routes[0]
        .policy
        .load()
        .label()
        .to_owned()
}

#[tokio::test]
async fn serve_retrains_on_schedule_and_every_replica_swaps_to_the_new_version() {
    let (url, store, config_path, _dir) = setup(3_000).await;
    let mut env = Env::new();
    env.insert("DATABASE_URL".into(), url.clone());
    let text = std::fs::read_to_string(&config_path).unwrap();
    let replicas = [
        startup::start(load_str(&text, "a.toml", &env).unwrap(), &env)
            .await
            .unwrap(),
        startup::start(load_str(&text, "b.toml", &env).unwrap(), &env)
            .await
            .unwrap(),
    ];
    assert!(replicas.iter().all(|r| label(r).is_empty()));

    // Replica A retrains every second, as `serve --retrain-every 1s` does.
    let schedule = Schedule {
        every: Duration::from_secs(1),
        program: PathBuf::from(TRAINER),
        config: Some(config_path.clone()),
        database_url: url.clone(),
        pca: None,
    };
    let (stop, stopping) = watch::channel(false);
    let task = tokio::spawn(switchboard::retrain::run(schedule.clone(), stopping));
    let mut swapped = false;
    for _ in 0..600 {
        if replicas.iter().all(|r| label(r) == "v1") {
            swapped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = stop.send(true);
    task.await.unwrap();
    assert!(
        swapped,
        "labels: {:?}",
        replicas.iter().map(label).collect::<Vec<_>>()
    );
    let active = store.active_policy("learned").await.unwrap().unwrap();
    assert_eq!(active.version, "v1");

    // A run while another trainer holds the lock is reported as skipped.
    let held = store.try_trainer_lock().await.unwrap().unwrap();
    match run_once(&schedule).await {
        RunOutcome::Skipped(why) => assert!(why.contains("another trainer"), "{why}"),
        other => panic!("expected a skip, got {other:?}"),
    }
    held.release().await.unwrap();
    // A run with a bad configuration fails with the trainer's message.
    let bad = Schedule {
        config: Some(config_path.with_file_name("missing.toml")),
        ..schedule.clone()
    };
    match run_once(&bad).await {
        RunOutcome::Failed(e) => assert!(e.contains("missing.toml"), "{e}"),
        other => panic!("expected a failure, got {other:?}"),
    }
    // `--retrain-pca` reaches the trainer: an impossible K is refused there.
    let bad_pca = Schedule {
        pca: Some(0),
        ..schedule
    };
    match run_once(&bad_pca).await {
        RunOutcome::Failed(e) => assert!(e.contains("--pca"), "{e}"),
        other => panic!("expected a failure, got {other:?}"),
    }
    for r in replicas {
        r.shutdown().await;
    }
}
