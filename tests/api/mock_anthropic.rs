//! A faithful stand-in for Anthropic's Messages API: `x-api-key` and
//! `anthropic-version` checked, message JSON, the streaming event protocol
//! (message_start ... message_stop), tool_use blocks, and its error shape.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

#[derive(Clone, Default)]
struct Shared {
    bodies: Arc<Mutex<Vec<Value>>>,
    fail_next: Arc<Mutex<Option<u16>>>,
    echo_next: Arc<Mutex<Option<u16>>>,
}

pub struct MockAnthropic {
    pub addr: SocketAddr,
    shared: Shared,
}

impl MockAnthropic {
    pub async fn start() -> Self {
        let shared = Shared::default();
        let app = Router::new()
            .route("/v1/messages", post(messages))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { addr, shared }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn bodies(&self) -> Vec<Value> {
        self.shared.bodies.lock().unwrap().clone()
    }

    /// The next call fails with this status (529 = overloaded).
    pub fn fail_next(&self, status: u16) {
        *self.shared.fail_next.lock().unwrap() = Some(status);
    }

    /// The next call fails with this status and a message that echoes the
    /// request's `x-api-key` back (as a careless proxy would).
    pub fn fail_next_echoing_key(&self, status: u16) {
        *self.shared.echo_next.lock().unwrap() = Some(status);
    }
}

async fn messages(
    State(s): State<Shared>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    s.bodies.lock().unwrap().push(body.clone());
    if headers.get("x-api-key").and_then(|v| v.to_str().ok()) != Some("sk-ant-test") {
        return error(401, "authentication_error", "invalid x-api-key");
    }
    if headers.get("anthropic-version").is_none() {
        return error(
            400,
            "invalid_request_error",
            "anthropic-version header is required",
        );
    }
    if body.get("max_tokens").is_none() {
        return error(400, "invalid_request_error", "max_tokens: Field required");
    }
    if let Some(code) = s.echo_next.lock().unwrap().take() {
        let key = headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        return error(
            code,
            "api_error",
            &format!("upstream proxy failed; x-api-key: {key}"),
        );
    }
    if let Some(code) = s.fail_next.lock().unwrap().take() {
        return error(code, "overloaded_error", "Overloaded");
    }
    let model = body["model"].as_str().unwrap_or("claude").to_owned();
    let tools = body.get("tools").is_some();
    if body["stream"].as_bool().unwrap_or(false) {
        return stream(&model, tools);
    }
    let content = if tools {
        json!([{"type": "text", "text": "Let me check."},
               {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"city": "Paris"}}])
    } else {
        json!([{"type": "text", "text": "Hello from claude."}])
    };
    Json(json!({
        "id": "msg_01", "type": "message", "role": "assistant", "model": model,
        "content": content, "stop_reason": if tools { "tool_use" } else { "end_turn" },
        "stop_sequence": null, "usage": {"input_tokens": 20, "output_tokens": 7}
    }))
    .into_response()
}

fn error(status: u16, kind: &str, message: &str) -> Response {
    (
        StatusCode::from_u16(status).unwrap(),
        Json(json!({"type": "error", "error": {"type": kind, "message": message}})),
    )
        .into_response()
}

fn stream(model: &str, tools: bool) -> Response {
    let mut events: Vec<(&str, Value)> = vec![
        (
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_01", "type": "message",
            "role": "assistant", "model": model, "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 20, "output_tokens": 1}}}),
        ),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
        ("ping", json!({"type": "ping"})),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": " from claude."}}),
        ),
        (
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ),
    ];
    if tools {
        events.push(("content_block_start", json!({"type": "content_block_start", "index": 1,
            "content_block": {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {}}})));
        events.push((
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": "{\"city\": "}}),
        ));
        events.push((
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": "\"Paris\"}"}}),
        ));
        events.push((
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 1}),
        ));
    }
    events.push(("message_delta", json!({"type": "message_delta",
        "delta": {"stop_reason": if tools { "tool_use" } else { "end_turn" }, "stop_sequence": null},
        "usage": {"output_tokens": 9}})));
    events.push(("message_stop", json!({"type": "message_stop"})));
    let frames = events
        .into_iter()
        .map(|(name, data)| Ok::<_, std::io::Error>(format!("event: {name}\ndata: {data}\n\n")));
    let paced = futures_util::StreamExt::then(futures_util::stream::iter(frames), |f| async move {
        tokio::time::sleep(Duration::from_millis(1)).await;
        f
    });
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(paced))
        .unwrap()
}
