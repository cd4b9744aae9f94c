use std::time::Duration;

use serde_json::{json, Value};

use crate::chat::sse_data;
use crate::helpers::{spawn, two_providers, Db};
use crate::mock::{Behaviour, MockUpstream};

fn hi(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})
}

#[tokio::test]
async fn a_5xx_is_retried_on_the_same_model() {
    let (a, b) = (
        MockUpstream::start("alpha").await,
        MockUpstream::start("beta").await,
    );
    a.script([Behaviour::Status(500, None)]);
    let app = spawn(&two_providers(&a.base_url(), &b.base_url()), Db::Postgres).await;
    let resp = app.chat(hi("ordered")).await;
    assert_eq!(resp.status(), 200);
    let id = resp.headers()["x-switchboard-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!((a.calls(), b.calls()), (2, 0));
    let row = app.request_row(&id).await;
    assert_eq!(row.fallback_chain[0]["error"], "server_error");
    assert_eq!(row.fallback_chain[1]["error"], Value::Null);
    app.shutdown().await;
}

#[tokio::test]
async fn a_429_honours_retry_after_then_succeeds() {
    let (a, b) = (
        MockUpstream::start("alpha").await,
        MockUpstream::start("beta").await,
    );
    a.script([Behaviour::Status(429, Some(0))]);
    let app = spawn(&two_providers(&a.base_url(), &b.base_url()), Db::Postgres).await;
    let resp = app.chat(hi("small")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(a.calls(), 2);
    app.shutdown().await;
}

#[tokio::test]
async fn a_failing_model_falls_back_and_the_answer_names_the_real_model() {
    let (a, b) = (
        MockUpstream::start("alpha").await,
        MockUpstream::start("beta").await,
    );
    a.set_default(Behaviour::Status(503, None));
    let app = spawn(&two_providers(&a.base_url(), &b.base_url()), Db::Postgres).await;
    let resp = app.chat(hi("ordered")).await;
    assert_eq!(resp.status(), 200, "the client never sees the failure");
    assert_eq!(resp.headers()["x-switchboard-model"], "large");
    let id = resp.headers()["x-switchboard-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["model"], "large");
    assert_eq!(body["choices"][0]["message"]["content"], "Hello from beta.");
    let row = app.request_row(&id).await;
    assert_eq!(row.model.as_deref(), Some("large"));
    let chain: Vec<&str> = row
        .fallback_chain
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["model"].as_str().unwrap())
        .collect();
    assert_eq!(chain, vec!["small", "small", "large"]);
    app.shutdown().await;
}

#[tokio::test]
async fn a_stream_that_fails_before_its_first_byte_falls_back() {
    let (a, b) = (
        MockUpstream::start("alpha").await,
        MockUpstream::start("beta").await,
    );
    a.set_default(Behaviour::Status(500, None));
    let app = spawn(&two_providers(&a.base_url(), &b.base_url()), Db::Postgres).await;
    let resp = app.chat(json!({"model": "ordered", "stream": true, "messages": [{"role": "user", "content": "hi"}]})).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-switchboard-model"], "large");
    let frames = sse_data(&resp.text().await.unwrap());
    assert_eq!(frames.last().unwrap(), "[DONE]");
    app.shutdown().await;
}

#[tokio::test]
async fn a_sick_model_is_taken_out_by_its_breaker_and_probed_later() {
    let (a, b) = (
        MockUpstream::start("alpha").await,
        MockUpstream::start("beta").await,
    );
    a.set_default(Behaviour::Status(500, None));
    // A cooldown far longer than the open-circuit phase takes even on a
    // loaded machine (with 300 ms a slow run let a probe in early); recovery
    // is then awaited by polling, not by sleeping a fixed time.
    let cfg = two_providers(&a.base_url(), &b.base_url())
        .replace("max_attempts_per_model = 2", "max_attempts_per_model = 1")
        .replace("breaker_cooldown_ms = 300", "breaker_cooldown_ms = 3000");
    let app = spawn(&cfg, Db::Postgres).await;
    for _ in 0..3 {
        assert_eq!(app.chat(hi("ordered")).await.status(), 200);
    }
    assert_eq!(
        a.calls(),
        3,
        "three failures open the circuit (threshold 3)"
    );
    for _ in 0..5 {
        let r = app.chat(hi("ordered")).await;
        assert_eq!(r.headers()["x-switchboard-model"], "large");
    }
    assert_eq!(
        a.calls(),
        3,
        "an open circuit sends nothing to the sick model"
    );
    // A direct request for a model whose circuit is open is refused quickly.
    assert_eq!(app.chat(hi("small")).await.status(), 503);

    // After the cooldown, one probe goes through; the model has recovered.
    a.set_default(Behaviour::Answer("back".into()));
    let mut served_by = String::new();
    for _ in 0..300 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let r = app.chat(hi("ordered")).await;
        served_by = r.headers()["x-switchboard-model"]
            .to_str()
            .unwrap()
            .to_owned();
        if served_by == "small" {
            break;
        }
    }
    assert_eq!(served_by, "small", "the recovered model is probed and back");
    assert_eq!(a.calls(), 4, "exactly one probe reached it");
    app.shutdown().await;
}

#[tokio::test]
async fn a_stream_broken_after_the_first_byte_ends_with_an_error_event_not_done() {
    let (a, b) = (
        MockUpstream::start("alpha").await,
        MockUpstream::start("beta").await,
    );
    a.set_default(Behaviour::BreakStreamAfter(2));
    let app = spawn(&two_providers(&a.base_url(), &b.base_url()), Db::Postgres).await;
    let resp = app.chat(json!({"model": "small", "stream": true, "messages": [{"role": "user", "content": "hi"}]})).await;
    let id = resp.headers()["x-switchboard-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let frames = sse_data(&resp.text().await.unwrap());
    assert!(
        !frames.contains(&"[DONE]".to_owned()),
        "a broken stream must not look complete"
    );
    let last: Value = serde_json::from_str(frames.last().unwrap()).unwrap();
    assert_eq!(last["error"]["type"], "upstream_error");
    let row = app.request_row(&id).await;
    assert_eq!(row.status, "error");
    assert_eq!(row.error_kind.as_deref(), Some("protocol"));
    app.shutdown().await;
}

#[tokio::test]
async fn every_model_failing_is_a_502_and_a_client_fault_is_not_retried() {
    let (a, b) = (
        MockUpstream::start("alpha").await,
        MockUpstream::start("beta").await,
    );
    a.set_default(Behaviour::Status(500, None));
    b.set_default(Behaviour::Status(502, None));
    let app = spawn(&two_providers(&a.base_url(), &b.base_url()), Db::Postgres).await;
    let resp = app.chat(hi("ordered")).await;
    assert_eq!(resp.status(), 502);
    let id = resp.headers()["x-switchboard-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let e: Value = resp.json().await.unwrap();
    assert_eq!(e["error"]["code"], "upstream_failed");
    let row = app.request_row(&id).await;
    assert_eq!((row.status.as_str(), row.status_code), ("error", 502));

    a.set_default(Behaviour::Status(400, None));
    let before = a.calls();
    let resp = app.chat(hi("small")).await;
    assert_eq!(resp.status(), 400);
    assert_eq!(
        a.calls() - before,
        1,
        "a 400 is the request's fault: no retry"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn the_deadline_gives_504() {
    let (a, b) = (
        MockUpstream::start("alpha").await,
        MockUpstream::start("beta").await,
    );
    a.set_default(Behaviour::Delay(
        Duration::from_secs(3),
        Box::new(Behaviour::Answer("late".into())),
    ));
    let cfg = two_providers(&a.base_url(), &b.base_url())
        .replace("request_timeout_ms = 5000", "request_timeout_ms = 300");
    let app = spawn(&cfg, Db::Postgres).await;
    let resp = app.chat(hi("small")).await;
    assert_eq!(resp.status(), 504);
    let e: Value = resp.json().await.unwrap();
    assert_eq!(e["error"]["code"], "deadline_exceeded");
    app.shutdown().await;
}
