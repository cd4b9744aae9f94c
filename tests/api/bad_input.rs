//! Bad input over HTTP: every refusal is OpenAI-shaped, nothing reaches an
//! upstream and nothing is stored. Covers malformed, deeply nested and
//! non-UTF-8 JSON, wrong types, empty messages, huge numbers, oversize and
//! chunked bodies, unknown routes and methods, bad feedback, header
//! injection, and slow clients cut off by the header and body timeouts.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{spawn, two_providers, Db, TestApp};
use crate::mock::MockUpstream;

async fn app() -> (TestApp, MockUpstream, MockUpstream) {
    let (a, b) = (
        MockUpstream::start("alpha").await,
        MockUpstream::start("beta").await,
    );
    let cfg = two_providers(&a.base_url(), &b.base_url()).replace(
        "request_timeout_ms = 5000",
        "request_timeout_ms = 5000\nmax_body_bytes = 65536\nheader_timeout_ms = 300\nbody_timeout_ms = 300",
    );
    (spawn(&cfg, Db::Postgres).await, a, b)
}

/// Status and the OpenAI envelope; fails if the body is not that shape.
async fn refused(r: reqwest::Response) -> (u16, Value) {
    let s = r.status().as_u16();
    let v: Value = r.json().await.unwrap();
    assert!(v["error"]["message"].is_string(), "{v}");
    assert!(v["error"]["type"].is_string(), "{v}");
    (s, v)
}

/// Writes raw bytes to the router and reads until it closes (bounded).
async fn raw(app: &TestApp, bytes: &[u8], then_wait: bool) -> String {
    let addr = app.url.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    if !then_wait {
        s.shutdown().await.unwrap();
    }
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the router never closed the connection");
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn malformed_bodies_are_refused_with_openai_errors_and_nothing_is_stored() {
    let (app, a, b) = app().await;
    let nested = format!(
        "{{\"model\":\"small\",\"messages\":[{{\"role\":\"user\",\"content\":{}1{}}}]}}",
        "[".repeat(2000),
        "]".repeat(2000)
    );
    let mut non_utf8 = br#"{"model":"small","messages":[{"role":"user","content":""#.to_vec();
    non_utf8.extend_from_slice(&[0xff, 0xfe, 0xc3]);
    non_utf8.extend_from_slice(br#""}]}"#);
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("truncated", b"{\"model\": \"small\", \"mess".to_vec(), 400),
        ("deeply nested", nested.into_bytes(), 400),
        ("invalid UTF-8", non_utf8, 400),
        ("not an object", b"[1, 2, 3]".to_vec(), 400),
        ("model a number", br#"{"model": 5, "messages": [{"role": "user", "content": "x"}]}"#.to_vec(), 400),
        ("message not an object", br#"{"model": "small", "messages": [1]}"#.to_vec(), 400),
        ("role a number", br#"{"model": "small", "messages": [{"role": 5}]}"#.to_vec(), 400),
        ("empty messages", br#"{"model": "small", "messages": []}"#.to_vec(), 400),
        ("huge number", br#"{"model": "small", "max_tokens": 1e400, "messages": [{"role": "user", "content": "x"}]}"#.to_vec(), 400),
        ("stream not a bool", br#"{"model": "small", "stream": 1, "messages": [{"role": "user", "content": "x"}]}"#.to_vec(), 400),
        ("empty body", Vec::new(), 400),
        ("oversize", format!("{{\"model\":\"small\",\"messages\":[{{\"role\":\"user\",\"content\":\"{}\"}}]}}", "x".repeat(70_000)).into_bytes(), 413),
    ];
    for (what, body, status) in cases {
        let (s, e) = refused(app.post_raw("/v1/chat/completions", body).await).await;
        assert_eq!(s, status, "{what}: {e}");
    }
    // An oversize body sent chunked (no content-length) is cut off too.
    let chunks =
        futures_util::stream::iter((0..40).map(|_| Ok::<_, std::io::Error>(vec![b' '; 4096])));
    let r = app
        .http
        .post(format!("{}/v1/chat/completions", app.url))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(refused(r).await.0, 413);

    assert_eq!(a.calls() + b.calls(), 0, "nothing reached an upstream");
    assert_eq!(app.count("requests").await, 0, "nothing was stored");
    app.shutdown().await;
}

#[tokio::test]
async fn unknown_routes_and_methods_get_openai_errors() {
    let (app, _a, _b) = app().await;
    let r = app
        .http
        .post(format!("{}/v2/chat/completions", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(refused(r).await.0, 404);
    let r = app
        .http
        .get(format!("{}/v1/chat/completions", app.url))
        .send()
        .await
        .unwrap();
    let (s, e) = refused(r).await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (405, Some("method_not_allowed"))
    );
    app.shutdown().await;
}

#[tokio::test]
async fn bad_feedback_is_refused_and_duplicates_are_stored_once() {
    let (app, _a, _b) = app().await;
    let r = app
        .chat(json!({"model": "small", "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    let id = r.headers()["x-switchboard-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    app.request_row(&id).await;
    let cases: Vec<(Vec<u8>, u16)> = vec![
        (
            json!({"request_id": id, "score": -0.1})
                .to_string()
                .into_bytes(),
            422,
        ),
        (
            json!({"request_id": id, "score": 1.000001})
                .to_string()
                .into_bytes(),
            422,
        ),
        (
            format!("{{\"request_id\": \"{id}\", \"score\": 1e400}}").into_bytes(),
            400,
        ),
        (
            json!({"request_id": id, "score": "0.5"})
                .to_string()
                .into_bytes(),
            400,
        ),
        (
            format!("{{\"request_id\": \"{id}\", \"score\": NaN}}").into_bytes(),
            400,
        ),
        (
            json!({"request_id": id, "score": 0.5, "extra": 1})
                .to_string()
                .into_bytes(),
            400,
        ),
        (
            json!({"request_id": "chatcmpl-0000000000000000", "score": 0.5})
                .to_string()
                .into_bytes(),
            404,
        ),
        (
            json!({"request_id": id, "score": 0.5, "metric": "m".repeat(65)})
                .to_string()
                .into_bytes(),
            422,
        ),
    ];
    for (body, status) in cases {
        let (s, e) = refused(app.post_raw("/v1/feedback", body.clone()).await).await;
        assert_eq!(s, status, "{}: {e}", String::from_utf8_lossy(&body));
    }
    // The same feedback id twice, with different values: the first is kept.
    for score in [0.25, 0.75] {
        let body = json!({"request_id": id, "score": score, "feedback_id": "dup-1"});
        assert_eq!(
            app.post_raw("/v1/feedback", body.to_string())
                .await
                .status(),
            202
        );
    }
    assert_eq!(app.wait_feedback(&id, 1).await, vec![0.25]);
    // A later marker proves the writer has caught up before counting.
    let marker = json!({"request_id": id, "score": 1.0, "feedback_id": "marker"});
    assert_eq!(
        app.post_raw("/v1/feedback", marker.to_string())
            .await
            .status(),
        202
    );
    assert_eq!(app.wait_feedback(&id, 2).await, vec![0.25, 1.0]);
    app.shutdown().await;
}

#[tokio::test]
async fn header_injection_is_refused_and_nothing_is_reflected() {
    let (app, a, _b) = app().await;
    // Obsolete line folding smuggling a second header: refused by the parser.
    let body = r#"{"model":"small","messages":[{"role":"user","content":"x"}]}"#;
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         x-switchboard-user: bob\r\n set-cookie: evil=1\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let resp = raw(&app, req.as_bytes(), false).await;
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    // A bare CR inside a header value is refused too.
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nx-switchboard-tier: a\rset-cookie: evil=1\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let resp = raw(&app, req.as_bytes(), false).await;
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    // A model name carrying CRLF is not echoed into any header.
    let r = app
        .chat(json!({"model": "small\r\nset-cookie: evil=1", "messages": [{"role": "user", "content": "x"}]}))
        .await;
    assert!(r.headers().get("set-cookie").is_none());
    assert_eq!(refused(r).await.0, 404);
    assert_eq!(a.calls(), 0);
    assert_eq!(app.count("requests").await, 0);
    app.shutdown().await;
}

#[tokio::test]
async fn slow_clients_are_cut_off_by_the_header_and_body_timeouts() {
    let (app, a, _b) = app().await;
    // Half a request head, then silence: the connection is closed.
    let resp = raw(
        &app,
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n",
        true,
    )
    .await;
    assert!(
        resp.is_empty() || resp.starts_with("HTTP/1.1 408"),
        "{resp}"
    );
    // A full head promising 100 bytes of body, 10 sent, then silence: 408.
    let req = b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"model\":";
    let resp = raw(&app, req, true).await;
    assert!(resp.starts_with("HTTP/1.1 408"), "{resp}");
    assert!(resp.contains("body_timeout"), "{resp}");
    assert_eq!(a.calls(), 0);
    assert_eq!(app.count("requests").await, 0);
    app.shutdown().await;
}
