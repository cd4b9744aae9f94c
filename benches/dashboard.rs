//! Dashboard queries over a large `requests` table (docs/dashboards.md has
//! the recipe and the numbers). Seeds N requests (default 10 M;
//! `DASHBOARD_BENCH_ROWS`) spread over 30 days, 5 models, 2 routes, 3 policy
//! versions and 20 keys, with 1 % errors and quality feedback on 30 %, into
//! a fresh Postgres database through the real migrations and rollup
//! triggers; then times each dashboard query (median and max of 5 runs
//! after a warm-up) for 24 h, 7 d and 30 d windows, plus the exact
//! `model_hourly` view over 24 h for comparison.
//!
//! `cargo bench --bench dashboard --profile dev` (the time is spent in
//! Postgres, so the Rust profile does not matter). `DASHBOARD_BENCH_ADMIN_URL`
//! names the server (default the local trust-auth one); the database
//! `sb_dashboard_bench` is dropped and recreated.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::Context;
use switchboard::store::dashboard::Window;
use switchboard::store::Store;

const DB: &str = "sb_dashboard_bench";
const CHUNK: i64 = 500_000;
const SPAN_S: i64 = 30 * 24 * 3600;

/// Server-side generation: ids, times and values derived from the row number.
const SEED_REQUESTS: &str = "INSERT INTO requests (id, created_at, api_key_id, tenant, route, \
    requested_model, model, provider, policy_version, propensity, stream, prompt_tokens, \
    completion_tokens, cost_usd, latency_ms, ttft_ms, status, status_code, error_kind) \
    SELECT 'bench-' || g, now() - ((g * 7919) % $3) * interval '1 second', \
      'key-' || (g % 20), 'tenant-' || (g % 5), CASE WHEN g % 4 = 0 THEN 'cheap' ELSE 'auto' END, \
      'auto', 'model-' || (g % 5), 'provider-' || (g % 3), 'v' || (g / ($2 / 3 + 1)), 0.5, \
      g % 3 = 0, 100 + g % 900, 20 + g % 300, (g % 5 + 1) * 0.0001, \
      50 + (g * 31) % 3000, CASE WHEN g % 3 = 0 THEN 40 + g % 200 END, \
      CASE WHEN g % 100 = 0 THEN 'error' ELSE 'ok' END, \
      CASE WHEN g % 100 = 0 THEN 502 ELSE 200 END, \
      CASE WHEN g % 100 = 0 THEN 'server_error' END \
    FROM generate_series($1::bigint, LEAST($1::bigint + $4 - 1, $2::bigint)) g";

const SEED_FEEDBACK: &str = "INSERT INTO feedback (request_id, created_at, metric, value) \
    SELECT 'bench-' || g, now(), 'quality', ((g * 13) % 11) / 10.0 \
    FROM generate_series($1::bigint, LEAST($1::bigint + $3 - 1, $2::bigint)) g WHERE g % 10 < 3";

async fn time<T, F: Future<Output = anyhow::Result<T>>>(
    name: &str,
    mut f: impl FnMut() -> F,
) -> anyhow::Result<()> {
    f().await?;
    let mut runs = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        f().await?;
        runs.push(t.elapsed());
    }
    runs.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("| {name} | {:.1} | {:.1} |", ms(runs[2]), ms(runs[4]));
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let rows: i64 = std::env::var("DASHBOARD_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000);
    let admin = std::env::var("DASHBOARD_BENCH_ADMIN_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    // `DASHBOARD_BENCH_REUSE=1` keeps an already seeded database (new
    // migrations still apply) and only times the queries.
    let reuse = std::env::var("DASHBOARD_BENCH_REUSE").is_ok_and(|v| v == "1");
    let admin_pool = sqlx::PgPool::connect(&admin).await.context("connecting")?;
    if !reuse {
        sqlx::query(&format!("DROP DATABASE IF EXISTS {DB}"))
            .execute(&admin_pool)
            .await?;
        sqlx::query(&format!("CREATE DATABASE {DB}"))
            .execute(&admin_pool)
            .await?;
    }
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
    let store = Store::connect_lazy(&format!("{base}/{DB}"))?;
    store.migrate().await?;
    let Store::Postgres(pool) = &store else {
        anyhow::bail!("the bench needs Postgres");
    };

    let t = Instant::now();
    let mut start = if reuse { rows + 1 } else { 1 };
    while start <= rows {
        sqlx::query(SEED_REQUESTS)
            .bind(start)
            .bind(rows)
            .bind(SPAN_S)
            .bind(CHUNK)
            .execute(pool)
            .await?;
        sqlx::query(SEED_FEEDBACK)
            .bind(start)
            .bind(rows)
            .bind(CHUNK)
            .execute(pool)
            .await?;
        start += CHUNK;
        eprintln!(
            "seeded {} rows in {:.0?}",
            (start - 1).min(rows),
            t.elapsed()
        );
    }
    sqlx::query("ANALYZE").execute(pool).await?;
    let rollup: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM rollup_hourly")
        .fetch_one(pool)
        .await?;
    let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM requests")
        .fetch_one(pool)
        .await?;
    println!(
        "{stored} requests (+{} feedback) seeded in {:.0?} through the rollup triggers; \
         rollup_hourly holds {rollup} rows.\n",
        stored / 10 * 3,
        t.elapsed()
    );

    println!("| query | median ms | max ms |\n|---|---|---|");
    let now = chrono::Utc::now();
    for (label, hours) in [("24 h", 24), ("7 d", 24 * 7), ("30 d", 24 * 30)] {
        let w = Window::last_hours(hours, now);
        let s = &store;
        time(&format!("models, {label}"), || async move {
            Ok(s.dashboard_models(w, None).await?)
        })
        .await?;
        time(&format!("models on one route, {label}"), || async move {
            Ok(s.dashboard_models(w, Some("auto")).await?)
        })
        .await?;
        time(&format!("latency buckets, {label}"), || async move {
            Ok(s.dashboard_latency_buckets(w).await?)
        })
        .await?;
        time(&format!("timeseries, {label}"), || async move {
            Ok(s.dashboard_timeseries(w, None).await?)
        })
        .await?;
        time(&format!("policy arms, {label}"), || async move {
            Ok(s.dashboard_arms(w).await?)
        })
        .await?;
        time(&format!("spend per key, {label}"), || async move {
            Ok(s.dashboard_spend(w, 50).await?)
        })
        .await?;
        time(&format!("recent errors, {label}"), || async move {
            Ok(s.dashboard_recent_errors(w, 50).await?)
        })
        .await?;
        time(&format!("errors by kind, {label}"), || async move {
            Ok(s.dashboard_error_kinds(w).await?)
        })
        .await?;
    }
    time("exact view model_hourly, 24 h (not used by /api)", || async {
        Ok(sqlx::query(
            "SELECT * FROM model_hourly WHERE hour >= date_trunc('hour', now()) - interval '23 hours'",
        )
        .fetch_all(pool)
        .await?)
    })
    .await?;
    store.close().await;
    Ok(())
}
