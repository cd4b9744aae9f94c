//! A whole (non-streamed) chat completion in OpenAI's shape, kept as the
//! JSON text the upstream sent. The gateway changes only the top-level `id`
//! and `model`, so the answer is checked and its usage read in one pass that
//! builds no tree, and goes back to the client with just those two members
//! replaced. Parsing it into a `serde_json::Value`, dropping that and
//! serialising it again cost ~30,000 instructions a request; the scan and
//! the splice cost ~12,000 (callgrind, docs/performance.md).

use std::fmt;
use std::ops::Range;

use bytes::Bytes;
use serde_json::Value;

use super::members::{quoted, Members};
use super::Usage;

/// Valid JSON: an object whose `choices` member is an array.
#[derive(Clone, PartialEq)]
pub struct Completion {
    json: Bytes,
    /// Where `id` and `model` are, found by the one scan; `None` when either
    /// name occurs twice (then `with_identity` rebuilds the answer instead).
    spans: Option<Spans>,
    /// The usage it reports, read by the same scan.
    usage: Option<Usage>,
}

/// Byte ranges in `json`: each member's value, and the closing brace (where
/// an absent member is appended).
#[derive(Clone, Debug, PartialEq)]
struct Spans {
    id: Option<Range<usize>>,
    model: Option<Range<usize>>,
    end: usize,
}

impl fmt::Debug for Completion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.json))
    }
}

impl Completion {
    /// Checks an upstream's answer and reads its usage (absent or malformed
    /// usage is `None`: the gateway then counts tokens itself).
    pub fn parse(json: Bytes) -> Result<Self, String> {
        // One UTF-8 check of the whole answer (JSON is UTF-8 or invalid),
        // not one per member name and per member value as a byte reader does.
        let members = std::str::from_utf8(&json)
            .map_err(|e| e.to_string())
            .and_then(|text| Members::read_str(text).map_err(|e| e.to_string()))
            .map_err(|e| format!("upstream sent invalid JSON: {e}"))?;
        if !members
            .get("choices")
            .is_some_and(|v| v.get().starts_with('['))
        {
            return Err("upstream response has no `choices` array".into());
        }
        let usage = members.usage();
        let spans = spans(&members, &json);
        Ok(Self { json, spans, usage })
    }

    /// From an answer the router built itself (a translated one).
    pub fn from_value(v: &Value) -> Self {
        let json = Bytes::from(serde_json::to_vec(v).unwrap_or_default());
        let (spans, usage) = match Members::read(&json) {
            Ok(m) => (spans(&m, &json), m.usage()),
            Err(_) => (None, None),
        };
        Self { json, spans, usage }
    }

    /// The answer with `id` (and `model`, when given) set and every other
    /// byte as it was; a member that was absent is appended.
    pub fn with_identity(&self, id: &str, model: Option<&str>) -> Completion {
        let Some(spans) = &self.spans else {
            return self.rebuilt(id, model);
        };
        let mut edits = vec![(Field::Id, spans.id.clone(), quoted(id))];
        if let Some(m) = model {
            edits.push((Field::Model, spans.model.clone(), quoted(m)));
        }
        // Appended members go before the brace, id first (the sort is stable).
        edits.sort_by_key(|(_, at, _)| at.as_ref().map_or(spans.end, |r| r.start));
        let mut out = Vec::with_capacity(self.json.len() + id.len() + 48);
        let mut new = spans.clone();
        let mut copied = 0;
        for (field, at, value) in edits {
            let (start, stop) = at.map_or((spans.end, spans.end), |r| (r.start, r.end));
            out.extend_from_slice(&self.json[copied..start]);
            if start == spans.end {
                out.extend_from_slice(field.appended_prefix());
            }
            let range = out.len()..out.len() + value.len();
            out.extend_from_slice(&value);
            match field {
                Field::Id => new.id = Some(range),
                Field::Model => new.model = Some(range),
            }
            copied = stop;
        }
        out.extend_from_slice(&self.json[copied..]);
        // What was copied after the last edit keeps its distance to the end.
        new.end = out.len() - (self.json.len() - spans.end);
        if model.is_none() {
            // Left alone, `model` moved by as much as the id grew before it.
            let grew = new.id.as_ref().map_or(0, Range::len) as isize
                - spans.id.as_ref().map_or(0, Range::len) as isize;
            new.model = spans.model.as_ref().map(|r| {
                let after_id = spans.id.as_ref().is_some_and(|i| i.start < r.start);
                let d = if after_id { grew } else { 0 };
                r.start.wrapping_add_signed(d)..r.end.wrapping_add_signed(d)
            });
        }
        Completion {
            json: Bytes::from(out),
            spans: Some(new),
            usage: self.usage,
        }
    }

    /// The rare answer that names `id` or `model` twice: rebuilt as a tree
    /// parser reads it (the last occurrence wins).
    fn rebuilt(&self, id: &str, model: Option<&str>) -> Completion {
        let mut v = self.to_value();
        if let Value::Object(o) = &mut v {
            o.insert("id".into(), Value::String(id.to_owned()));
            if let Some(m) = model {
                o.insert("model".into(), Value::String(m.to_owned()));
            }
        }
        Self::from_value(&v)
    }

    /// The JSON text, as sent to the client.
    pub fn bytes(&self) -> Bytes {
        self.json.clone()
    }

    /// The whole answer as a tree, for the rare paths that rework it (a
    /// cached answer replayed as a stream).
    pub fn to_value(&self) -> Value {
        serde_json::from_slice(&self.json).unwrap_or(Value::Null)
    }

    /// The usage the answer reports, if any.
    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }

    /// Every choice's `message.content`, concatenated: what local token
    /// counting reads when the upstream reported no usage.
    pub fn text(&self) -> String {
        let choices = Members::read(&self.json).ok().and_then(|m| {
            m.get("choices")
                .and_then(|raw| serde_json::from_str::<Vec<Value>>(raw.get()).ok())
        });
        let mut out = String::new();
        for c in choices.unwrap_or_default() {
            if let Some(Value::String(t)) = c.pointer("/message/content") {
                out.push_str(t);
            }
        }
        out
    }
}

#[derive(Clone, Copy)]
enum Field {
    Id,
    Model,
}

impl Field {
    fn appended_prefix(self) -> &'static [u8] {
        match self {
            Field::Id => b",\"id\":",
            Field::Model => b",\"model\":",
        }
    }
}

/// Where `id`, `model` and the closing brace are in `json`, the text the
/// members borrow from; `None` if either name repeats.
fn spans(members: &Members, json: &[u8]) -> Option<Spans> {
    let at = |key| members.only(key).map(|i| i.map(|i| members.span(json, i)));
    Some(Spans {
        id: at("id").ok()?,
        model: at("model").ok()?,
        end: json.iter().rposition(|&b| b == b'}')?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parsed(text: &str) -> (Completion, Option<Usage>) {
        let c = Completion::parse(Bytes::from(text.to_owned())).expect("valid");
        let usage = c.usage();
        (c, usage)
    }

    #[test]
    fn an_answer_that_is_not_utf8_or_not_one_object_is_refused() {
        let bad: [&[u8]; 4] = [
            b"{\"choices\":[],\"x\":\"\xff\"}",
            b"{\"choices\":[{\"c\":\"\xc3\"}]}",
            b"{\"choices\":[]} {}",
            b"[]",
        ];
        for text in bad {
            let e = Completion::parse(Bytes::from_static(text)).unwrap_err();
            assert!(e.starts_with("upstream sent invalid JSON"), "{e}");
        }
        assert!(Completion::parse(Bytes::from_static(b"{\"choices\":[\"\xc3\xa9\"]}")).is_ok());
    }

    #[test]
    fn identity_replaces_id_and_model_in_place_and_keeps_the_rest_verbatim() {
        let text = r#"{"id":"up-1","object":"chat.completion","created":1,"model":"gpt-x","choices":[{"index":0,"message":{"role":"assistant","content":"h\u00e9 \"q\""},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":2},"system_fingerprint":null}"#;
        let (c, usage) = parsed(text);
        let usage = usage.expect("usage");
        assert_eq!((usage.prompt_tokens, usage.completion_tokens), (3, 2));
        let out = c.with_identity("req-\"9\"", Some("fast"));
        let s = String::from_utf8(out.bytes().to_vec()).unwrap();
        assert_eq!(
            s,
            text.replace(r#""id":"up-1""#, r#""id":"req-\"9\"""#)
                .replace(r#""model":"gpt-x""#, r#""model":"fast""#)
        );
        let v = out.to_value();
        assert_eq!(v["choices"][0]["message"]["content"], "hé \"q\"");
        assert_eq!(out.text(), "hé \"q\"");
    }

    #[test]
    fn absent_members_are_appended_and_model_can_be_left_alone() {
        let (c, usage) = parsed(r#" { "choices" : [ ] , "model":"m" } "#);
        assert!(usage.is_none());
        let out = c.with_identity("r1", None);
        assert_eq!(
            out.to_value(),
            json!({"choices": [], "model": "m", "id": "r1"})
        );
        let out = parsed(r#"{"choices":[]}"#).0.with_identity("r2", Some("x"));
        assert_eq!(
            std::str::from_utf8(&out.bytes()).unwrap(),
            r#"{"choices":[],"id":"r2","model":"x"}"#
        );
    }

    #[test]
    fn duplicate_members_resolve_like_a_tree_parser_and_are_written_once() {
        let (c, usage) = parsed(
            r#"{"id":"a","choices":{},"usage":{"prompt_tokens":1},"choices":[],"id":"b","usage":{"prompt_tokens":7}}"#,
        );
        assert_eq!(usage.map(|u| u.prompt_tokens), Some(7));
        let v = c.with_identity("r", Some("m")).to_value();
        assert_eq!(v["id"], "r");
        assert_eq!(v["model"], "m");
        assert_eq!(v["choices"], json!([]));
    }

    #[test]
    fn rejects_what_is_not_a_completion() {
        let bad: [&'static [u8]; 9] = [
            b"",
            b"not json",
            b"[]",
            br#"{"choices":{}}"#,
            br#"{"object":"x"}"#,
            br#"{"choices":[],}"#,
            br#"{"choices":[1,]}"#,
            b"{\"choices\":[\"\xff\"]}",
            br#"{"choices":[]} trailing"#,
        ];
        for text in bad {
            assert!(Completion::parse(Bytes::from(text)).is_err(), "{text:?}");
        }
    }

    #[test]
    fn a_malformed_usage_means_no_usage_and_keys_with_escapes_are_kept() {
        let (c, usage) = parsed(r#"{"choices":[],"usage":"lots","a\nb":1}"#);
        assert!(usage.is_none());
        assert!(c.usage().is_none());
        let v = c.with_identity("r", None).to_value();
        assert_eq!(v["a\nb"], 1);
        assert_eq!(v["usage"], "lots");
    }

    /// What a tree parser makes of setting the two members.
    fn expected(text: &str, id: &str, model: Option<&str>) -> Value {
        let mut v: Value = serde_json::from_str(text).unwrap();
        v["id"] = json!(id);
        if let Some(m) = model {
            v["model"] = json!(m);
        }
        v
    }

    #[test]
    fn identity_can_be_set_again_on_its_own_output_whatever_the_layout() {
        let texts = [
            r#"{"id":"a-long-upstream-id","model":"m","choices":[]}"#,
            r#"{"model":"mm","choices":[],"id":"i"}"#,
            r#"{"choices":[],"model":"m"}"#,
            r#"{"id":"x","choices":[]}"#,
            "{\"choices\":[{\"message\":{\"content\":\"}\"}}]}\n ",
            r#"{"model":"m","id":"i","choices":[],"model":"n"}"#,
        ];
        for text in texts {
            let (c, _) = parsed(text);
            let once = c.with_identity("req-1", Some("route-model"));
            assert_eq!(
                once.to_value(),
                expected(text, "req-1", Some("route-model")),
                "{text}"
            );
            // The cache's path: stored with the model set, re-identified per hit.
            for id in ["r", "a-much-longer-request-identifier"] {
                let twice = once.with_identity(id, None);
                assert_eq!(
                    twice.to_value(),
                    expected(text, id, Some("route-model")),
                    "{text}"
                );
                let thrice = twice.with_identity("z", Some("q"));
                assert_eq!(thrice.to_value(), expected(text, "z", Some("q")), "{text}");
            }
        }
    }

    #[test]
    fn a_built_answer_round_trips() {
        let v = json!({"id": "x", "choices": [{"message": {"content": "hi"}}],
                       "usage": {"prompt_tokens": 4, "completion_tokens": 1}});
        let c = Completion::from_value(&v);
        assert_eq!(c.to_value(), v);
        assert_eq!(c.usage().map(|u| u.prompt_tokens), Some(4));
        assert_eq!(c.text(), "hi");
    }
}
