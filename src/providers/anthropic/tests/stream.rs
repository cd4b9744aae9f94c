use serde_json::{json, Value};

use crate::providers::anthropic::{StreamError, StreamTranslator, JSON_TOOL_NAME};
use crate::providers::error_kind::ErrorKind;
use crate::providers::sse::{SseEvent, SseParser};
use crate::providers::usage::Usage;

const TEXT_STREAM: &str = include_str!("fixtures/stream_text.sse");
const TOOL_STREAM: &str = include_str!("fixtures/stream_tool_use.sse");
const TWO_TOOLS_STREAM: &str = include_str!("fixtures/stream_thinking_two_tools.sse");

/// The same stream cut and re-terminated in every awkward way we can think
/// of; all must translate identically.
fn variants(stream: &str) -> Vec<(String, Vec<Vec<u8>>)> {
    let lf = stream.as_bytes().to_vec();
    let crlf = stream.replace('\n', "\r\n").into_bytes();
    let cr = stream.replace('\n', "\r").into_bytes();
    let mut out = vec![
        ("whole".to_owned(), vec![lf.clone()]),
        (
            "bytewise".to_owned(),
            lf.chunks(1).map(<[u8]>::to_vec).collect(),
        ),
        (
            "crlf bytewise".to_owned(),
            crlf.chunks(1).map(<[u8]>::to_vec).collect(),
        ),
        (
            "cr bytewise".to_owned(),
            cr.chunks(1).map(<[u8]>::to_vec).collect(),
        ),
    ];
    for size in [2, 3, 7, 13, 64, 1000] {
        out.push((
            format!("lf/{size}"),
            lf.chunks(size).map(<[u8]>::to_vec).collect(),
        ));
        out.push((
            format!("crlf/{size}"),
            crlf.chunks(size).map(<[u8]>::to_vec).collect(),
        ));
    }
    out
}

fn run(chunks: &[Vec<u8>], include_usage: bool) -> (Vec<Value>, StreamTranslator) {
    let mut parser = SseParser::new();
    let mut translator = StreamTranslator::new(
        "chatcmpl-abc",
        "claude-router",
        1_700_000_000,
        include_usage,
    );
    let mut out = Vec::new();
    for chunk in chunks {
        parser.push(chunk).unwrap();
        for event in parser.drain() {
            out.extend(translator.on_event(&event).unwrap());
        }
    }
    assert_eq!(parser.finish(), None, "fixture must end with a blank line");
    (out, translator)
}

#[derive(Debug, Default, PartialEq)]
struct Assembled {
    role_chunks: usize,
    first_is_role: bool,
    content: String,
    /// (id, name, arguments) in OpenAI tool index order.
    tool_calls: Vec<(String, String, String)>,
    finish_reasons: Vec<String>,
    usage: Option<Value>,
}

/// Reassembles chunks the way an OpenAI client library does, checking the
/// envelope of every chunk on the way.
fn assemble(chunks: &[Value], include_usage: bool) -> Assembled {
    let mut a = Assembled::default();
    for (i, chunk) in chunks.iter().enumerate() {
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["id"], "chatcmpl-abc");
        assert_eq!(chunk["model"], "claude-router");
        assert_eq!(chunk["created"], 1_700_000_000);
        assert_eq!(
            chunk.get("usage").is_some(),
            include_usage,
            "chunk {i}: {chunk}"
        );
        let choices = chunk["choices"].as_array().unwrap();
        if choices.is_empty() {
            assert_eq!(i, chunks.len() - 1, "usage chunk must be last");
            a.usage = Some(chunk["usage"].clone());
            continue;
        }
        assert!(chunk["usage"].is_null());
        assert_eq!(choices.len(), 1);
        assert_eq!(choices[0]["index"], 0);
        let delta = &choices[0]["delta"];
        if delta.get("role").is_some() {
            assert_eq!(delta["role"], "assistant");
            a.role_chunks += 1;
            a.first_is_role |= i == 0;
        }
        if let Some(text) = delta.get("content").and_then(Value::as_str) {
            a.content.push_str(text);
        }
        for call in delta
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let index = call["index"].as_u64().unwrap() as usize;
            if let Some(id) = call.get("id") {
                assert_eq!(
                    index,
                    a.tool_calls.len(),
                    "tool calls must open in index order"
                );
                assert_eq!(call["type"], "function");
                a.tool_calls.push((
                    id.as_str().unwrap().to_owned(),
                    call["function"]["name"].as_str().unwrap().to_owned(),
                    call["function"]["arguments"].as_str().unwrap().to_owned(),
                ));
            } else {
                assert!(call["function"].get("name").is_none());
                let args = call["function"]["arguments"].as_str().unwrap();
                a.tool_calls[index].2.push_str(args);
            }
        }
        if let Some(reason) = choices[0]["finish_reason"].as_str() {
            a.finish_reasons.push(reason.to_owned());
        }
    }
    a
}

#[test]
fn text_stream_in_every_split() {
    let mut reference: Option<Vec<Value>> = None;
    for (name, chunks) in variants(TEXT_STREAM) {
        let (out, translator) = run(&chunks, true);
        let a = assemble(&out, true);
        assert_eq!(a.content, "Hello!", "{name}");
        assert_eq!(a.role_chunks, 1, "{name}");
        assert!(a.first_is_role, "{name}");
        assert!(a.tool_calls.is_empty(), "{name}");
        assert_eq!(a.finish_reasons, ["stop"], "{name}");
        assert_eq!(
            a.usage,
            Some(
                json!({"prompt_tokens": 25, "completion_tokens": 15, "total_tokens": 40,
                        "prompt_tokens_details": {"cached_tokens": 0}})
            ),
            "{name}"
        );
        assert!(translator.is_finished());
        assert_eq!(
            translator.usage(),
            Usage {
                prompt_tokens: 25,
                completion_tokens: 15,
                counted_locally: false
            }
        );
        // Chunking must not change what the client receives.
        match &reference {
            None => reference = Some(out),
            Some(expected) => assert_eq!(&out, expected, "{name}"),
        }
    }
}

#[test]
fn text_stream_exact_chunks_without_usage() {
    let (out, _) = run(&[TEXT_STREAM.as_bytes().to_vec()], false);
    let deltas: Vec<(Value, Value)> = out
        .iter()
        .map(|c| {
            (
                c["choices"][0]["delta"].clone(),
                c["choices"][0]["finish_reason"].clone(),
            )
        })
        .collect();
    assert_eq!(
        deltas,
        vec![
            (
                json!({"role": "assistant", "content": "", "refusal": null}),
                Value::Null
            ),
            (json!({"content": "Hello"}), Value::Null),
            (json!({"content": "!"}), Value::Null),
            (json!({}), json!("stop")),
        ]
    );
}

#[test]
fn tool_use_stream_in_every_split() {
    for (name, chunks) in variants(TOOL_STREAM) {
        let (out, translator) = run(&chunks, true);
        let a = assemble(&out, true);
        assert_eq!(
            a.content, "Okay, let's check the weather for San Francisco, CA:",
            "{name}"
        );
        assert_eq!(a.tool_calls.len(), 1, "{name}");
        let (id, function, arguments) = &a.tool_calls[0];
        assert_eq!(id, "toolu_01T1x1fJ34qAmk2tNTrN7Up6");
        assert_eq!(function, "get_weather");
        let args: Value = serde_json::from_str(arguments).unwrap();
        assert_eq!(
            args,
            json!({"location": "San Francisco, CA", "unit": "fahrenheit"})
        );
        assert_eq!(a.finish_reasons, ["tool_calls"], "{name}");
        assert_eq!(a.usage.as_ref().unwrap()["total_tokens"], 472 + 89);
        assert_eq!(translator.usage().completion_tokens, 89);
        assert_eq!(translator.finish_reason(), Some("tool_calls"));
    }
}

#[test]
fn tool_index_counts_tool_blocks_only_and_thinking_is_dropped() {
    for (name, chunks) in variants(TWO_TOOLS_STREAM) {
        let (out, translator) = run(&chunks, false);
        let a = assemble(&out, false);
        // Anthropic blocks 1 and 2 are OpenAI tool calls 0 and 1; block 0 is
        // thinking, which must not leak into content.
        assert_eq!(a.content, "", "{name}");
        let ids: Vec<&str> = a.tool_calls.iter().map(|t| t.0.as_str()).collect();
        assert_eq!(ids, ["toolu_01Boston", "toolu_01Tokyo"], "{name}");
        assert_eq!(a.tool_calls[0].2, "{\"location\": \"Boston, MA\"}");
        assert_eq!(a.tool_calls[1].2, "{\"location\": \"Tōkyō, 日本\"}");
        assert_eq!(a.finish_reasons, ["tool_calls"]);
        assert_eq!(a.usage, None);
        // 10 uncached + 200 cache writes + 1000 cache reads.
        assert_eq!(translator.usage().prompt_tokens, 1210);
        assert_eq!(translator.usage().completion_tokens, 120);
    }
}

fn event(data: Value) -> SseEvent {
    SseEvent {
        event: data["type"].as_str().map(str::to_owned),
        data: data.to_string(),
        id: None,
    }
}

#[test]
fn error_event_is_an_upstream_error() {
    let mut t = StreamTranslator::new("r", "m", 0, false);
    t.on_event(&event(json!({"type": "message_start", "message": {"usage": {"input_tokens": 3, "output_tokens": 1}}})))
        .unwrap();
    let err = t
        .on_event(&event(json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})))
        .unwrap_err();
    assert_eq!(
        err,
        StreamError::Upstream {
            kind: ErrorKind::Overloaded,
            message: "Overloaded".into()
        }
    );
    assert!(err.is_retryable());
    assert!(!t.is_finished());
}

#[test]
fn malformed_data_is_an_error_and_unknown_events_are_ignored() {
    let mut t = StreamTranslator::new("r", "m", 0, false);
    let bad = SseEvent {
        event: Some("content_block_delta".into()),
        data: "{not json".into(),
        id: None,
    };
    assert!(matches!(
        t.on_event(&bad),
        Err(StreamError::Malformed { .. })
    ));
    let unknown = t
        .on_event(&event(json!({"type": "brand_new_event", "x": 1})))
        .unwrap();
    assert!(unknown.is_empty());
    let ping = t.on_event(&event(json!({"type": "ping"}))).unwrap();
    assert!(ping.is_empty());
    let no_index = t.on_event(&event(
        json!({"type": "content_block_start", "content_block": {"type": "text", "text": ""}}),
    ));
    assert!(matches!(no_index, Err(StreamError::Malformed { .. })));
}

#[test]
fn missing_stop_reason_still_finishes_once() {
    let mut t = StreamTranslator::new("r", "m", 0, true);
    let mut out = Vec::new();
    for data in [
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": "Hi"}}),
        json!({"type": "message_delta", "delta": {"stop_reason": null}, "usage": {"output_tokens": 2}}),
        json!({"type": "message_stop"}),
    ] {
        out.extend(t.on_event(&event(data)).unwrap());
    }
    let a = assemble_loose(&out);
    assert_eq!(a.0, "Hi");
    assert_eq!(a.1, ["stop"]);
    // Role chunk first even though message_start never came.
    assert_eq!(out[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(out.last().unwrap()["choices"]
        .as_array()
        .unwrap()
        .is_empty());
    assert!(t.is_finished());
}

/// Content and finish reasons only, for hand-built streams whose envelope
/// ids differ from the fixtures'.
fn assemble_loose(chunks: &[Value]) -> (String, Vec<String>) {
    let mut content = String::new();
    let mut reasons = Vec::new();
    for chunk in chunks {
        if let Some(choice) = chunk["choices"].get(0) {
            if let Some(text) = choice["delta"]["content"].as_str() {
                content.push_str(text);
            }
            if let Some(reason) = choice["finish_reason"].as_str() {
                reasons.push(reason.to_owned());
            }
        }
    }
    (content, reasons)
}

#[test]
fn json_tool_streams_as_content() {
    let mut t = StreamTranslator::new("r", "m", 0, false);
    let mut out = Vec::new();
    for data in [
        json!({"type": "message_start", "message": {"usage": {"input_tokens": 9, "output_tokens": 1}}}),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": "toolu_x", "name": JSON_TOOL_NAME, "input": {}}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": "{\"colors\": [\"red\""}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": ", \"blue\"]}"}}),
        json!({"type": "content_block_stop", "index": 0}),
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 12}}),
        json!({"type": "message_stop"}),
    ] {
        out.extend(t.on_event(&event(data)).unwrap());
    }
    assert!(out
        .iter()
        .all(|c| c["choices"][0]["delta"].get("tool_calls").is_none()));
    let (content, reasons) = assemble_loose(&out);
    let parsed: Value = serde_json::from_str(&content).unwrap();
    assert_eq!(parsed, json!({"colors": ["red", "blue"]}));
    assert_eq!(reasons, ["stop"]);
}

#[test]
fn max_tokens_stop_maps_to_length() {
    let mut t = StreamTranslator::new("r", "m", 0, false);
    let out = t
        .on_event(&event(json!({"type": "message_delta", "delta": {"stop_reason": "max_tokens"}, "usage": {"output_tokens": 4096}})))
        .unwrap();
    assert_eq!(out.last().unwrap()["choices"][0]["finish_reason"], "length");
    assert_eq!(t.usage().completion_tokens, 4096);
}
