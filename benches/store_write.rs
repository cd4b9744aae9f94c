//! Postgres write throughput of the store's batch writer
//! (`cargo bench --bench store_write`; docs/performance.md).
//!
//! Creates a fresh database on the server at `--admin-url` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`), migrates it, and writes
//! outcome + feedback events through `Store::write_batch` for `--seconds`,
//! `--writers` batches in flight at a time (1 = the router's outbox: one
//! writer, one batch after the other), `--batch` events per batch (the
//! config default is 1,000: 500 requests each with its feedback). Prints
//! events/s sustained and batch latency; drops the database at the end.
//! `--writer values` writes with the multi-row `VALUES` statements the router
//! used before `src/store/batch_pg.rs`, for an A/B in one binary.
//! Exits non-zero when Postgres cannot be reached, never because it is slow.

use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use clap::Parser;
use sqlx::Connection;
use switchboard::store::{AttemptRecord, Event, FeedbackRecord, RequestRecord, Store};

#[derive(Parser, Debug)]
#[command(name = "store_write")]
struct Args {
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    admin_url: String,
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    #[arg(long, default_value_t = 1)]
    writers: usize,
    /// Keep the database afterwards (to look at the rows).
    #[arg(long)]
    keep: bool,
    /// `store`: the router's writer (`Store::write_batch`: one array per
    /// column, UNNEST). `values`: the multi-row `INSERT ... VALUES` the
    /// router used before (500 rows, 29 binds per row, per statement), kept
    /// here so the two compare in one binary on the same machine load.
    #[arg(long, default_value = "store")]
    writer: String,
}

fn request(i: u64) -> RequestRecord {
    let models: Vec<String> = ["bench-a", "bench-b", "bench-c", "bench-d"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    let model = models[(i % 4) as usize].clone();
    RequestRecord {
        id: format!("req-{:016x}-{}", i, uuid::Uuid::new_v4().simple()),
        created_at: Utc::now(),
        api_key_id: None,
        tenant: None,
        route: Some("auto".into()),
        tier: None,
        user_id: None,
        requested_model: "auto".into(),
        model: Some(model.clone()),
        provider: Some("mock".into()),
        eligible_models: models,
        policy_version: Some("linucb-v1".into()),
        propensity: Some(0.7),
        features: Some((0..64).map(|k| ((i + k) % 17) as f64 / 17.0).collect()),
        decision: Some(
            serde_json::json!({"policy": "linucb-v1", "scores": [0.41, 0.38, 0.12, 0.09]}).into(),
        ),
        stream: i % 2 == 0,
        prompt_tokens: Some(42),
        completion_tokens: Some(20),
        tokens_counted_locally: false,
        cost_usd: 0.000_018,
        latency_ms: 312.5,
        ttft_ms: Some(81.0),
        ok: true,
        status_code: 200,
        error_kind: None,
        fallback_chain: vec![AttemptRecord::new(&model, None, Some(200))],
        attempts: 1,
        cache_hit: false,
        tags: None,
        assignment: Default::default(),
    }
}

fn feedback(request_id: &str) -> FeedbackRecord {
    FeedbackRecord {
        request_id: request_id.to_owned(),
        created_at: Utc::now(),
        metric: "quality".into(),
        value: 0.8,
        source: Some("bench".into()),
        comment: None,
        feedback_id: Some(uuid::Uuid::new_v4().to_string()),
    }
}

/// `batch` events: requests each followed by its feedback.
fn make_batch(next: &mut u64, batch: usize) -> Vec<Event> {
    let mut v = Vec::with_capacity(batch);
    while v.len() < batch {
        let r = request(*next);
        *next += 1;
        let f = feedback(&r.id);
        v.push(Event::Request(Box::new(r)));
        if v.len() < batch {
            v.push(Event::Feedback(f));
        }
    }
    v
}

/// The multi-row `VALUES` writer the router used before `batch_pg.rs`
/// (same statements, one transaction per batch, requests first).
mod values {
    use sqlx::types::Json;
    use sqlx::{PgPool, Postgres, QueryBuilder};
    use switchboard::store::Event;

    pub async fn write(pool: &PgPool, events: &[Event]) -> Result<(), sqlx::Error> {
        let mut requests = Vec::new();
        let mut feedback = Vec::new();
        for e in events {
            match e {
                Event::Request(r) => requests.push(r.as_ref()),
                Event::Feedback(f) => feedback.push(f),
            }
        }
        let mut tx = pool.begin().await?;
        for chunk in requests.chunks(500) {
            let mut qb = QueryBuilder::<Postgres>::new(
                "INSERT INTO requests (id, created_at, api_key_id, tenant, route, tier, user_id, \
                 requested_model, model, provider, eligible_models, policy_version, propensity, \
                 features, decision, stream, prompt_tokens, completion_tokens, \
                 tokens_counted_locally, cost_usd, latency_ms, ttft_ms, status, status_code, \
                 error_kind, fallback_chain, attempts, cache_hit, tags) ",
            );
            qb.push_values(chunk.iter().copied(), |mut row, r| {
                row.push_bind(r.id.clone())
                    .push_bind(r.created_at)
                    .push_bind(r.api_key_id.clone())
                    .push_bind(r.tenant.clone())
                    .push_bind(r.route.clone())
                    .push_bind(r.tier.clone())
                    .push_bind(r.user_id.clone())
                    .push_bind(r.requested_model.clone())
                    .push_bind(r.model.clone())
                    .push_bind(r.provider.clone())
                    .push_bind(Json(serde_json::json!(r.eligible_models)))
                    .push_bind(r.policy_version.clone())
                    .push_bind(r.propensity)
                    .push_bind(r.features.as_ref().map(|f| Json(serde_json::json!(f))))
                    .push_bind(r.decision.clone().map(Json))
                    .push_bind(r.stream)
                    .push_bind(r.prompt_tokens)
                    .push_bind(r.completion_tokens)
                    .push_bind(r.tokens_counted_locally)
                    .push_bind(r.cost_usd)
                    .push_bind(r.latency_ms)
                    .push_bind(r.ttft_ms)
                    .push_bind(r.status().to_owned())
                    .push_bind(r.status_code)
                    .push_bind(r.error_kind.clone())
                    .push_bind(Json(serde_json::json!(r.fallback_chain)))
                    .push_bind(r.attempts)
                    .push_bind(r.cache_hit)
                    .push_bind(r.tags.clone().map(Json));
            });
            qb.push(" ON CONFLICT DO NOTHING");
            qb.build().execute(&mut *tx).await?;
        }
        for chunk in feedback.chunks(500) {
            let mut qb = QueryBuilder::<Postgres>::new(
                "INSERT INTO feedback (request_id, created_at, metric, value, source, comment, \
                 feedback_id) ",
            );
            qb.push_values(chunk.iter().copied(), |mut row, f| {
                row.push_bind(f.request_id.clone())
                    .push_bind(f.created_at)
                    .push_bind(f.metric.clone())
                    .push_bind(f.value)
                    .push_bind(f.source.clone())
                    .push_bind(f.comment.clone())
                    .push_bind(f.feedback_id.clone());
            });
            qb.push(" ON CONFLICT (feedback_id) DO NOTHING");
            qb.build().execute(&mut *tx).await?;
        }
        tx.commit().await
    }
}

/// Writes one batch with the chosen writer.
async fn write(store: &Store, pool: &sqlx::PgPool, how: &str, b: &[Event]) -> anyhow::Result<()> {
    match how {
        "values" => values::write(pool, b).await?,
        _ => store.write_batch(b).await?,
    }
    Ok(())
}

async fn writer(
    store: Store,
    pool: sqlx::PgPool,
    how: String,
    seed: u64,
    batch: usize,
    until: Instant,
) -> anyhow::Result<(u64, Vec<Duration>)> {
    let mut next = seed;
    let mut events = 0;
    let mut took = Vec::new();
    while Instant::now() < until {
        // Built outside the timed part: the router builds its events on the request path.
        let b = make_batch(&mut next, batch);
        let t0 = Instant::now();
        write(&store, &pool, &how, &b).await?;
        took.push(t0.elapsed());
        events += b.len() as u64;
    }
    Ok((events, took))
}

async fn run(a: Args) -> anyhow::Result<()> {
    let db = format!("switchboard_bench_{}", std::process::id());
    let mut admin = sqlx::PgConnection::connect(&a.admin_url)
        .await
        .with_context(|| format!("connecting to {}", a.admin_url))?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {db}"))
        .execute(&mut admin)
        .await?;
    sqlx::query(&format!("CREATE DATABASE {db}"))
        .execute(&mut admin)
        .await?;
    let base = a
        .admin_url
        .rsplit_once('/')
        .map(|(b, _)| b)
        .unwrap_or(&a.admin_url);
    let url = format!("{base}/{db}");
    let store = Store::connect_lazy(&url)?;
    store.migrate().await?;
    if !matches!(a.writer.as_str(), "store" | "values") {
        anyhow::bail!("--writer must be `store` or `values`");
    }
    // The baseline writer's own pool, sized like the store's.
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(8)
        .connect(&url)
        .await?;
    let version: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(&mut admin)
        .await?;

    // Warm-up: connections, plans, the first pages of the tables.
    let mut seed = u64::MAX / 2;
    for _ in 0..3 {
        write(&store, &pool, &a.writer, &make_batch(&mut seed, a.batch)).await?;
    }
    let started = Instant::now();
    let until = started + Duration::from_secs(a.seconds);
    let tasks: Vec<_> = (0..a.writers)
        .map(|w| {
            tokio::spawn(writer(
                store.clone(),
                pool.clone(),
                a.writer.clone(),
                w as u64 * 1_000_000_000,
                a.batch,
                until,
            ))
        })
        .collect();
    let (mut events, mut took) = (0, Vec::new());
    for t in tasks {
        let (e, d) = t.await??;
        events += e;
        took.extend(d);
    }
    let secs = started.elapsed().as_secs_f64();
    took.sort();
    let at =
        |q: f64| took.get(((took.len() as f64 * q) as usize).min(took.len().saturating_sub(1)));
    let ms = |d: Option<&Duration>| d.map(|d| d.as_secs_f64() * 1000.0).unwrap_or(0.0);
    println!(
        "Postgres {version}: {events} events in {secs:.1} s = {:.0} events/s sustained \
         ({} writer(s), `{}` statements, {} events per batch; batch p50 {:.1} ms, p99 {:.1} ms; \
         target >= 20,000/s)",
        events as f64 / secs,
        a.writers,
        a.writer,
        a.batch,
        ms(at(0.5)),
        ms(at(0.99)),
    );
    store.close().await;
    pool.close().await;
    if !a.keep {
        sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
            .execute(&mut admin)
            .await?;
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().filter(|a| a != "--bench").collect();
    let a = Args::parse_from(args);
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(run(a)));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("store_write: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
