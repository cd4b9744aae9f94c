use serde_json::{json, Value};

use super::json_fixture;
use crate::providers::anthropic::{from_anthropic_response, TranslateError, JSON_TOOL_NAME};
use crate::providers::usage::Usage;

fn translate(body: &Value) -> (Value, Usage) {
    from_anthropic_response(body, "claude-router", "chatcmpl-req-1", 1_700_000_000).unwrap()
}

#[test]
fn text_response() {
    let body = json_fixture(include_str!("fixtures/response_text.json"));
    let (completion, usage) = translate(&body);
    assert_eq!(
        completion,
        json!({
            "id": "chatcmpl-req-1",
            "object": "chat.completion",
            "created": 1_700_000_000,
            "model": "claude-router",
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": "Hi! My name is Claude.", "refusal": null},
                "logprobs": null,
                "finish_reason": "stop",
            }],
            "usage": {
                "prompt_tokens": 2095,
                "completion_tokens": 503,
                "total_tokens": 2598,
                "prompt_tokens_details": {"cached_tokens": 0},
            },
        })
    );
    assert_eq!(
        usage,
        Usage {
            prompt_tokens: 2095,
            completion_tokens: 503,
            counted_locally: false
        }
    );
}

#[test]
fn tool_use_response() {
    let body = json_fixture(include_str!("fixtures/response_tool_use.json"));
    let (completion, usage) = translate(&body);
    let choice = &completion["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(
        choice["message"]["content"],
        "I'll check the current weather in San Francisco for you."
    );
    let calls = choice["message"]["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["id"], "toolu_01A09q90qw90lq917835lq9");
    assert_eq!(calls[0]["type"], "function");
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    let args: Value =
        serde_json::from_str(calls[0]["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(
        args,
        json!({"location": "San Francisco, CA", "unit": "celsius"})
    );
    assert_eq!(usage.total(), 472 + 89);
}

#[test]
fn tool_only_response_has_null_content() {
    let body = json!({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude",
        "content": [
            {"type": "tool_use", "id": "toolu_a", "name": "a", "input": {}},
            {"type": "tool_use", "id": "toolu_b", "name": "b", "input": {"x": [1, 2]}},
        ],
        "stop_reason": "tool_use", "stop_sequence": null,
        "usage": {"input_tokens": 5, "output_tokens": 7},
    });
    let (completion, _) = translate(&body);
    let message = &completion["choices"][0]["message"];
    assert_eq!(message["content"], Value::Null);
    assert_eq!(message["tool_calls"][0]["function"]["arguments"], "{}");
    assert_eq!(
        message["tool_calls"][1]["function"]["arguments"],
        "{\"x\":[1,2]}"
    );
}

#[test]
fn stop_reason_mapping() {
    let cases = [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
        // tool_use without any client-visible tool call is a plain stop.
        ("tool_use", "stop"),
    ];
    for (stop_reason, finish_reason) in cases {
        let body = json!({
            "type": "message", "role": "assistant",
            "content": [{"type": "text", "text": "x"}],
            "stop_reason": stop_reason, "usage": {"input_tokens": 1, "output_tokens": 1},
        });
        let (completion, _) = translate(&body);
        assert_eq!(
            completion["choices"][0]["finish_reason"], finish_reason,
            "{stop_reason}"
        );
    }
}

#[test]
fn cached_input_counts_as_prompt_tokens() {
    let body = json!({
        "type": "message", "role": "assistant",
        "content": [{"type": "text", "text": "ok"}],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 10, "cache_creation_input_tokens": 200, "cache_read_input_tokens": 1000, "output_tokens": 3},
    });
    let (completion, usage) = translate(&body);
    assert_eq!(usage.prompt_tokens, 1210);
    assert_eq!(usage.completion_tokens, 3);
    assert_eq!(completion["usage"]["total_tokens"], 1213);
    assert_eq!(
        completion["usage"]["prompt_tokens_details"]["cached_tokens"],
        1000
    );
}

#[test]
fn json_tool_becomes_content_and_thinking_is_skipped() {
    let body = json!({
        "type": "message", "role": "assistant",
        "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "sig"},
            {"type": "tool_use", "id": "toolu_j", "name": JSON_TOOL_NAME, "input": {"colors": ["red", "green", "blue"]}},
        ],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 1, "output_tokens": 1},
    });
    let (completion, _) = translate(&body);
    let choice = &completion["choices"][0];
    assert_eq!(choice["finish_reason"], "stop");
    assert!(choice["message"].get("tool_calls").is_none());
    let content: Value =
        serde_json::from_str(choice["message"]["content"].as_str().unwrap()).unwrap();
    assert_eq!(content, json!({"colors": ["red", "green", "blue"]}));
}

#[test]
fn malformed_or_error_bodies_are_upstream_faults() {
    let bodies = [
        json!("just a string"),
        json!({"type": "message", "role": "assistant"}),
        json!({"type": "error", "error": {"type": "api_error", "message": "Internal server error"}}),
        json!({"type": "message", "content": [{"type": "text"}]}),
    ];
    for body in bodies {
        let err = from_anthropic_response(&body, "m", "r", 0).unwrap_err();
        assert!(
            matches!(err, TranslateError::InvalidResponse { .. }),
            "{body}"
        );
        assert!(!err.is_client_error());
    }
}
