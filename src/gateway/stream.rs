//! The client's side of a streamed answer: upstream chunks re-labelled with
//! the router's request id and model name (spliced into the upstream's
//! text, `providers::Chunk`), framed as SSE, ended by
//! `data: [DONE]` only when the upstream really finished. A failure after the
//! first byte ends the stream with an explicit error event instead — or,
//! on a route with `continue_stream_on_fallback`, is continued on the next
//! model in the same stream (`continuation`).
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

use super::continuation::Continuation;
use super::outcome::{Draft, Ending};
use super::Gateway;
use crate::error::ApiError;
use crate::providers::sse::encode_data;
use crate::providers::{
    frame_tree, tokens, Choice, Chunk, ChunkStream, Label, UpstreamError, Usage,
};
use crate::telemetry::names;

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
    /// Set when the route continues broken streams on its next model.
    pub continuation: Option<Continuation>,
}

struct State {
    parts: StreamParts,
    /// The request id and the answering model's name, as every chunk gets them.
    label: Label,
    draft: Option<Draft>,
    first: Option<Chunk>,
    rest: ChunkStream,
    usage: Option<Usage>,
    /// The answer's text so far, all models included.
    text: String,
    /// Where the current model's part of `text` begins.
    segment: usize,
    /// When the current model's stream was handed over.
    segment_since: std::time::Instant,
    /// Plain text in one choice, unfinished: a continuation could extend it.
    continuable: bool,
    /// Chunks come from a continuation: drop their `role` delta, and the
    /// leading whitespace the prefix lost while `trim_leading` holds.
    continued: bool,
    trim_leading: bool,
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
                    completion_text: self.text.get(self.segment..).unwrap_or(""),
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
    fn relabel(&mut self, chunk: Chunk) -> Option<Bytes> {
        if let Some(u) = chunk.usage() {
            self.usage = Some(u);
        }
        let mut seam = Vec::new();
        for (i, c) in chunk.choices().iter().enumerate() {
            if let Some(trimmed) = self.inspect_choice(c) {
                seam.push((i, trimmed));
            }
        }
        let drop_usage = !self.parts.include_usage;
        if drop_usage && chunk.has_no_choices() {
            return None;
        }
        if !self.continued {
            return Some(chunk.framed(&self.label, drop_usage));
        }
        // A continuation's chunks lose their `role` and, at the seam, the
        // leading whitespace: reworked on a tree, as rarely as streams break.
        let mut v = chunk.to_value();
        if let Some(Value::Array(choices)) = v.get_mut("choices") {
            for (i, c) in choices.iter_mut().enumerate() {
                let Some(delta) = c.get_mut("delta").and_then(Value::as_object_mut) else {
                    continue;
                };
                delta.remove("role");
                if let Some((_, t)) = seam.iter_mut().find(|(at, _)| *at == i) {
                    delta.insert("content".into(), Value::String(std::mem::take(t)));
                }
            }
        }
        Some(frame_tree(v, &self.label, drop_usage))
    }

    /// Keeps the text and notes whether the answer could still be
    /// continued. Returns the content trimmed when a continuation's seam
    /// drops leading whitespace from it.
    fn inspect_choice(&mut self, c: &Choice) -> Option<String> {
        if c.index != 0 || c.finished || c.tool_call {
            self.continuable = false;
        }
        let content = c.content.as_deref()?;
        let (kept, trimmed) = if self.trim_leading {
            let t = content.trim_start();
            if !t.is_empty() {
                self.trim_leading = false;
            }
            (t, Some(t.to_owned()))
        } else {
            (content, None)
        };
        if self.text.len() < MAX_TEXT_FOR_COUNTING {
            self.text.push_str(kept);
        } else {
            // The kept text is no longer the whole answer.
            self.continuable = false;
        }
        trimmed
    }

    /// The stream broke after its first byte: on a route that allows it,
    /// hand the answer to the next model. True when one took it over.
    async fn continue_elsewhere(&mut self, e: &UpstreamError) -> bool {
        let Some(mut cont) = self.parts.continuation.take() else {
            return false;
        };
        let Some(draft) = self.draft.as_mut() else {
            return false;
        };
        if !self.continuable {
            return false;
        }
        let gw = self.parts.gateway.clone();
        let broken = &gw.catalog.models[self.parts.model];
        // What the broken stream was probably billed: its prompt (the
        // request plus any earlier prefix) and the text it produced.
        let (before, own) = self.text.split_at(self.segment.min(self.text.len()));
        let usage = self.usage.unwrap_or(Usage {
            prompt_tokens: tokens::count_messages(draft.messages.as_ref())
                .saturating_add(tokens::count_text(before)),
            completion_tokens: tokens::count_text(own),
            counted_locally: true,
        });
        let cost = broken.prices.cost_usd(&usage);
        if let Some(rec) = draft
            .chain
            .iter_mut()
            .rev()
            .find(|a| a.model == broken.name.as_str() && a.error.is_none())
        {
            rec.error = Some(e.kind.as_str().to_owned());
            rec.status = e.status;
            rec.cost_usd = Some(cost);
            rec.elapsed_ms = Some(self.segment_since.elapsed().as_secs_f64() * 1000.0);
        }
        tracing::warn!(model = broken.name.as_str(), kind = e.kind.as_str(), error = %e.message,
            "The upstream stream failed after the first byte; continuing on the next model.");
        let tried_before = draft.chain.len();
        let resumed = cont.resume(&gw, &self.text, &mut draft.chain).await;
        let labels = |model: &str, outcome: &'static str| {
            [
                ("route", cont.route.clone()),
                ("model", model.to_owned()),
                ("outcome", outcome.to_owned()),
            ]
        };
        let r = match resumed {
            Ok(r) => r,
            Err(_) => {
                metrics::counter!(names::STREAM_CONTINUATIONS, &labels("-", "failed")).increment(1);
                super::pipeline::teach_failed_attempts(
                    &gw,
                    &self.parts.request_id,
                    &draft.chain[tried_before..],
                    draft.started,
                );
                return false;
            }
        };
        let next = gw.catalog.models[r.model].name.as_str();
        metrics::counter!(names::STREAM_CONTINUATIONS, &labels(next, "resumed")).increment(1);
        if cost > 0.0 {
            metrics::counter!(names::COST_USD, "route" => cont.route.clone(),
                "model" => broken.name.as_str().to_owned(), "provider" => broken.provider.name.clone())
            .increment((cost * 1e6).round() as u64);
        }
        // The broken model failed this request; the new one answers it.
        let elapsed = draft.started.elapsed().as_secs_f64();
        gw.learn_outcome(
            &self.parts.request_id,
            self.parts.model,
            false,
            cost,
            elapsed,
        );
        super::pipeline::teach_failed_attempts(
            &gw,
            &self.parts.request_id,
            &draft.chain[tried_before..],
            draft.started,
        );
        self.parts.model = r.model;
        self.label = Label::new(&self.parts.request_id, next);
        self.first = Some(r.first);
        self.rest = r.rest;
        self.usage = None;
        self.trim_leading = self.text.ends_with(char::is_whitespace);
        self.segment = self.text.len();
        self.segment_since = std::time::Instant::now();
        self.continued = true;
        self.parts.continuation = Some(cont);
        true
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
    first: Chunk,
    rest: ChunkStream,
) -> impl Stream<Item = Result<Bytes, Infallible>> + Send {
    let label = Label::new(
        &parts.request_id,
        parts.gateway.catalog.models[parts.model].name.as_str(),
    );
    let state = State {
        parts,
        label,
        draft: Some(draft),
        first: Some(first),
        rest,
        usage: None,
        text: String::new(),
        segment: 0,
        segment_since: std::time::Instant::now(),
        continuable: true,
        continued: false,
        trim_leading: false,
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
                        return Some((Ok(bytes), st));
                    }
                }
                None => {
                    st.done = true;
                    st.end(None);
                    return Some((Ok(Bytes::from_static(b"data: [DONE]\n\n")), st));
                }
                Some(Err(e)) => {
                    if st.continue_elsewhere(&e).await {
                        continue;
                    }
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
