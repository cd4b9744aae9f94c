//! A faithful stand-in for an OpenAI-compatible upstream: real wire format
//! (JSON and SSE, `data: [DONE]`, usage on the last chunk when asked), and
//! scripted failures (5xx, 429 with Retry-After, stalls, broken streams).
//! Counts calls and keeps the bodies it received.

use std::collections::VecDeque;
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

#[derive(Clone, Debug)]
pub enum Behaviour {
    /// Answer with this text (stream or not, as asked).
    Answer(String),
    /// Answer, but leave out `usage` (the router must count tokens itself).
    AnswerWithoutUsage(String),
    /// An error status with OpenAI's error body; optional Retry-After seconds.
    Status(u16, Option<u64>),
    /// Wait, then behave as the inner behaviour.
    Delay(Duration, Box<Behaviour>),
    /// Stream this many content chunks, then cut the connection (no [DONE]).
    BreakStreamAfter(usize),
    /// An error status whose message echoes every request header back, as
    /// misconfigured proxies do (`authorization: Bearer <key>` included).
    EchoHeaders(u16),
    /// Stream two content chunks, then an `error` event whose message
    /// echoes the request headers.
    StreamErrorEchoingHeaders,
}

#[derive(Clone)]
struct Shared {
    name: String,
    script: Arc<Mutex<VecDeque<Behaviour>>>,
    default: Arc<Mutex<Behaviour>>,
    bodies: Arc<Mutex<Vec<Value>>>,
    headers: Arc<Mutex<Vec<HeaderMap>>>,
}

pub struct MockUpstream {
    pub addr: SocketAddr,
    shared: Shared,
}

impl MockUpstream {
    pub async fn start(name: &str) -> Self {
        let shared = Shared {
            name: name.to_owned(),
            script: Arc::default(),
            default: Arc::new(Mutex::new(Behaviour::Answer(format!("Hello from {name}.")))),
            bodies: Arc::default(),
            headers: Arc::default(),
        };
        let app = Router::new()
            .route("/v1/chat/completions", post(chat))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { addr, shared }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Behaviours for the next calls, in order; then the default.
    pub fn script(&self, behaviours: impl IntoIterator<Item = Behaviour>) {
        self.shared.script.lock().unwrap().extend(behaviours);
    }

    /// A cheap, `Send` closure that queues one behaviour (for load tests).
    pub fn script_handle(&self) -> impl Fn(Behaviour) + Send + Sync + 'static {
        let script = self.shared.script.clone();
        move |b| script.lock().unwrap().push_back(b)
    }

    pub fn set_default(&self, b: Behaviour) {
        *self.shared.default.lock().unwrap() = b;
    }

    pub fn calls(&self) -> usize {
        self.shared.bodies.lock().unwrap().len()
    }

    pub fn bodies(&self) -> Vec<Value> {
        self.shared.bodies.lock().unwrap().clone()
    }

    pub fn last_headers(&self) -> HeaderMap {
        self.shared
            .headers
            .lock()
            .unwrap()
            .last()
            .cloned()
            .unwrap_or_default()
    }
}

async fn chat(State(s): State<Shared>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    s.bodies.lock().unwrap().push(body.clone());
    let echo = echo_headers(&headers);
    s.headers.lock().unwrap().push(headers);
    let next = s.script.lock().unwrap().pop_front();
    let behaviour = next.unwrap_or_else(|| s.default.lock().unwrap().clone());
    respond(&s.name, behaviour, &body, &echo).await
}

/// `name: value` for every header, as a careless error page prints them.
fn echo_headers(h: &HeaderMap) -> String {
    h.iter()
        .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap_or("?")))
        .collect::<Vec<_>>()
        .join(", ")
}

async fn respond(name: &str, behaviour: Behaviour, body: &Value, echo: &str) -> Response {
    let mut b = behaviour;
    while let Behaviour::Delay(d, inner) = b {
        tokio::time::sleep(d).await;
        b = *inner;
    }
    let model = body["model"].as_str().unwrap_or("unknown").to_owned();
    let stream = body["stream"].as_bool().unwrap_or(false);
    let include_usage = body["stream_options"]["include_usage"]
        .as_bool()
        .unwrap_or(false);
    let tools = body
        .get("tools")
        .and_then(Value::as_array)
        .is_some_and(|t| !t.is_empty());
    let with_usage = matches!(b, Behaviour::Answer(_));
    match b {
        Behaviour::Status(code, retry_after) => {
            let status = StatusCode::from_u16(code).unwrap();
            let mut r = (
                status,
                Json(json!({"error": {"message": format!("{name} says {code}"), "type": "server_error", "param": null, "code": null}})),
            )
                .into_response();
            if let Some(s) = retry_after {
                r.headers_mut()
                    .insert("retry-after", s.to_string().parse().unwrap());
            }
            r
        }
        Behaviour::Answer(text) | Behaviour::AnswerWithoutUsage(text) if !stream => {
            let message = if tools {
                json!({"role": "assistant", "content": null, "tool_calls": [{"id": "call_abc", "type": "function",
                    "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]})
            } else {
                json!({"role": "assistant", "content": text})
            };
            let mut resp = json!({
                "id": "chatcmpl-upstream-1", "object": "chat.completion", "created": 1_700_000_000,
                "model": model, "system_fingerprint": "fp_mock",
                "choices": [{"index": 0, "message": message, "logprobs": null,
                    "finish_reason": if tools { "tool_calls" } else { "stop" }}],
            });
            if with_usage {
                resp["usage"] =
                    json!({"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17});
            }
            Json(resp).into_response()
        }
        Behaviour::Answer(text) | Behaviour::AnswerWithoutUsage(text) => sse(
            stream_chunks(&model, &text, tools, include_usage, usize::MAX),
            true,
        ),
        Behaviour::BreakStreamAfter(n) => sse(
            stream_chunks(&model, "one two three four five six", false, false, n),
            false,
        ),
        Behaviour::EchoHeaders(code) => (
            StatusCode::from_u16(code).unwrap(),
            Json(json!({"error": {"message": format!("{name} rejected the request; headers were: {echo}"),
                "type": "server_error", "param": null, "code": null}})),
        )
            .into_response(),
        Behaviour::StreamErrorEchoingHeaders => {
            let mut chunks = stream_chunks(&model, "one two three", false, false, 2);
            chunks.push(json!({"error": {"message": format!("{name} failed mid-stream; headers were: {echo}"),
                "type": "server_error"}}));
            sse(chunks, true)
        }
        Behaviour::Delay(..) => unreachable!(),
    }
}

fn stream_chunks(
    model: &str,
    text: &str,
    tools: bool,
    include_usage: bool,
    limit: usize,
) -> Vec<Value> {
    let base = |delta: Value, finish: Value| {
        let mut c = json!({"id": "chatcmpl-upstream-1", "object": "chat.completion.chunk", "created": 1_700_000_000,
            "model": model, "system_fingerprint": "fp_mock",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]});
        if include_usage {
            c["usage"] = Value::Null;
        }
        c
    };
    let mut out = vec![base(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    if tools {
        out.push(base(
            json!({"tool_calls": [{"index": 0, "id": "call_abc", "type": "function",
            "function": {"name": "get_weather", "arguments": ""}}]}),
            Value::Null,
        ));
        out.push(base(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":"}}]}),
            Value::Null,
        ));
        out.push(base(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]}),
            Value::Null,
        ));
        out.push(base(json!({}), json!("tool_calls")));
    } else {
        for (i, word) in text.split_inclusive(' ').enumerate() {
            if i >= limit {
                return out;
            }
            out.push(base(json!({"content": word}), Value::Null));
        }
        out.push(base(json!({}), json!("stop")));
    }
    if include_usage {
        out.push(json!({"id": "chatcmpl-upstream-1", "object": "chat.completion.chunk", "created": 1_700_000_000,
            "model": model, "choices": [],
            "usage": {"prompt_tokens": 12, "completion_tokens": 6, "total_tokens": 18}}));
    }
    out
}

fn sse(chunks: Vec<Value>, done: bool) -> Response {
    let mut frames: Vec<Result<String, std::io::Error>> = chunks
        .into_iter()
        .map(|c| Ok(format!("data: {c}\n\n")))
        .collect();
    if done {
        frames.push(Ok("data: [DONE]\n\n".into()));
    } else {
        frames.push(Err(std::io::Error::other("connection reset by mock")));
    }
    // Pause before each frame so that frames reach the wire one by one and a
    // cut connection really cuts mid-stream.
    let paced = futures_util::StreamExt::then(futures_util::stream::iter(frames), |f| async move {
        tokio::time::sleep(Duration::from_millis(2)).await;
        f
    });
    let body = Body::from_stream(paced);
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(body)
        .unwrap()
}
