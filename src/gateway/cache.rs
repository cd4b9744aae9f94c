//! Exact-match response cache, per route opt-in (`[routes.cache] ttl_s`).
//! The key is the route plus the normalised request: every field but
//! `stream`, `stream_options`, `user` and the router's own options, in a
//! canonical order (serde_json maps are sorted). Only complete, successful,
//! non-streamed answers are stored; a streamed request can be served from
//! the cache as a stream. Requests that sample (temperature absent or
//! non-zero, or `n > 1`) bypass it unless the route sets `cache_sampled`.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::sync::Cache;
use moka::Expiry;
use serde_json::{json, Map, Value};

use crate::providers::Completion;

/// Keyed by two independent 64-bit hashes of the canonical request.
type Key = (u64, u64);

#[derive(Debug)]
pub struct Cached {
    /// The answer as first returned (its `id` is replaced on each hit).
    pub body: Completion,
    /// Catalog index of the model that answered.
    pub model: usize,
    ttl: Duration,
}

struct PerEntryTtl;

impl Expiry<Key, Arc<Cached>> for PerEntryTtl {
    fn expire_after_create(&self, _: &Key, v: &Arc<Cached>, _: Instant) -> Option<Duration> {
        Some(v.ttl)
    }
}

#[derive(Clone)]
pub struct ResponseCache {
    entries: Cache<Key, Arc<Cached>>,
}

impl ResponseCache {
    pub fn new(max_entries: u64) -> Self {
        Self {
            entries: Cache::builder()
                .max_capacity(max_entries)
                .expire_after(PerEntryTtl)
                .build(),
        }
    }

    pub fn get(&self, key: Key) -> Option<Arc<Cached>> {
        self.entries.get(&key)
    }

    pub fn put(&self, key: Key, body: Completion, model: usize, ttl: Duration) {
        self.entries
            .insert(key, Arc::new(Cached { body, model, ttl }));
    }
}

/// The cache key for `body` on `route`, or `None` when the request samples
/// and the route does not cache sampled answers.
pub fn key(route: &str, body: &Map<String, Value>, cache_sampled: bool) -> Option<Key> {
    let deterministic = body.get("temperature").and_then(Value::as_f64) == Some(0.0)
        && body.get("n").and_then(Value::as_u64).unwrap_or(1) == 1;
    if !deterministic && !cache_sampled {
        return None;
    }
    let mut canonical = Map::new();
    for (k, v) in body {
        if !matches!(
            k.as_str(),
            "stream" | "stream_options" | "user" | "switchboard"
        ) {
            // `0` and `0.0` are the same temperature: numbers compare as f64.
            let v = match v.as_f64() {
                Some(f) if v.is_number() => {
                    serde_json::Number::from_f64(f).map_or(v.clone(), Value::Number)
                }
                _ => v.clone(),
            };
            canonical.insert(k.clone(), v);
        }
    }
    let text = Value::Object(canonical).to_string();
    let mut h1 = std::collections::hash_map::DefaultHasher::new();
    (route, &text).hash(&mut h1);
    let mut h2 = std::collections::hash_map::DefaultHasher::new();
    (text.len(), &text, route).hash(&mut h2);
    Some((h1.finish(), h2.finish()))
}

/// A cached completion replayed as `chat.completion.chunk`s: the role, the
/// content or tool calls, the finish reason.
pub fn as_chunks(body: &Value) -> Vec<Value> {
    let created = body.get("created").cloned().unwrap_or(json!(0));
    let mut out = Vec::new();
    for choice in body
        .get("choices")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let index = choice.get("index").cloned().unwrap_or(json!(0));
        let message = choice.get("message").cloned().unwrap_or(json!({}));
        let chunk = |delta: Value, finish: Value| {
            json!({"object": "chat.completion.chunk", "created": created,
                   "choices": [{"index": index, "delta": delta, "logprobs": null, "finish_reason": finish}]})
        };
        out.push(chunk(
            json!({"role": "assistant", "content": ""}),
            Value::Null,
        ));
        if let Some(text) = message.get("content").and_then(Value::as_str) {
            out.push(chunk(json!({"content": text}), Value::Null));
        }
        if let Some(Value::Array(calls)) = message.get("tool_calls") {
            let calls: Vec<Value> = calls
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let mut c = c.clone();
                    if let Value::Object(o) = &mut c {
                        o.insert("index".into(), json!(i));
                    }
                    c
                })
                .collect();
            out.push(chunk(json!({"tool_calls": calls}), Value::Null));
        }
        let finish = choice
            .get("finish_reason")
            .cloned()
            .unwrap_or(json!("stop"));
        out.push(chunk(json!({}), finish));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn key_ignores_streaming_and_user_but_not_content() {
        let a = body(
            json!({"model": "auto", "temperature": 0, "messages": [{"role": "user", "content": "hi"}]}),
        );
        let b = body(
            json!({"messages": [{"role": "user", "content": "hi"}], "temperature": 0.0, "model": "auto",
            "stream": true, "user": "u1"}),
        );
        let c = body(
            json!({"model": "auto", "temperature": 0, "messages": [{"role": "user", "content": "hello"}]}),
        );
        assert_eq!(key("r", &a, false), key("r", &b, false));
        assert_ne!(key("r", &a, false), key("r", &c, false));
        assert_ne!(key("r", &a, false), key("other", &a, false));
    }

    #[test]
    fn sampled_requests_bypass_unless_the_route_asks() {
        let sampled = body(json!({"model": "auto", "messages": []}));
        assert!(key("r", &sampled, false).is_none());
        assert!(key("r", &sampled, true).is_some());
    }

    #[test]
    fn a_cached_answer_replays_as_chunks() {
        let chunks = as_chunks(&json!({"created": 5, "choices": [{"index": 0,
            "message": {"role": "assistant", "content": "hi there"}, "finish_reason": "stop"}]}));
        assert_eq!(chunks.len(), 3);
        assert_eq!(chunks[1]["choices"][0]["delta"]["content"], "hi there");
        assert_eq!(chunks[2]["choices"][0]["finish_reason"], "stop");
    }
}
