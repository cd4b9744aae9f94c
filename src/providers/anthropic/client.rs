//! HTTP glue for Anthropic's Messages API: translate the OpenAI body, send
//! it with Anthropic's headers, translate the answer (or each stream event)
//! back. The pure translation lives in the sibling modules.

use futures_util::StreamExt;
use serde_json::Value;

use super::super::failure::retry_after;
use super::super::sse::SseParser;
use super::super::{
    Chunk, ChunkStream, Completion, FailureKind, Provider, Reply, UpstreamError, UpstreamRequest,
};
use super::{
    classify_error, from_anthropic_response, to_anthropic_request, StreamError, StreamTranslator,
    ANTHROPIC_VERSION,
};

/// Where messages are posted, under the provider's base URL.
pub const MESSAGES_PATH: &str = "/messages";

pub(crate) async fn call(p: &Provider, req: UpstreamRequest<'_>) -> Result<Reply, UpstreamError> {
    let body = to_anthropic_request(req.body.tree, req.upstream_model, p.default_max_tokens)
        .map_err(|e| {
            let kind = if e.is_client_error() {
                FailureKind::InvalidRequest
            } else {
                FailureKind::Protocol
            };
            UpstreamError::new(kind, e.to_string())
        })?;
    let mut headers = vec![(
        http::HeaderName::from_static("anthropic-version"),
        http::HeaderValue::from_static(ANTHROPIC_VERSION),
    )];
    if let Some(key) = p.key() {
        headers.push(Provider::secret_header(
            http::HeaderName::from_static("x-api-key"),
            key,
        )?);
    }
    let resp = p
        .post_json(MESSAGES_PATH, headers, Provider::json_body(&body)?)
        .await?;
    let status = resp.status.as_u16();
    if !resp.status.is_success() {
        let retry = retry_after(resp.headers());
        let body = p.error_body(resp).await;
        return Err(UpstreamError::from_info(
            classify_error(status, &body),
            status,
            retry,
        ));
    }
    let created = chrono::Utc::now().timestamp();
    if req.stream {
        return Ok(Reply::Stream(chunk_stream(
            resp,
            req.upstream_model,
            created,
        )));
    }
    let bytes = resp.bytes().await?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
        UpstreamError::new(
            FailureKind::Protocol,
            format!("upstream sent invalid JSON: {e}"),
        )
    })?;
    // The gateway puts its own id and model name on the answer.
    let (body, usage) = from_anthropic_response(&value, req.upstream_model, "pending", created)
        .map_err(|e| UpstreamError::new(FailureKind::Protocol, e.to_string()))?;
    Ok(Reply::Complete {
        body: Completion::from_value(&body),
        usage: Some(usage),
    })
}

fn stream_error(e: StreamError) -> UpstreamError {
    match e {
        StreamError::Upstream { kind, message } => UpstreamError::new(kind.into(), message),
        StreamError::Malformed { reason } => UpstreamError::new(FailureKind::Protocol, reason),
    }
}

/// Anthropic events in, OpenAI chunks out. Usage is always requested from
/// the translator; the gateway hides it from clients that did not ask.
fn chunk_stream(resp: super::super::transport::Response, model: &str, created: i64) -> ChunkStream {
    let translator = StreamTranslator::new("pending", model, created, true);
    let state = (
        Box::pin(resp.into_stream()),
        SseParser::new(),
        translator,
        std::collections::VecDeque::new(),
        false,
    );
    let stream = futures_util::stream::unfold(
        state,
        |(mut bytes, mut parser, mut tr, mut queue, mut done)| async move {
            loop {
                if let Some(chunk) = queue.pop_front() {
                    // The translator builds objects without an `error`
                    // member, so this cannot fail; if it did, it would be
                    // a protocol error like any other.
                    let chunk = Chunk::from_value(&chunk).map_err(|_| {
                        UpstreamError::new(FailureKind::Protocol, "untranslatable stream event")
                    });
                    return Some((chunk, (bytes, parser, tr, queue, done)));
                }
                if done {
                    return None;
                }
                if let Some(ev) = parser.next_event() {
                    match tr.on_event(&ev) {
                        Ok(chunks) => queue.extend(chunks),
                        Err(e) => {
                            return Some((Err(stream_error(e)), (bytes, parser, tr, queue, true)))
                        }
                    }
                    if tr.is_finished() {
                        done = true;
                    }
                    continue;
                }
                match bytes.next().await {
                    Some(Ok(b)) => {
                        if let Err(e) = parser.push(&b) {
                            let err = UpstreamError::new(FailureKind::Protocol, e.to_string());
                            return Some((Err(err), (bytes, parser, tr, queue, true)));
                        }
                    }
                    Some(Err(e)) => return Some((Err(e), (bytes, parser, tr, queue, true))),
                    None => {
                        let err = UpstreamError::new(
                            FailureKind::Protocol,
                            "upstream stream ended before message_stop",
                        );
                        return Some((Err(err), (bytes, parser, tr, queue, true)));
                    }
                }
            }
        },
    );
    Box::pin(stream)
}
