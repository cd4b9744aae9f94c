use serde_json::{json, Value};

use super::{json_fixture, object};
use crate::providers::anthropic::{to_anthropic_request, TranslateError, JSON_TOOL_NAME};

const MODEL: &str = "claude-sonnet-4-5-20250929";

fn translate(body: Value) -> Result<Value, TranslateError> {
    to_anthropic_request(&object(body), MODEL, 1024)
}

fn user(text: &str) -> Value {
    json!({"role": "user", "content": text})
}

#[test]
fn full_conversation_matches_expected_anthropic_body() {
    let openai = json_fixture(include_str!("fixtures/openai_request.json"));
    let expected = json_fixture(include_str!("fixtures/anthropic_request_expected.json"));
    let actual = translate(openai).unwrap();
    assert_eq!(
        actual,
        expected,
        "actual:\n{}",
        serde_json::to_string_pretty(&actual).unwrap()
    );
}

#[test]
fn max_tokens_defaults_and_precedence() {
    let body = translate(json!({"messages": [user("hi")]})).unwrap();
    assert_eq!(body["max_tokens"], 1024);
    let body = translate(json!({"messages": [user("hi")], "max_tokens": 77})).unwrap();
    assert_eq!(body["max_tokens"], 77);
    let body = translate(json!({"messages": [user("hi")], "max_tokens": null})).unwrap();
    assert_eq!(body["max_tokens"], 1024);
    let err = translate(json!({"messages": [user("hi")], "max_tokens": 0})).unwrap_err();
    assert!(
        matches!(err, TranslateError::InvalidRequest { ref field, .. } if field == "max_tokens")
    );
}

#[test]
fn minimal_request_has_only_required_fields() {
    let body = translate(json!({"model": "x", "messages": [user("Hello")]})).unwrap();
    assert_eq!(
        body,
        json!({
            "model": MODEL,
            "max_tokens": 1024,
            "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}],
        })
    );
}

#[test]
fn unsupported_fields_are_refused_with_their_name() {
    let cases = [
        ("n", json!(2)),
        ("logprobs", json!(true)),
        ("top_logprobs", json!(3)),
        ("logit_bias", json!({"50256": -100})),
        ("functions", json!([{"name": "f"}])),
        ("audio", json!({"voice": "alloy", "format": "wav"})),
        ("modalities", json!(["text", "audio"])),
        ("web_search_options", json!({})),
    ];
    for (field, value) in cases {
        let mut body = json!({"messages": [user("hi")]});
        body[field] = value;
        match translate(body) {
            Err(err @ TranslateError::Unsupported { .. }) => {
                assert!(err.is_client_error());
                assert!(err.to_string().contains(field), "{err}");
            }
            other => panic!("{field}: expected Unsupported, got {other:?}"),
        }
    }
}

#[test]
fn harmless_fields_are_dropped() {
    let body = translate(json!({
        "messages": [user("hi")],
        "seed": 1, "presence_penalty": 1.0, "frequency_penalty": 1.0,
        "stream_options": {"include_usage": true}, "n": 1, "logprobs": false,
        "logit_bias": {}, "modalities": ["text"], "prediction": {"type": "content", "content": "x"},
        "some_future_field": true,
    }))
    .unwrap();
    // Sorted, so the test does not depend on serde_json's `preserve_order`.
    let mut keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["max_tokens", "messages", "model"]);
}

#[test]
fn tool_choice_mapping() {
    let tool = json!({"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}});
    let cases = [
        (json!("auto"), json!({"type": "auto"})),
        (json!("none"), json!({"type": "none"})),
        (json!("required"), json!({"type": "any"})),
        (
            json!({"type": "function", "function": {"name": "lookup"}}),
            json!({"type": "tool", "name": "lookup"}),
        ),
    ];
    for (choice, expected) in cases {
        let body = translate(
            json!({"messages": [user("hi")], "tools": [tool.clone()], "tool_choice": choice}),
        )
        .unwrap();
        assert_eq!(body["tool_choice"], expected);
    }
    // parallel_tool_calls=false does not decorate "none".
    let body = translate(json!({
        "messages": [user("hi")], "tools": [tool.clone()],
        "tool_choice": "none", "parallel_tool_calls": false,
    }))
    .unwrap();
    assert_eq!(body["tool_choice"], json!({"type": "none"}));
    // A tool without parameters gets an empty object schema.
    let body = translate(json!({"messages": [user("hi")], "tools": [{"type": "function", "function": {"name": "ping"}}]})).unwrap();
    assert_eq!(
        body["tools"][0]["input_schema"],
        json!({"type": "object", "properties": {}})
    );
}

#[test]
fn tool_choice_without_tools() {
    let body = translate(json!({"messages": [user("hi")], "tool_choice": "auto"})).unwrap();
    assert!(body.get("tool_choice").is_none());
    let err = translate(json!({"messages": [user("hi")], "tool_choice": "required"})).unwrap_err();
    assert!(matches!(err, TranslateError::InvalidRequest { .. }));
}

#[test]
fn stop_array_and_sampling() {
    let body = translate(json!({
        "messages": [user("hi")], "stop": ["END", "", "STOP"], "temperature": 0.3, "top_k": 40,
    }))
    .unwrap();
    assert_eq!(body["stop_sequences"], json!(["END", "STOP"]));
    assert_eq!(body["temperature"], json!(0.3));
    assert_eq!(body["top_k"], 40);
    let body = translate(json!({"messages": [user("hi")], "top_p": 0.5})).unwrap();
    assert_eq!(body["top_p"], json!(0.5));
    let err = translate(json!({"messages": [user("hi")], "stop": [1]})).unwrap_err();
    assert!(matches!(err, TranslateError::InvalidRequest { ref field, .. } if field == "stop"));
}

#[test]
fn consecutive_same_role_messages_are_merged() {
    let body = translate(json!({"messages": [
        user("one"),
        {"role": "user", "content": [{"type": "text", "text": "two"}]},
        {"role": "assistant", "content": "a"},
        {"role": "assistant", "content": [{"type": "refusal", "refusal": "no"}]},
        {"role": "user", "content": ""},
        user("three"),
    ]}))
    .unwrap();
    let messages = body["messages"].as_array().unwrap();
    let shape: Vec<(String, usize)> = messages
        .iter()
        .map(|m| {
            (
                m["role"].as_str().unwrap().to_owned(),
                m["content"].as_array().unwrap().len(),
            )
        })
        .collect();
    assert_eq!(
        shape,
        [
            ("user".into(), 2),
            ("assistant".into(), 2),
            ("user".into(), 1)
        ]
    );
    assert_eq!(messages[1]["content"][1]["text"], "no");
}

#[test]
fn tool_results_move_before_text_in_a_user_turn() {
    let body = translate(json!({"messages": [
        user("what is 2+2?"),
        {"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "calc", "arguments": ""}}]},
        user("(note: be quick)"),
        {"role": "tool", "tool_call_id": "call_1", "content": "4"},
    ]}))
    .unwrap();
    let last = &body["messages"][2]["content"];
    assert_eq!(last[0]["type"], "tool_result");
    assert_eq!(last[0]["tool_use_id"], "call_1");
    assert_eq!(last[1]["type"], "text");
    // Empty arguments mean an empty input object.
    assert_eq!(body["messages"][1]["content"][0]["input"], json!({}));
}

#[test]
fn invalid_tool_arguments_name_the_field() {
    let err = translate(json!({"messages": [
        user("hi"),
        {"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{not json"}}]},
    ]}))
    .unwrap_err();
    match err {
        TranslateError::InvalidRequest { field, .. } => {
            assert_eq!(field, "messages[1].tool_calls[0].function.arguments")
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn foreign_tool_ids_are_sanitized_consistently() {
    let body = translate(json!({"messages": [
        user("hi"),
        {"role": "assistant", "tool_calls": [{"id": "fc:1.a", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "fc:1.a", "content": "ok"},
    ]}))
    .unwrap();
    assert_eq!(body["messages"][1]["content"][0]["id"], "fc_1_a");
    assert_eq!(body["messages"][2]["content"][0]["tool_use_id"], "fc_1_a");
}

#[test]
fn images_files_and_audio() {
    let err = translate(json!({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/tiff;base64,AAAA"}},
    ]}]}))
    .unwrap_err();
    assert!(
        matches!(err, TranslateError::Unsupported { ref field, .. } if field == "messages[0].content[0].image_url")
    );

    let err = translate(json!({"messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
    ]}]}))
    .unwrap_err();
    assert!(matches!(err, TranslateError::Unsupported { .. }));

    let body = translate(json!({"messages": [{"role": "user", "content": [
        {"type": "file", "file": {"filename": "paper.pdf", "file_data": "data:application/pdf;base64,JVBERi0x"}},
        {"type": "image_url", "image_url": "data:image/JPEG;charset=x;base64,/9j/4AAQ"},
    ]}]}))
    .unwrap();
    assert_eq!(
        body["messages"][0]["content"],
        json!([
            {"type": "document", "title": "paper.pdf",
             "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"}},
            {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQ"}},
        ])
    );
}

#[test]
fn cache_control_on_parts_is_preserved() {
    let body = translate(json!({"messages": [
        {"role": "system", "content": [{"type": "text", "text": "long prompt", "cache_control": {"type": "ephemeral"}}]},
        user("hi"),
    ]}))
    .unwrap();
    assert_eq!(
        body["system"][0]["cache_control"],
        json!({"type": "ephemeral"})
    );
}

#[test]
fn json_object_adds_system_instruction() {
    let body = translate(
        json!({"messages": [user("list 3 colors")], "response_format": {"type": "json_object"}}),
    )
    .unwrap();
    let system = body["system"].as_array().unwrap();
    assert_eq!(system.len(), 1);
    assert!(system[0]["text"].as_str().unwrap().contains("JSON object"));
    assert!(body.get("tools").is_none());
}

#[test]
fn json_schema_forces_the_json_tool() {
    let schema = json!({"type": "object", "properties": {"colors": {"type": "array", "items": {"type": "string"}}}, "required": ["colors"]});
    let body = translate(json!({
        "messages": [user("list 3 colors")],
        "response_format": {"type": "json_schema", "json_schema": {"name": "colors", "strict": true, "schema": schema.clone()}},
    }))
    .unwrap();
    assert_eq!(body["tools"][0]["name"], JSON_TOOL_NAME);
    assert_eq!(body["tools"][0]["input_schema"], schema);
    assert_eq!(
        body["tool_choice"],
        json!({"type": "tool", "name": JSON_TOOL_NAME})
    );
    assert!(body.get("system").is_none());
}

#[test]
fn json_schema_with_client_tools_falls_back_to_instruction() {
    let body = translate(json!({
        "messages": [user("hi")],
        "tools": [{"type": "function", "function": {"name": "f"}}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "properties": {"answer": {"type": "string"}}}}},
    }))
    .unwrap();
    assert_eq!(body["tools"].as_array().unwrap().len(), 1);
    assert!(body["system"][0]["text"]
        .as_str()
        .unwrap()
        .contains("\"answer\""));
}

#[test]
fn reserved_tool_name_is_refused() {
    let err = translate(json!({"messages": [user("hi")], "tools": [{"type": "function", "function": {"name": JSON_TOOL_NAME}}]})).unwrap_err();
    assert!(matches!(err, TranslateError::InvalidRequest { .. }));
}

#[test]
fn malformed_messages() {
    assert!(translate(json!({})).is_err());
    let err =
        translate(json!({"messages": [{"role": "system", "content": "only system"}]})).unwrap_err();
    assert!(matches!(err, TranslateError::InvalidRequest { ref field, .. } if field == "messages"));
    let err = translate(json!({"messages": [{"role": "wizard", "content": "x"}]})).unwrap_err();
    assert!(
        matches!(err, TranslateError::InvalidRequest { ref field, .. } if field == "messages[0].role")
    );
    let err = translate(json!({"messages": [{"role": "tool", "content": "x"}]})).unwrap_err();
    assert!(
        matches!(err, TranslateError::InvalidRequest { ref field, .. } if field == "messages[0].tool_call_id")
    );
}
