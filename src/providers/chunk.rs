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

mod read;

use std::fmt;
use std::ops::Range;

use bytes::Bytes;
use serde_json::Value;

use super::members::{quoted, Span};
use super::sse::encode_data;
use super::Usage;

/// Valid JSON: an object that carries no `error` member.
pub struct Chunk {
    /// The text, with any line breaks (insignificant whitespace in valid
    /// JSON) turned into spaces so it frames as a single `data:` line.
    json: String,
    /// Where the members the gateway edits are; `None` when the chunk lacks
    /// `id` or `model`, repeats a name it edits, or writes `usage` with
    /// escapes (then it is framed through a tree instead).
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
        let read = match read::typed(&json) {
            Some(read) => read,
            None => read::lenient(&json).map_err(|e| {
                BadChunk::Invalid(format!("upstream sent an invalid stream chunk: {e}"))
            })?,
        };
        if let Some(message) = read.error {
            return Err(BadChunk::Reported(message));
        }
        Ok(Self {
            json,
            layout: read.layout,
            usage: read.usage,
            choices: read.choices,
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
        Self {
            id: id.to_owned(),
            model: model.to_owned(),
            id_json: quoted(id),
            model_json: quoted(model),
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

#[cfg(test)]
mod tests;
