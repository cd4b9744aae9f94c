//! OpenAI Chat Completions request body -> Anthropic Messages request body.
//!
//! Owns the request-level mapping: which OpenAI fields become which Anthropic
//! fields, which are dropped as harmless, and which are refused.
//!
//! Invariants of the produced body:
//! - `model` is the upstream model and `max_tokens` is always present (it is
//!   required by Anthropic): `max_completion_tokens`, else `max_tokens`, else
//!   the configured default.
//! - System and developer messages, wherever they appear, are hoisted into the
//!   top-level `system` array in their original order.
//! - `messages` strictly alternates user/assistant: consecutive same-role
//!   turns are merged (tool results become user turns first), and inside a
//!   user turn `tool_result` blocks come before any other block, as
//!   Anthropic requires.
//! - A field that would change what the client gets back if silently ignored
//!   (`n > 1`, `logprobs`, `logit_bias`, audio, ...) is refused with
//!   [`TranslateError::Unsupported`]; fields that only tune sampling or
//!   billing on OpenAI's side (`seed`, penalties, `stream_options`, `store`,
//!   `service_tier`, ...) and unknown fields are dropped. `top_p` is dropped
//!   when `temperature` is also set, because recent Claude models refuse
//!   both together.
//!
//! `response_format` is best effort, since Anthropic has no JSON mode:
//! - `json_object` adds a system instruction to answer with one JSON object.
//! - `json_schema` forces a tool named [`JSON_TOOL_NAME`](super::JSON_TOOL_NAME) whose input schema
//!   is the requested schema; the response and stream translators turn that
//!   tool's input back into plain message content, so the client sees JSON
//!   text and `finish_reason: "stop"`. When the client also sends tools (the
//!   forced tool would shadow them) or the schema's root is not an object
//!   (tool inputs must be objects), it falls back to a system instruction
//!   that embeds the schema.

use serde_json::{json, Map, Value};

use super::content::{
    assistant_text_blocks, text_only_blocks, tool_result_block, tool_use_block, user_blocks,
};
use super::error::TranslateError;
use super::tools::{apply_response_format, translate_tool_choice, translate_tools};

/// Translates an OpenAI chat request (router-only fields already removed).
pub fn to_anthropic_request(
    openai: &Map<String, Value>,
    upstream_model: &str,
    default_max_tokens: u32,
) -> Result<Value, TranslateError> {
    reject_unsupported(openai)?;

    let (mut system, messages) = translate_messages(openai.get("messages"))?;
    let mut out = Map::new();
    out.insert("model".into(), upstream_model.into());
    out.insert("max_tokens".into(), max_tokens(openai, default_max_tokens)?);

    let mut tools = match field(openai, "tools") {
        Some(tools) => translate_tools(tools)?,
        None => Vec::new(),
    };
    let mut tool_choice = match field(openai, "tool_choice") {
        Some(choice) => translate_tool_choice(choice, !tools.is_empty())?,
        None => None,
    };

    if let Some(format) = field(openai, "response_format") {
        apply_response_format(format, &mut tools, &mut tool_choice, &mut system)?;
    }

    // OpenAI's parallel_tool_calls=false is Anthropic's
    // disable_parallel_tool_use, which lives on tool_choice ("none" has no
    // such flag and needs none).
    if field(openai, "parallel_tool_calls") == Some(&Value::Bool(false)) && !tools.is_empty() {
        let choice = tool_choice.get_or_insert_with(|| json!({"type": "auto"}));
        if let Some(obj) = choice.as_object_mut() {
            if obj.get("type").and_then(Value::as_str) != Some("none") {
                obj.insert("disable_parallel_tool_use".into(), true.into());
            }
        }
    }

    if !system.is_empty() {
        out.insert("system".into(), Value::Array(system));
    }
    out.insert("messages".into(), Value::Array(messages));
    if !tools.is_empty() {
        out.insert("tools".into(), Value::Array(tools));
    }
    if let Some(choice) = tool_choice {
        out.insert("tool_choice".into(), choice);
    }

    if let Some(temperature) = field(openai, "temperature") {
        let t = temperature
            .as_f64()
            .ok_or_else(|| TranslateError::invalid("temperature", "must be a number"))?;
        // OpenAI allows 0..=2, Anthropic 0..=1. Clamping keeps the common
        // values (0, 0.7, 1) meaning the same; scaling would not.
        out.insert("temperature".into(), json!(t.clamp(0.0, 1.0)));
    }
    // Recent Claude models reject requests that set both; both vendors advise
    // tuning only one, so temperature (the more common knob) wins.
    let top_p = field(openai, "top_p").filter(|_| field(openai, "temperature").is_none());
    if let Some(top_p) = top_p {
        let p = top_p
            .as_f64()
            .ok_or_else(|| TranslateError::invalid("top_p", "must be a number"))?;
        out.insert("top_p".into(), json!(p));
    }
    // Not OpenAI, but a widespread extension (vLLM, OpenRouter) that
    // Anthropic supports natively.
    if let Some(top_k) = field(openai, "top_k") {
        let k = top_k
            .as_u64()
            .ok_or_else(|| TranslateError::invalid("top_k", "must be a non-negative integer"))?;
        out.insert("top_k".into(), k.into());
    }
    let stop = stop_sequences(field(openai, "stop"))?;
    if !stop.is_empty() {
        out.insert("stop_sequences".into(), stop.into());
    }
    if let Some(stream) = field(openai, "stream") {
        let stream = stream
            .as_bool()
            .ok_or_else(|| TranslateError::invalid("stream", "must be a boolean"))?;
        out.insert("stream".into(), stream.into());
    }
    // `safety_identifier` is OpenAI's successor to `user`; both identify the
    // end user for abuse detection, which is what metadata.user_id is for.
    let user = field(openai, "user").or_else(|| field(openai, "safety_identifier"));
    if let Some(user) = user {
        let user = user
            .as_str()
            .ok_or_else(|| TranslateError::invalid("user", "must be a string"))?;
        if !user.is_empty() {
            out.insert("metadata".into(), json!({ "user_id": user }));
        }
    }
    Ok(Value::Object(out))
}

/// A field's value, treating an explicit `null` as absent (OpenAI SDKs send
/// nulls for unset optional fields).
fn field<'a>(openai: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    openai.get(name).filter(|v| !v.is_null())
}

fn reject_unsupported(openai: &Map<String, Value>) -> Result<(), TranslateError> {
    if let Some(n) = field(openai, "n") {
        if n.as_u64() != Some(1) {
            return Err(TranslateError::unsupported(
                "n",
                "Anthropic returns exactly one choice per request; n must be 1",
            ));
        }
    }
    if field(openai, "logprobs") == Some(&Value::Bool(true)) {
        return Err(TranslateError::unsupported(
            "logprobs",
            "Anthropic does not return token log probabilities",
        ));
    }
    if field(openai, "top_logprobs").is_some_and(|v| v.as_u64() != Some(0)) {
        return Err(TranslateError::unsupported(
            "top_logprobs",
            "Anthropic does not return token log probabilities",
        ));
    }
    if field(openai, "logit_bias").is_some_and(|v| v.as_object().is_none_or(|m| !m.is_empty())) {
        return Err(TranslateError::unsupported(
            "logit_bias",
            "Anthropic has no token-level logit bias",
        ));
    }
    if field(openai, "functions").is_some() || field(openai, "function_call").is_some() {
        return Err(TranslateError::unsupported(
            "functions",
            "legacy function calling is not translated; use `tools` and `tool_choice`",
        ));
    }
    if field(openai, "audio").is_some() {
        return Err(TranslateError::unsupported(
            "audio",
            "Anthropic models cannot produce audio",
        ));
    }
    if let Some(modalities) = field(openai, "modalities") {
        let text_only = modalities
            .as_array()
            .is_some_and(|m| m.iter().all(|x| x.as_str() == Some("text")));
        if !text_only {
            return Err(TranslateError::unsupported(
                "modalities",
                "Anthropic models only produce text",
            ));
        }
    }
    if field(openai, "web_search_options").is_some() {
        return Err(TranslateError::unsupported(
            "web_search_options",
            "web search is not translated for Anthropic models",
        ));
    }
    Ok(())
}

fn max_tokens(openai: &Map<String, Value>, default: u32) -> Result<Value, TranslateError> {
    let (name, value) = match field(openai, "max_completion_tokens") {
        Some(v) => ("max_completion_tokens", v),
        None => match field(openai, "max_tokens") {
            Some(v) => ("max_tokens", v),
            None => return Ok(default.into()),
        },
    };
    match value.as_u64() {
        Some(n) if n >= 1 => Ok(n.into()),
        _ => Err(TranslateError::invalid(name, "must be a positive integer")),
    }
}

fn stop_sequences(stop: Option<&Value>) -> Result<Vec<Value>, TranslateError> {
    let list: Vec<&Value> = match stop {
        None => return Ok(Vec::new()),
        Some(Value::Array(items)) => items.iter().collect(),
        Some(single) => vec![single],
    };
    let mut out = Vec::new();
    for item in list {
        let s = item.as_str().ok_or_else(|| {
            TranslateError::invalid("stop", "must be a string or an array of strings")
        })?;
        // An empty stop string is meaningless and Anthropic rejects it.
        if !s.is_empty() {
            out.push(Value::from(s));
        }
    }
    Ok(out)
}

/// Returns the hoisted system blocks and the alternating Anthropic messages.
fn translate_messages(
    messages: Option<&Value>,
) -> Result<(Vec<Value>, Vec<Value>), TranslateError> {
    let messages = messages
        .and_then(Value::as_array)
        .ok_or_else(|| TranslateError::invalid("messages", "must be an array"))?;
    let mut system = Vec::new();
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for (i, message) in messages.iter().enumerate() {
        let at = format!("messages[{i}]");
        let message = message
            .as_object()
            .ok_or_else(|| TranslateError::invalid(&at, "must be an object"))?;
        let role = message
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| TranslateError::invalid(format!("{at}.role"), "required"))?;
        let content = message.get("content");
        let content_at = format!("{at}.content");
        match role {
            "system" | "developer" => system.extend(text_only_blocks(content, &content_at)?),
            "user" => push_turn(&mut turns, "user", user_blocks(content, &content_at)?),
            "assistant" => {
                if message.get("function_call").is_some_and(|f| !f.is_null()) {
                    return Err(TranslateError::unsupported(
                        format!("{at}.function_call"),
                        "legacy function calling is not translated; use `tool_calls`",
                    ));
                }
                let mut blocks = assistant_text_blocks(content, &content_at)?;
                if let Some(calls) = message.get("tool_calls").filter(|c| !c.is_null()) {
                    let calls = calls.as_array().ok_or_else(|| {
                        TranslateError::invalid(format!("{at}.tool_calls"), "must be an array")
                    })?;
                    for (k, call) in calls.iter().enumerate() {
                        blocks.push(tool_use_block(call, &format!("{at}.tool_calls[{k}]"))?);
                    }
                }
                push_turn(&mut turns, "assistant", blocks);
            }
            "tool" => push_turn(&mut turns, "user", vec![tool_result_block(message, &at)?]),
            "function" => {
                return Err(TranslateError::unsupported(
                    format!("{at}.role"),
                    "legacy `function` messages are not translated; use `tool` messages",
                ))
            }
            other => {
                return Err(TranslateError::invalid(
                    format!("{at}.role"),
                    format!("unknown role `{other}`"),
                ))
            }
        }
    }
    if turns.is_empty() {
        return Err(TranslateError::invalid(
            "messages",
            "must contain at least one non-empty user or assistant message",
        ));
    }
    let out = turns
        .into_iter()
        .map(|(role, mut blocks)| {
            if role == "user" {
                // Stable: tool results keep their order, as do the others.
                blocks
                    .sort_by_key(|b| b.get("type").and_then(Value::as_str) != Some("tool_result"));
            }
            json!({"role": role, "content": blocks})
        })
        .collect();
    Ok((system, out))
}

/// Appends a turn, merging it into the previous one when the role repeats.
/// Messages that produced no blocks (e.g. empty strings) are skipped, since
/// Anthropic rejects empty content and they carry nothing.
fn push_turn(turns: &mut Vec<(&'static str, Vec<Value>)>, role: &'static str, blocks: Vec<Value>) {
    if blocks.is_empty() {
        return;
    }
    match turns.last_mut() {
        Some((last_role, last_blocks)) if *last_role == role => last_blocks.extend(blocks),
        _ => turns.push((role, blocks)),
    }
}
