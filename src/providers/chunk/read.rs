//! Reading a chunk's text: what the gateway needs of it (usage, each
//! choice's text and state) and where the members it edits sit.
//!
//! Two readers, one result. `typed` reads a chunk shaped the way OpenAI
//! shapes it in a single pass, skipping what it does not need. Anything it
//! does not take (a repeated top-level member, a choice or delta of another
//! shape) goes to `lenient`, which reads the members one by one and each
//! choice as a tree lookup would (the last of repeated names wins, a member
//! of the wrong type reads as absent), and also reports what is not JSON.
//! Tests check that the two agree wherever `typed` answers.

use std::fmt;
use std::marker::PhantomData;
use std::ops::Range;

use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use super::super::members::{usage_of, Key, Members, Span};
use super::super::Usage;
use super::{Choice, Layout};

/// What was read of one chunk.
#[derive(Debug, PartialEq)]
pub(super) struct Read {
    pub layout: Option<Layout>,
    pub usage: Option<Usage>,
    pub choices: Option<Vec<Choice>>,
    /// The upstream's `error` member, when present (whatever its value).
    pub error: Option<String>,
}

/// One pass over a chunk in OpenAI's shape; `None` for any other shape.
pub(super) fn typed(json: &str) -> Option<Read> {
    // An array would fill the derived reader's fields in order.
    if !json.trim_start().starts_with('{') {
        return None;
    }
    let t = serde_json::from_str::<TypedChunk>(json).ok()?;
    let bytes = json.as_bytes();
    let span = |raw: &RawValue| {
        let start = raw.get().as_ptr() as usize - bytes.as_ptr() as usize;
        start..start + raw.get().len()
    };
    let layout = match (t.id.0, t.model.0) {
        (Some(id), Some(model)) => {
            let usage = match t.usage.0 {
                None => Some(None),
                Some(u) => usage_cut(bytes, span(u)).map(Some),
            };
            usage.map(|usage| Layout {
                id: span(id),
                model: span(model),
                usage,
            })
        }
        _ => None,
    };
    Some(Read {
        layout,
        usage: t.usage.0.and_then(usage_of),
        choices: t
            .choices
            .map(|all| all.into_iter().map(Choice::from).collect()),
        error: t.error.0.map(reported_message),
    })
}

/// Member by member, as a tree parser would read the chunk.
pub(super) fn lenient(json: &str) -> Result<Read, serde_json::Error> {
    let members = Members::read_str(json)?;
    Ok(Read {
        layout: layout(&members, json.as_bytes()),
        usage: members.usage(),
        choices: members.get("choices").and_then(choices),
        error: members.get("error").map(reported_message),
    })
}

/// Where `id`, `model` and the `usage` member are; `None` when either of
/// the first two is missing or any of the three repeats.
fn layout(members: &Members, json: &[u8]) -> Option<Layout> {
    let id = members.only("id").ok()??;
    let model = members.only("model").ok()??;
    let usage = match members.only("usage").ok()? {
        None => None,
        Some(i) => Some(usage_cut(json, members.span(json, i))?),
    };
    Some(Layout {
        id: members.span(json, id),
        model: members.span(json, model),
        usage,
    })
}

/// The bytes to cut to remove the `usage` member whose value is at
/// `value`: its name, its value and one separating comma. `None` when the
/// name is written with escapes or the member is the only one.
fn usage_cut(json: &[u8], value: Span) -> Option<Range<usize>> {
    const KEY: &[u8] = b"\"usage\"";
    let colon = json[..value.start]
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())?;
    if json[colon] != b':' {
        return None;
    }
    let key_end = json[..colon]
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())?
        + 1;
    let key_start = key_end.checked_sub(KEY.len())?;
    if &json[key_start..key_end] != KEY {
        return None;
    }
    let next = |from: usize| json[from..].iter().position(|b| !b.is_ascii_whitespace());
    // Followed by another member: cut through the comma after it.
    if let Some(i) = next(value.end) {
        if json[value.end + i] == b',' {
            return Some(key_start..value.end + i + 1);
        }
    }
    // The last member: cut from the comma before it.
    let before = json[..key_start]
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())?;
    (json[before] == b',').then_some(before..value.end)
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

/// The `choices` member, when it is an array: in one typed pass when every
/// choice has OpenAI's shape, otherwise element by element.
pub(super) fn choices(raw: &RawValue) -> Option<Vec<Choice>> {
    if !raw.get().starts_with('[') {
        return None;
    }
    if let Ok(typed) = serde_json::from_str::<Vec<TypedChoice>>(raw.get()) {
        return Some(typed.into_iter().map(Choice::from).collect());
    }
    let all = serde_json::from_str::<Vec<&RawValue>>(raw.get()).ok()?;
    Some(all.into_iter().map(lenient_choice).collect())
}

/// A chunk as OpenAI shapes it. Unknown members are skipped; a repeated
/// known one fails the read (serde refuses duplicate fields).
#[derive(Deserialize)]
struct TypedChunk<'a> {
    #[serde(borrow, default)]
    id: Present<'a>,
    #[serde(borrow, default)]
    model: Present<'a>,
    #[serde(borrow, default)]
    usage: Present<'a>,
    #[serde(borrow, default)]
    error: Present<'a>,
    #[serde(borrow, default)]
    choices: Option<Vec<TypedChoice<'a>>>,
}

/// A member's value as text, `null` included (an `Option<&RawValue>`
/// field would read `null` as absent, and lose where it is).
#[derive(Default)]
struct Present<'a>(Option<&'a RawValue>);

impl<'de: 'a, 'a> Deserialize<'de> for Present<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <&RawValue>::deserialize(d).map(|raw| Present(Some(raw)))
    }
}

/// A choice as OpenAI shapes it: an object (serde's derived reader would
/// also take an array, which a tree lookup reads as no choice at all).
#[derive(Default)]
struct TypedChoice<'a> {
    index: Option<&'a RawValue>,
    finish_reason: Option<IgnoredAny>,
    delta: Option<TypedDelta>,
}

/// A choice's `delta` as OpenAI shapes it: an object.
#[derive(Default)]
struct TypedDelta {
    content: Option<String>,
    tool_calls: Option<IgnoredAny>,
    function_call: Option<IgnoredAny>,
}

impl<'de: 'a, 'a> Deserialize<'de> for TypedChoice<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(ObjectOf::<TypedChoice>(PhantomData))
    }
}

impl<'de> Deserialize<'de> for TypedDelta {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(ObjectOf::<TypedDelta>(PhantomData))
    }
}

/// Reads one member of a typed object; false when `key` is not one of its
/// fields. A name given twice keeps its last value, as in a tree.
trait Fields<'de>: Default {
    fn field<M: MapAccess<'de>>(&mut self, key: &str, map: &mut M) -> Result<bool, M::Error>;
}

impl<'de: 'a, 'a> Fields<'de> for TypedChoice<'a> {
    fn field<M: MapAccess<'de>>(&mut self, key: &str, map: &mut M) -> Result<bool, M::Error> {
        match key {
            "index" => self.index = map.next_value()?,
            "finish_reason" => self.finish_reason = map.next_value()?,
            "delta" => self.delta = map.next_value()?,
            _ => return Ok(false),
        }
        Ok(true)
    }
}

impl<'de> Fields<'de> for TypedDelta {
    fn field<M: MapAccess<'de>>(&mut self, key: &str, map: &mut M) -> Result<bool, M::Error> {
        match key {
            "content" => self.content = map.next_value()?,
            "tool_calls" => self.tool_calls = map.next_value()?,
            "function_call" => self.function_call = map.next_value()?,
            _ => return Ok(false),
        }
        Ok(true)
    }
}

/// The visitor for an object of `T`'s fields, unknown members skipped.
struct ObjectOf<T>(PhantomData<T>);

impl<'de, T: Fields<'de>> Visitor<'de> for ObjectOf<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<T, M::Error> {
        let mut out = T::default();
        while let Some(Key(key)) = map.next_key()? {
            if !out.field(&key, &mut map)? {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(out)
    }
}

impl From<TypedChoice<'_>> for Choice {
    fn from(c: TypedChoice) -> Choice {
        Choice {
            index: index_of(c.index),
            finished: c.finish_reason.is_some(),
            tool_call: c
                .delta
                .as_ref()
                .is_some_and(|d| d.tool_calls.is_some() || d.function_call.is_some()),
            content: c.delta.and_then(|d| d.content),
        }
    }
}

/// `index` as a whole number, 0 when absent or anything else.
fn index_of(raw: Option<&RawValue>) -> u64 {
    raw.and_then(|i| serde_json::from_str::<u64>(i.get()).ok())
        .unwrap_or(0)
}

/// One element of `choices` in a shape the typed reader declines, read as
/// a tree lookup reads it: a member of the wrong type is absent, and of
/// repeated names the last counts. Rare, so a tree is fine here.
pub(super) fn lenient_choice(raw: &RawValue) -> Choice {
    let c = serde_json::from_str::<Value>(raw.get()).unwrap_or(Value::Null);
    let delta = c.get("delta").filter(|d| d.is_object());
    let set = |key| delta.and_then(|d| d.get(key)).is_some_and(|v| !v.is_null());
    Choice {
        index: c.get("index").and_then(Value::as_u64).unwrap_or(0),
        finished: c.get("finish_reason").is_some_and(|f| !f.is_null()),
        tool_call: set("tool_calls") || set("function_call"),
        content: delta
            .and_then(|d| d.get("content"))
            .and_then(Value::as_str)
            .map(str::to_owned),
    }
}
