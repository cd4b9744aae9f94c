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
            serde_json::json!({"policy": "linucb-v1", "scores": [0.41, 0.38, 0.12, 0.09]}),
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

async fn writer(
    store: Store,
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
        store.write_batch(&b).await?;
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
    let version: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(&mut admin)
        .await?;

    // Warm-up: connections, plans, the first pages of the tables.
    let mut seed = u64::MAX / 2;
    for _ in 0..3 {
        store.write_batch(&make_batch(&mut seed, a.batch)).await?;
    }
    let started = Instant::now();
    let until = started + Duration::from_secs(a.seconds);
    let tasks: Vec<_> = (0..a.writers)
        .map(|w| {
            tokio::spawn(writer(
                store.clone(),
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
         ({} writer(s), {} events per batch; batch p50 {:.1} ms, p99 {:.1} ms; target >= 20,000/s)",
        events as f64 / secs,
        a.writers,
        a.batch,
        ms(at(0.5)),
        ms(at(0.99)),
    );
    store.close().await;
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
