//! What a simulated model says and how it is put on the wire: the prompt
//! taken from a request, the answer text and token counts (reproducing the
//! dataset's cost), and the Chat Completions JSON and SSE chunk shapes.

use serde_json::{json, Value};

use super::dataset::{prompt_tokens, tokens_for_cost, Dataset, ModelSpec};

/// Completion length for prompts the dataset does not know.
pub const GENERIC_COMPLETION_TOKENS: u64 = 48;

/// The text of the last user message (string content or text parts).
pub fn user_prompt(body: &Value) -> Option<String> {
    let messages = body.get("messages")?.as_array()?;
    let last = messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))?;
    match last.get("content")? {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => Some(
            parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        _ => None,
    }
}

/// What the simulated model answers: text and token counts.
pub struct Answer {
    pub text: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// The answer of the model `spec` to `prompt`: for a dataset prompt, token
/// counts that reproduce the dataset's cost; otherwise a generic length.
pub fn answer(dataset: &Dataset, spec: &ModelSpec, prompt: &str) -> Answer {
    let name = if spec.display.is_empty() {
        spec.short_name()
    } else {
        spec.display.as_str()
    };
    match dataset.find(prompt) {
        Some(row) => {
            let cost = row.arms.get(&spec.model_id).map_or(0.0, |a| a.cost);
            let (pt, ct) = tokens_for_cost(spec, prompt, cost);
            Answer {
                text: format!(
                    "{name} (simulated) answers this {} prompt.",
                    if row.source.is_empty() {
                        "dataset"
                    } else {
                        &row.source
                    }
                ),
                prompt_tokens: pt,
                completion_tokens: ct,
            }
        }
        None => Answer {
            text: format!("{name} (simulated) has no recorded answer for this prompt."),
            prompt_tokens: prompt_tokens(prompt),
            completion_tokens: GENERIC_COMPLETION_TOKENS,
        },
    }
}

impl Answer {
    /// The OpenAI `usage` object.
    pub fn usage(&self) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        })
    }
}

/// A whole `chat.completion` response.
pub fn completion_body(id: &str, created: i64, model: &str, a: &Answer) -> Value {
    json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": a.text},
            "logprobs": null,
            "finish_reason": "stop",
        }],
        "usage": a.usage(),
    })
}

/// The SSE events of one streamed answer, `data: [DONE]` included.
pub fn stream_events(
    id: &str,
    created: i64,
    model: &str,
    a: &Answer,
    include_usage: bool,
) -> Vec<String> {
    let chunk = |delta: Value, finish: Value| {
        json!({
            "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        })
    };
    let mut out = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    let words: Vec<&str> = a.text.split_inclusive(' ').collect();
    for piece in words.chunks(3) {
        out.push(chunk(json!({"content": piece.concat()}), Value::Null));
    }
    out.push(chunk(json!({}), json!("stop")));
    if include_usage {
        out.push(json!({
            "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [], "usage": a.usage(),
        }));
    }
    let mut events: Vec<String> = out.iter().map(|v| format!("data: {v}\n\n")).collect();
    events.push("data: [DONE]\n\n".to_owned());
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prompt_is_the_last_user_message_in_either_content_form() {
        let body = json!({"messages": [
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        ]});
        assert_eq!(user_prompt(&body).as_deref(), Some("a\nb"));
        assert_eq!(
            user_prompt(&json!({"messages": [{"role": "system", "content": "x"}]})),
            None
        );
    }

    #[test]
    fn stream_events_rebuild_the_text_and_end_with_done() {
        let a = Answer {
            text: "one two three four five".into(),
            prompt_tokens: 2,
            completion_tokens: 5,
        };
        let events = stream_events("id", 0, "m", &a, false);
        assert_eq!(events.last().map(String::as_str), Some("data: [DONE]\n\n"));
        let text: String = events[..events.len() - 1]
            .iter()
            .map(|e| serde_json::from_str::<Value>(e.trim_start_matches("data: ").trim()).unwrap())
            .filter_map(|v| {
                v["choices"][0]["delta"]["content"]
                    .as_str()
                    .map(str::to_owned)
            })
            .collect();
        assert_eq!(text, a.text);
        assert!(!events.iter().any(|e| e.contains("usage")));
        let with = stream_events("id", 0, "m", &a, true);
        assert!(with[with.len() - 2].contains("\"total_tokens\":7"));
    }
}
