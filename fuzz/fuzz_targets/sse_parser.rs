//! Arbitrary bytes, split at an arbitrary point, through the SSE parser:
//! it must never panic, and feeding the same bytes in one piece or two
//! must yield the same events.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard::providers::sse::SseParser;

fn events(pieces: &[&[u8]]) -> Vec<(String, String)> {
    let mut p = SseParser::with_max_event_bytes(64 * 1024);
    let mut out = Vec::new();
    for piece in pieces {
        if p.push(piece).is_err() {
            return out;
        }
        out.extend(p.drain().map(|e| (e.event_type().to_owned(), e.data)));
    }
    out.extend(p.finish().map(|e| (e.event_type().to_owned(), e.data)));
    out
}

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let cut = usize::from(data[0]) % data.len();
    let rest = &data[1..];
    let cut = cut.min(rest.len());
    let whole = events(&[rest]);
    let split = events(&[&rest[..cut], &rest[cut..]]);
    assert_eq!(whole, split, "chunking changed the events");
});
