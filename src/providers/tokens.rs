//! Local token counts for when an upstream reports no usage. Uses tiktoken's
//! `o200k_base` (current OpenAI models); for other families it is an
//! estimate, and the record says the count was made locally.

use serde_json::Value;

use super::usage::Usage;

/// Loads the tokenizer tables; call once at start so the first request
/// without usage does not pay for it.
pub fn warm_up() {
    let _ = tiktoken_rs::o200k_base_singleton();
}

pub fn count_text(text: &str) -> u32 {
    let n = tiktoken_rs::o200k_base_singleton()
        .encode_ordinary(text)
        .len();
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Prompt tokens of an OpenAI `messages` array, with OpenAI's documented
/// overhead of 3 tokens per message and 3 for the reply's priming.
pub fn count_messages(messages: Option<&Value>) -> u32 {
    let Some(Value::Array(messages)) = messages else {
        return 0;
    };
    let mut total: u32 = 3;
    for m in messages {
        total = total.saturating_add(3);
        match m.get("content") {
            Some(Value::String(s)) => total = total.saturating_add(count_text(s)),
            Some(Value::Array(parts)) => {
                for p in parts {
                    if let Some(Value::String(t)) = p.get("text") {
                        total = total.saturating_add(count_text(t));
                    }
                }
            }
            _ => {}
        }
        if let Some(calls) = m.get("tool_calls") {
            total = total.saturating_add(count_text(&calls.to_string()));
        }
    }
    total
}

/// Usage estimated from the request and the answer's text.
pub fn estimate(messages: Option<&Value>, completion_text: &str) -> Usage {
    Usage {
        prompt_tokens: count_messages(messages),
        completion_tokens: count_text(completion_text),
        counted_locally: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_positive_and_grow_with_text() {
        let short = count_text("hello");
        let long = count_text("hello there, how are you doing on this fine morning?");
        assert!(short >= 1);
        assert!(long > short);
        let msgs = serde_json::json!([{"role": "user", "content": "hello"}]);
        assert_eq!(count_messages(Some(&msgs)), 3 + 3 + short);
    }
}
