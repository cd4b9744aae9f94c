use serde_json::{json, Value};

use crate::helpers::{spawn, two_providers, Db, TestApp};
use crate::mock::MockUpstream;

async fn feedback(app: &TestApp, body: Value) -> reqwest::Response {
    app.http
        .post(format!("{}/v1/feedback", app.url))
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn one_request(app: &TestApp) -> String {
    let r = app
        .chat(json!({"model": "auto", "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    r.headers()["x-switchboard-request-id"]
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn feedback_is_stored_idempotently_and_validated() {
    let (a, b) = (
        MockUpstream::start("alpha").await,
        MockUpstream::start("beta").await,
    );
    let app = spawn(&two_providers(&a.base_url(), &b.base_url()), Db::Postgres).await;
    let id = one_request(&app).await;

    let r = feedback(
        &app,
        json!({"request_id": id, "score": 0.83, "feedback_id": "fb-1"}),
    )
    .await;
    assert_eq!(r.status(), 202);
    let r = feedback(
        &app,
        json!({"request_id": id, "score": 0.83, "feedback_id": "fb-1"}),
    )
    .await;
    assert_eq!(r.status(), 202, "a repeated idempotency key is accepted");
    let r = feedback(
        &app,
        json!({"request_id": id, "thumbs": "down", "metric": "helpfulness"}),
    )
    .await;
    assert_eq!(r.status(), 202);
    assert_eq!(app.wait_feedback(&id, 2).await, vec![0.83, 0.0]);

    let r = feedback(
        &app,
        json!({"request_id": "chatcmpl-unknown", "score": 1.0}),
    )
    .await;
    assert_eq!(r.status(), 404);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "request_not_found");

    for (bad, status) in [
        (json!({"request_id": id, "score": 1.5}), 422),
        (json!({"request_id": id, "score": 0.5, "thumbs": "up"}), 422),
        (json!({"request_id": id}), 422),
        (json!({"request_id": id, "thumbs": "sideways"}), 422),
        (json!({"request_id": id, "score": "high"}), 400),
        (json!({"score": 0.5}), 400),
        (json!({"request_id": "bad id", "score": 0.5}), 400),
    ] {
        let r = feedback(&app, bad.clone()).await;
        assert_eq!(r.status().as_u16(), status, "{bad}");
        let e: Value = r.json().await.unwrap();
        assert!(e["error"]["message"].is_string());
    }
    // Give the writer a moment, then check nothing else was stored.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(app.feedback_values(&id).await.len(), 2);
    assert_eq!(app.count("feedback").await, 2);
    app.shutdown().await;
}

#[tokio::test]
async fn feedback_finds_requests_from_before_a_restart_in_the_database() {
    let (a, b) = (
        MockUpstream::start("alpha").await,
        MockUpstream::start("beta").await,
    );
    let app = spawn(&two_providers(&a.base_url(), &b.base_url()), Db::Postgres).await;
    let id = one_request(&app).await;
    app.request_row(&id).await;
    // Forget the in-memory table: the id is only in the database now.
    app.forget_recent_decisions();
    let r = feedback(&app, json!({"request_id": id, "thumbs": "up"})).await;
    assert_eq!(r.status(), 202);
    assert_eq!(app.wait_feedback(&id, 1).await, vec![1.0]);
    app.shutdown().await;
}
