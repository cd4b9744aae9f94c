//! The client's body as an OpenAI-compatible upstream gets it: `model`
//! replaced, the router's own `switchboard` member dropped, and for a stream
//! usage asked for on the last chunk (so cost is exact; the gateway hides
//! that chunk from clients that did not ask for it).
//!
//! Written from the client's own text when it is at hand (`from_text`):
//! every other member passes byte for byte, in the client's order, numbers
//! as the client wrote them (a tree would round an integer past 2^64 or a
//! long decimal through f64). That costs one scan of the text for where its
//! top-level members start and end, not a second serialisation of the tree
//! (~3,500 instructions for the bench's body, callgrind,
//! docs/performance.md). Written from the tree (`Outgoing`) otherwise: when
//! there is no text (a body the gateway rewrote) or the text could say
//! something the tree does not (a repeated or escaped member name, a
//! stream's own `stream_options` to amend).

use std::ops::Range;

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value};

use crate::providers::members::push_quoted;
use crate::providers::{Provider, UpstreamError, UpstreamRequest};

/// The request's body as JSON text.
pub(super) fn body(req: &UpstreamRequest<'_>) -> Result<Vec<u8>, UpstreamError> {
    let text = req
        .body
        .text
        .and_then(|text| from_text(text, req.body.tree.len(), req.upstream_model, req.stream));
    match text {
        Some(text) => Ok(text),
        None => Provider::json_body(&Outgoing {
            body: req.body.tree,
            model: req.upstream_model,
            stream: req.stream,
        }),
    }
}

/// The usage request a stream adds when the client sent no `stream_options`.
const STREAM_OPTIONS: &[u8] = br#""stream_options":{"include_usage":true}"#;

/// `text` (one JSON object, already read into a tree of `tree_len` members
/// that lacks `switchboard`) with `model` set and `switchboard` dropped;
/// `None` when only the tree can be trusted to say what is sent.
fn from_text(text: &[u8], tree_len: usize, model: &str, stream: bool) -> Option<Vec<u8>> {
    let members = top_level(text)?;
    let name = |m: &Member| &text[m.name.clone()];
    let mut dropped = 0;
    for m in &members {
        match name(m) {
            // An escape could spell a name the gateway reads (`mod\u0065l`).
            n if n.contains(&b'\\') => return None,
            b"switchboard" => dropped += 1,
            b"stream_options" if stream => return None,
            _ => {}
        }
    }
    // The tree keeps one member per name (the last); the text, with a name
    // repeated, would send the upstream more than was checked.
    if dropped > 1 || members.len() != tree_len + dropped {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() + model.len() + STREAM_OPTIONS.len() + 16);
    out.push(b'{');
    let mut wrote_model = false;
    for m in members.iter().filter(|m| name(m) != b"switchboard") {
        if out.len() > 1 {
            out.push(b',');
        }
        if name(m) == b"model" {
            out.extend_from_slice(&text[m.whole.start..m.value_start]);
            push_quoted(&mut out, model);
            wrote_model = true;
        } else {
            out.extend_from_slice(&text[m.whole.clone()]);
        }
    }
    if !wrote_model {
        if out.len() > 1 {
            out.push(b',');
        }
        out.extend_from_slice(br#""model":"#);
        push_quoted(&mut out, model);
    }
    if stream {
        if out.len() > 1 {
            out.push(b',');
        }
        out.extend_from_slice(STREAM_OPTIONS);
    }
    out.push(b'}');
    Some(out)
}

/// One top-level member: all of it (its name's opening quote to its value's
/// end), its name's text between the quotes, and where its value starts.
#[derive(Debug, PartialEq)]
struct Member {
    whole: Range<usize>,
    name: Range<usize>,
    value_start: usize,
}

/// The top-level members of `text`, which was already read as one JSON
/// object, so the scan only finds boundaries and checks no more than it
/// needs to; `None` when the text is not laid out as it expects.
fn top_level(text: &[u8]) -> Option<Vec<Member>> {
    let mut i = skip_space(text, 0);
    if text.get(i) != Some(&b'{') {
        return None;
    }
    let mut out = Vec::with_capacity(8);
    i = skip_space(text, i + 1);
    if text.get(i) == Some(&b'}') {
        return (skip_space(text, i + 1) == text.len()).then_some(out);
    }
    loop {
        if text.get(i) != Some(&b'"') {
            return None;
        }
        let start = i;
        let name_end = string_end(text, i)?;
        i = skip_space(text, name_end);
        if text.get(i) != Some(&b':') {
            return None;
        }
        let value_start = skip_space(text, i + 1);
        i = value_end(text, value_start)?;
        out.push(Member {
            whole: start..i,
            name: start + 1..name_end - 1,
            value_start,
        });
        i = skip_space(text, i);
        match text.get(i)? {
            b',' => i = skip_space(text, i + 1),
            b'}' => return (skip_space(text, i + 1) == text.len()).then_some(out),
            _ => return None,
        }
    }
}

fn skip_space(text: &[u8], mut i: usize) -> usize {
    while text
        .get(i)
        .is_some_and(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
    {
        i += 1;
    }
    i
}

/// Just past the string that opens at `text[i]` (a quote). Strings are
/// most of a chat body (the messages' text), so they are searched, not
/// stepped through byte by byte.
fn string_end(text: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    loop {
        j += memchr::memchr2(b'"', b'\\', text.get(j..)?)?;
        match text[j] {
            b'"' => return Some(j + 1),
            _ => j += 2,
        }
    }
}

/// Just past the value that starts at `text[i]`.
fn value_end(text: &[u8], i: usize) -> Option<usize> {
    match text.get(i)? {
        b'"' => string_end(text, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            loop {
                match text.get(j)? {
                    b'"' => {
                        j = string_end(text, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
        }
        _ => {
            let len = text[i..]
                .iter()
                .position(|b| matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'))
                .unwrap_or(text.len() - i);
            (len > 0).then_some(i + len)
        }
    }
}

/// The client's body as sent upstream, written straight from the borrowed
/// tree (no copy of it per attempt).
struct Outgoing<'a> {
    body: &'a Map<String, Value>,
    model: &'a str,
    stream: bool,
}

impl Serialize for Outgoing<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        let mut wrote_model = false;
        let mut wrote_options = !self.stream;
        for (k, v) in self.body {
            match k.as_str() {
                "model" => {
                    wrote_model = true;
                    map.serialize_entry(k, self.model)?;
                }
                "stream_options" if self.stream => {
                    wrote_options = true;
                    match v {
                        Value::Object(o) => {
                            let mut o = o.clone();
                            o.insert("include_usage".into(), Value::Bool(true));
                            map.serialize_entry(k, &o)?;
                        }
                        // Not an object: passed on for the upstream to judge.
                        other => map.serialize_entry(k, other)?,
                    }
                }
                _ => map.serialize_entry(k, v)?,
            }
        }
        if !wrote_model {
            map.serialize_entry("model", self.model)?;
        }
        if !wrote_options {
            map.serialize_entry(
                "stream_options",
                &serde_json::json!({"include_usage": true}),
            )?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests;
