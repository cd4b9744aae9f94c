//! OpenAI-compatible upstreams (OpenAI, vLLM, Ollama, Together, Groq, ...):
//! the body passes through with `model` replaced, and a whole answer comes
//! back as the upstream's bytes (`completion.rs`); streams are parsed as SSE
//! and handed on chunk by chunk, each as its text (`chunk.rs`).

mod outgoing;

use futures_util::StreamExt;
use serde_json::Value;

use super::error_kind::classify_openai_error;
use super::failure::retry_after;
use super::sse::SseParser;
use super::{
    BadChunk, Chunk, Completion, FailureKind, Provider, Reply, UpstreamError, UpstreamRequest,
    Usage,
};

/// Where chat completions are posted, under the provider's base URL.
pub const CHAT_PATH: &str = "/chat/completions";

pub(super) async fn call(p: &Provider, req: UpstreamRequest<'_>) -> Result<Reply, UpstreamError> {
    let body = outgoing::body(&req)?;
    let mut headers = Vec::with_capacity(1);
    if let Some(key) = p.key() {
        headers.push(Provider::secret_header(
            http::header::AUTHORIZATION,
            &format!("Bearer {key}"),
        )?);
    }
    let resp = p.post_json(CHAT_PATH, headers, body).await?;
    if !resp.status.is_success() {
        return Err(error_from_response(p, resp).await);
    }
    if req.stream {
        return Ok(Reply::Stream(chunk_stream(resp)));
    }
    let bytes = resp.bytes().await?;
    let body =
        Completion::parse(bytes).map_err(|e| UpstreamError::new(FailureKind::Protocol, e))?;
    let usage = body.usage();
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

pub(super) async fn error_from_response(
    p: &Provider,
    resp: super::transport::Response,
) -> UpstreamError {
    let status = resp.status.as_u16();
    let retry = retry_after(resp.headers());
    let body = p.error_body(resp).await;
    UpstreamError::from_info(classify_openai_error(status, &body), status, retry)
}

/// SSE bytes -> chunks, each kept as the upstream's text. Ends cleanly only on `data: [DONE]`; a stream that
/// stops without it, or carries an `error` object, yields an error so the
/// gateway never passes off a truncated answer as complete.
fn chunk_stream(resp: super::transport::Response) -> super::ChunkStream {
    let bytes = Box::pin(resp.into_stream());
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
                let item = Chunk::parse(ev.data).map_err(|bad| match bad {
                    BadChunk::Reported(msg) => UpstreamError::new(FailureKind::Server, msg),
                    BadChunk::Invalid(msg) => UpstreamError::new(FailureKind::Protocol, msg),
                });
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
                Some(Err(e)) => return Some((Err(e), (bytes, parser, true))),
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
