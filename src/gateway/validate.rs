//! The checks a chat request must pass before anything is routed: `model`,
//! `messages`, `stream`; each failure is a 400 naming the parameter.

use serde_json::{Map, Value};

use crate::error::ApiError;

pub(super) struct Checked {
    pub requested: String,
    pub stream: bool,
    pub include_usage: bool,
}

pub(super) fn check(body: &Map<String, Value>) -> Result<Checked, ApiError> {
    let requested = match body.get("model") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(_) => {
            return Err(
                ApiError::bad_request("invalid_type", "`model` must be a non-empty string")
                    .with_param("model"),
            )
        }
        None => {
            return Err(
                ApiError::bad_request("missing_required_parameter", "`model` is required")
                    .with_param("model"),
            )
        }
    };
    match body.get("messages") {
        Some(Value::Array(m)) if !m.is_empty() => {
            if m.iter()
                .any(|x| x.get("role").and_then(Value::as_str).is_none())
            {
                return Err(ApiError::bad_request(
                    "invalid_type",
                    "every item of `messages` must be an object with a string `role`",
                )
                .with_param("messages"));
            }
        }
        Some(Value::Array(_)) => {
            return Err(
                ApiError::bad_request("invalid_value", "`messages` must not be empty")
                    .with_param("messages"),
            )
        }
        Some(_) => {
            return Err(
                ApiError::bad_request("invalid_type", "`messages` must be an array")
                    .with_param("messages"),
            )
        }
        None => {
            return Err(ApiError::bad_request(
                "missing_required_parameter",
                "`messages` is required",
            )
            .with_param("messages"))
        }
    }
    let stream = match body.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(
                ApiError::bad_request("invalid_type", "`stream` must be a boolean")
                    .with_param("stream"),
            )
        }
    };
    let include_usage = body
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Ok(Checked {
        requested,
        stream,
        include_usage,
    })
}
