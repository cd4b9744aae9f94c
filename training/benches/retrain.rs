//! Retraining over a large synthetic log in Postgres (DESIGN.md target:
//! 1 M logged requests in at most 60 s on the 2-core machine, memory
//! bounded). Seeds a fresh database with `synthetic::seed` (every request
//! with a quality feedback, features of the default dimension), then times
//! one `train_route` run, as `switchboard train` does it, and reports the
//! process's peak resident memory.
//!
//!   cargo bench -p switchboard-training --bench retrain
//!   RETRAIN_ROWS=200000 cargo bench -p switchboard-training --bench retrain
//!   RETRAIN_PCA=16 cargo bench -p switchboard-training --bench retrain
//!
//! `RETRAIN_PCA=K` also fits a K-component projection of the hashed
//! features (`switchboard train --pca K`: one more, sampling, pass).
//!
//! `TEST_DATABASE_ADMIN_URL` names the server (default: the local trust-auth
//! one); the bench database is dropped afterwards.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Instant;

use chrono::{Duration, Utc};
use switchboard::config::{load_str, Env};
use switchboard::store::Store;
use switchboard_training::job::{summary, train_route, RouteSetup, TrainOptions};
use switchboard_training::synthetic::{seed, World};

const CONFIG: &str = r#"
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
name = "medium"
provider = "p"
input_usd_per_mtok = 3.0
output_usd_per_mtok = 6.0

[[models]]
name = "large"
provider = "p"
input_usd_per_mtok = 10.0
output_usd_per_mtok = 30.0

[[routes]]
name = "learned"
models = ["small", "medium", "large"]
policy = "linucb"
[routes.objective]
cost_weight = 0.0
"#;

/// Peak resident set size of this process, from /proc (Linux).
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn main() {
    // `cargo bench` passes `--bench`; a plain `cargo test` run skips this.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let rows: u64 = std::env::var("RETRAIN_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let admin = std::env::var("TEST_DATABASE_ADMIN_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let name = format!("sb_bench_retrain_{:08x}", rand::random::<u32>());
        let admin_pool = sqlx::PgPool::connect(&admin).await.unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&admin_pool)
            .await
            .unwrap();
        let url = format!("{}/{name}", admin.rsplit_once('/').unwrap().0);
        let store = Store::connect_lazy(&url).unwrap();
        store.migrate().await.unwrap();

        let config = load_str(CONFIG, "bench.toml", &Env::new()).unwrap();
        let setup = RouteSetup::new(&config, "learned").unwrap();
        let Store::Postgres(pool) = &store else {
            unreachable!()
        };
        let start = Utc::now() - Duration::days(2);
        let t = Instant::now();
        seed(
            pool,
            &World {
                route: "learned",
                arms: &["small", "medium", "large"],
                dimension: setup.spec.dimension,
                rows,
                start,
                tag: "bench",
            },
        )
        .await
        .unwrap();
        println!(
            "seeded {rows} requests with feedback (d = {}) in {:.1} s",
            setup.spec.dimension,
            t.elapsed().as_secs_f64()
        );
        let rss_before = peak_rss_mib().unwrap_or(f64::NAN);

        let opts = TrainOptions {
            since: start - Duration::hours(1),
            until: Utc::now(),
            attribution_s: 7.0 * 86_400.0,
            margin: 0.0,
            holdout: 5,
            seed: 0,
            progress: false,
            pca: std::env::var("RETRAIN_PCA").ok().and_then(|v| v.parse().ok()),
        };
        let t = Instant::now();
        let report = train_route(&store, &setup, &opts).await.unwrap();
        let secs = t.elapsed().as_secs_f64();
        let passes = if opts.pca.is_some() { 3 } else { 2 };
        print!("{}", summary(&report));
        println!(
            "retraining over {} logged requests: {secs:.1} s ({:.0} rows/s per pass, {passes} passes); \
             peak RSS {:.0} MiB (after seeding {rss_before:.0} MiB)",
            report.rows_read,
            report.rows_read as f64 / secs * passes as f64,
            peak_rss_mib().unwrap_or(f64::NAN)
        );
        store.close().await;
        sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
            .execute(&admin_pool)
            .await
            .unwrap();
    });
}
