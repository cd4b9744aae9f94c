//! TTFT hedging (`ttft_deadline_ms`): a first model that stalls before its
//! first byte is overtaken by the next one, whose answer the client gets;
//! the stalled upstream connection is closed; both attempts are recorded
//! and both teach the policy. And the other way round: a hedge that has
//! not answered when the first model does is cancelled and teaches nothing.
//! No timing is asserted: the stalls last forever (or far longer than the
//! deadline), the deadline is short.

use std::time::Duration;

use serde_json::{json, Value};

use crate::chat::sse_data;
use crate::continuation::arm_counts;
use crate::helpers::{series_value, spawn, two_providers, Db, TestApp};
use crate::mock::{Behaviour, MockUpstream};
use crate::mock_raw::{Raw, RawUpstream};

const DEADLINE_MS: u64 = 150;

fn config(a: &str, b: &str) -> String {
    format!(
        "{}\n[[routes]]\nname = \"hedged\"\nmodels = [\"small\", \"large\"]\npolicy = \"fixed\"\nttft_deadline_ms = {DEADLINE_MS}\n",
        two_providers(a, b)
    )
}

fn ask(stream: bool) -> Value {
    json!({"model": "hedged", "stream": stream, "messages": [{"role": "user", "content": "hello"}]})
}

fn request_id(r: &reqwest::Response) -> String {
    r.headers()["x-switchboard-request-id"]
        .to_str()
        .unwrap()
        .to_owned()
}

/// The value of one series in `/metrics` (0 when absent).
async fn metric(app: &TestApp, series: &str) -> f64 {
    series_value(&app.metrics_text().await, series)
}

#[tokio::test]
async fn a_first_model_that_stalls_before_its_first_byte_is_overtaken_by_the_hedge() {
    // alpha (`small`, ranked first) accepts the request and says nothing, ever.
    let raw = RawUpstream::start(vec![Raw::Hold]).await;
    let beta = MockUpstream::start("beta").await;
    let app = spawn(&config(&raw.base_url(), &beta.base_url()), Db::Postgres).await;
    let wins = r#"switchboard_hedge_wins_total{route="hedged",model="large"}"#;
    let wins_before = metric(&app, wins).await;

    let r = app.chat(ask(false)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-switchboard-model"], "large");
    let id = request_id(&r);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "Hello from beta.");
    assert_eq!(body["id"], id.as_str());
    raw.wait_hangups(1).await;

    let r = app.chat(ask(true)).await;
    assert_eq!(r.status(), 200);
    let stream_id = request_id(&r);
    let text = r.text().await.unwrap();
    assert_eq!(sse_data(&text).last().map(String::as_str), Some("[DONE]"));
    assert!(text.contains("\"model\":\"large\""), "{text}");
    raw.wait_hangups(2).await;
    assert_eq!((raw.calls(), beta.calls()), (2, 2));

    for id in [&id, &stream_id] {
        let row = app.request_row(id).await;
        assert_eq!(row.status, "ok");
        assert_eq!(row.model.as_deref(), Some("large"));
        let chain = row.fallback_chain.as_array().unwrap();
        assert_eq!(chain.len(), 2, "{chain:?}");
        assert_eq!(chain[0]["model"], "small", "the chosen model stays first");
        assert_eq!(chain[0]["error"], "ttft_deadline");
        // It ran at least until the hedge started (a consequence, not a speed).
        assert!(chain[0]["elapsed_ms"].as_f64().unwrap() >= DEADLINE_MS as f64);
        let billed = chain[0]["cost_usd"].as_f64().unwrap();
        assert!(billed > 0.0, "the cancelled prompt is charged");
        assert_eq!(chain[1]["model"], "large");
        assert!(chain[1]["error"].is_null());
        assert!(row.cost_usd > billed, "the row's cost includes the loser's");
    }
    assert!(metric(&app, wins).await >= wins_before + 2.0);

    let db_url = app.db_url.clone();
    app.shutdown().await;
    let counts = arm_counts(&db_url, "hedged").await;
    assert_eq!(
        counts["small"],
        (0, 2),
        "the overtaken model learned two misses"
    );
    assert_eq!(counts["large"], (2, 0), "the hedge learned two answers");
}

#[tokio::test]
async fn a_hedge_that_has_not_answered_when_the_first_model_does_is_cancelled() {
    // alpha answers, but only long after the deadline; beta (the hedge) never does.
    let alpha = MockUpstream::start("alpha").await;
    alpha.set_default(Behaviour::Delay(
        Duration::from_millis(1500),
        Box::new(Behaviour::Answer("Hello from alpha.".into())),
    ));
    let raw = RawUpstream::start(vec![Raw::Hold]).await;
    let app = spawn(&config(&alpha.base_url(), &raw.base_url()), Db::Postgres).await;
    let r = app.chat(ask(false)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-switchboard-model"], "small");
    let id = request_id(&r);
    raw.wait_hangups(1).await;
    let row = app.request_row(&id).await;
    let chain = row.fallback_chain.as_array().unwrap();
    assert_eq!(chain.len(), 2, "{chain:?}");
    assert_eq!(chain[0]["model"], "small");
    assert!(chain[0]["error"].is_null());
    assert_eq!(chain[1]["model"], "large");
    assert_eq!(chain[1]["error"], "hedge_cancelled");
    assert!(chain[1]["cost_usd"].as_f64().unwrap() > 0.0);

    let db_url = app.db_url.clone();
    app.shutdown().await;
    let counts = arm_counts(&db_url, "hedged").await;
    assert_eq!(counts["small"], (1, 0));
    assert_eq!(counts["large"], (0, 0), "a hedge cut short teaches nothing");
}
