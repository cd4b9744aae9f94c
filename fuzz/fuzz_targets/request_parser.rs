//! Arbitrary bytes as a chat request body: JSON parsing, router options,
//! capability needs and local token counting must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};
use switchboard::gateway::options::{Needs, RouterOptions};
use switchboard::providers::tokens;

fuzz_target!(|data: &[u8]| {
    let Ok(mut body) = serde_json::from_slice::<Map<String, Value>>(data) else {
        return;
    };
    let _ = RouterOptions::extract(&mut body, &http::HeaderMap::new());
    let _ = Needs::of(&body);
    let _ = tokens::count_messages(body.get("messages"));
});
