//! Upstream faults, one test each: connections closed before a response,
//! silence past the read timeout, 429 without Retry-After, malformed JSON,
//! truncated and malformed SSE, a stream that stalls mid-way, a client
//! that hangs up mid-stream, and an answer and a stream passed through byte
//! for byte.
//! Each checks what the client saw and the row.

use serde_json::{json, Value};

use crate::chat::sse_data;
use crate::helpers::{spawn, two_providers, Db, TestApp};
use crate::mock::{Behaviour, MockUpstream};
use crate::mock_raw::{chunk, head, Raw, RawUpstream};

/// `alpha` (model `small`) is the raw upstream, `beta` (`large`) a healthy mock.
async fn app_with(
    script: Vec<Raw>,
    read_timeout_ms: Option<u64>,
) -> (TestApp, RawUpstream, MockUpstream) {
    let raw = RawUpstream::start(script).await;
    let beta = MockUpstream::start("beta").await;
    let mut cfg = two_providers(&raw.base_url(), &beta.base_url());
    if let Some(ms) = read_timeout_ms {
        cfg = cfg.replace(
            "api_key_env = \"MOCK_KEY\"",
            &format!("api_key_env = \"MOCK_KEY\"\nread_timeout_ms = {ms}"),
        );
    }
    (spawn(&cfg, Db::Postgres).await, raw, beta)
}

fn ask(model: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
}

fn request_id(r: &reqwest::Response) -> String {
    r.headers()["x-switchboard-request-id"]
        .to_str()
        .unwrap()
        .to_owned()
}

/// The client saw an explicit error event and no `[DONE]`.
fn assert_error_end(body: &str) {
    let frames = sse_data(body);
    assert!(
        !frames.iter().any(|f| f == "[DONE]"),
        "a broken stream must not look complete: {body}"
    );
    let last: Value = serde_json::from_str(frames.last().unwrap()).unwrap();
    assert_eq!(last["error"]["type"], "upstream_error", "{body}");
}

#[tokio::test]
async fn a_connection_closed_before_any_response_is_retried_then_falls_back() {
    let (app, raw, beta) = app_with(vec![Raw::Close], None).await;
    let r = app.chat(ask("ordered", false)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-switchboard-model"], "large");
    let row = app.request_row(&request_id(&r)).await;
    assert_eq!((raw.calls(), beta.calls()), (2, 1));
    assert!(row.fallback_chain[0]["error"].is_string());

    let r = app.chat(ask("small", false)).await;
    assert_eq!(r.status(), 502);
    let row = app.request_row(&request_id(&r)).await;
    assert_eq!(row.status, "error");
    app.shutdown().await;
}

#[tokio::test]
async fn an_upstream_silent_past_the_read_timeout_falls_back() {
    let (app, raw, _beta) = app_with(vec![Raw::Hold], Some(300)).await;
    let r = app.chat(ask("ordered", false)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-switchboard-model"], "large");
    let row = app.request_row(&request_id(&r)).await;
    assert_eq!(row.fallback_chain[0]["error"], "timeout");
    raw.wait_hangups(1).await;
    app.shutdown().await;
}

#[tokio::test]
async fn a_429_without_retry_after_is_retried_with_backoff() {
    let (a, b) = (
        MockUpstream::start("alpha").await,
        MockUpstream::start("beta").await,
    );
    a.script([Behaviour::Status(429, None)]);
    let app = spawn(&two_providers(&a.base_url(), &b.base_url()), Db::Postgres).await;
    let r = app.chat(ask("small", false)).await;
    assert_eq!(r.status(), 200);
    let row = app.request_row(&request_id(&r)).await;
    assert_eq!(row.fallback_chain[0]["error"], "rate_limited");
    assert_eq!(a.calls(), 2);
    // Every attempt rate-limited: the client gets a retryable status, not 502.
    a.set_default(Behaviour::Status(429, None));
    let r = app.chat(ask("small", false)).await;
    assert_eq!(r.status(), 503);
    app.shutdown().await;
}

#[tokio::test]
async fn malformed_json_is_a_protocol_error_that_falls_back() {
    let body = b"{\"id\": \"x\", \"choices\": [tr".to_vec();
    let (app, _raw, _beta) = app_with(
        vec![head(200, "application/json"), Raw::Bytes(body), Raw::Close],
        None,
    )
    .await;
    let r = app.chat(ask("ordered", false)).await;
    assert_eq!(r.status(), 200);
    let row = app.request_row(&request_id(&r)).await;
    assert_eq!(row.fallback_chain[0]["error"], "protocol");

    let r = app.chat(ask("small", false)).await;
    assert_eq!(r.status(), 502);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "upstream_failed");
    app.shutdown().await;
}

#[tokio::test]
async fn an_answer_passes_through_byte_for_byte_but_its_id_and_model() {
    // Members the router does not know, escapes, odd spacing and key order:
    // all reach the client as the upstream wrote them.
    let upstream = "{ \"id\" : \"chatcmpl-up\",\"object\":\"chat.completion\",\"created\":1,\
        \"model\":\"provider-model-2026\",\"system_fingerprint\":\"fp_\\u00e9\",\
        \"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"a \\\"b\\\"\\n\",\
        \"refusal\":null},\"logprobs\":{\"content\":[]},\"finish_reason\":\"stop\"}],\
        \"usage\":{\"prompt_tokens\":9,\"completion_tokens\":4,\"total_tokens\":13},\
        \"service_tier\":\"default\"}\n";
    let (app, _raw, _beta) = app_with(
        vec![
            head(200, "application/json"),
            Raw::Bytes(upstream.as_bytes().to_vec()),
            Raw::Close,
        ],
        None,
    )
    .await;
    let r = app.chat(ask("small", false)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    let id = request_id(&r);
    let text = r.text().await.unwrap();
    let want = upstream
        .replace("\"chatcmpl-up\"", &format!("\"{id}\""))
        .replace("\"provider-model-2026\"", "\"small\"");
    assert_eq!(text, want);
    let row = app.request_row(&id).await;
    assert_eq!(
        (row.prompt_tokens, row.completion_tokens),
        (Some(9), Some(4))
    );
    app.shutdown().await;
}

#[tokio::test]
async fn stream_chunks_pass_through_byte_for_byte_but_their_id_model_and_unasked_usage() {
    // OpenAI's layout with `include_usage` (a null `usage` on every chunk,
    // then a usage-only chunk), plus spacing, escapes and members the
    // router does not know, in the upstream's own order.
    let chunks = [
        r#"{"id":"chatcmpl-up","object":"chat.completion.chunk","created":1,"model":"up-2026","system_fingerprint":"fp_x","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}],"usage":null}"#,
        r#"{ "choices" : [{"index":0,"delta":{"content":"caf\u00e9 \"q\"\n"},"finish_reason":null}], "usage" : null , "id":"chatcmpl-up","model":"up-2026","obfuscation":"a1"}"#,
        r#"{"id":"chatcmpl-up","model":"up-2026","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null}"#,
        r#"{"id":"chatcmpl-up","model":"up-2026","choices":[],"usage":{"prompt_tokens":11,"completion_tokens":3,"total_tokens":14}}"#,
    ];
    let mut script = vec![head(200, "text/event-stream")];
    for c in chunks {
        script.push(Raw::Bytes(format!("data: {c}\n\n").into_bytes()));
    }
    script.extend([Raw::Bytes(b"data: [DONE]\n\n".to_vec()), Raw::Close]);
    let (app, _raw, _beta) = app_with(script, None).await;
    for include_usage in [false, true] {
        let mut body = ask("small", true);
        if include_usage {
            body["stream_options"] = json!({"include_usage": true});
        }
        let r = app.chat(body).await;
        assert_eq!(r.status(), 200);
        let id = request_id(&r);
        let relabelled = |c: &str| {
            c.replace("\"chatcmpl-up\"", &format!("\"{id}\""))
                .replace("\"up-2026\"", "\"small\"")
        };
        let mut want: String = chunks
            .iter()
            .filter(|c| include_usage || !c.contains("\"choices\":[]"))
            .map(|c| {
                let c = relabelled(c);
                let c = if include_usage {
                    c
                } else {
                    c.replace(",\"usage\":null", "")
                        .replace("\"usage\" : null ,", "")
                };
                format!("data: {c}\n\n")
            })
            .collect();
        want.push_str("data: [DONE]\n\n");
        assert_eq!(
            r.text().await.unwrap(),
            want,
            "include_usage={include_usage}"
        );
        let row = app.request_row(&id).await;
        assert_eq!(
            (row.prompt_tokens, row.completion_tokens),
            (Some(11), Some(3))
        );
    }
    app.shutdown().await;
}

#[tokio::test]
async fn a_truncated_stream_ends_with_an_error_event_and_an_error_row() {
    let script = vec![
        head(200, "text/event-stream"),
        chunk("Hel"),
        Raw::Bytes(b"data: {\"id\":\"c1\",\"cho".to_vec()),
        Raw::Close,
    ];
    let (app, _raw, _beta) = app_with(script, None).await;
    let r = app.chat(ask("small", true)).await;
    let id = request_id(&r);
    assert_error_end(&r.text().await.unwrap());
    let row = app.request_row(&id).await;
    assert_eq!((row.status.as_str(), row.status_code), ("error", 502));
    assert_eq!(row.error_kind.as_deref(), Some("protocol"));
    app.shutdown().await;
}

#[tokio::test]
async fn a_malformed_sse_frame_ends_the_stream_with_an_error_event() {
    let script = vec![
        head(200, "text/event-stream"),
        chunk("Hel"),
        Raw::Bytes(b"data: this is not json\n\n".to_vec()),
        chunk("lo"),
        Raw::Bytes(b"data: [DONE]\n\n".to_vec()),
        Raw::Close,
    ];
    let (app, _raw, _beta) = app_with(script, None).await;
    let r = app.chat(ask("small", true)).await;
    let id = request_id(&r);
    let body = r.text().await.unwrap();
    assert_error_end(&body);
    assert!(
        !body.contains("\"lo\""),
        "nothing after the bad frame is passed on"
    );
    let row = app.request_row(&id).await;
    assert_eq!(row.error_kind.as_deref(), Some("protocol"));
    app.shutdown().await;
}

#[tokio::test]
async fn a_stream_that_stalls_mid_way_ends_with_an_error_event_after_the_idle_timeout() {
    let script = vec![head(200, "text/event-stream"), chunk("Hel"), Raw::Hold];
    let (app, raw, _beta) = app_with(script, Some(300)).await;
    let r = app.chat(ask("small", true)).await;
    assert_eq!(r.status(), 200);
    let id = request_id(&r);
    let body = r.text().await.unwrap();
    assert!(body.contains("Hel"), "what arrived was passed on: {body}");
    assert_error_end(&body);
    let row = app.request_row(&id).await;
    assert_eq!(row.status, "error");
    assert_eq!(row.error_kind.as_deref(), Some("timeout"));
    raw.wait_hangups(1).await;
    app.shutdown().await;
}

#[tokio::test]
async fn a_client_that_hangs_up_mid_stream_cancels_the_upstream_and_is_recorded() {
    let script = vec![head(200, "text/event-stream"), chunk("Hel"), Raw::Hold];
    let (app, raw, _beta) = app_with(script, None).await;
    let mut r = app.chat(ask("small", true)).await;
    assert_eq!(r.status(), 200);
    let id = request_id(&r);
    let first = r.chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("Hel"));
    drop(r);
    raw.wait_hangups(1).await;
    let row = app.request_row(&id).await;
    assert_eq!(row.status, "error");
    assert_eq!(row.error_kind.as_deref(), Some("cancelled"));
    assert_eq!(row.status_code, 499);
    app.shutdown().await;
}
