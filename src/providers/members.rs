//! The top-level members of a JSON object, each value left as its text: one
//! pass that checks the JSON and builds no tree. Whole answers
//! (`completion.rs`) and stream chunks (`chunk.rs`) are read with it, so the
//! gateway can change a member or two and pass every other byte through.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use super::Usage;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

/// The members in order, duplicates included, each value borrowed from the
/// text it was read from.
pub(super) struct Members<'a>(pub(super) Vec<(Cow<'a, str>, &'a RawValue)>);

/// Where one member's value sits in the text.
pub(super) type Span = Range<usize>;

impl<'a> Members<'a> {
    /// Fails unless `json` is one valid JSON object and nothing else.
    pub(super) fn read(json: &'a [u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(json)
    }

    /// `read` for text already known to be UTF-8, which then is not checked
    /// again string by string (~10 % of reading a stream chunk).
    pub(super) fn read_str(json: &'a str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(json)
    }

    /// The last member named `key`, as a tree parser would keep it.
    pub(super) fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.0.iter().rev().find(|(k, _)| k == key).map(|(_, v)| *v)
    }

    /// The position of the one member named `key`: `Ok(None)` when there is
    /// none, `Err(())` when the name repeats.
    pub(super) fn only(&self, key: &str) -> Result<Option<usize>, ()> {
        let mut found = None;
        for (i, (k, _)) in self.0.iter().enumerate() {
            if k == key && found.replace(i).is_some() {
                return Err(());
            }
        }
        Ok(found)
    }

    /// Where the value of member `i` sits in `json`, the text it borrows from.
    pub(super) fn span(&self, json: &[u8], i: usize) -> Span {
        let raw = self.0[i].1.get();
        let start = raw.as_ptr() as usize - json.as_ptr() as usize;
        start..start + raw.len()
    }

    /// The `usage` member, when it is a well-formed usage object.
    pub(super) fn usage(&self) -> Option<Usage> {
        usage_of(self.get("usage")?)
    }
}

/// A usage object's counts; `None` for `null` or any other shape.
///
/// Read from the members' own text rather than through a `Value` tree
/// (~2,900 instructions an answer before, callgrind): a count is what
/// `parse_usage` takes, a plain integer that fits `u64` (JSON has no `+`
/// and no leading zeros, so `str::parse` accepts exactly those), and a
/// repeated name counts its last value, as a tree keeps it.
pub(super) fn usage_of(raw: &RawValue) -> Option<Usage> {
    let members = Members::read_str(raw.get()).ok()?;
    let count = |key: &str| {
        let n: u64 = members.get(key)?.get().parse().ok()?;
        Some(u32::try_from(n).unwrap_or(u32::MAX))
    };
    Some(Usage {
        prompt_tokens: count("prompt_tokens")?,
        completion_tokens: count("completion_tokens").unwrap_or(0),
        counted_locally: false,
    })
}

impl<'de: 'a, 'a> Deserialize<'de> for Members<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Members<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Members<'a>, M::Error> {
                let mut out = Vec::with_capacity(8);
                while let Some(Key(k)) = map.next_key()? {
                    out.push((k, map.next_value::<&RawValue>()?));
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// A member name, borrowed from the text unless it holds escapes.
pub(super) struct Key<'a>(pub(super) Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Key<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Key<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Key<'a>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Key<'a>, E> {
                Ok(Key(Cow::Owned(s.to_owned())))
            }
        }
        d.deserialize_str(V(std::marker::PhantomData))
    }
}

/// `s` written as a JSON string.
pub(super) fn quoted(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len() + 2);
    push_quoted(&mut out, s);
    out
}

/// `s` written as a JSON string at the end of `out`.
pub(super) fn push_quoted(out: &mut Vec<u8>, s: &str) {
    // Writing a &str to a Vec cannot fail.
    let _ = serde_json::to_writer(out, s);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::openai::parse_usage;

    /// What a count can be on the wire, well-formed or not.
    const COUNTS: [&str; 14] = [
        "0",
        "12",
        "4294967295",
        "4294967296",
        "18446744073709551615",
        "18446744073709551616",
        "-1",
        "-0",
        "1.5",
        "1e3",
        "12.0",
        "\"12\"",
        "null",
        "{\"cached\": 3}",
    ];

    proptest::proptest! {
        /// The members' text gives the counts a `Value` tree gives.
        #[test]
        fn usage_from_text_equals_usage_from_a_tree(
            prompt in proptest::option::of(0..COUNTS.len()),
            completion in proptest::option::of(0..COUNTS.len()),
            repeat in proptest::option::of(0..COUNTS.len()),
            details in proptest::bool::ANY,
        ) {
            let mut members = Vec::new();
            if details {
                members.push(r#""prompt_tokens_details": {"cached_tokens": 1}"#.to_owned());
            }
            if let Some(i) = prompt {
                members.push(format!(r#""prompt_tokens": {}"#, COUNTS[i]));
            }
            if let Some(i) = completion {
                members.push(format!(r#""completion_tokens" : {}"#, COUNTS[i]));
            }
            if let Some(i) = repeat {
                members.push(format!(r#""prompt_tokens":{}"#, COUNTS[i]));
            }
            let text = format!("{{{}}}", members.join(", "));
            let raw: Box<RawValue> = serde_json::from_str(&text).unwrap();
            let tree: serde_json::Value = serde_json::from_str(&text).unwrap();
            proptest::prop_assert_eq!(usage_of(&raw), parse_usage(Some(&tree)), "{}", text);
        }
    }

    #[test]
    fn usage_of_anything_but_an_object_is_none() {
        for text in ["null", "[]", "3", "\"usage\""] {
            let raw: Box<RawValue> = serde_json::from_str(text).unwrap();
            assert_eq!(usage_of(&raw), None, "{text}");
        }
    }
}
