use serde_json::{json, Value};

use crate::chat::sse_data;
use crate::helpers::{spawn, Db};
use crate::mock::MockUpstream;
use crate::mock_anthropic::MockAnthropic;

pub fn config(openai: &str, anthropic: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"

[resilience]
backoff_base_ms = 1
backoff_max_ms = 5

[[providers]]
name = "openai"
kind = "openai"
base_url = "{openai}"

[[providers]]
name = "anthropic"
kind = "anthropic"
base_url = "{anthropic}"
api_key_env = "ANTHROPIC_TEST_KEY"

[[models]]
name = "gpt-mini"
provider = "openai"
input_usd_per_mtok = 0.15
output_usd_per_mtok = 0.6

[[models]]
name = "claude-haiku"
provider = "anthropic"
upstream_name = "claude-3-5-haiku-latest"
input_usd_per_mtok = 0.8
output_usd_per_mtok = 4.0

[[routes]]
name = "claude-first"
models = ["claude-haiku", "gpt-mini"]
policy = "fixed"
"#
    )
}

#[tokio::test]
async fn anthropic_answers_are_translated_both_ways_with_tools_and_cost() {
    let (o, a) = (
        MockUpstream::start("openai").await,
        MockAnthropic::start().await,
    );
    let app = spawn(&config(&o.base_url(), &a.base_url()), Db::Postgres).await;
    let resp = app
        .chat(json!({"model": "claude-haiku", "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "weather in Paris?"}],
            "tools": [{"type": "function", "function": {"name": "get_weather", "description": "w",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]}))
        .await;
    assert_eq!(resp.status(), 200);
    let id = resp.headers()["x-switchboard-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["id"], id);
    assert_eq!(body["model"], "claude-haiku");
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
    let call = &body["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather");
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"city": "Paris"}));

    let sent = &a.bodies()[0];
    assert_eq!(sent["model"], "claude-3-5-haiku-latest");
    assert_eq!(sent["system"][0]["text"], "be brief");
    assert_eq!(sent["tools"][0]["input_schema"]["type"], "object");
    assert!(sent["max_tokens"].as_u64().unwrap() > 0);

    let row = app.request_row(&id).await;
    assert_eq!(
        (row.prompt_tokens, row.completion_tokens),
        (Some(20), Some(7))
    );
    assert!((row.cost_usd - (20.0 * 0.8 + 7.0 * 4.0) / 1e6).abs() < 1e-12);
    app.shutdown().await;
}

#[tokio::test]
async fn anthropic_streams_become_openai_chunks() {
    let (o, a) = (
        MockUpstream::start("openai").await,
        MockAnthropic::start().await,
    );
    let app = spawn(&config(&o.base_url(), &a.base_url()), Db::Postgres).await;
    let resp = app
        .chat(json!({"model": "claude-haiku", "stream": true, "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(resp.status(), 200);
    let id = resp.headers()["x-switchboard-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let frames = sse_data(&resp.text().await.unwrap());
    assert_eq!(frames.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = frames[..frames.len() - 1]
        .iter()
        .map(|f| serde_json::from_str(f).unwrap())
        .collect();
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "Hello from claude.");
    assert!(chunks
        .iter()
        .all(|c| c["id"] == id && c["model"] == "claude-haiku"));
    assert!(chunks
        .iter()
        .any(|c| c["choices"][0]["finish_reason"] == "stop"));
    assert_eq!(chunks.last().unwrap()["usage"]["completion_tokens"], 9);
    let row = app.request_row(&id).await;
    assert_eq!(
        (row.prompt_tokens, row.completion_tokens),
        (Some(20), Some(9))
    );
    app.shutdown().await;
}

#[tokio::test]
async fn an_overloaded_anthropic_falls_back_to_openai() {
    let (o, a) = (
        MockUpstream::start("openai").await,
        MockAnthropic::start().await,
    );
    let cfg = config(&o.base_url(), &a.base_url()).replace(
        "backoff_base_ms = 1",
        "backoff_base_ms = 1\nmax_attempts_per_model = 1",
    );
    let app = spawn(&cfg, Db::Postgres).await;
    a.fail_next(529);
    let resp = app
        .chat(json!({"model": "claude-first", "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-switchboard-model"], "gpt-mini");
    app.shutdown().await;
}
