//! Provider translation for Anthropic's Messages API.
//!
//! Owns everything Anthropic-specific between the router's OpenAI-shaped
//! world and `POST /v1/messages`: request translation ([`to_anthropic_request`]),
//! non-streaming response translation ([`from_anthropic_response`]), stream
//! translation ([`StreamTranslator`]) and error classification
//! ([`classify_error`]). It performs no I/O; callers send the body with the
//! headers below and feed the answer back in.
//!
//! Invariants shared by the submodules:
//! - Translation is pure and deterministic: same input, same output.
//! - Nothing here panics on upstream or client input; every problem is a
//!   typed error that says whose fault it is (see
//!   [`TranslateError::is_client_error`]).
//! - The tool named [`JSON_TOOL_NAME`] is the router's own device for
//!   `response_format: json_schema`; it is refused in client tool lists and
//!   never shown to clients as a tool call.

pub mod client;
mod content;
mod error;
mod request;
mod response;
mod stream;
mod tools;

pub use error::{classify_error, kind_from_anthropic_type, StreamError, TranslateError};
pub use request::to_anthropic_request;
pub use response::from_anthropic_response;
pub use stream::StreamTranslator;

/// Value for the `anthropic-version` header the Messages API requires.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// Name of the forced tool used to emulate `response_format: json_schema`.
pub const JSON_TOOL_NAME: &str = "switchboard_json_response";

#[cfg(test)]
mod tests;
