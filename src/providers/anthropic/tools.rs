//! Tool definitions, `tool_choice` and the `response_format` emulation for
//! the Anthropic request translation.
//!
//! Invariants:
//! - Every emitted tool has `name` and an object `input_schema` (Anthropic
//!   requires one; OpenAI lets parameterless tools omit it).
//! - [`JSON_TOOL_NAME`] is only ever added by [`apply_response_format`], and
//!   only when the client sent no tools of its own, so a tool call with that
//!   name in a response is always ours.
//! - A `tool_choice` that demands a call is never sent without tools.

use serde_json::{json, Map, Value};

use super::content::text_block;
use super::error::TranslateError;
use super::JSON_TOOL_NAME;

const JSON_OBJECT_INSTRUCTION: &str = "Respond with a single valid JSON object and nothing else: \
no Markdown code fences and no text before or after it.";

const JSON_TOOL_DESCRIPTION: &str = "Give your final answer by calling this tool. \
Its input is the complete response to the user.";

/// Applies `response_format` (see the `request` module docs for the policy):
/// may add a system block, or the JSON tool plus a forcing `tool_choice`.
pub(super) fn apply_response_format(
    format: &Value,
    tools: &mut Vec<Value>,
    tool_choice: &mut Option<Value>,
    system: &mut Vec<Value>,
) -> Result<(), TranslateError> {
    match format.get("type").and_then(Value::as_str) {
        Some("text") => {}
        Some("json_object") => system.push(text_block(JSON_OBJECT_INSTRUCTION, None)),
        Some("json_schema") => {
            let schema = format
                .get("json_schema")
                .and_then(|s| s.get("schema"))
                .cloned()
                .unwrap_or_else(|| json!({"type": "object"}));
            let object_root = schema.get("type").and_then(Value::as_str) == Some("object");
            if tools.is_empty() && object_root {
                tools.push(json!({
                    "name": JSON_TOOL_NAME,
                    "description": JSON_TOOL_DESCRIPTION,
                    "input_schema": schema,
                }));
                *tool_choice = Some(json!({"type": "tool", "name": JSON_TOOL_NAME}));
            } else {
                let text = format!(
                    "{JSON_OBJECT_INSTRUCTION} It must conform to this JSON Schema:\n{schema}"
                );
                system.push(text_block(&text, None));
            }
        }
        _ => {
            return Err(TranslateError::unsupported(
                "response_format",
                "only `text`, `json_object` and `json_schema` are supported",
            ))
        }
    }
    Ok(())
}

/// OpenAI `tools` -> Anthropic `tools`. Only function tools exist in both.
pub(super) fn translate_tools(tools: &Value) -> Result<Vec<Value>, TranslateError> {
    let tools = tools
        .as_array()
        .ok_or_else(|| TranslateError::invalid("tools", "must be an array"))?;
    let mut out = Vec::with_capacity(tools.len());
    for (i, tool) in tools.iter().enumerate() {
        let at = format!("tools[{i}]");
        let kind = tool
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("function");
        if kind != "function" {
            return Err(TranslateError::unsupported(
                &at,
                format!("tool type `{kind}`; only `function` tools are supported"),
            ));
        }
        let function = tool
            .get("function")
            .and_then(Value::as_object)
            .ok_or_else(|| TranslateError::invalid(&at, "missing `function`"))?;
        let name = function
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| TranslateError::invalid(format!("{at}.function.name"), "required"))?;
        if name == JSON_TOOL_NAME {
            return Err(TranslateError::invalid(
                format!("{at}.function.name"),
                format!("`{JSON_TOOL_NAME}` is reserved by the router"),
            ));
        }
        let mut out_tool = Map::new();
        out_tool.insert("name".into(), name.into());
        if let Some(description) = function.get("description").and_then(Value::as_str) {
            out_tool.insert("description".into(), description.into());
        }
        // `strict` has no Anthropic equivalent and is dropped.
        let schema = function
            .get("parameters")
            .filter(|p| !p.is_null())
            .cloned()
            .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
        out_tool.insert("input_schema".into(), schema);
        out.push(Value::Object(out_tool));
    }
    Ok(out)
}

/// OpenAI `tool_choice` -> Anthropic `tool_choice`; `None` when it should be
/// omitted.
pub(super) fn translate_tool_choice(
    choice: &Value,
    has_tools: bool,
) -> Result<Option<Value>, TranslateError> {
    let translated = match choice {
        Value::String(mode) => match mode.as_str() {
            "auto" => json!({"type": "auto"}),
            "none" => json!({"type": "none"}),
            "required" => json!({"type": "any"}),
            other => {
                return Err(TranslateError::invalid(
                    "tool_choice",
                    format!("unknown mode `{other}`"),
                ))
            }
        },
        Value::Object(obj) if obj.get("type").and_then(Value::as_str) == Some("function") => {
            let name = obj
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(|| TranslateError::invalid("tool_choice.function.name", "required"))?;
            json!({"type": "tool", "name": name})
        }
        _ => {
            return Err(TranslateError::unsupported(
                "tool_choice",
                "only `auto`, `none`, `required` and `{\"type\":\"function\"}` are supported",
            ))
        }
    };
    if has_tools {
        return Ok(Some(translated));
    }
    // Without tools, "auto"/"none" mean nothing and are dropped; demanding a
    // tool call that cannot happen is a client error.
    match translated.get("type").and_then(Value::as_str) {
        Some("auto" | "none") => Ok(None),
        _ => Err(TranslateError::invalid(
            "tool_choice",
            "requires a tool call but no `tools` were given",
        )),
    }
}
