//! OpenAI-compatible upstreams (OpenAI, vLLM, Ollama, Together, Groq, ...):
//! the body passes through with `model` replaced; streams are parsed as SSE
//! and handed on chunk by chunk.

use futures_util::StreamExt;
use serde_json::{Map, Value};

use super::error_kind::classify_openai_error;
use super::failure::retry_after;
use super::sse::SseParser;
use super::{FailureKind, Provider, Reply, UpstreamError, UpstreamRequest, Usage};

/// Where chat completions are posted, under the provider's base URL.
pub const CHAT_PATH: &str = "/chat/completions";

pub(super) async fn call(p: &Provider, req: UpstreamRequest<'_>) -> Result<Reply, UpstreamError> {
    let mut body = req.body.clone();
    body.insert("model".into(), Value::String(req.upstream_model.to_owned()));
    if req.stream {
        // Ask for usage on the last chunk so cost is exact; the gateway hides
        // that chunk from clients that did not ask for it.
        let opts = body
            .entry("stream_options")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(o) = opts {
            o.insert("include_usage".into(), Value::Bool(true));
        }
    }
    let mut rb = p.post(CHAT_PATH).json(&body);
    if let Some(key) = p.key() {
        rb = rb.bearer_auth(key);
    }
    let resp = rb.send().await.map_err(UpstreamError::from_reqwest)?;
    let status = resp.status();
    if !status.is_success() {
        return Err(error_from_response(p, resp).await);
    }
    if req.stream {
        return Ok(Reply::Stream(chunk_stream(resp)));
    }
    let bytes = resp.bytes().await.map_err(UpstreamError::from_reqwest)?;
    let body: Value = serde_json::from_slice(&bytes).map_err(|e| {
        UpstreamError::new(
            FailureKind::Protocol,
            format!("upstream sent invalid JSON: {e}"),
        )
    })?;
    if !body.get("choices").is_some_and(Value::is_array) {
        return Err(UpstreamError::new(
            FailureKind::Protocol,
            "upstream response has no `choices` array",
        ));
    }
    let usage = parse_usage(body.get("usage"));
    Ok(Reply::Complete { body, usage })
}

/// Reads an OpenAI-shaped usage object.
pub fn parse_usage(v: Option<&Value>) -> Option<Usage> {
    let v = v?;
    let get = |k: &str| {
        v.get(k)
            .and_then(Value::as_u64)
            .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
    };
    Some(Usage {
        prompt_tokens: get("prompt_tokens")?,
        completion_tokens: get("completion_tokens").unwrap_or(0),
        counted_locally: false,
    })
}

pub(super) async fn error_from_response(p: &Provider, resp: reqwest::Response) -> UpstreamError {
    let status = resp.status().as_u16();
    let retry = retry_after(resp.headers());
    let body = p.error_body(resp).await;
    UpstreamError::from_info(classify_openai_error(status, &body), status, retry)
}

/// SSE bytes -> chunks. Ends cleanly only on `data: [DONE]`; a stream that
/// stops without it, or carries an `error` object, yields an error so the
/// gateway never passes off a truncated answer as complete.
fn chunk_stream(resp: reqwest::Response) -> super::ChunkStream {
    let bytes = resp.bytes_stream();
    let state = (bytes, SseParser::new(), false);
    let stream = futures_util::stream::unfold(state, |(mut bytes, mut parser, done)| async move {
        if done {
            return None;
        }
        loop {
            if let Some(ev) = parser.next_event() {
                let data = ev.data.trim();
                if data == "[DONE]" {
                    return None;
                }
                if data.is_empty() {
                    continue;
                }
                let item = match serde_json::from_str::<Value>(data) {
                    Ok(v) if v.get("error").is_some() => {
                        let msg = v
                            .pointer("/error/message")
                            .and_then(Value::as_str)
                            .unwrap_or("upstream reported an error mid-stream")
                            .to_owned();
                        Err(UpstreamError::new(FailureKind::Server, msg))
                    }
                    Ok(v) => Ok(v),
                    Err(e) => Err(UpstreamError::new(
                        FailureKind::Protocol,
                        format!("upstream sent an invalid stream chunk: {e}"),
                    )),
                };
                let stop = item.is_err();
                return Some((item, (bytes, parser, stop)));
            }
            match bytes.next().await {
                Some(Ok(chunk)) => {
                    if let Err(e) = parser.push(&chunk) {
                        let err = UpstreamError::new(FailureKind::Protocol, e.to_string());
                        return Some((Err(err), (bytes, parser, true)));
                    }
                }
                Some(Err(e)) => {
                    return Some((Err(UpstreamError::from_reqwest(e)), (bytes, parser, true)));
                }
                None => {
                    let err = UpstreamError::new(
                        FailureKind::Protocol,
                        "upstream stream ended before [DONE]",
                    );
                    return Some((Err(err), (bytes, parser, true)));
                }
            }
        }
    });
    Box::pin(stream)
}
