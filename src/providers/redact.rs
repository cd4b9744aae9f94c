//! Keeps provider keys out of everything the router says about an upstream.
//!
//! An upstream's error body becomes the error's message, and that message
//! reaches logs and clients. Some upstreams echo the request back in it —
//! proxies and misconfigured gateways print `Authorization: Bearer …` in
//! their 401 and 500 pages — so every message is scrubbed at the provider
//! boundary: the raw error body before it is classified (classification
//! truncates, and a cut could leave a piece of a key no exact match finds),
//! and every error message, mid-stream ones included, once more on the way
//! out of `Provider::call`.
//!
//! Two rules: the provider's own key wherever it appears, and whatever
//! token follows a credential marker (`Bearer`, `x-api-key`, `api-key`),
//! which also catches keys the router never held (a proxy's own).
//! Pure string work: no I/O, no allocation when there is nothing to hide.

use std::borrow::Cow;

/// What a hidden secret is replaced with.
pub const REDACTED: &str = "[REDACTED]";

/// Keys shorter than this are not hidden as substrings: a three-letter key
/// ("abc" for a local server) would mangle every message, and no real
/// provider issues keys that short.
const MIN_SECRET_LEN: usize = 8;

/// Markers after which a credential follows, lower-case.
const MARKERS: [&str; 3] = ["bearer ", "x-api-key", "api-key"];

/// `text` with `secret` and every marked credential replaced by `[REDACTED]`.
pub fn scrub<'a>(text: &'a str, secret: Option<&str>) -> Cow<'a, str> {
    let mut out = Cow::Borrowed(text);
    if let Some(s) = secret.filter(|s| s.len() >= MIN_SECRET_LEN) {
        if out.contains(s) {
            out = Cow::Owned(out.replace(s, REDACTED));
        }
    }
    match scrub_marked(&out) {
        Some(cleaned) => Cow::Owned(cleaned),
        None => out,
    }
}

/// Bytes of an error body, scrubbed (invalid UTF-8 is replaced, which only
/// matters for a message that was unreadable anyway).
pub fn scrub_bytes(body: Vec<u8>, secret: Option<&str>) -> Vec<u8> {
    let cleaned = match scrub(&String::from_utf8_lossy(&body), secret) {
        Cow::Borrowed(_) => None,
        Cow::Owned(s) => Some(s),
    };
    cleaned.map_or(body, String::into_bytes)
}

/// Replaces the token after each marker; `None` when no marker carries one.
fn scrub_marked(text: &str) -> Option<String> {
    // ASCII lower-casing keeps byte offsets, so positions map back to `text`.
    let lower = text.to_ascii_lowercase();
    let mut spans: Vec<(usize, usize)> = Vec::new();
    for marker in MARKERS {
        let mut from = 0;
        while let Some(at) = lower[from..].find(marker) {
            let start = skip_separators(text, from + at + marker.len());
            let end = token_end(text, start);
            if end > start {
                spans.push((start, end));
            }
            from = from + at + marker.len();
        }
    }
    if spans.is_empty() {
        return None;
    }
    spans.sort_unstable();
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for (start, end) in spans {
        if start < last {
            continue;
        }
        out.push_str(&text[last..start]);
        out.push_str(REDACTED);
        last = end;
    }
    out.push_str(&text[last..]);
    Some(out)
}

/// Past `: `, `=`, quotes and spaces between a header name and its value
/// (`x-api-key: k`, `"x-api-key":"k"`, `api-key=k`).
fn skip_separators(text: &str, mut i: usize) -> usize {
    let b = text.as_bytes();
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b':' | b'=' | b'"' | b'\'') {
        i += 1;
    }
    i
}

/// The end of a token: the characters keys and base64 are made of.
fn token_end(text: &str, mut i: usize) -> usize {
    let b = text.as_bytes();
    while i < b.len()
        && (b[i].is_ascii_alphanumeric()
            || matches!(b[i], b'-' | b'_' | b'.' | b'~' | b'+' | b'/' | b'='))
    {
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "sk-live-0123456789abcdef";

    #[test]
    fn the_key_is_hidden_wherever_it_appears() {
        let msg = format!("bad key {KEY}; again: {KEY}.");
        assert_eq!(
            scrub(&msg, Some(KEY)),
            "bad key [REDACTED]; again: [REDACTED]."
        );
    }

    #[test]
    fn marked_credentials_are_hidden_even_when_unknown() {
        let cases = [
            (
                "Authorization: Bearer other-token-42 rejected",
                "Authorization: Bearer [REDACTED] rejected",
            ),
            (
                r#"{"headers":{"x-api-key":"sk-ant-zzz"}}"#,
                r#"{"headers":{"x-api-key":"[REDACTED]"}}"#,
            ),
            ("api-key=abc.def/ghi= end", "api-key=[REDACTED] end"),
            ("BEARER XYZ", "BEARER [REDACTED]"),
        ];
        for (input, want) in cases {
            assert_eq!(scrub(input, None), want, "{input}");
        }
    }

    #[test]
    fn json_stays_json_after_scrubbing() {
        let body =
            format!(r#"{{"error":{{"message":"got Authorization: Bearer {KEY}","type":"auth"}}}}"#);
        let cleaned = scrub_bytes(body.into_bytes(), Some(KEY));
        let v: serde_json::Value = serde_json::from_slice(&cleaned).unwrap_or_default();
        assert_eq!(
            v["error"]["message"],
            "got Authorization: Bearer [REDACTED]"
        );
    }

    #[test]
    fn clean_text_is_left_alone_and_short_keys_are_not_substrings() {
        assert!(matches!(scrub("all fine", Some(KEY)), Cow::Borrowed(_)));
        assert_eq!(scrub("abc abc", Some("abc")), "abc abc");
        assert_eq!(scrub("Bearer [REDACTED]", None), "Bearer [REDACTED]");
        assert_eq!(scrub("a bearer", None), "a bearer");
    }
}
