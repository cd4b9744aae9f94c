use serde_json::{json, Value};

use crate::helpers::{spawn, two_providers, Db};
use crate::mock::MockUpstream;

async fn error_of(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap();
    for key in ["message", "type", "code"] {
        assert!(
            body["error"].get(key).is_some(),
            "missing error.{key} in {body}"
        );
    }
    (status, body)
}

#[tokio::test]
async fn bad_input_gets_openai_shaped_errors_and_stores_nothing() {
    let (a, b) = (
        MockUpstream::start("alpha").await,
        MockUpstream::start("beta").await,
    );
    let cfg = format!("{}\n", two_providers(&a.base_url(), &b.base_url())).replace(
        "request_timeout_ms = 5000",
        "request_timeout_ms = 5000\nmax_body_bytes = 2048",
    );
    let app = spawn(&cfg, Db::Postgres).await;

    let (s, e) = error_of(app.post_raw("/v1/chat/completions", "{not json").await).await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (400, Some("invalid_json"))
    );

    let (s, e) = error_of(
        app.chat(json!({"messages": [{"role": "user", "content": "x"}]}))
            .await,
    )
    .await;
    assert_eq!((s, e["error"]["param"].as_str()), (400, Some("model")));

    let (s, e) = error_of(app.chat(json!({"model": "small"})).await).await;
    assert_eq!((s, e["error"]["param"].as_str()), (400, Some("messages")));

    let (s, _) = error_of(app.chat(json!({"model": "small", "messages": "hi"})).await).await;
    assert_eq!(s, 400);

    let (s, _) = error_of(app.chat(json!({"model": "small", "stream": "yes", "messages": [{"role": "user", "content": "x"}]})).await).await;
    assert_eq!(s, 400);

    let (s, e) = error_of(
        app.chat(json!({"model": "nope", "messages": [{"role": "user", "content": "x"}]}))
            .await,
    )
    .await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (404, Some("model_not_found"))
    );

    let (s, e) = error_of(
        app.chat(
            json!({"model": "auto", "messages": [{"role": "user", "content": "x"}],
        "switchboard": {"max_cost_usd": -1}}),
        )
        .await,
    )
    .await;
    assert_eq!(
        (s, e["error"]["param"].as_str()),
        (400, Some("switchboard.max_cost_usd"))
    );

    let big =
        json!({"model": "small", "messages": [{"role": "user", "content": "x".repeat(4096)}]});
    let (s, e) = error_of(app.chat(big).await).await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (413, Some("request_too_large"))
    );

    let (s, _) = error_of(
        app.http
            .get(format!("{}/v1/nothing", app.url))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 404);

    // Only the request that named an unknown model got as far as routing, and
    // it stopped before any upstream call; nothing reached an upstream.
    assert_eq!(a.calls() + b.calls(), 0);
    app.shutdown().await;
}

#[tokio::test]
async fn capability_mismatch_on_a_route_is_a_clear_400() {
    let (a, b) = (
        MockUpstream::start("alpha").await,
        MockUpstream::start("beta").await,
    );
    let cfg = two_providers(&a.base_url(), &b.base_url())
        .replace(
            "output_usd_per_mtok = 2.0",
            "output_usd_per_mtok = 2.0\ncapabilities = []",
        )
        .replace(
            "output_usd_per_mtok = 30.0",
            "output_usd_per_mtok = 30.0\ncapabilities = [\"vision\"]",
        );
    let app = spawn(&cfg, Db::Postgres).await;
    let resp = app
        .chat(
            json!({"model": "auto", "messages": [{"role": "user", "content": "x"}],
            "tools": [{"type": "function", "function": {"name": "f"}}]}),
        )
        .await;
    let (s, e) = error_of(resp).await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (400, Some("no_eligible_model"))
    );
    assert!(e["error"]["message"]
        .as_str()
        .unwrap()
        .contains("lacks capability Tools"));
    assert_eq!(a.calls() + b.calls(), 0);
    app.shutdown().await;
}
