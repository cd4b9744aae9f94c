//! The mock upstream: a deliberately cheap OpenAI-compatible server on hyper,
//! one thread, so that what is measured in front of it is the proxy's cost.
//!
//! `POST .../chat/completions` answers a fixed `chat.completion` with usage,
//! or, with `"stream": true`, `chunks` SSE content chunks, a finish chunk, a
//! usage chunk and `data: [DONE]`. A model name containing `slow` gets the
//! slow stream instead (`slow_chunks` chunks, `slow_chunk_delay_ms` apart):
//! that is how the memory phase holds thousands of streams open.
//! `GET /health` answers `ok`; anything else is a 404.

use std::convert::Infallible;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use futures_util::stream::{self, StreamExt};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;

type Body = UnsyncBoxBody<Bytes, Infallible>;

#[derive(clap::Args, Debug, Clone, Copy)]
pub struct MockArgs {
    #[arg(long, default_value_t = 18180)]
    pub port: u16,
    /// Delay before the response headers, both modes.
    #[arg(long, default_value_t = 0)]
    pub delay_ms: u64,
    /// Content chunks in a stream (also `completion_tokens`).
    #[arg(long, default_value_t = 20)]
    pub chunks: usize,
    /// Delay between two chunks of a normal stream.
    #[arg(long, default_value_t = 0)]
    pub chunk_delay_ms: u64,
    #[arg(long, default_value_t = 120)]
    pub slow_chunks: usize,
    #[arg(long, default_value_t = 1000)]
    pub slow_chunk_delay_ms: u64,
}

#[derive(Deserialize)]
struct ChatReq<'a> {
    #[serde(borrow, default)]
    model: Option<&'a str>,
    #[serde(default)]
    stream: bool,
}

/// Runs the mock until the process is killed.
pub fn run(args: MockArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(serve(args))
}

async fn serve(args: MockArgs) -> anyhow::Result<()> {
    let listener = bind(args.port).await?;
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors and the like: back off instead of spinning.
                eprintln!("mock: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        tokio::spawn(async move {
            let svc = service_fn(move |req| handle(req, args));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}

/// A listener with a deep accept queue (10,000 streams arrive in a burst).
pub async fn bind(port: u16) -> anyhow::Result<tokio::net::TcpListener> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket
        .bind(addr)
        .with_context(|| format!("binding {addr}"))?;
    Ok(socket.listen(4096)?)
}

async fn handle(req: Request<Incoming>, args: MockArgs) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path();
    if req.method() == Method::GET && path == "/health" {
        return Ok(full(
            StatusCode::OK,
            "text/plain",
            Bytes::from_static(b"ok"),
        ));
    }
    if req.method() != Method::POST || !path.ends_with("/chat/completions") {
        return Ok(full(StatusCode::NOT_FOUND, "text/plain", Bytes::new()));
    }
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(full(StatusCode::BAD_REQUEST, "text/plain", Bytes::new())),
    };
    let Ok(parsed) = serde_json::from_slice::<ChatReq>(&body) else {
        let msg = r#"{"error":{"message":"invalid JSON","type":"invalid_request_error"}}"#;
        return Ok(full(StatusCode::BAD_REQUEST, "application/json", msg));
    };
    let model = parsed.model.unwrap_or("mock-model").to_owned();
    let prompt_tokens = (body.len() / 4).max(1);
    if args.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(args.delay_ms)).await;
    }
    if !parsed.stream {
        return Ok(full(
            StatusCode::OK,
            "application/json",
            completion(&model, prompt_tokens, args.chunks),
        ));
    }
    let slow = model.contains("slow");
    let (n, delay) = if slow {
        (args.slow_chunks, args.slow_chunk_delay_ms)
    } else {
        (args.chunks, args.chunk_delay_ms)
    };
    let events = sse_events(&model, prompt_tokens, n);
    let body: Body = if delay == 0 {
        StreamBody::new(stream::iter(
            events.into_iter().map(|e| Ok(Frame::data(Bytes::from(e)))),
        ))
        .boxed_unsync()
    } else {
        let delay = Duration::from_millis(delay);
        let s = stream::iter(events.into_iter().enumerate()).then(move |(i, e)| async move {
            if i > 0 {
                tokio::time::sleep(delay).await;
            }
            Ok(Frame::data(Bytes::from(e)))
        });
        StreamBody::new(s).boxed_unsync()
    };
    let mut r = Response::new(body);
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert("cache-control", HeaderValue::from_static("no-cache"));
    Ok(r)
}

fn full(status: StatusCode, ctype: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()).boxed_unsync());
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
    r
}

const WORDS: [&str; 8] = [
    "The", " quick", " brown", " fox", " jumps", " over", " the", " dog.",
];

fn usage(prompt: usize, completion: usize) -> String {
    format!(
        r#"{{"prompt_tokens":{prompt},"completion_tokens":{completion},"total_tokens":{}}}"#,
        prompt + completion
    )
}

fn completion(model: &str, prompt: usize, n: usize) -> String {
    let text: String = (0..n).map(|i| WORDS[i % WORDS.len()]).collect();
    format!(
        r#"{{"id":"chatcmpl-mock","object":"chat.completion","created":1700000000,"model":"{model}","choices":[{{"index":0,"message":{{"role":"assistant","content":"{text}"}},"finish_reason":"stop"}}],"usage":{}}}"#,
        usage(prompt, n)
    )
}

fn sse_events(model: &str, prompt: usize, n: usize) -> Vec<String> {
    let head = format!(
        r#"data: {{"id":"chatcmpl-mock","object":"chat.completion.chunk","created":1700000000,"model":"{model}","choices":"#
    );
    let mut out = Vec::with_capacity(n + 3);
    for i in 0..n {
        let role = if i == 0 { r#""role":"assistant","# } else { "" };
        out.push(format!(
            r#"{head}[{{"index":0,"delta":{{{role}"content":"{}"}},"finish_reason":null}}]}}

"#,
            WORDS[i % WORDS.len()]
        ));
    }
    out.push(format!(
        r#"{head}[{{"index":0,"delta":{{}},"finish_reason":"stop"}}]}}

"#
    ));
    out.push(format!(
        r#"{head}[],"usage":{}}}

"#,
        usage(prompt, n)
    ));
    out.push("data: [DONE]\n\n".to_owned());
    out
}
