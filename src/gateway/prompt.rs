//! The OpenAI request body seen as a `PromptView` for the feature encoder:
//! borrowed text only, no copies of the prompt.

use serde_json::{Map, Value};

use crate::features::{MessageView, PromptView, Role};

pub fn prompt_view(body: &Map<String, Value>) -> PromptView<'_> {
    let mut view = PromptView::default();
    if let Some(Value::Array(messages)) = body.get("messages") {
        view.messages.reserve(messages.len());
        for m in messages {
            let role = match m.get("role").and_then(Value::as_str) {
                Some("system") | Some("developer") => Role::System,
                Some("user") => Role::User,
                Some("assistant") => Role::Assistant,
                Some("tool") | Some("function") => Role::Tool,
                _ => Role::Other,
            };
            let mut texts = Vec::new();
            match m.get("content") {
                Some(Value::String(s)) => texts.push(s.as_str()),
                Some(Value::Array(parts)) => {
                    for p in parts {
                        match p.get("type").and_then(Value::as_str) {
                            Some("image_url") | Some("input_image") => view.has_images = true,
                            _ => {
                                if let Some(Value::String(t)) = p.get("text") {
                                    texts.push(t.as_str());
                                }
                            }
                        }
                    }
                }
                _ => {}
            }
            view.messages.push(MessageView { role, texts });
        }
    }
    view.has_tools = body
        .get("tools")
        .and_then(Value::as_array)
        .is_some_and(|t| !t.is_empty());
    view.json_mode = matches!(
        body.get("response_format")
            .and_then(|f| f.get("type"))
            .and_then(Value::as_str),
        Some("json_object") | Some("json_schema")
    );
    view.max_tokens = body
        .get("max_completion_tokens")
        .or_else(|| body.get("max_tokens"))
        .and_then(Value::as_u64)
        .map(|n| u32::try_from(n).unwrap_or(u32::MAX));
    view
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_roles_texts_and_capabilities() {
        let body = json!({
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "what is"},
                    {"type": "image_url", "image_url": {"url": "x"}}]}],
            "tools": [{"type": "function"}],
            "response_format": {"type": "json_object"},
            "max_tokens": 100
        });
        let v = prompt_view(body.as_object().unwrap());
        assert_eq!(v.messages.len(), 2);
        assert_eq!(v.messages[0].role, Role::System);
        assert_eq!(v.messages[1].texts, vec!["what is"]);
        assert!(v.has_images && v.has_tools && v.json_mode);
        assert_eq!(v.max_tokens, Some(100));
    }
}
