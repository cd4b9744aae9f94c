//! Arbitrary JSON through the Anthropic translation, both ways: an OpenAI
//! request to a Messages request, a Messages response back, and a stream of
//! events through the translator. Errors are fine; panics are not.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use switchboard::providers::anthropic::{
    from_anthropic_response, to_anthropic_request, StreamTranslator,
};
use switchboard::providers::sse::SseParser;

fuzz_target!(|data: &[u8]| {
    if let Ok(Value::Object(req)) = serde_json::from_slice::<Value>(data) {
        let _ = to_anthropic_request(&req, "claude-test", 1024);
    }
    if let Ok(v) = serde_json::from_slice::<Value>(data) {
        let _ = from_anthropic_response(&v, "claude", "req-1", 0);
    }
    let mut parser = SseParser::with_max_event_bytes(64 * 1024);
    let mut t = StreamTranslator::new("req-1", "claude", 0, true);
    if parser.push(data).is_ok() {
        for ev in parser.drain() {
            if t.on_event(&ev).is_err() {
                break;
            }
        }
    }
    let _ = t.usage();
});
