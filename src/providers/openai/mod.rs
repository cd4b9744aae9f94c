//! OpenAI-compatible upstreams (OpenAI, vLLM, Ollama, Together, Groq, ...):
//! the body passes through with `model` replaced, and a whole answer comes
//! back as the upstream's bytes (`completion.rs`); streams are parsed as SSE
//! and handed on chunk by chunk, each as its text (`chunk.rs`).

use futures_util::StreamExt;
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value};

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
    let body = Outgoing {
        body: req.body,
        model: req.upstream_model,
        stream: req.stream,
    };
    let mut headers = Vec::with_capacity(1);
    if let Some(key) = p.key() {
        headers.push(Provider::secret_header(
            http::header::AUTHORIZATION,
            &format!("Bearer {key}"),
        )?);
    }
    let resp = p.post_json(CHAT_PATH, headers, &body).await?;
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

/// The client's body as sent upstream, written straight from the borrowed
/// map (no copy of it per attempt): `model` replaced, and a stream asks for
/// usage on its last chunk so cost is exact (the gateway hides that chunk
/// from clients that did not ask for it).
struct Outgoing<'a> {
    body: &'a Map<String, Value>,
    model: &'a str,
    stream: bool,
}

impl Serialize for Outgoing<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        let mut wrote_model = false;
        let mut wrote_options = !self.stream;
        for (k, v) in self.body {
            match k.as_str() {
                "model" => {
                    wrote_model = true;
                    map.serialize_entry(k, self.model)?;
                }
                "stream_options" if self.stream => {
                    wrote_options = true;
                    match v {
                        Value::Object(o) => {
                            let mut o = o.clone();
                            o.insert("include_usage".into(), Value::Bool(true));
                            map.serialize_entry(k, &o)?;
                        }
                        // Not an object: passed on for the upstream to judge.
                        other => map.serialize_entry(k, other)?,
                    }
                }
                _ => map.serialize_entry(k, v)?,
            }
        }
        if !wrote_model {
            map.serialize_entry("model", self.model)?;
        }
        if !wrote_options {
            map.serialize_entry(
                "stream_options",
                &serde_json::json!({"include_usage": true}),
            )?;
        }
        map.end()
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sent(body: Value, stream: bool) -> Value {
        let Value::Object(body) = body else {
            unreachable!()
        };
        let out = Outgoing {
            body: &body,
            model: "up-model",
            stream,
        };
        serde_json::from_slice(&serde_json::to_vec(&out).unwrap()).unwrap()
    }

    #[test]
    fn the_upstream_body_is_the_clients_with_model_replaced() {
        let body = json!({"model": "route", "messages": [{"role": "user", "content": "x"}],
                          "temperature": 0.2, "stream_options": {"include_usage": false}});
        let mut want = body.clone();
        want["model"] = json!("up-model");
        assert_eq!(sent(body.clone(), false), want);
        let no_model = json!({"messages": []});
        assert_eq!(
            sent(no_model, false),
            json!({"messages": [], "model": "up-model"})
        );
    }

    #[test]
    fn a_stream_asks_for_usage_keeping_the_clients_other_options() {
        let with = json!({"model": "r", "stream": true, "stream_options": {"x": 1, "include_usage": false}});
        assert_eq!(
            sent(with, true),
            json!({"model": "up-model", "stream": true,
                   "stream_options": {"x": 1, "include_usage": true}})
        );
        assert_eq!(
            sent(json!({"stream": true}), true),
            json!({"stream": true, "model": "up-model", "stream_options": {"include_usage": true}})
        );
        // Not an object: left for the upstream to reject, as before.
        assert_eq!(
            sent(json!({"stream_options": 3}), true)["stream_options"],
            json!(3)
        );
    }
}
