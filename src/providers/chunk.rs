//! One chunk of a streamed answer in OpenAI's `chat.completion.chunk`
//! shape, kept as the JSON text the upstream sent. The gateway reads a
//! little of each chunk (usage, and per choice its text and whether it
//! finished) and changes less: the top-level `id` and `model`, and `usage`
//! when the client did not ask for it. So a chunk is checked and read in one
//! pass that builds no tree, and framed for the client with those members
//! spliced; every other byte passes through. Parsing each chunk into a
//! `serde_json::Value`, editing, re-serialising and dropping the tree cost
//! most of the router's ~950,000 instructions per 22-chunk stream
//! (callgrind, docs/performance.md).

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use bytes::Bytes;
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use super::members::{write_str, Members, Span};
use super::sse::encode_data;
use super::Usage;

/// Valid JSON: an object that carries no `error` member.
pub struct Chunk {
    /// The text, with any line breaks (insignificant whitespace in valid
    /// JSON) turned into spaces so it frames as a single `data:` line.
    json: String,
    /// Where the members the gateway edits are; `None` when the chunk lacks
    /// `id` or `model` or repeats a name it edits (then it is framed
    /// through a tree instead).
    layout: Option<Layout>,
    usage: Option<Usage>,
    /// `None` when there is no `choices` array.
    choices: Option<Vec<Choice>>,
}

#[derive(Debug, PartialEq)]
struct Layout {
    id: Span,
    model: Span,
    /// The whole `usage` member with one separating comma: what is cut
    /// when the client did not ask for usage.
    usage: Option<Range<usize>>,
}

/// What the gateway reads of one choice.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Choice {
    /// `index`, 0 when absent or not a whole number.
    pub index: u64,
    /// A non-null `finish_reason`.
    pub finished: bool,
    /// The delta carries a (non-null) `tool_calls` or `function_call`.
    pub tool_call: bool,
    /// The delta's `content`, when it is a string.
    pub content: Option<String>,
}

/// Why an upstream's chunk is not one to pass on.
#[derive(Debug, PartialEq)]
pub enum BadChunk {
    /// Not a JSON object.
    Invalid(String),
    /// The upstream reported an error in the middle of the stream.
    Reported(String),
}

impl fmt::Debug for Chunk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.json)
    }
}

impl Chunk {
    /// Checks one event's data and reads what the gateway needs of it.
    pub fn parse(mut json: String) -> Result<Self, BadChunk> {
        if memchr::memchr2(b'\n', b'\r', json.as_bytes()).is_some() {
            // Outside strings (where valid JSON cannot hold them) line breaks
            // are whitespace; if the text is not valid, the scan says so.
            json = json.replace(['\n', '\r'], " ");
        }
        let members = Members::read_str(&json).map_err(|e| {
            BadChunk::Invalid(format!("upstream sent an invalid stream chunk: {e}"))
        })?;
        if let Some(err) = members.get("error") {
            return Err(BadChunk::Reported(reported_message(err)));
        }
        let usage = members.usage();
        let choices = members.get("choices").and_then(read_choices);
        let layout = layout(&members, json.as_bytes());
        Ok(Self {
            json,
            layout,
            usage,
            choices,
        })
    }

    /// From a chunk the router built itself (a translated one).
    pub fn from_value(v: &Value) -> Result<Self, BadChunk> {
        Self::parse(v.to_string())
    }

    /// The usage the chunk reports, if any.
    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }

    /// Its choices, in order; empty when it has no `choices` array.
    pub fn choices(&self) -> &[Choice] {
        self.choices.as_deref().unwrap_or_default()
    }

    /// `choices` is an empty array: the usage-only chunk that ends a stream.
    pub fn has_no_choices(&self) -> bool {
        self.choices.as_ref().is_some_and(Vec::is_empty)
    }

    /// The whole chunk as a tree, for the rare paths that rework it.
    pub fn to_value(&self) -> Value {
        serde_json::from_str(&self.json).unwrap_or(Value::Null)
    }

    /// One SSE event for the client: the chunk with `id` and `model` set,
    /// `usage` cut when asked, every other byte as the upstream sent it.
    pub fn framed(&self, label: &Label, drop_usage: bool) -> Bytes {
        let Some(l) = &self.layout else {
            return frame_tree(self.to_value(), label, drop_usage);
        };
        let cut = l.usage.clone().filter(|_| drop_usage);
        let mut edits = [
            Some((l.id.clone(), Some(&label.id_json[..]))),
            Some((l.model.clone(), Some(&label.model_json[..]))),
            cut.map(|r| (r, None)),
        ];
        edits.sort_unstable_by_key(|e| e.as_ref().map_or(usize::MAX, |(r, _)| r.start));
        let json = self.json.as_bytes();
        let mut out =
            Vec::with_capacity(json.len() + label.id_json.len() + label.model_json.len() + 16);
        out.extend_from_slice(b"data: ");
        let mut copied = 0;
        for (at, value) in edits.into_iter().flatten() {
            out.extend_from_slice(&json[copied..at.start]);
            if let Some(v) = value {
                out.extend_from_slice(v);
            }
            copied = at.end;
        }
        out.extend_from_slice(&json[copied..]);
        out.extend_from_slice(b"\n\n");
        Bytes::from(out)
    }
}

/// The `id` and `model` every chunk of one answer is given, written as JSON
/// strings once per answer rather than once per chunk.
pub struct Label {
    id: String,
    model: String,
    id_json: Vec<u8>,
    model_json: Vec<u8>,
}

impl Label {
    pub fn new(id: &str, model: &str) -> Self {
        let json = |s: &str| {
            let mut out = Vec::with_capacity(s.len() + 2);
            write_str(&mut out, s);
            out
        };
        Self {
            id: id.to_owned(),
            model: model.to_owned(),
            id_json: json(id),
            model_json: json(model),
        }
    }
}

/// Frames a chunk held as a tree: the rare layouts `Chunk::framed` does not
/// splice, and chunks the gateway reworked (a continuation's seam).
pub fn frame_tree(mut v: Value, label: &Label, drop_usage: bool) -> Bytes {
    if let Value::Object(o) = &mut v {
        if drop_usage {
            o.remove("usage");
        }
        o.insert("id".into(), Value::String(label.id.clone()));
        o.insert("model".into(), Value::String(label.model.clone()));
    }
    let mut out = Vec::with_capacity(256);
    encode_data(&mut out, &v.to_string());
    Bytes::from(out)
}

/// `error.message`, or a stand-in when the upstream gave none.
fn reported_message(err: &RawValue) -> String {
    serde_json::from_str::<Value>(err.get())
        .ok()
        .and_then(|v| {
            v.pointer("/message")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "upstream reported an error mid-stream".to_owned())
}

/// Where `id`, `model` and the `usage` member are; `None` when a fast
/// splice cannot be done (see `Chunk::layout`).
fn layout(members: &Members, json: &[u8]) -> Option<Layout> {
    let id = members.only("id").ok()??;
    let model = members.only("model").ok()??;
    let usage = match members.only("usage").ok()? {
        None => None,
        // After another member: cut from that member's end, comma included.
        Some(i) if i > 0 => Some(members.span(json, i - 1).end..members.span(json, i).end),
        // First (and, with id and model present, not last): cut from the
        // brace to the comma after it.
        Some(_) => {
            let open = json.iter().position(|&b| b == b'{')? + 1;
            let end = members.span(json, 0).end;
            let comma = end + json[end..].iter().position(|&b| b == b',')?;
            Some(open..comma + 1)
        }
    };
    Some(Layout {
        id: members.span(json, id),
        model: members.span(json, model),
        usage,
    })
}

/// The `choices` member, when it is an array. Read in one typed pass when
/// every choice has the shape OpenAI gives it; otherwise element by
/// element, as leniently as a tree lookup (`Choice::read`).
fn read_choices(raw: &RawValue) -> Option<Vec<Choice>> {
    if !raw.get().starts_with('[') {
        return None;
    }
    if let Ok(typed) = serde_json::from_str::<Vec<TypedChoice>>(raw.get()) {
        return Some(typed.into_iter().map(Choice::from).collect());
    }
    let all = serde_json::from_str::<Vec<&RawValue>>(raw.get()).ok()?;
    Some(all.into_iter().map(Choice::read).collect())
}

/// A choice as OpenAI shapes it; any other shape (or a repeated field)
/// fails this and is read leniently instead.
#[derive(Deserialize)]
struct TypedChoice<'a> {
    #[serde(borrow, default)]
    index: Option<&'a RawValue>,
    #[serde(default)]
    finish_reason: Option<IgnoredAny>,
    #[serde(borrow, default)]
    delta: Option<TypedDelta<'a>>,
}

#[derive(Deserialize)]
struct TypedDelta<'a> {
    #[serde(borrow, default)]
    content: Option<Cow<'a, str>>,
    #[serde(default)]
    tool_calls: Option<IgnoredAny>,
    #[serde(default)]
    function_call: Option<IgnoredAny>,
}

impl From<TypedChoice<'_>> for Choice {
    fn from(c: TypedChoice) -> Choice {
        Choice {
            index: c
                .index
                .and_then(|i| serde_json::from_str::<u64>(i.get()).ok())
                .unwrap_or(0),
            finished: c.finish_reason.is_some(),
            tool_call: c
                .delta
                .as_ref()
                .is_some_and(|d| d.tool_calls.is_some() || d.function_call.is_some()),
            content: c.delta.and_then(|d| d.content).map(Cow::into_owned),
        }
    }
}

/// The fields of a choice the gateway reads; the rest is skipped.
#[derive(Deserialize)]
struct ChoiceView<'a> {
    #[serde(borrow, default)]
    index: Option<&'a RawValue>,
    #[serde(borrow, default)]
    finish_reason: Option<&'a RawValue>,
    #[serde(borrow, default)]
    delta: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct DeltaView<'a> {
    #[serde(borrow, default)]
    content: Option<&'a RawValue>,
    #[serde(borrow, default)]
    tool_calls: Option<&'a RawValue>,
    #[serde(borrow, default)]
    function_call: Option<&'a RawValue>,
}

impl Choice {
    /// Reads one element of `choices`; one that is not an object reads as
    /// an empty choice, as a tree lookup would.
    fn read(raw: &RawValue) -> Choice {
        if !raw.get().starts_with('{') {
            return Choice::default();
        }
        Self::from_text(raw.get())
            .or_else(|| {
                // A repeated field somewhere: read the tree's view of it
                // (the last occurrence wins), written without repeats.
                let canonical = serde_json::from_str::<Value>(raw.get()).ok()?.to_string();
                Self::from_text(&canonical)
            })
            .unwrap_or_default()
    }

    fn from_text(text: &str) -> Option<Choice> {
        let view = serde_json::from_str::<ChoiceView>(text).ok()?;
        let delta = match view.delta {
            Some(d) if d.get().starts_with('{') => {
                Some(serde_json::from_str::<DeltaView>(d.get()).ok()?)
            }
            _ => None,
        };
        Some(Choice {
            index: view
                .index
                .and_then(|i| serde_json::from_str::<u64>(i.get()).ok())
                .unwrap_or(0),
            finished: view.finish_reason.is_some(),
            tool_call: delta
                .as_ref()
                .is_some_and(|d| d.tool_calls.is_some() || d.function_call.is_some()),
            content: delta
                .and_then(|d| d.content)
                .and_then(|c| serde_json::from_str::<String>(c.get()).ok()),
        })
    }
}

#[cfg(test)]
mod tests;
