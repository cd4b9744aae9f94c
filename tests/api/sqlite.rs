use serde_json::{json, Value};

use crate::helpers::{spawn, two_providers, Db};
use crate::mock::MockUpstream;

#[tokio::test]
async fn the_embedded_sqlite_store_records_requests_and_feedback() {
    let (a, b) = (
        MockUpstream::start("alpha").await,
        MockUpstream::start("beta").await,
    );
    let app = spawn(&two_providers(&a.base_url(), &b.base_url()), Db::Sqlite).await;
    let resp = app
        .chat(json!({"model": "ordered", "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(resp.status(), 200);
    let id = resp.headers()["x-switchboard-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let row = app.request_row(&id).await;
    assert_eq!(row.model.as_deref(), Some("small"));
    assert!((row.cost_usd - 22e-6).abs() < 1e-12);
    let r = app
        .http
        .post(format!("{}/v1/feedback", app.url))
        .json(&json!({"request_id": id, "score": 0.5, "feedback_id": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(app.wait_feedback(&id, 1).await, vec![0.5]);
    let ready: Value = app
        .http
        .get(format!("{}/readyz", app.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["database"], "sqlite");
    app.shutdown().await;
}
