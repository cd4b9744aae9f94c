//! Continuing a broken stream on the next model (route key
//! `continue_stream_on_fallback = true`).
//!
//! When an upstream stream fails or stalls (past the provider's
//! `read_timeout_ms`, the inter-chunk idle timeout) after its first byte,
//! the models the request has not tried yet are asked, in rank order and
//! with the usual retries, to continue the answer: the request as first
//! sent plus one assistant message holding the text streamed so far
//! (trailing whitespace trimmed: Anthropic refuses it in a prefill, and a
//! model continues a word boundary better when the next token carries its
//! own leading space). The client's SSE stream carries on with the new
//! model's chunks under the same id (`client_stream` drops their repeated
//! `role` and the whitespace the prefix lost).
//!
//! On Anthropic a trailing assistant message is a true prefill. On an
//! OpenAI-compatible server it is a final assistant turn that most models
//! continue from; a server that instead answers afresh still produces a
//! complete answer, joined to the partial one.
//!
//! Only plain text in a single choice, not yet finished, is continued: a
//! partial tool call or `n > 1` cannot be stitched, and those streams end
//! with the error event as on a route without the option.

use serde_json::{json, Map, Value};

use super::attempt::{Answer, Attempts, Failure};
use super::Gateway;
use crate::providers::{Chunk, ChunkStream, ClientBody, FailureKind, UpstreamError};
use crate::store::AttemptRecord;

/// What a streamed request needs to be continued elsewhere.
pub struct Continuation {
    /// The request as sent upstream (router-only fields already stripped).
    body: Map<String, Value>,
    /// Models not tried yet, in rank order, within `max_models_per_request`.
    remaining: Vec<usize>,
    pub route: String,
}

/// A model that took the answer over, and its stream.
pub struct Resumed {
    pub model: usize,
    pub first: Chunk,
    pub rest: ChunkStream,
}

impl Continuation {
    /// `None` when no model is left to continue on.
    pub fn new(
        gw: &Gateway,
        ranking: &[usize],
        chain: &[AttemptRecord],
        body: Map<String, Value>,
        route: String,
    ) -> Option<Self> {
        let mut tried: Vec<&str> = chain.iter().map(|a| a.model.as_str()).collect();
        tried.sort_unstable();
        tried.dedup();
        let room = (gw.resilience.max_models_per_request as usize).saturating_sub(tried.len());
        let remaining: Vec<usize> = ranking
            .iter()
            .copied()
            .filter(|&m| !tried.contains(&gw.catalog.models[m].name.as_str()))
            .take(room)
            .collect();
        (!remaining.is_empty()).then_some(Self {
            body,
            remaining,
            route,
        })
    }

    /// Asks the remaining models to continue `so_far`; their attempts are
    /// appended to `chain`, and the models tried are not asked again.
    pub async fn resume(
        &mut self,
        gw: &Gateway,
        so_far: &str,
        chain: &mut Vec<AttemptRecord>,
    ) -> Result<Resumed, Failure> {
        let mut body = self.body.clone();
        let prefix = so_far.trim_end();
        if !prefix.is_empty() {
            if let Some(Value::Array(messages)) = body.get_mut("messages") {
                messages.push(json!({"role": "assistant", "content": prefix}));
            }
        }
        let attempts = Attempts {
            catalog: &gw.catalog,
            breakers: &gw.breakers,
            resilience: &gw.resilience,
        };
        // A fresh deadline: the broken stream may have run for minutes.
        let deadline = tokio::time::Instant::now() + gw.request_timeout;
        let mut tried = Vec::new();
        let answer = attempts
            .run(
                &self.remaining,
                ClientBody::tree(&body),
                true,
                deadline,
                &mut tried,
            )
            .await;
        self.remaining.retain(|&m| {
            let name = gw.catalog.models[m].name.as_str();
            !tried.iter().any(|a| a.model == name)
        });
        chain.extend(tried);
        match answer? {
            Answer::Stream {
                model, first, rest, ..
            } => Ok(Resumed { model, first, rest }),
            Answer::Complete { .. } => Err(Failure::Exhausted(UpstreamError::new(
                FailureKind::Protocol,
                "the continuation came back whole instead of as a stream",
            ))),
        }
    }
}
