//! Translation of individual OpenAI message contents into Anthropic content
//! blocks: text, images, files, tool calls and tool results.
//!
//! Owns the block-level mapping used by `request.rs`; it knows nothing about
//! turn ordering. Invariants:
//! - Never emits an empty text block (Anthropic rejects them); empty strings
//!   simply produce no block.
//! - Every emitted `tool_use.id` / `tool_result.tool_use_id` goes through
//!   [`sanitize_tool_id`], so the pair still matches after sanitising.
//! - Errors name the offending field with its JSON path
//!   (`messages[3].content[1].image_url`) so a 400 tells the client where.

use serde_json::{json, Map, Value};

use super::error::TranslateError;

/// Image media types Anthropic accepts in base64 sources.
const IMAGE_MEDIA_TYPES: [&str; 4] = ["image/jpeg", "image/png", "image/gif", "image/webp"];

/// Document media types Anthropic accepts in base64 sources.
const DOCUMENT_MEDIA_TYPES: [&str; 1] = ["application/pdf"];

pub(super) fn text_block(text: &str, part: Option<&Map<String, Value>>) -> Value {
    let mut block = Map::new();
    block.insert("type".into(), "text".into());
    block.insert("text".into(), text.into());
    copy_cache_control(part, &mut block);
    Value::Object(block)
}

/// Prompt-caching clients written against OpenAI-compatible Anthropic
/// gateways put Anthropic's `cache_control` on content parts; keeping it
/// preserves their cache hits and costs nothing otherwise.
fn copy_cache_control(part: Option<&Map<String, Value>>, block: &mut Map<String, Value>) {
    if let Some(cache) = part.and_then(|p| p.get("cache_control")) {
        if !cache.is_null() {
            block.insert("cache_control".into(), cache.clone());
        }
    }
}

/// Content of a system/developer/tool message: a string or text parts only.
pub(super) fn text_only_blocks(
    content: Option<&Value>,
    field: &str,
) -> Result<Vec<Value>, TranslateError> {
    match content {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(text)) => Ok(non_empty_text(text, None)),
        Some(Value::Array(parts)) => {
            let mut blocks = Vec::new();
            for (j, part) in parts.iter().enumerate() {
                let part_field = format!("{field}[{j}]");
                let obj = part
                    .as_object()
                    .ok_or_else(|| TranslateError::invalid(&part_field, "must be an object"))?;
                match obj.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        blocks.extend(non_empty_text(part_text(obj, &part_field)?, Some(obj)))
                    }
                    Some(other) => {
                        return Err(TranslateError::unsupported(
                            &part_field,
                            format!(
                                "content part type `{other}` is not allowed in this message role"
                            ),
                        ))
                    }
                    None => return Err(TranslateError::invalid(&part_field, "missing `type`")),
                }
            }
            Ok(blocks)
        }
        Some(_) => Err(TranslateError::invalid(
            field,
            "must be a string or an array of content parts",
        )),
    }
}

/// Content of a user message: text, images and files.
pub(super) fn user_blocks(
    content: Option<&Value>,
    field: &str,
) -> Result<Vec<Value>, TranslateError> {
    let parts = match content {
        Some(Value::Array(parts)) => parts,
        other => return text_only_blocks(other, field),
    };
    let mut blocks = Vec::new();
    for (j, part) in parts.iter().enumerate() {
        let part_field = format!("{field}[{j}]");
        let obj = part
            .as_object()
            .ok_or_else(|| TranslateError::invalid(&part_field, "must be an object"))?;
        match obj.get("type").and_then(Value::as_str) {
            Some("text") => blocks.extend(non_empty_text(part_text(obj, &part_field)?, Some(obj))),
            Some("image_url") => blocks.push(image_block(obj, &format!("{part_field}.image_url"))?),
            Some("file") => blocks.push(file_block(obj, &format!("{part_field}.file"))?),
            Some("input_audio") => {
                return Err(TranslateError::unsupported(
                    &part_field,
                    "Anthropic models do not accept audio input",
                ))
            }
            Some(other) => {
                return Err(TranslateError::unsupported(
                    &part_field,
                    format!("unknown content part type `{other}`"),
                ))
            }
            None => return Err(TranslateError::invalid(&part_field, "missing `type`")),
        }
    }
    Ok(blocks)
}

/// Content of an assistant message: text and refusal parts become text.
pub(super) fn assistant_text_blocks(
    content: Option<&Value>,
    field: &str,
) -> Result<Vec<Value>, TranslateError> {
    let parts = match content {
        Some(Value::Array(parts)) => parts,
        other => return text_only_blocks(other, field),
    };
    let mut blocks = Vec::new();
    for (j, part) in parts.iter().enumerate() {
        let part_field = format!("{field}[{j}]");
        let obj = part
            .as_object()
            .ok_or_else(|| TranslateError::invalid(&part_field, "must be an object"))?;
        let text = match obj.get("type").and_then(Value::as_str) {
            Some("text") => part_text(obj, &part_field)?,
            Some("refusal") => obj.get("refusal").and_then(Value::as_str).ok_or_else(|| {
                TranslateError::invalid(&part_field, "refusal part needs `refusal`")
            })?,
            _ => {
                return Err(TranslateError::unsupported(
                    &part_field,
                    "assistant content parts must be `text` or `refusal`",
                ))
            }
        };
        blocks.extend(non_empty_text(text, Some(obj)));
    }
    Ok(blocks)
}

fn part_text<'a>(part: &'a Map<String, Value>, field: &str) -> Result<&'a str, TranslateError> {
    part.get("text")
        .and_then(Value::as_str)
        .ok_or_else(|| TranslateError::invalid(field, "text part needs a string `text`"))
}

fn non_empty_text(text: &str, part: Option<&Map<String, Value>>) -> Vec<Value> {
    if text.is_empty() {
        Vec::new()
    } else {
        vec![text_block(text, part)]
    }
}

/// `image_url` part -> image block. Data URLs become base64 sources, http(s)
/// URLs become url sources (Anthropic fetches them). `detail` has no
/// Anthropic equivalent and is dropped.
fn image_block(part: &Map<String, Value>, field: &str) -> Result<Value, TranslateError> {
    // Some clients send `"image_url": "https://..."` instead of an object.
    let url = match part.get("image_url") {
        Some(Value::String(url)) => url.as_str(),
        Some(Value::Object(obj)) => obj
            .get("url")
            .and_then(Value::as_str)
            .ok_or_else(|| TranslateError::invalid(field, "missing `url`"))?,
        _ => return Err(TranslateError::invalid(field, "missing `image_url`")),
    };
    let source = if let Some((media_type, data)) = parse_base64_data_url(url) {
        if !IMAGE_MEDIA_TYPES.contains(&media_type.as_str()) {
            return Err(TranslateError::unsupported(
                field,
                format!("image type `{media_type}`; Anthropic accepts jpeg, png, gif and webp"),
            ));
        }
        json!({"type": "base64", "media_type": media_type, "data": data})
    } else if url.starts_with("https://") || url.starts_with("http://") {
        json!({"type": "url", "url": url})
    } else {
        return Err(TranslateError::invalid(
            field,
            "must be an http(s) URL or a base64 data: URL",
        ));
    };
    let mut block = Map::new();
    block.insert("type".into(), "image".into());
    block.insert("source".into(), source);
    copy_cache_control(Some(part), &mut block);
    Ok(Value::Object(block))
}

/// `file` part with inline `file_data` (a PDF data URL) -> document block.
/// `file_id` refers to OpenAI's file store, which Anthropic cannot read.
fn file_block(part: &Map<String, Value>, field: &str) -> Result<Value, TranslateError> {
    let file = part
        .get("file")
        .and_then(Value::as_object)
        .ok_or_else(|| TranslateError::invalid(field, "missing `file` object"))?;
    let Some(data_url) = file.get("file_data").and_then(Value::as_str) else {
        return Err(TranslateError::unsupported(
            field,
            "only inline `file_data` is supported; OpenAI `file_id`s are not visible to Anthropic",
        ));
    };
    let (media_type, data) = parse_base64_data_url(data_url)
        .ok_or_else(|| TranslateError::invalid(field, "`file_data` must be a base64 data: URL"))?;
    if !DOCUMENT_MEDIA_TYPES.contains(&media_type.as_str()) {
        return Err(TranslateError::unsupported(
            field,
            format!("file type `{media_type}`; only application/pdf is supported"),
        ));
    }
    let mut block = Map::new();
    block.insert("type".into(), "document".into());
    block.insert(
        "source".into(),
        json!({"type": "base64", "media_type": media_type, "data": data}),
    );
    if let Some(name) = file.get("filename").and_then(Value::as_str) {
        block.insert("title".into(), name.into());
    }
    copy_cache_control(Some(part), &mut block);
    Ok(Value::Object(block))
}

/// Splits `data:<media-type>[;params];base64,<data>` into the lower-cased
/// media type and the payload. `None` for anything else, including data URLs
/// that are not base64 (Anthropic only takes base64).
pub(super) fn parse_base64_data_url(url: &str) -> Option<(String, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (header, data) = rest.split_once(',')?;
    let mut params = header.split(';');
    let media_type = params.next()?.trim().to_ascii_lowercase();
    let is_base64 = params.any(|p| p.trim().eq_ignore_ascii_case("base64"));
    (is_base64 && !media_type.is_empty()).then_some((media_type, data))
}

/// Assistant `tool_calls[k]` -> `tool_use` block.
pub(super) fn tool_use_block(call: &Value, field: &str) -> Result<Value, TranslateError> {
    let call = call
        .as_object()
        .ok_or_else(|| TranslateError::invalid(field, "must be an object"))?;
    if let Some(kind) = call.get("type").and_then(Value::as_str) {
        if kind != "function" {
            return Err(TranslateError::unsupported(
                field,
                format!("tool call type `{kind}`; only `function` is supported"),
            ));
        }
    }
    let id = call
        .get("id")
        .and_then(Value::as_str)
        .ok_or_else(|| TranslateError::invalid(field, "missing `id`"))?;
    let function = call
        .get("function")
        .and_then(Value::as_object)
        .ok_or_else(|| TranslateError::invalid(field, "missing `function`"))?;
    let name = function
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| TranslateError::invalid(field, "missing `function.name`"))?;
    let input = match function.get("arguments") {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(Value::String(args)) if args.trim().is_empty() => Value::Object(Map::new()),
        Some(Value::String(args)) => serde_json::from_str(args).map_err(|e| {
            TranslateError::invalid(
                format!("{field}.function.arguments"),
                format!("not valid JSON: {e}"),
            )
        })?,
        // Tolerate clients that send the arguments already parsed.
        Some(other) => other.clone(),
    };
    if !input.is_object() {
        return Err(TranslateError::invalid(
            format!("{field}.function.arguments"),
            "must encode a JSON object",
        ));
    }
    Ok(json!({
        "type": "tool_use",
        "id": sanitize_tool_id(id),
        "name": name,
        "input": input,
    }))
}

/// `tool` role message -> `tool_result` block.
pub(super) fn tool_result_block(
    message: &Map<String, Value>,
    field: &str,
) -> Result<Value, TranslateError> {
    let id = message
        .get("tool_call_id")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            TranslateError::invalid(
                format!("{field}.tool_call_id"),
                "required for tool messages",
            )
        })?;
    let mut block = Map::new();
    block.insert("type".into(), "tool_result".into());
    block.insert("tool_use_id".into(), sanitize_tool_id(id).into());
    match message.get("content") {
        // A plain string stays a string: it is the common case and what
        // Anthropic's own examples use.
        Some(Value::String(text)) if !text.is_empty() => {
            block.insert("content".into(), text.as_str().into());
        }
        content => {
            let blocks = text_only_blocks(content, &format!("{field}.content"))?;
            if !blocks.is_empty() {
                block.insert("content".into(), Value::Array(blocks));
            }
        }
    }
    Ok(Value::Object(block))
}

/// Anthropic requires tool ids to match `^[a-zA-Z0-9_-]+$`; ids minted by
/// other providers may not. Replacing other characters is deterministic, so a
/// `tool_use` and its `tool_result` still pair up.
pub(super) fn sanitize_tool_id(id: &str) -> String {
    let cleaned: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if cleaned.is_empty() {
        "_".to_owned()
    } else {
        cleaned
    }
}
