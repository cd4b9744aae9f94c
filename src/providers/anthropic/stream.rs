//! Anthropic streaming events -> OpenAI `chat.completion.chunk` objects.
//!
//! Owns the per-stream state machine. Feed it every [`SseEvent`] the
//! [`SseParser`](crate::providers::sse::SseParser) yields for an Anthropic
//! stream; send the returned chunks to the client in order (the router adds
//! the final `data: [DONE]`).
//!
//! Invariants:
//! - The first chunk emitted carries `delta.role = "assistant"`, even if the
//!   upstream skipped `message_start`.
//! - Tool call `index` counts client-visible tool calls only (0, 1, ...), as
//!   OpenAI does, whatever Anthropic block index they came from; the chunk
//!   that opens a call carries `id`, `type` and `function.name` with empty
//!   `arguments`, later chunks carry only argument fragments.
//! - Exactly one chunk carries a `finish_reason`: the one for `message_delta`,
//!   or, if the upstream never sent a stop reason, one emitted at
//!   `message_stop`.
//! - With `include_usage`, every chunk has `"usage": null` and one last chunk
//!   with empty `choices` carries the totals, matching OpenAI's
//!   `stream_options.include_usage`.
//! - Unknown event and block types are ignored (Anthropic's versioning policy
//!   says new ones may appear); thinking and server-tool blocks are dropped
//!   because Chat Completions has no place for them. The router's JSON tool
//!   (see [`JSON_TOOL_NAME`]) streams as plain content.

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use super::error::{stream_error_from_event, StreamError};
use super::response::{finish_reason, AnthropicUsage};
use super::JSON_TOOL_NAME;
use crate::providers::sse::SseEvent;
use crate::providers::usage::Usage;

/// What an Anthropic content block (by its block index) turns into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    Text,
    /// A client-visible tool call with its OpenAI tool call index.
    Tool(u32),
    /// The router's JSON-mode tool: its argument JSON is the answer text.
    JsonTool,
    Ignored,
}

#[derive(Debug)]
pub struct StreamTranslator {
    request_id: String,
    model_name: String,
    created: i64,
    include_usage: bool,
    role_sent: bool,
    blocks: HashMap<u64, Block>,
    next_tool_index: u32,
    finish_reason: Option<&'static str>,
    usage: AnthropicUsage,
    finished: bool,
}

impl StreamTranslator {
    pub fn new(request_id: &str, model_name: &str, created: i64, include_usage: bool) -> Self {
        Self {
            request_id: request_id.to_owned(),
            model_name: model_name.to_owned(),
            created,
            include_usage,
            role_sent: false,
            blocks: HashMap::new(),
            next_tool_index: 0,
            finish_reason: None,
            usage: AnthropicUsage::default(),
            finished: false,
        }
    }

    /// Token usage so far; final once [`is_finished`](Self::is_finished).
    pub fn usage(&self) -> Usage {
        self.usage.to_usage()
    }

    /// True once `message_stop` was seen: the answer is complete.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// The OpenAI finish reason emitted so far, if any.
    pub fn finish_reason(&self) -> Option<&'static str> {
        self.finish_reason
    }

    /// Translates one upstream event into the chunks to send, possibly none.
    pub fn on_event(&mut self, event: &SseEvent) -> Result<Vec<Value>, StreamError> {
        let mut out = Vec::new();
        if event.data.trim().is_empty() {
            // Only keep-alives come without data; there is nothing to do.
            return Ok(out);
        }
        let data: Value =
            serde_json::from_str(&event.data).map_err(|e| StreamError::Malformed {
                reason: format!("event data is not JSON: {e}"),
            })?;
        // The data's `type` is authoritative; the SSE event name repeats it.
        let kind = data
            .get("type")
            .and_then(Value::as_str)
            .or(event.event.as_deref())
            .unwrap_or_default();
        match kind {
            "message_start" => {
                if let Some(usage) = data.pointer("/message/usage") {
                    self.usage.update(usage);
                }
                self.open(&mut out);
            }
            "content_block_start" => self.on_block_start(&data, &mut out)?,
            "content_block_delta" => self.on_block_delta(&data, &mut out)?,
            "message_delta" => {
                if let Some(usage) = data.get("usage") {
                    self.usage.update(usage);
                }
                if let Some(reason) = data.pointer("/delta/stop_reason").and_then(Value::as_str) {
                    self.finish(Some(reason), &mut out);
                }
            }
            "message_stop" => {
                self.finish(None, &mut out);
                self.finished = true;
                if self.include_usage {
                    out.push(self.usage_chunk());
                }
            }
            "error" => return Err(stream_error_from_event(&data)),
            // ping, content_block_stop (nothing to flush: deltas are
            // forwarded as they come) and event types added later.
            _ => {}
        }
        Ok(out)
    }

    fn on_block_start(&mut self, data: &Value, out: &mut Vec<Value>) -> Result<(), StreamError> {
        let index = block_index(data)?;
        let block = data.get("content_block").unwrap_or(&Value::Null);
        let kind = match block.get("type").and_then(Value::as_str) {
            Some("text") => {
                let text = block
                    .get("text")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                self.push_content(text, out);
                Block::Text
            }
            Some("tool_use") => {
                let name = block
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                if name == JSON_TOOL_NAME {
                    Block::JsonTool
                } else {
                    let tool_index = self.next_tool_index;
                    self.next_tool_index += 1;
                    let id = block.get("id").and_then(Value::as_str).unwrap_or_default();
                    // Streams start tool blocks with `input: {}` and send the
                    // arguments as deltas; a non-empty start input is kept.
                    let arguments = match block.get("input") {
                        Some(Value::Object(input)) if !input.is_empty() => {
                            Value::Object(input.clone()).to_string()
                        }
                        _ => String::new(),
                    };
                    self.open(out);
                    out.push(self.chunk(
                        json!({"tool_calls": [{
                            "index": tool_index,
                            "id": id,
                            "type": "function",
                            "function": {"name": name, "arguments": arguments},
                        }]}),
                        None,
                    ));
                    Block::Tool(tool_index)
                }
            }
            _ => Block::Ignored,
        };
        self.blocks.insert(index, kind);
        Ok(())
    }

    fn on_block_delta(&mut self, data: &Value, out: &mut Vec<Value>) -> Result<(), StreamError> {
        let index = block_index(data)?;
        let delta = data.get("delta").unwrap_or(&Value::Null);
        let block = self.blocks.get(&index).copied().unwrap_or(Block::Ignored);
        match (delta.get("type").and_then(Value::as_str), block) {
            (Some("text_delta"), Block::Text) => {
                let text = delta
                    .get("text")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                self.push_content(text, out);
            }
            (Some("input_json_delta"), Block::Tool(tool_index)) => {
                let partial = delta
                    .get("partial_json")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                if !partial.is_empty() {
                    self.open(out);
                    out.push(self.chunk(
                        json!({"tool_calls": [{
                            "index": tool_index,
                            "function": {"arguments": partial},
                        }]}),
                        None,
                    ));
                }
            }
            (Some("input_json_delta"), Block::JsonTool) => {
                let partial = delta
                    .get("partial_json")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                self.push_content(partial, out);
            }
            // thinking/signature/citation deltas and deltas for ignored blocks.
            _ => {}
        }
        Ok(())
    }

    /// Emits the role chunk once, before anything else.
    fn open(&mut self, out: &mut Vec<Value>) {
        if !self.role_sent {
            self.role_sent = true;
            out.push(self.chunk(
                json!({"role": "assistant", "content": "", "refusal": null}),
                None,
            ));
        }
    }

    fn push_content(&mut self, text: &str, out: &mut Vec<Value>) {
        if text.is_empty() {
            return;
        }
        self.open(out);
        out.push(self.chunk(json!({"content": text}), None));
    }

    /// Emits the finish chunk unless one was already sent. `None` means the
    /// stream ended without a stop reason, which we report as a plain stop.
    fn finish(&mut self, stop_reason: Option<&str>, out: &mut Vec<Value>) {
        if self.finish_reason.is_some() {
            return;
        }
        let reason = finish_reason(stop_reason, self.next_tool_index > 0);
        self.finish_reason = Some(reason);
        self.open(out);
        out.push(self.chunk(json!({}), Some(reason)));
    }

    fn chunk(&self, delta: Value, finish_reason: Option<&str>) -> Value {
        let choice = json!({
            "index": 0,
            "delta": delta,
            "logprobs": null,
            "finish_reason": finish_reason,
        });
        self.envelope(vec![choice], Value::Null)
    }

    fn usage_chunk(&self) -> Value {
        self.envelope(Vec::new(), self.usage.to_openai_json())
    }

    fn envelope(&self, choices: Vec<Value>, usage: Value) -> Value {
        let mut chunk = Map::new();
        chunk.insert("id".into(), self.request_id.as_str().into());
        chunk.insert("object".into(), "chat.completion.chunk".into());
        chunk.insert("created".into(), self.created.into());
        chunk.insert("model".into(), self.model_name.as_str().into());
        chunk.insert("choices".into(), Value::Array(choices));
        if self.include_usage {
            chunk.insert("usage".into(), usage);
        }
        Value::Object(chunk)
    }
}

fn block_index(data: &Value) -> Result<u64, StreamError> {
    data.get("index")
        .and_then(Value::as_u64)
        .ok_or_else(|| StreamError::Malformed {
            reason: "content block event without an index".to_owned(),
        })
}
