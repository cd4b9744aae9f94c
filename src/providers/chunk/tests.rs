use super::*;
use proptest::prelude::*;
use serde_json::json;
use serde_json::value::RawValue;

fn parsed(text: &str) -> Chunk {
    Chunk::parse(text.to_owned()).expect("a valid chunk")
}

/// The event's data, checked to be one `data:` line ended by a blank line.
fn data(frame: &Bytes) -> String {
    let text = std::str::from_utf8(frame).expect("utf-8");
    let body = text
        .strip_prefix("data: ")
        .and_then(|t| t.strip_suffix("\n\n"))
        .unwrap_or_else(|| panic!("not one SSE data event: {text:?}"));
    assert!(!body.contains('\n'), "{text:?}");
    body.to_owned()
}

/// What the tree path makes of the same edit: the reference.
fn by_tree(text: &str, id: &str, model: &str, drop_usage: bool) -> Value {
    let mut v: Value = serde_json::from_str(text).unwrap();
    let o = v.as_object_mut().unwrap();
    if drop_usage {
        o.remove("usage");
    }
    o.insert("id".into(), json!(id));
    o.insert("model".into(), json!(model));
    v
}

const OPENAI: &str = r#"{"id":"chatcmpl-up","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o-2024","system_fingerprint":"fp_1","choices":[{"index":0,"delta":{"content":"h\u00e9 \"q\""},"logprobs":null,"finish_reason":null}],"usage":null}"#;

#[test]
fn framing_replaces_id_and_model_in_place_and_keeps_every_other_byte() {
    let c = parsed(OPENAI);
    let out = data(&c.framed(&Label::new("req-\"1\"", "fast"), false));
    assert_eq!(
        out,
        OPENAI
            .replace(r#""id":"chatcmpl-up""#, r#""id":"req-\"1\"""#)
            .replace(r#""model":"gpt-4o-2024""#, r#""model":"fast""#)
    );
    let cut = data(&c.framed(&Label::new("r", "m"), true));
    assert_eq!(
        cut,
        OPENAI
            .replace(r#""id":"chatcmpl-up""#, r#""id":"r""#)
            .replace(r#""model":"gpt-4o-2024""#, r#""model":"m""#)
            .replace(r#","usage":null"#, "")
    );
    assert_eq!(
        c.choices(),
        [Choice {
            index: 0,
            finished: false,
            tool_call: false,
            content: Some("hé \"q\"".into()),
        }]
    );
    assert!(c.usage().is_none());
    assert!(!c.has_no_choices());
}

#[test]
fn usage_is_read_and_cut_wherever_it_stands() {
    let texts = [
        r#"{"usage":{"prompt_tokens":9,"completion_tokens":4},"id":"a","model":"b","choices":[]}"#,
        r#"{ "usage" : { "prompt_tokens" : 9, "completion_tokens" : 4 } , "id":"a","model":"b","choices":[] }"#,
        r#"{"id":"a","usage":{"prompt_tokens":9,"completion_tokens":4},"model":"b","choices":[]}"#,
        r#"{"id":"a","model":"b","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":4}}"#,
        r#"{"id":"a","model":"b","usage":{"prompt_tokens":9,"completion_tokens":4}}"#,
    ];
    for text in texts {
        let c = parsed(text);
        let u = c.usage().expect("usage");
        assert_eq!((u.prompt_tokens, u.completion_tokens), (9, 4), "{text}");
        assert!(c.layout.is_some(), "{text}");
        for drop in [true, false] {
            let out: Value =
                serde_json::from_str(&data(&c.framed(&Label::new("id-1", "m-1"), drop))).unwrap();
            assert_eq!(
                out,
                by_tree(text, "id-1", "m-1", drop),
                "{text} drop={drop}"
            );
        }
    }
    assert!(parsed(texts[0]).has_no_choices());
    assert!(!parsed(texts[4]).has_no_choices());
}

#[test]
fn layouts_it_cannot_splice_go_through_a_tree_with_the_same_result() {
    let texts = [
        r#"{"choices":[{"delta":{"content":"x"}}]}"#,
        r#"{"id":"a","choices":[]}"#,
        r#"{"id":"a","model":"b","id":"c","choices":[]}"#,
        r#"{"id":"a","model":"b","usage":null,"usage":{"prompt_tokens":2}}"#,
        r#"{"usage":{"prompt_tokens":2},"choices":[]}"#,
        "{\"id\":\"a\",\n\"model\":\"b\",\r\n\"choices\":[]}",
    ];
    for text in texts {
        let c = parsed(text);
        for drop in [true, false] {
            let out: Value =
                serde_json::from_str(&data(&c.framed(&Label::new("i", "m"), drop))).unwrap();
            assert_eq!(out, by_tree(text, "i", "m", drop), "{text} drop={drop}");
        }
    }
    // The last of repeated members counts, as in a tree.
    assert_eq!(parsed(texts[3]).usage().map(|u| u.prompt_tokens), Some(2));
    // Line breaks became spaces, so this one still splices.
    assert!(parsed(texts[5]).layout.is_some());
}

#[test]
fn the_one_pass_read_takes_openai_chunks_and_declines_other_shapes() {
    assert!(read::typed(OPENAI).is_some());
    for other in [
        r#"{"id":"a","model":"b","id":"c","choices":[]}"#,
        r#"{"id":"a","model":"b","choices":[7]}"#,
        r#"{"id":"a","model":"b","choices":[{"delta":"x"}]}"#,
        r#"{"id":"a","model":"b","choices":[{"delta":{"content":1}}]}"#,
        r#"{"id":"a","model":"b","choices":{}}"#,
        "[]",
    ] {
        assert!(read::typed(other).is_none(), "{other}");
    }
    // A name written with escapes is still `usage`, but is not cut in place.
    let escaped = r#"{"id":"a","model":"b","choices":[],"us\u0061ge":{"prompt_tokens":3}}"#;
    let c = parsed(escaped);
    assert_eq!(c.usage().map(|u| u.prompt_tokens), Some(3));
    assert!(c.layout.is_none());
    let out: Value = serde_json::from_str(&data(&c.framed(&Label::new("i", "m"), true))).unwrap();
    assert_eq!(out, by_tree(escaped, "i", "m", true));
}

#[test]
fn choices_are_read_as_a_tree_lookup_would() {
    let c = parsed(
        r#"{"id":"a","model":"b","choices":[
            {"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null},
            {"index":1,"delta":{"tool_calls":[{"index":0}]},"finish_reason":"tool_calls"},
            {"index":"2","delta":{"content":null,"tool_calls":null,"function_call":{"name":"f"}}},
            {"delta":"text","finish_reason":"stop"},
            7,
            {"index":3,"delta":{"content":"a"},"delta":{"content":"b"},"index":0},
            {"delta":{"content":"x","content":"y\n"}}
        ]}"#,
    );
    let want = [
        Choice {
            content: Some(String::new()),
            ..Choice::default()
        },
        Choice {
            index: 1,
            finished: true,
            tool_call: true,
            content: None,
        },
        Choice {
            tool_call: true,
            ..Choice::default()
        },
        Choice {
            finished: true,
            ..Choice::default()
        },
        Choice::default(),
        Choice {
            content: Some("b".into()),
            ..Choice::default()
        },
        Choice {
            content: Some("y\n".into()),
            ..Choice::default()
        },
    ];
    assert_eq!(c.choices(), want);
    assert!(parsed(r#"{"choices":{}}"#).choices().is_empty());
    assert!(!parsed(r#"{"choices":{}}"#).has_no_choices());
}

#[test]
fn what_is_not_a_chunk_is_refused_and_an_upstream_error_is_reported() {
    for text in [
        "",
        "not json",
        "[]",
        "3",
        r#"{"a":1,}"#,
        r#"{"a":1} {"b":2}"#,
    ] {
        assert!(
            matches!(Chunk::parse(text.into()), Err(BadChunk::Invalid(_))),
            "{text:?}"
        );
    }
    assert_eq!(
        Chunk::parse(r#"{"error":{"message":"overloaded","type":"server_error"}}"#.into()).err(),
        Some(BadChunk::Reported("overloaded".into()))
    );
    assert_eq!(
        Chunk::parse(r#"{"choices":[],"error":null}"#.into()).err(),
        Some(BadChunk::Reported(
            "upstream reported an error mid-stream".into()
        ))
    );
}

#[test]
fn a_built_chunk_round_trips() {
    let v = json!({"id": "x", "model": "m", "choices": [{"index": 0, "delta": {"content": "hi"}}],
                   "usage": {"prompt_tokens": 4, "completion_tokens": 1}});
    let c = Chunk::from_value(&v).unwrap();
    assert_eq!(c.to_value(), v);
    assert_eq!(c.usage().map(|u| u.completion_tokens), Some(1));
    assert_eq!(c.choices()[0].content.as_deref(), Some("hi"));
}

/// One member of a generated chunk, as text.
fn member() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(r#""id":"up""#.to_owned()),
        Just(r#""model":"gpt""#.to_owned()),
        Just(r#""usage":null"#.to_owned()),
        Just(r#""usage":{"prompt_tokens":5,"completion_tokens":1}"#.to_owned()),
        Just(r#""choices":[]"#.to_owned()),
        Just(
            r#""choices":[{"index":0,"delta":{"content":"a}b,\"c"},"finish_reason":null}]"#
                .to_owned()
        ),
        Just(r#""created":1"#.to_owned()),
        Just(r#""x":{"id":"inner","usage":[1,{"model":2}]}"#.to_owned()),
    ]
}

proptest! {
    /// Whatever the members, their order, repeats and spacing, splicing
    /// gives what editing a tree gives.
    #[test]
    fn framing_agrees_with_editing_a_tree(
        members in proptest::collection::vec((member(), " {0,2}", "[ \n]{0,2}"), 0..7),
        drop in any::<bool>(),
    ) {
        let body: Vec<String> = members.iter().map(|(m, a, b)| format!("{a}{m}{b}")).collect();
        let text = format!(" {{{}}} ", body.join(","));
        let c = parsed(&text);
        let out: Value = serde_json::from_str(&data(&c.framed(&Label::new("req-9", "route"), drop))).unwrap();
        prop_assert_eq!(out, by_tree(&text, "req-9", "route", drop));
        // Whichever reader took it, the other reads the same.
        if let Some(one_pass) = read::typed(&text) {
            prop_assert_eq!(one_pass, read::lenient(&text).unwrap());
        }
    }
}

/// One element of a generated `choices` array, as text.
fn choice() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just(
            r#"{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}"#
        ),
        Just(r#"{"index":0,"delta":{"content":"caf\u00e9"},"finish_reason":null}"#),
        Just(r#"{"index":2,"delta":{},"finish_reason":"stop"}"#),
        Just(r#"{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{"}}]}}"#),
        Just(r#"{"delta":{"function_call":null,"content":null}}"#),
        Just(r#"{"index":1,"delta":{"content":"a"},"delta":{"content":"b"}}"#),
        Just(r#"{"index":"1","delta":{"content":7}}"#),
        Just(r#"{"delta":[]}"#),
        Just("null"),
    ]
}

proptest! {
    /// The one-pass typed read of `choices` and the lenient element-by-element
    /// read agree on every array, whichever of them ends up reading it.
    #[test]
    fn the_typed_read_of_choices_agrees_with_the_lenient_one(
        picked in proptest::collection::vec(choice(), 0..5),
    ) {
        let text = format!("[{}]", picked.join(","));
        let raw: &RawValue = serde_json::from_str(&text).unwrap();
        let lenient: Vec<Choice> = serde_json::from_str::<Vec<&RawValue>>(&text)
            .unwrap()
            .into_iter()
            .map(read::lenient_choice)
            .collect();
        prop_assert_eq!(read::choices(raw), Some(lenient));
    }
}
