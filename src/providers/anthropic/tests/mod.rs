//! Tests of the Anthropic translation layer against documented wire formats.
//!
//! Fixtures in `fixtures/` are copied from Anthropic's and OpenAI's API
//! documentation (streams keep the blank lines the real wire has).

// Tests may unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod errors;
mod request;
mod response;
mod stream;

use serde_json::{Map, Value};

pub(super) fn json_fixture(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

pub(super) fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("expected an object, got {other}"),
    }
}
