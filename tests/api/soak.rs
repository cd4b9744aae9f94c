//! A bounded soak, not run in CI (`#[ignore]`): steady concurrent load with
//! random upstream faults against real Postgres for `SOAK_SECS` (default
//! 600), then a report — errors clients saw, events lost (must be 0),
//! resident memory after warm-up and at the end. Run with `scripts/soak.sh`.
//! The router runs in the test process, so RSS includes the mock upstreams,
//! which keep every request body they receive (their growth, not the
//! router's, is what a rising number mostly shows).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::json;

use crate::helpers::{spawn, two_providers, Db};
use crate::mock::{Behaviour, MockUpstream};

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn random_fault() -> Behaviour {
    let ok = Behaviour::Answer("steady answer from the soak".into());
    match rand::rng().random_range(0..100) {
        0..=69 => ok,
        70..=79 => Behaviour::Status(500, None),
        80..=84 => Behaviour::Status(429, None),
        85..=89 => Behaviour::Status(429, Some(0)),
        90..=94 => Behaviour::BreakStreamAfter(2),
        _ => Behaviour::Delay(Duration::from_millis(50), Box::new(ok)),
    }
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
    let cfg = two_providers(&a.base_url(), &b.base_url())
        .replace("breaker_cooldown_ms = 300", "breaker_cooldown_ms = 200");
    let app = Arc::new(spawn(&cfg, Db::Postgres).await);
    let (sent, errors, feedback) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    // Memory is sampled after a warm-up (tokenizer tables, pools, caches).
    let warm_up = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(secs / 10)).await;
        rss_kib()
    });
    let until = Instant::now() + Duration::from_secs(secs);
    let workers: Vec<_> = (0..16)
        .map(|w| {
            let (app, sent, errors, feedback) = (app.clone(), sent.clone(), errors.clone(), feedback.clone());
            let (a, b) = (a.script_handle(), b.script_handle());
            tokio::spawn(async move {
                let mut i = 0u64;
                while Instant::now() < until {
                    a(random_fault());
                    b(random_fault());
                    i += 1;
                    let stream = i % 3 == 0;
                    let r = app
                        .chat(json!({"model": if w % 2 == 0 { "auto" } else { "ordered" }, "stream": stream,
                            "messages": [{"role": "user", "content": format!("soak {w} {i}")}]}))
                        .await;
                    sent.fetch_add(1, Ordering::Relaxed);
                    let ok = r.status() == 200;
                    let id = r.headers()["x-switchboard-request-id"].to_str().unwrap().to_owned();
                    let text = r.text().await.unwrap_or_default();
                    if !ok || (stream && !text.contains("[DONE]")) {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                    if ok {
                        let f = app.post_raw("/v1/feedback", json!({"request_id": id, "score": 0.5}).to_string()).await;
                        if f.status() == 202 {
                            feedback.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    let rss_end = rss_kib();
    let rss_start = warm_up.await.unwrap();
    let (sent, errors, feedback) = (
        sent.load(Ordering::Relaxed),
        errors.load(Ordering::Relaxed),
        feedback.load(Ordering::Relaxed),
    );
    app.wait_count("requests", sent as i64).await;
    app.wait_count("feedback", feedback as i64).await;
    let (rows, fb_rows) = (app.count("requests").await, app.count("feedback").await);
    let lost = (sent as i64 - rows) + (feedback as i64 - fb_rows);
    println!(
        "soak {secs}s: {sent} requests, {errors} client-visible errors ({:.2} %), {feedback} feedback, \
         events lost {lost}, RSS {rss_start} KiB -> {rss_end} KiB",
        100.0 * errors as f64 / sent.max(1) as f64
    );
    assert_eq!(lost, 0, "no event may be lost");
}
