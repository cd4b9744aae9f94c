use super::*;
use proptest::prelude::*;
use serde_json::json;

use crate::providers::ClientBody;

/// What an upstream is sent for `text` (read as the gateway reads it: the
/// tree less `switchboard`), from the text when `with_text`, and the body.
fn sent_bytes(text: &str, stream: bool, with_text: bool) -> Vec<u8> {
    let mut tree: Map<String, Value> = serde_json::from_str(text).unwrap();
    tree.remove("switchboard");
    let req = UpstreamRequest {
        body: ClientBody {
            tree: &tree,
            text: with_text.then_some(text.as_bytes()),
        },
        upstream_model: "up-model",
        stream,
    };
    body(&req).unwrap()
}

fn sent(text: &str, stream: bool, with_text: bool) -> Value {
    serde_json::from_slice(&sent_bytes(text, stream, with_text)).unwrap()
}

/// Sent from the tree alone: the reference.
fn by_tree(text: &str, stream: bool) -> Value {
    sent(text, stream, false)
}

#[test]
fn the_upstream_body_is_the_clients_with_model_replaced() {
    let body = json!({"model": "route", "messages": [{"role": "user", "content": "x"}],
                      "temperature": 0.2, "stream_options": {"include_usage": false}});
    let mut want = body.clone();
    want["model"] = json!("up-model");
    for with_text in [false, true] {
        assert_eq!(sent(&body.to_string(), false, with_text), want);
        assert_eq!(
            sent(r#"{"messages": []}"#, false, with_text),
            json!({"messages": [], "model": "up-model"})
        );
    }
}

#[test]
fn a_stream_asks_for_usage_keeping_the_clients_other_options() {
    let with =
        r#"{"model": "r", "stream": true, "stream_options": {"x": 1, "include_usage": false}}"#;
    for with_text in [false, true] {
        assert_eq!(
            sent(with, true, with_text),
            json!({"model": "up-model", "stream": true,
                   "stream_options": {"x": 1, "include_usage": true}})
        );
        assert_eq!(
            sent(r#"{"stream": true}"#, true, with_text),
            json!({"stream": true, "model": "up-model", "stream_options": {"include_usage": true}})
        );
        // Not an object: left for the upstream to reject, as before.
        assert_eq!(
            sent(r#"{"stream_options": 3}"#, true, with_text)["stream_options"],
            json!(3)
        );
    }
}

#[test]
fn the_clients_own_bytes_pass_but_for_model_and_the_routers_member() {
    let text = r#" { "model" : "route", "seed": 123456789012345678901234567890, "temperature":0.70,
        "switchboard": {"tier": "free"}, "messages":[{"role":"user","content":"caf\u00e9 \"}\""}] } "#;
    let out = String::from_utf8(sent_bytes(text, false, true)).unwrap();
    assert_eq!(
        out,
        r#"{"model" : "up-model","seed": 123456789012345678901234567890,"temperature":0.70,"messages":[{"role":"user","content":"caf\u00e9 \"}\""}]}"#
    );
    let streamed = String::from_utf8(sent_bytes(
        r#"{"switchboard":{},"stream":true}"#,
        true,
        true,
    ))
    .unwrap();
    assert_eq!(
        streamed,
        r#"{"stream":true,"model":"up-model","stream_options":{"include_usage":true}}"#
    );
    assert_eq!(
        String::from_utf8(sent_bytes("{}", false, true)).unwrap(),
        r#"{"model":"up-model"}"#
    );
}

#[test]
fn a_repeated_or_escaped_name_is_sent_as_the_tree_reads_it() {
    for text in [
        r#"{"model":"a","messages":[1],"messages":[2]}"#,
        r#"{"mod\u0065l":"gpt-secret","messages":[]}"#,
        r#"{"model":"a","switchboard":{},"switchboard":{}}"#,
    ] {
        assert_eq!(
            from_text(text.as_bytes(), tree_len(text), "up-model", false),
            None,
            "{text}"
        );
        assert_eq!(sent(text, false, true), by_tree(text, false), "{text}");
    }
    // The escaped name reads as `model`, so it is replaced, not passed on.
    assert_eq!(
        sent(r#"{"mod\u0065l":"gpt-secret"}"#, false, true),
        json!({"model": "up-model"})
    );
}

fn tree_len(text: &str) -> usize {
    let mut tree: Map<String, Value> = serde_json::from_str(text).unwrap();
    tree.remove("switchboard");
    tree.len()
}

#[test]
fn the_member_scan_finds_each_boundary() {
    let text = br#"{"a":[1,{"b":"]}"}],"c" :"x\"y", "d":-1.5e3 ,"e":{}}"#;
    let names: Vec<&[u8]> = top_level(text)
        .unwrap()
        .iter()
        .map(|m| &text[m.name.clone()])
        .collect();
    assert_eq!(names, [&b"a"[..], b"c", b"d", b"e"]);
    let members = top_level(text).unwrap();
    assert_eq!(&text[members[2].whole.clone()], br#""d":-1.5e3"#);
    assert_eq!(
        &text[members[1].value_start..members[1].whole.end],
        br#""x\"y""#
    );
    for bad in [
        &b"[]"[..],
        b"{\"a\":1} x",
        b"{\"a\" 1}",
        b"{\"a\":1,}",
        b"{\"a\":",
    ] {
        assert_eq!(top_level(bad), None, "{:?}", String::from_utf8_lossy(bad));
    }
}

/// One generated top-level member, as text.
fn member() -> impl Strategy<Value = String> {
    let name = prop_oneof![
        Just("model"),
        Just("switchboard"),
        Just("stream_options"),
        Just("messages"),
        Just("temperature"),
        Just("x\\\"y"),
        Just("caf\\u00e9"),
    ];
    let value = prop_oneof![
        Just(r#""route""#),
        Just("0.70"),
        Just("-12e-3"),
        Just("true"),
        Just("null"),
        Just(r#"{"include_usage":false,"n":[1,{"}":"]"}]}"#),
        Just(r#"[{"role":"user","content":"a\"},{b"}]"#),
        Just(r#""\\""#),
        Just("[]"),
    ];
    (name, value, " {0,2}", "[ \n]{0,2}")
        .prop_map(|(n, v, a, b)| format!("{a}\"{n}\"{b}:{a}{v}{b}"))
}

proptest! {
    /// Whatever the members, their order, repeats and spacing, the upstream
    /// reads the same body from the text as from the tree.
    #[test]
    fn the_text_says_what_the_tree_says(
        members in proptest::collection::vec(member(), 0..7),
        stream in any::<bool>(),
    ) {
        let text = format!(" {{{}}}\n", members.join(","));
        prop_assert_eq!(sent(&text, stream, true), by_tree(&text, stream));
    }
}
