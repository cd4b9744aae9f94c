//! Error types of the Anthropic translation layer and the classifier for
//! Anthropic error bodies.
//!
//! Owns [`TranslateError`] (request/response shape problems), [`StreamError`]
//! (problems while translating a stream) and [`classify_error`], which maps
//! Anthropic's `{"type":"error","error":{"type":...,"message":...}}` bodies onto
//! the provider-neutral [`ErrorKind`].
//!
//! Invariants:
//! - `TranslateError::Unsupported` and `InvalidRequest` describe the client's
//!   request (the router answers 400); `InvalidResponse` describes the
//!   upstream's answer (the router answers 502). [`TranslateError::is_client_error`]
//!   encodes that split so callers do not have to match variants.
//! - Classification never fails and agrees with the status table in
//!   Anthropic's error documentation; the body's error type wins over the
//!   status because streamed errors arrive under an HTTP 200.

use serde_json::Value;

use crate::providers::error_kind::{message_or_body, ErrorKind, UpstreamErrorInfo};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TranslateError {
    /// The request uses a feature Anthropic cannot express.
    #[error("`{field}` is not supported by this model's provider: {reason}")]
    Unsupported { field: String, reason: String },
    /// The request is malformed (wrong types, unparsable tool arguments, ...).
    #[error("invalid `{field}`: {reason}")]
    InvalidRequest { field: String, reason: String },
    /// The upstream answered with something that is not a Messages API message.
    #[error("unexpected response from Anthropic: {reason}")]
    InvalidResponse { reason: String },
}

impl TranslateError {
    /// True when the client's request is at fault (answer 400), false when
    /// the upstream is (answer 502).
    pub fn is_client_error(&self) -> bool {
        !matches!(self, Self::InvalidResponse { .. })
    }

    pub(crate) fn unsupported(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Unsupported {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidRequest {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn bad_response(reason: impl Into<String>) -> Self {
        Self::InvalidResponse {
            reason: reason.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// The upstream sent an `error` event mid-stream (e.g. overloaded).
    #[error("upstream stream error ({kind}): {message}")]
    Upstream { kind: ErrorKind, message: String },
    /// An event's data was not the JSON the Messages API promises.
    #[error("malformed Anthropic stream event: {reason}")]
    Malformed { reason: String },
}

impl StreamError {
    /// Whether retrying the whole request could help. Only meaningful before
    /// anything was sent to the client.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Upstream { kind, .. } => kind.is_retryable(),
            Self::Malformed { .. } => false,
        }
    }
}

/// Maps an Anthropic `error.type` to our vocabulary; `None` for types we do
/// not know, so the caller can fall back to the HTTP status.
pub fn kind_from_anthropic_type(error_type: &str) -> Option<ErrorKind> {
    Some(match error_type {
        "invalid_request_error" => ErrorKind::InvalidRequest,
        "authentication_error" | "permission_error" | "billing_error" => ErrorKind::Auth,
        "not_found_error" => ErrorKind::NotFound,
        "request_too_large" => ErrorKind::TooLarge,
        "rate_limit_error" => ErrorKind::RateLimited,
        "overloaded_error" => ErrorKind::Overloaded,
        "api_error" | "timeout_error" => ErrorKind::Server,
        _ => return None,
    })
}

/// Classifies a non-2xx Anthropic response.
pub fn classify_error(status: u16, body: &[u8]) -> UpstreamErrorInfo {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    let error = json.as_ref().and_then(|v| v.get("error"));
    let error_type = error.and_then(|e| e.get("type")).and_then(Value::as_str);
    let message = error.and_then(|e| e.get("message")).and_then(Value::as_str);

    let kind = error_type
        .and_then(kind_from_anthropic_type)
        .unwrap_or_else(|| ErrorKind::from_status(status));
    let retryable = kind.is_retryable() || status == 408 || status == 429 || status >= 500;
    UpstreamErrorInfo {
        kind,
        message: message_or_body(message, status, body),
        retryable,
    }
}

/// Turns the data of a stream `error` event into a [`StreamError`].
pub(crate) fn stream_error_from_event(data: &Value) -> StreamError {
    let error = data.get("error");
    let error_type = error.and_then(|e| e.get("type")).and_then(Value::as_str);
    let message = error
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .unwrap_or("upstream reported an error without a message");
    StreamError::Upstream {
        kind: error_type
            .and_then(kind_from_anthropic_type)
            .unwrap_or(ErrorKind::Other),
        message: message.to_owned(),
    }
}
