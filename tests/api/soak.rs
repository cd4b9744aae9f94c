//! A bounded soak, not run in CI (`#[ignore]`): steady concurrent load with
//! random upstream faults against real Postgres for `SOAK_SECS` (default
//! 600), then a report — errors clients saw, events lost (must be 0),
//! the router's resident memory after warm-up, at its peak and at the end.
//! Run with `scripts/soak.sh`.
//!
//! The router is the real binary in a process of its own, so its memory is
//! measured alone (not the test's mocks and clients). Its routes cover the
//! plain path (`auto`, `ordered`) and the resilience options (`resilient`:
//! TTFT hedging and stream continuation). Events lost = request ids the
//! clients were given that have no row in Postgres, plus accepted feedback
//! without a row; feedback rows must equal accepted feedback exactly. A
//! request refused while deciding because every circuit of its route is
//! open (503 `no_available_model`) never becomes an event, and is reported
//! apart rather than counted as lost.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::json;

use crate::helpers::{fresh_postgres, two_providers};
use crate::mock::{Behaviour, MockUpstream};
use crate::process::{rss_kib, sigterm, start_binary_with, Launch};

fn random_fault() -> Behaviour {
    let ok = Behaviour::Answer("steady answer from the soak".into());
    match rand::rng().random_range(0..100) {
        0..=69 => ok,
        70..=79 => Behaviour::Status(500, None),
        80..=84 => Behaviour::Status(429, None),
        85..=89 => Behaviour::Status(429, Some(0)),
        90..=94 => Behaviour::BreakStreamAfter(2),
        95..=97 => Behaviour::Delay(Duration::from_millis(50), Box::new(ok)),
        // Past the `resilient` route's TTFT deadline: hedged there.
        _ => Behaviour::Delay(Duration::from_millis(400), Box::new(ok)),
    }
}

fn config(a: &str, b: &str) -> String {
    two_providers(a, b).replace("breaker_cooldown_ms = 300", "breaker_cooldown_ms = 200")
        + "\n[[routes]]\nname = \"resilient\"\nmodels = [\"small\", \"large\"]\npolicy = \"linucb\"\n\
           ttft_deadline_ms = 200\ncontinue_stream_on_fallback = true\n"
}

/// One request as the client saw it.
#[derive(Debug)]
#[expect(
    dead_code,
    reason = "route, stream and status are read through Debug, to report a missing row"
)]
struct Sent {
    id: String,
    route: &'static str,
    stream: bool,
    status: u16,
    /// Refused while deciding: every circuit of its route open.
    refused: bool,
}

#[derive(Default)]
struct Tally {
    sent: AtomicU64,
    errors: AtomicU64,
    feedback: AtomicU64,
    ids: Mutex<Vec<Sent>>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a 10-minute soak: scripts/soak.sh"]
async fn soak_with_random_faults_loses_no_event() {
    let secs: u64 = std::env::var("SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    let (a, b) = (
        MockUpstream::start("alpha").await,
        MockUpstream::start("beta").await,
    );
    let db_url = fresh_postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let mut router = start_binary_with(
        &config(&a.base_url(), &b.base_url()),
        dir.path(),
        &db_url,
        Launch {
            env: vec![("RUST_LOG", "error".to_owned())],
            output: None,
            name: None,
        },
    )
    .await;
    let pid = router.child.id();
    let base = router.base.clone();
    let http = reqwest::Client::new();
    let tally = Arc::new(Tally::default());
    // Memory: after a warm-up (tokenizer tables, pools, caches), then every
    // 30 s (the series shows whether it levels off), and at the end.
    let started = Instant::now();
    let until = started + Duration::from_secs(secs);
    let sampler = tokio::spawn(async move {
        let warm_up = Duration::from_secs((secs / 10).max(1));
        tokio::time::sleep(warm_up).await;
        let mut series = vec![(warm_up.as_secs(), rss_kib(pid))];
        while Instant::now() + Duration::from_secs(30) < until {
            tokio::time::sleep(Duration::from_secs(30)).await;
            series.push((started.elapsed().as_secs(), rss_kib(pid)));
        }
        series
    });
    let workers: Vec<_> = (0..16)
        .map(|w| {
            let (http, base, tally) = (http.clone(), base.clone(), tally.clone());
            let (a, b) = (a.script_handle(), b.script_handle());
            tokio::spawn(async move {
                let route = ["auto", "ordered", "resilient", "resilient"][w % 4];
                let mut i = 0u64;
                while Instant::now() < until {
                    a(random_fault());
                    b(random_fault());
                    i += 1;
                    let stream = i % 3 == 0;
                    let r = http
                        .post(format!("{base}/v1/chat/completions"))
                        .json(&json!({"model": route, "stream": stream,
                            "messages": [{"role": "user", "content": format!("soak {w} {i}")}]}))
                        .send()
                        .await
                        .unwrap();
                    tally.sent.fetch_add(1, Ordering::Relaxed);
                    let status = r.status().as_u16();
                    let ok = status == 200;
                    let id = r.headers()["x-switchboard-request-id"]
                        .to_str()
                        .unwrap()
                        .to_owned();
                    let text = r.text().await.unwrap_or_default();
                    let refused = status == 503 && text.contains("\"no_available_model\"");
                    if !ok || (stream && !text.contains("[DONE]")) {
                        tally.errors.fetch_add(1, Ordering::Relaxed);
                    }
                    if ok {
                        let f = http
                            .post(format!("{base}/v1/feedback"))
                            .json(&json!({"request_id": id, "score": 0.5}))
                            .send()
                            .await
                            .unwrap();
                        if f.status() == 202 {
                            tally.feedback.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    let sent = Sent {
                        id,
                        route,
                        stream,
                        status,
                        refused,
                    };
                    tally.ids.lock().unwrap().push(sent);
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    let rss_end = rss_kib(pid);
    let series = sampler.await.unwrap();
    let rss_warm = series.first().map_or(0, |s| s.1);
    let rss_peak = series.iter().map(|s| s.1).max().unwrap_or(0).max(rss_end);
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let total = |prefix: &str, having: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| l.starts_with(prefix) && l.contains(having))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let hedges = total("switchboard_hedges_total", "");
    let hedge_wins = total("switchboard_hedge_wins_total", "");
    let continued = total("switchboard_stream_continuations_total", "resumed");
    // A clean stop flushes the outbox; then count what arrived.
    sigterm(&router.child);
    assert!(router.child.wait().unwrap().success());

    let sent = tally.sent.load(Ordering::Relaxed);
    let errors = tally.errors.load(Ordering::Relaxed);
    let feedback = tally.feedback.load(Ordering::Relaxed);
    let ids = std::mem::take(&mut *tally.ids.lock().unwrap());
    let pool = sqlx::PgPool::connect(&db_url).await.unwrap();
    let stored: HashSet<String> = sqlx::query_scalar("SELECT id FROM requests")
        .fetch_all(&pool)
        .await
        .unwrap()
        .into_iter()
        .collect();
    let (rows, fb_rows): (i64, i64) =
        sqlx::query_as("SELECT (SELECT COUNT(*) FROM requests), (SELECT COUNT(*) FROM feedback)")
            .fetch_one(&pool)
            .await
            .unwrap();
    pool.close().await;
    // A route whose every model has its circuit open refuses the request
    // while deciding, before there is anything to record: no row, by
    // design (a 503 `no_available_model`). Those are counted apart.
    let (refused, served): (Vec<_>, Vec<_>) = ids
        .iter()
        .partition(|r| r.refused && !stored.contains(&r.id));
    let missing: Vec<_> = served.iter().filter(|r| !stored.contains(&r.id)).collect();
    for m in missing.iter().take(10) {
        println!("missing row: {m:?}");
    }
    let refused = refused.len();
    let missing = missing.len() as i64;
    let lost = missing + (feedback as i64 - fb_rows).max(0);
    println!(
        "soak {secs}s: {sent} requests ({:.0}/s), {errors} client-visible errors ({:.2} %), \
         of them {refused} refused with every circuit open (no row by design); \
         {feedback} feedback; rows {rows}, feedback rows {fb_rows}; events lost {lost}; \
         hedges {hedges} (won {hedge_wins}), streams continued {continued}; \
         router RSS {rss_warm} KiB after warm-up, {rss_peak} KiB peak, {rss_end} KiB at the end",
        sent as f64 / started.elapsed().as_secs_f64(),
        100.0 * errors as f64 / sent.max(1) as f64
    );
    let series: Vec<String> = series
        .iter()
        .map(|(t, kib)| format!("{t}s {} MiB", kib / 1024))
        .collect();
    println!("router RSS over time: {}", series.join(", "));
    assert_eq!(ids.len() as u64, sent);
    assert_eq!(lost, 0, "no event may be lost");
    assert_eq!(rows as usize, stored.len());
    assert_eq!(fb_rows, feedback as i64, "every accepted feedback, once");
}
