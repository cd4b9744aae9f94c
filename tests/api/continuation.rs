//! A stream that breaks after its first byte, on a route with
//! `continue_stream_on_fallback = true`: the client gets one coherent
//! stream — the first model's partial text, then the next model's — under
//! one id and ending in `[DONE]`; the next model was asked with the partial
//! text as an assistant prefix; the row records both attempts and the
//! policy learns both. Without the option the stream ends with an error
//! event, as before.

use std::collections::HashMap;

use serde_json::{json, Value};

use crate::chat::sse_data;
use crate::helpers::{spawn, two_providers, Db};
use crate::mock::{Behaviour, MockUpstream};
use crate::mock_raw::{chunk, head, Raw, RawUpstream};

fn config(a: &str, b: &str) -> String {
    format!(
        "{}\n[[routes]]\nname = \"resumable\"\nmodels = [\"small\", \"large\"]\npolicy = \"fixed\"\ncontinue_stream_on_fallback = true\n",
        two_providers(a, b)
    )
}

fn ask(model: &str) -> Value {
    json!({"model": model, "stream": true, "messages": [{"role": "user", "content": "count to six"}]})
}

/// The chunks of an SSE body (without `[DONE]`), parsed.
fn chunks(body: &str) -> Vec<Value> {
    sse_data(body)
        .iter()
        .filter(|f| *f != "[DONE]")
        .map(|f| serde_json::from_str(f).unwrap())
        .collect()
}

fn text_of(chunks: &[Value]) -> String {
    chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect()
}

/// Per arm of a route's saved policy: (outcomes, errors) the learner took in.
pub async fn arm_counts(db_url: &str, route: &str) -> HashMap<String, (u64, u64)> {
    let pool = sqlx::PgPool::connect(db_url).await.unwrap();
    let text: String =
        sqlx::query_scalar("SELECT CAST(snapshot AS TEXT) FROM policy_state WHERE route = $1")
            .bind(route)
            .fetch_one(&pool)
            .await
            .unwrap();
    pool.close().await;
    let snapshot: Value = serde_json::from_str(&text).unwrap();
    snapshot["arms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let c = &a["counts"];
            (
                a["name"].as_str().unwrap().to_owned(),
                (
                    c["outcomes"].as_u64().unwrap(),
                    c["errors"].as_u64().unwrap(),
                ),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_broken_stream_is_continued_on_the_next_model_in_the_same_stream() {
    let (a, b) = (
        MockUpstream::start("alpha").await,
        MockUpstream::start("beta").await,
    );
    // alpha streams "one two three " and then cuts the connection.
    a.script([Behaviour::BreakStreamAfter(3)]);
    b.set_default(Behaviour::Answer("four five six.".into()));
    let app = spawn(&config(&a.base_url(), &b.base_url()), Db::Postgres).await;
    let r = app.chat(ask("resumable")).await;
    assert_eq!(r.status(), 200);
    let id = r.headers()["x-switchboard-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let body = r.text().await.unwrap();
    let frames = sse_data(&body);
    assert_eq!(frames.last().map(String::as_str), Some("[DONE]"), "{body}");
    let chunks = chunks(&body);
    assert!(chunks.iter().all(|c| c.get("error").is_none()), "{body}");
    assert!(
        chunks.iter().all(|c| c["id"] == id.as_str()),
        "one id: {body}"
    );
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk"),
        "{body}"
    );
    assert_eq!(text_of(&chunks), "one two three four five six.");
    let models: Vec<&str> = chunks
        .iter()
        .map(|c| c["model"].as_str().unwrap())
        .collect();
    assert_eq!(models.first(), Some(&"small"));
    assert_eq!(models.last(), Some(&"large"), "each chunk names its model");
    let roles = chunks
        .iter()
        .filter(|c| c["choices"][0]["delta"].get("role").is_some())
        .count();
    assert_eq!(roles, 1, "the assistant role is announced once: {body}");

    // The next model was asked to continue the partial answer.
    let sent = b.bodies();
    assert_eq!(sent.len(), 1);
    let messages = sent[0]["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0]["content"], "count to six");
    assert_eq!(
        messages[1],
        json!({"role": "assistant", "content": "one two three"})
    );
    assert_eq!(sent[0]["stream"], true);

    let row = app.request_row(&id).await;
    assert_eq!(row.status, "ok");
    assert_eq!(row.model.as_deref(), Some("large"));
    let chain = row.fallback_chain.as_array().unwrap();
    assert_eq!(chain.len(), 2, "{chain:?}");
    assert_eq!(chain[0]["model"], "small");
    assert!(
        chain[0]["error"].is_string(),
        "the broken attempt: {chain:?}"
    );
    let partial_cost = chain[0]["cost_usd"].as_f64().unwrap();
    assert!(partial_cost > 0.0, "the partial answer was billed");
    assert_eq!(chain[1]["model"], "large");
    assert!(chain[1]["error"].is_null());
    // large's own usage (12 in, 6 out at 10 / 30 USD per Mtok) plus the partial.
    let own = (12.0 * 10.0 + 6.0 * 30.0) / 1e6;
    assert!(
        (row.cost_usd - (own + partial_cost)).abs() < 1e-12,
        "{}",
        row.cost_usd
    );

    let db_url = app.db_url.clone();
    app.shutdown().await;
    let counts = arm_counts(&db_url, "resumable").await;
    assert_eq!(
        counts["small"].1, 1,
        "the broken model learned an error: {counts:?}"
    );
    assert_eq!(
        counts["large"].0, 1,
        "the continuing model learned its outcome: {counts:?}"
    );
}

#[tokio::test]
async fn a_stream_that_stalls_after_its_first_byte_is_continued_and_the_stalled_connection_dropped()
{
    let raw = RawUpstream::start(vec![
        head(200, "text/event-stream"),
        chunk("Once "),
        chunk("upon "),
        Raw::Hold,
    ])
    .await;
    let b = MockUpstream::start("beta").await;
    b.set_default(Behaviour::Answer(" a time.".into()));
    let cfg = config(&raw.base_url(), &b.base_url()).replace(
        "api_key_env = \"MOCK_KEY\"",
        "api_key_env = \"MOCK_KEY\"\nread_timeout_ms = 300",
    );
    let app = spawn(&cfg, Db::Postgres).await;
    let r = app.chat(ask("resumable")).await;
    let body = r.text().await.unwrap();
    assert_eq!(
        sse_data(&body).last().map(String::as_str),
        Some("[DONE]"),
        "{body}"
    );
    // The prefix lost its trailing space; the continuation's leading one is dropped.
    assert_eq!(text_of(&chunks(&body)), "Once upon a time.");
    assert_eq!(b.bodies()[0]["messages"][1]["content"], "Once upon");
    raw.wait_hangups(1).await;
    app.shutdown().await;
}

#[tokio::test]
async fn without_the_option_a_broken_stream_still_ends_with_an_error_event() {
    let (a, b) = (
        MockUpstream::start("alpha").await,
        MockUpstream::start("beta").await,
    );
    a.script([Behaviour::BreakStreamAfter(3)]);
    let app = spawn(&config(&a.base_url(), &b.base_url()), Db::Postgres).await;
    let r = app.chat(ask("ordered")).await;
    let body = r.text().await.unwrap();
    let frames = sse_data(&body);
    assert!(!frames.iter().any(|f| f == "[DONE]"), "{body}");
    let last: Value = serde_json::from_str(frames.last().unwrap()).unwrap();
    assert_eq!(last["error"]["type"], "upstream_error", "{body}");
    assert_eq!(b.calls(), 0, "nobody was asked to continue");
    app.shutdown().await;
}
