//! Anthropic Messages response -> OpenAI `chat.completion` object, plus the
//! stop-reason and usage mappings shared with the stream translator.
//!
//! Invariants:
//! - The result always has exactly one choice (index 0) whose message has
//!   role `assistant`; `content` is `null` only when the answer is tool calls
//!   and nothing else, as OpenAI does.
//! - Tool call `arguments` are the JSON text of Anthropic's `input` object,
//!   so clients can parse them as they would OpenAI's.
//! - The router-internal JSON tool (see [`JSON_TOOL_NAME`]) never reaches the
//!   client as a tool call: its input becomes the message content.
//! - `prompt_tokens` counts every input token billed, cached or not
//!   (`input_tokens + cache_creation_input_tokens + cache_read_input_tokens`),
//!   which is what OpenAI's `prompt_tokens` means; cached reads are also
//!   reported in `prompt_tokens_details.cached_tokens`.
//! - Block types with no OpenAI equivalent (thinking, server tool use and
//!   results) are skipped rather than failing the answer.

use serde_json::{json, Map, Value};

use super::error::TranslateError;
use super::JSON_TOOL_NAME;
use crate::providers::usage::Usage;

/// Translates a successful (2xx) Anthropic message.
pub fn from_anthropic_response(
    body: &Value,
    model_name: &str,
    request_id: &str,
    created: i64,
) -> Result<(Value, Usage), TranslateError> {
    let message = body
        .as_object()
        .ok_or_else(|| TranslateError::bad_response("body is not a JSON object"))?;
    if message.get("type").and_then(Value::as_str) == Some("error") {
        let detail = body
            .pointer("/error/message")
            .and_then(Value::as_str)
            .unwrap_or("no message");
        return Err(TranslateError::bad_response(format!(
            "error body in a successful response: {detail}"
        )));
    }
    let blocks = message
        .get("content")
        .and_then(Value::as_array)
        .ok_or_else(|| TranslateError::bad_response("missing `content` array"))?;

    let mut text = String::new();
    let mut tool_calls = Vec::new();
    for (i, block) in blocks.iter().enumerate() {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => {
                let piece = block.get("text").and_then(Value::as_str).ok_or_else(|| {
                    TranslateError::bad_response(format!("content[{i}] text block without text"))
                })?;
                // Blocks are consecutive pieces of one answer (citations split
                // text into many), so they are joined without a separator.
                text.push_str(piece);
            }
            Some("tool_use") => {
                let name = block.get("name").and_then(Value::as_str).ok_or_else(|| {
                    TranslateError::bad_response(format!("content[{i}] tool_use without name"))
                })?;
                let input = block.get("input").cloned().unwrap_or_else(|| json!({}));
                if name == JSON_TOOL_NAME {
                    text.push_str(&input.to_string());
                    continue;
                }
                let id = block.get("id").and_then(Value::as_str).ok_or_else(|| {
                    TranslateError::bad_response(format!("content[{i}] tool_use without id"))
                })?;
                tool_calls.push(json!({
                    "id": id,
                    "type": "function",
                    "function": {"name": name, "arguments": input.to_string()},
                }));
            }
            _ => {}
        }
    }

    let stop_reason = message.get("stop_reason").and_then(Value::as_str);
    let finish_reason = finish_reason(stop_reason, !tool_calls.is_empty());
    let mut usage = AnthropicUsage::default();
    if let Some(u) = message.get("usage") {
        usage.update(u);
    }

    let mut out_message = Map::new();
    out_message.insert("role".into(), "assistant".into());
    let content = if text.is_empty() && !tool_calls.is_empty() {
        Value::Null
    } else {
        Value::String(text)
    };
    out_message.insert("content".into(), content);
    out_message.insert("refusal".into(), Value::Null);
    if !tool_calls.is_empty() {
        out_message.insert("tool_calls".into(), Value::Array(tool_calls));
    }

    let completion = json!({
        "id": request_id,
        "object": "chat.completion",
        "created": created,
        "model": model_name,
        "choices": [{
            "index": 0,
            "message": Value::Object(out_message),
            "logprobs": Value::Null,
            "finish_reason": finish_reason,
        }],
        "usage": usage.to_openai_json(),
    });
    Ok((completion, usage.to_usage()))
}

/// Anthropic `stop_reason` -> OpenAI `finish_reason`. `tool_use` only maps to
/// `tool_calls` when client-visible tool calls were produced: a stop caused by
/// the router's JSON tool is a normal answer.
pub(super) fn finish_reason(stop_reason: Option<&str>, has_tool_calls: bool) -> &'static str {
    match stop_reason {
        Some("max_tokens" | "model_context_window_exceeded") => "length",
        Some("tool_use") if has_tool_calls => "tool_calls",
        Some("refusal") => "content_filter",
        // end_turn, stop_sequence, pause_turn, tool_use of the JSON tool, and
        // reasons added after this was written.
        _ => "stop",
    }
}

/// Token counts as Anthropic reports them. In a stream, `message_start`
/// carries the input side and `message_delta` carries cumulative totals, so
/// each update overwrites only the fields it contains.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct AnthropicUsage {
    input: u64,
    cache_creation: u64,
    cache_read: u64,
    output: u64,
}

impl AnthropicUsage {
    pub(super) fn update(&mut self, usage: &Value) {
        let read = |key: &str| usage.get(key).and_then(Value::as_u64);
        if let Some(n) = read("input_tokens") {
            self.input = n;
        }
        if let Some(n) = read("cache_creation_input_tokens") {
            self.cache_creation = n;
        }
        if let Some(n) = read("cache_read_input_tokens") {
            self.cache_read = n;
        }
        if let Some(n) = read("output_tokens") {
            self.output = n;
        }
    }

    fn prompt(&self) -> u64 {
        self.input
            .saturating_add(self.cache_creation)
            .saturating_add(self.cache_read)
    }

    pub(super) fn to_usage(self) -> Usage {
        Usage {
            prompt_tokens: saturate(self.prompt()),
            completion_tokens: saturate(self.output),
            counted_locally: false,
        }
    }

    pub(super) fn to_openai_json(self) -> Value {
        let usage = self.to_usage();
        json!({
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total(),
            "prompt_tokens_details": {"cached_tokens": saturate(self.cache_read)},
        })
    }
}

fn saturate(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}
