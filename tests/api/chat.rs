use serde_json::{json, Value};

use crate::helpers::{spawn, two_providers, Db};
use crate::mock::{Behaviour, MockUpstream};

#[tokio::test]
async fn a_route_answers_with_router_id_model_name_and_headers() {
    let (a, b) = (
        MockUpstream::start("alpha").await,
        MockUpstream::start("beta").await,
    );
    let app = spawn(&two_providers(&a.base_url(), &b.base_url()), Db::Postgres).await;

    let resp = app
        .chat(
            json!({"model": "ordered", "messages": [{"role": "user", "content": "hi"}],
            "switchboard": {"tier": "free", "user": "u1"}}),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let h = resp.headers().clone();
    let body: Value = resp.json().await.unwrap();
    let id = h["x-switchboard-request-id"].to_str().unwrap().to_owned();
    assert!(id.starts_with("chatcmpl-"));
    assert_eq!(body["id"], id);
    assert_eq!(
        body["model"], "small",
        "the configured name, not the upstream's"
    );
    assert_eq!(h["x-switchboard-model"], "small");
    assert_eq!(h["x-switchboard-route"], "ordered");
    assert!(h["x-switchboard-policy-version"]
        .to_str()
        .unwrap()
        .starts_with("online."));
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "Hello from alpha."
    );

    let sent = &a.bodies()[0];
    assert_eq!(sent["model"], "alpha-small-2024");
    assert!(
        sent.get("switchboard").is_none(),
        "router options never reach an upstream"
    );
    assert_eq!(a.last_headers()["authorization"], "Bearer sk-test-secret");

    let row = app.request_row(&id).await;
    assert_eq!(row.model.as_deref(), Some("small"));
    assert_eq!(row.route.as_deref(), Some("ordered"));
    assert_eq!(row.status, "ok");
    assert_eq!(
        (row.prompt_tokens, row.completion_tokens),
        (Some(12), Some(5))
    );
    // 12 * $1/M + 5 * $2/M
    assert!((row.cost_usd - 22e-6).abs() < 1e-12, "{}", row.cost_usd);
    assert!(!row.tokens_counted_locally);
    assert_eq!(row.propensity, Some(1.0));
    app.shutdown().await;
}

#[tokio::test]
async fn every_openai_field_passes_through_untouched() {
    let (a, b) = (
        MockUpstream::start("alpha").await,
        MockUpstream::start("beta").await,
    );
    let app = spawn(&two_providers(&a.base_url(), &b.base_url()), Db::Postgres).await;
    let extra = json!({
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
        "tool_choice": "auto",
        "response_format": {"type": "json_object"},
        "logprobs": true, "top_logprobs": 2, "n": 2, "seed": 7, "temperature": 0.3,
        "user": "end-user-1", "metadata": {"k": "v"}
    });
    let mut body = json!({"model": "small", "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "what is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}]});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let resp = app.chat(body.clone()).await;
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(
        answer["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
        "get_weather"
    );
    let sent = &a.bodies()[0];
    for (k, v) in extra.as_object().unwrap() {
        assert_eq!(&sent[k], v, "field {k} changed on its way upstream");
    }
    assert_eq!(sent["messages"], body["messages"]);
    app.shutdown().await;
}

/// Parses an SSE body into its `data:` payloads.
pub fn sse_data(text: &str) -> Vec<String> {
    text.split("\n\n")
        .filter_map(|frame| frame.strip_prefix("data: "))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn streams_carry_the_router_id_hide_unasked_usage_and_end_with_done() {
    let (a, b) = (
        MockUpstream::start("alpha").await,
        MockUpstream::start("beta").await,
    );
    a.set_default(Behaviour::Answer("one two three".into()));
    let app = spawn(&two_providers(&a.base_url(), &b.base_url()), Db::Postgres).await;
    let resp = app
        .chat(json!({"model": "ordered", "stream": true, "messages": [{"role": "user", "content": "count"}]}))
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let id = resp.headers()["x-switchboard-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let text = resp.text().await.unwrap();
    let frames = sse_data(&text);
    assert_eq!(frames.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = frames[..frames.len() - 1]
        .iter()
        .map(|f| serde_json::from_str(f).unwrap())
        .collect();
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, "one two three");
    for c in &chunks {
        assert_eq!(c["id"], id);
        assert_eq!(c["model"], "small");
        assert!(
            c.get("usage").is_none(),
            "client did not ask for usage: {c}"
        );
    }
    // The router asked upstream for usage on its own account.
    assert_eq!(a.bodies()[0]["stream_options"]["include_usage"], true);
    let row = app.request_row(&id).await;
    assert!(row.stream);
    assert_eq!(row.status, "ok");
    assert_eq!(
        (row.prompt_tokens, row.completion_tokens),
        (Some(12), Some(6))
    );
    assert!(row.ttft_ms.is_some());
    app.shutdown().await;
}

#[tokio::test]
async fn a_stream_that_asked_for_usage_gets_the_usage_chunk() {
    let (a, b) = (
        MockUpstream::start("alpha").await,
        MockUpstream::start("beta").await,
    );
    let app = spawn(&two_providers(&a.base_url(), &b.base_url()), Db::Postgres).await;
    let resp = app
        .chat(
            json!({"model": "small", "stream": true, "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    let frames = sse_data(&resp.text().await.unwrap());
    let last_chunk: Value = serde_json::from_str(&frames[frames.len() - 2]).unwrap();
    assert_eq!(last_chunk["usage"]["completion_tokens"], 6);
    assert_eq!(last_chunk["choices"], json!([]));
    app.shutdown().await;
}

#[tokio::test]
async fn missing_usage_is_counted_locally_and_priced() {
    let (a, b) = (
        MockUpstream::start("alpha").await,
        MockUpstream::start("beta").await,
    );
    a.set_default(Behaviour::AnswerWithoutUsage(
        "A fairly short answer with several tokens.".into(),
    ));
    let app = spawn(&two_providers(&a.base_url(), &b.base_url()), Db::Postgres).await;
    let resp = app
        .chat(json!({"model": "small", "messages": [{"role": "user", "content": "hello there"}]}))
        .await;
    assert_eq!(resp.status(), 200);
    let id = resp.headers()["x-switchboard-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let row = app.request_row(&id).await;
    assert!(row.tokens_counted_locally);
    assert!(row.completion_tokens.unwrap() >= 5);
    assert!(row.prompt_tokens.unwrap() >= 6);
    assert!(row.cost_usd > 0.0);
    app.shutdown().await;
}

#[tokio::test]
async fn models_lists_models_and_routes() {
    let (a, b) = (
        MockUpstream::start("alpha").await,
        MockUpstream::start("beta").await,
    );
    let app = spawn(&two_providers(&a.base_url(), &b.base_url()), Db::Postgres).await;
    let v: Value = app
        .http
        .get(format!("{}/v1/models", app.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["small", "large", "auto", "ordered"]);
    assert_eq!(
        v["data"][2]["switchboard"]["models"],
        json!(["small", "large"])
    );
    app.shutdown().await;
}

#[tokio::test]
async fn health_and_readiness() {
    let (a, b) = (
        MockUpstream::start("alpha").await,
        MockUpstream::start("beta").await,
    );
    let app = spawn(&two_providers(&a.base_url(), &b.base_url()), Db::Postgres).await;
    let h = app
        .http
        .get(format!("{}/healthz", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(h.status(), 200);
    let r: Value = app
        .http
        .get(format!("{}/readyz", app.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["status"], "ready");
    assert_eq!(r["database"], "postgres");
    app.shutdown().await;
}
