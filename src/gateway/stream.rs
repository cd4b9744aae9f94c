//! The client's side of a streamed answer: upstream chunks re-labelled with
//! the router's request id and model name, framed as SSE, ended by
//! `data: [DONE]` only when the upstream really finished. A failure after the
//! first byte ends the stream with an explicit error event instead.
//!
//! The request's row is written when the stream ends — or, if the client
//! goes away first, when the stream is dropped: then the upstream response
//! is dropped with it (the upstream call is cancelled) and the row says
//! `cancelled` with status 499 (the client closed the request).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use serde_json::Value;

use super::outcome::{Draft, Ending};
use super::Gateway;
use crate::error::ApiError;
use crate::providers::openai::parse_usage;
use crate::providers::sse::encode_data;
use crate::providers::{ChunkStream, Usage};

/// Text kept for local token counting is capped; past it the count is a floor.
const MAX_TEXT_FOR_COUNTING: usize = 4 * 1024 * 1024;

/// The error kind of a stream whose client went away before its end.
const CANCELLED: &str = "cancelled";

pub struct StreamParts {
    pub gateway: Arc<Gateway>,
    pub model: usize,
    pub request_id: String,
    pub include_usage: bool,
    pub ttft_ms: f64,
}

struct State {
    parts: StreamParts,
    draft: Option<Draft>,
    first: Option<Value>,
    rest: ChunkStream,
    usage: Option<Usage>,
    text: String,
    done: bool,
}

impl State {
    fn end(&mut self, error: Option<&str>) {
        if let Some(draft) = self.draft.take() {
            let gw = &self.parts.gateway;
            let model = &gw.catalog.models[self.parts.model];
            let status = match error {
                None => 200,
                Some(CANCELLED) => 499,
                Some(_) => 502,
            };
            let settled = draft.finish(
                Ending {
                    model: Some(model),
                    usage: self.usage,
                    completion_text: &self.text,
                    ttft_ms: Some(self.parts.ttft_ms),
                    status_code: status,
                    error_kind: error,
                },
                &gw.outbox,
            );
            // A client that hangs up says nothing about the model.
            if error != Some(CANCELLED) {
                gw.learn_outcome(
                    &self.parts.request_id,
                    self.parts.model,
                    error.is_none(),
                    settled.cost_usd,
                    settled.latency_s,
                );
            }
        }
    }

    /// Re-labels one chunk; `None` when the client should not see it (the
    /// usage-only chunk the router asked for on its own account).
    fn relabel(&mut self, mut chunk: Value) -> Option<Vec<u8>> {
        if let Some(u) = parse_usage(chunk.get("usage")) {
            self.usage = Some(u);
        }
        if let Some(Value::Array(choices)) = chunk.get("choices") {
            for c in choices {
                if let Some(Value::String(t)) = c.pointer("/delta/content") {
                    if self.text.len() < MAX_TEXT_FOR_COUNTING {
                        self.text.push_str(t);
                    }
                }
            }
        }
        let obj = chunk.as_object_mut()?;
        if !self.parts.include_usage {
            obj.remove("usage");
            if obj
                .get("choices")
                .and_then(Value::as_array)
                .is_some_and(Vec::is_empty)
            {
                return None;
            }
        }
        obj.insert("id".into(), Value::String(self.parts.request_id.clone()));
        let model = &self.parts.gateway.catalog.models[self.parts.model];
        obj.insert(
            "model".into(),
            Value::String(model.name.as_str().to_owned()),
        );
        let mut out = Vec::with_capacity(256);
        encode_data(&mut out, &serde_json::to_string(&chunk).ok()?);
        Some(out)
    }
}

impl Drop for State {
    fn drop(&mut self) {
        // Dropped before the end: the client disconnected.
        if self.draft.is_some() {
            self.end(Some(CANCELLED));
        }
    }
}

pub fn client_stream(
    parts: StreamParts,
    draft: Draft,
    first: Value,
    rest: ChunkStream,
) -> impl Stream<Item = Result<Bytes, Infallible>> + Send {
    let state = State {
        parts,
        draft: Some(draft),
        first: Some(first),
        rest,
        usage: None,
        text: String::new(),
        done: false,
    };
    futures_util::stream::unfold(state, |mut st| async move {
        loop {
            if st.done {
                return None;
            }
            let next = match st.first.take() {
                Some(v) => Some(Ok(v)),
                None => st.rest.next().await,
            };
            match next {
                Some(Ok(chunk)) => {
                    if let Some(bytes) = st.relabel(chunk) {
                        return Some((Ok(Bytes::from(bytes)), st));
                    }
                }
                None => {
                    st.done = true;
                    st.end(None);
                    return Some((Ok(Bytes::from_static(b"data: [DONE]\n\n")), st));
                }
                Some(Err(e)) => {
                    st.done = true;
                    tracing::warn!(kind = e.kind.as_str(), error = %e.message,
                        "The upstream stream failed after the first byte.");
                    st.end(Some(e.kind.as_str()));
                    let err = ApiError::bad_gateway(format!(
                        "The upstream stream failed before the answer was complete: {}",
                        e.message
                    ));
                    let mut out = Vec::new();
                    encode_data(&mut out, &err.body().to_string());
                    return Some((Ok(Bytes::from(out)), st));
                }
            }
        }
    })
}
