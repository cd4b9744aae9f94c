//! SSE parser and encoder tests: line endings, chunk splits, limits, round trips.

// Tests may unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;

fn parse_all(parser: &mut SseParser, chunks: &[&[u8]]) -> Vec<SseEvent> {
    let mut events = Vec::new();
    for chunk in chunks {
        parser.push(chunk).unwrap();
        events.extend(parser.drain());
    }
    events
}

fn parse(input: &[u8]) -> Vec<SseEvent> {
    parse_all(&mut SseParser::new(), &[input])
}

fn parse_bytewise(input: &[u8]) -> Vec<SseEvent> {
    let mut parser = SseParser::new();
    let chunks: Vec<&[u8]> = input.chunks(1).collect();
    parse_all(&mut parser, &chunks)
}

fn data_event(data: &str) -> SseEvent {
    SseEvent {
        event: None,
        data: data.to_owned(),
        id: None,
    }
}

#[test]
fn parses_named_event_with_lf() {
    let events = parse(b"event: ping\ndata: {\"type\": \"ping\"}\n\n");
    assert_eq!(
        events,
        vec![SseEvent {
            event: Some("ping".into()),
            data: "{\"type\": \"ping\"}".into(),
            id: None,
        }]
    );
    assert_eq!(events[0].event_type(), "ping");
}

#[test]
fn all_three_line_endings_are_equivalent() {
    let lf = parse(b"event: a\ndata: 1\n\ndata: 2\n\n");
    let crlf = parse(b"event: a\r\ndata: 1\r\n\r\ndata: 2\r\n\r\n");
    let cr = parse(b"event: a\rdata: 1\r\rdata: 2\r\r");
    let mixed = parse(b"event: a\rdata: 1\r\n\ndata: 2\n\r");
    assert_eq!(lf.len(), 2);
    assert_eq!(lf[0].event.as_deref(), Some("a"));
    assert_eq!(lf[1], data_event("2"));
    assert_eq!(lf, crlf);
    assert_eq!(lf, cr);
    assert_eq!(lf, mixed);
}

#[test]
fn crlf_split_across_chunks_is_one_line_end() {
    // If the LF after a chunk-final CR were taken as an empty line, the event
    // would be dispatched early and "b" would land in a second event.
    let mut parser = SseParser::new();
    let events = parse_all(&mut parser, &[b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n"]);
    assert_eq!(events, vec![data_event("a\nb")]);
}

#[test]
fn utf8_split_inside_a_character_survives() {
    let input = "data: h\u{e9}llo \u{1F600} \u{4e16}\u{754c}\n\n".as_bytes();
    let events = parse_bytewise(input);
    assert_eq!(
        events,
        vec![data_event("h\u{e9}llo \u{1F600} \u{4e16}\u{754c}")]
    );
}

#[test]
fn invalid_utf8_is_replaced_not_fatal() {
    let events = parse(b"data: a\xFFb\n\n");
    assert_eq!(events, vec![data_event("a\u{FFFD}b")]);
}

#[test]
fn comments_are_ignored_and_do_not_dispatch() {
    let events = parse(b": keep-alive\n\n:another\ndata: x\n: inside\n\n");
    assert_eq!(events, vec![data_event("x")]);
}

#[test]
fn multi_line_data_is_joined_with_newlines() {
    let events = parse(b"data: first\ndata:second\ndata:  third\n\n");
    // Only one leading space is stripped.
    assert_eq!(events, vec![data_event("first\nsecond\n third")]);
}

#[test]
fn field_without_colon_has_empty_value() {
    // `data` alone appends an empty line; two of them give "\n".
    let events = parse(b"data\ndata\n\nevent\ndata: x\n\n");
    assert_eq!(events, vec![data_event("\n"), data_event("x")]);
}

#[test]
fn empty_data_line_dispatches_empty_event() {
    let events = parse(b"data:\n\n");
    assert_eq!(events, vec![data_event("")]);
}

#[test]
fn event_without_data_is_not_dispatched_and_name_is_reset() {
    let events = parse(b"event: lonely\n\ndata: after\n\n");
    assert_eq!(events, vec![data_event("after")]);
}

#[test]
fn leading_bom_is_stripped_even_when_split() {
    let mut parser = SseParser::new();
    let events = parse_all(&mut parser, &[b"\xEF", b"\xBB", b"\xBFdata: x\n\n"]);
    assert_eq!(events, vec![data_event("x")]);
}

#[test]
fn bom_is_only_stripped_at_stream_start() {
    let events = parse(b"data: a\n\n\xEF\xBB\xBFdata: b\n\n");
    // The second BOM is part of a field name, which makes it unknown.
    assert_eq!(events, vec![data_event("a")]);
}

#[test]
fn id_persists_and_can_be_reset() {
    let events = parse(b"id: 7\ndata: a\n\ndata: b\n\nid\ndata: c\n\nid: x\0y\ndata: d\n\n");
    let ids: Vec<Option<&str>> = events.iter().map(|e| e.id.as_deref()).collect();
    assert_eq!(ids, vec![Some("7"), Some("7"), None, None]);
}

#[test]
fn unknown_fields_and_retry_are_ignored() {
    let events = parse(b"retry: 1000\nfoo: bar\ndata: x\n\n");
    assert_eq!(events, vec![data_event("x")]);
}

#[test]
fn unterminated_event_is_only_returned_by_finish() {
    let mut parser = SseParser::new();
    parser.push(b"data: [DONE]").unwrap();
    assert_eq!(parser.next_event(), None);
    assert_eq!(parser.finish(), Some(data_event("[DONE]")));
    assert_eq!(parser.finish(), None);
}

#[test]
fn finish_after_clean_end_returns_nothing() {
    let mut parser = SseParser::new();
    parser.push(b"data: a\n\n").unwrap();
    assert_eq!(parser.finish(), None);
    assert_eq!(parser.next_event(), Some(data_event("a")));
}

#[test]
fn openai_style_stream_with_done() {
    let input = b"data: {\"id\":\"chatcmpl-1\",\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\ndata: [DONE]\n\n";
    let events = parse_bytewise(input);
    assert_eq!(events.len(), 2);
    assert!(events[0].data.starts_with("{\"id\":\"chatcmpl-1\""));
    assert_eq!(events[1], data_event("[DONE]"));
}

#[test]
fn oversized_event_errors_and_poisons() {
    let mut parser = SseParser::with_max_event_bytes(16);
    parser.push(b"data: 0123456789\n").unwrap();
    let err = parser.push(b"data: 0123456789\n").unwrap_err();
    assert_eq!(err, SseError::EventTooLarge { limit: 16 });
    assert_eq!(
        parser.push(b"\n"),
        Err(SseError::EventTooLarge { limit: 16 })
    );
    assert_eq!(parser.next_event(), None);
}

#[test]
fn oversized_unterminated_line_errors() {
    let mut parser = SseParser::with_max_event_bytes(8);
    parser.push(b"data: 12").unwrap();
    assert!(parser.push(b"3").is_err());
}

#[test]
fn limit_applies_per_event_not_per_stream() {
    let mut parser = SseParser::with_max_event_bytes(16);
    for _ in 0..100 {
        parser.push(b"data: 0123456789\n\n").unwrap();
    }
    assert_eq!(parser.drain().count(), 100);
}

#[test]
fn encode_data_single_and_multi_line() {
    let mut out = Vec::new();
    encode_data(&mut out, "{\"a\":1}");
    assert_eq!(out, b"data: {\"a\":1}\n\n");
    out.clear();
    encode_data(&mut out, "one\ntwo\r\nthree\rfour");
    assert_eq!(out, b"data: one\ndata: two\ndata: three\ndata: four\n\n");
}

#[test]
fn encode_event_strips_line_breaks_from_name() {
    let mut out = Vec::new();
    encode_event(&mut out, "message_\nstop", "{}");
    assert_eq!(out, b"event: message_stop\ndata: {}\n\n");
}

#[test]
fn encode_comment_is_ignored_by_parser() {
    let mut out = Vec::new();
    encode_comment(&mut out, "keep-alive");
    assert_eq!(out, b":keep-alive\n\n");
    encode_data(&mut out, "x");
    assert_eq!(parse(&out), vec![data_event("x")]);
}

#[test]
fn encoding_round_trips_awkward_data() {
    let samples = [
        "",
        "plain",
        "trailing newline\n",
        "\n\nleading",
        " leading space",
        "crlf\r\nand cr\rand lf\n",
        ": looks like a comment",
        "data: nested",
        "\u{FEFF}bom inside",
    ];
    for sample in samples {
        let mut out = Vec::new();
        encode_event(&mut out, "e", sample);
        let events = parse_bytewise(&out);
        let expected = sample.replace("\r\n", "\n").replace('\r', "\n");
        assert_eq!(events.len(), 1, "sample {sample:?}");
        assert_eq!(events[0].data, expected, "sample {sample:?}");
        assert_eq!(events[0].event.as_deref(), Some("e"));
    }
}
