//! Provider-neutral classification of upstream errors.
//!
//! Owns [`ErrorKind`] (the small vocabulary the router's retry, fallback and
//! metrics logic speaks), [`UpstreamErrorInfo`], and the classifier for
//! OpenAI-shaped error bodies used by every OpenAI-compatible upstream.
//! Provider modules (e.g. `anthropic::classify_error`) map their own error
//! types onto the same vocabulary.
//!
//! Invariants:
//! - Classification never fails: any status and any body (JSON or not, empty,
//!   invalid UTF-8) yields a kind and a non-empty, length-capped message.
//! - `retryable` is true exactly for transient conditions (timeouts, rate
//!   limits, overload, server faults) and never for errors caused by the
//!   request or the account, which would fail identically on retry.

use serde::Serialize;
use serde_json::Value;

/// Longest message we keep from an upstream body, so an HTML error page does
/// not end up whole in logs or client responses.
pub const MAX_ERROR_MESSAGE_CHARS: usize = 500;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request was malformed or not acceptable to the model (400, 422).
    InvalidRequest,
    /// Credentials, permissions or billing (401, 402, 403).
    Auth,
    /// Unknown model or endpoint (404).
    NotFound,
    /// Request body or context too large (413).
    TooLarge,
    /// Rate or quota limit that clears with time (429).
    RateLimited,
    /// Provider temporarily out of capacity (503, 529).
    Overloaded,
    /// Provider-side fault or timeout (500, 502, 504, ...).
    Server,
    /// Anything else.
    Other,
}

impl ErrorKind {
    /// Classification from the HTTP status alone.
    pub fn from_status(status: u16) -> Self {
        match status {
            400 | 422 => Self::InvalidRequest,
            401..=403 => Self::Auth,
            404 => Self::NotFound,
            413 => Self::TooLarge,
            429 => Self::RateLimited,
            503 | 529 => Self::Overloaded,
            500..=599 => Self::Server,
            _ => Self::Other,
        }
    }

    /// Whether the same request may succeed if sent again (here or to
    /// another deployment of the same model).
    pub fn is_retryable(self) -> bool {
        matches!(self, Self::RateLimited | Self::Overloaded | Self::Server)
    }

    /// Stable snake_case name for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::Auth => "auth",
            Self::NotFound => "not_found",
            Self::TooLarge => "too_large",
            Self::RateLimited => "rate_limited",
            Self::Overloaded => "overloaded",
            Self::Server => "server",
            Self::Other => "other",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the router needs to know about a failed upstream call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UpstreamErrorInfo {
    pub kind: ErrorKind,
    pub message: String,
    pub retryable: bool,
}

/// Classifies an error from an OpenAI-compatible upstream. Understands
/// `{"error":{"message","type","code"}}`, the looser `{"error":"..."}` and
/// `{"message":"..."}` / `{"detail":"..."}` shapes some compatible servers
/// use, and falls back to the status and raw body text.
pub fn classify_openai_error(status: u16, body: &[u8]) -> UpstreamErrorInfo {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    let error = json.as_ref().and_then(|v| v.get("error"));
    let message = error
        .and_then(|e| e.get("message").or(Some(e)))
        .and_then(Value::as_str)
        .or_else(|| json.as_ref().and_then(|v| v.get("message")?.as_str()))
        .or_else(|| json.as_ref().and_then(|v| v.get("detail")?.as_str()));
    let code = error.and_then(|e| e.get("code")).and_then(Value::as_str);
    let error_type = error.and_then(|e| e.get("type")).and_then(Value::as_str);

    let mut kind = ErrorKind::from_status(status);
    let mut retryable = status == 408 || kind.is_retryable();
    // OpenAI reports an exhausted prepaid quota as 429, but waiting does not
    // refill it: treat it as an account problem so the router moves on.
    if code == Some("insufficient_quota") || error_type == Some("insufficient_quota") {
        kind = ErrorKind::Auth;
        retryable = false;
    } else if code == Some("context_length_exceeded") {
        kind = ErrorKind::TooLarge;
    }

    UpstreamErrorInfo {
        kind,
        message: message_or_body(message, status, body),
        retryable,
    }
}

/// The structured message if there is one, else the body text, else a
/// generic line naming the status; always capped in length.
pub(crate) fn message_or_body(structured: Option<&str>, status: u16, body: &[u8]) -> String {
    let text = match structured.map(str::trim).filter(|m| !m.is_empty()) {
        Some(message) => message.to_owned(),
        None => String::from_utf8_lossy(body).trim().to_owned(),
    };
    if text.is_empty() {
        return format!("upstream returned HTTP {status} with no error message");
    }
    truncate_chars(text, MAX_ERROR_MESSAGE_CHARS)
}

fn truncate_chars(mut text: String, max_chars: usize) -> String {
    if let Some((cut, _)) = text.char_indices().nth(max_chars) {
        text.truncate(cut);
        text.push('…');
    }
    text
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn openai_rate_limit_is_retryable() {
        let body = br#"{"error":{"message":"Rate limit reached for gpt-4o in organization org-x on tokens per min (TPM): Limit 30000, Used 29000, Requested 2000.","type":"tokens","param":null,"code":"rate_limit_exceeded"}}"#;
        let info = classify_openai_error(429, body);
        assert_eq!(info.kind, ErrorKind::RateLimited);
        assert!(info.retryable);
        assert!(info.message.starts_with("Rate limit reached for gpt-4o"));
    }

    #[test]
    fn openai_insufficient_quota_is_not_retryable() {
        let body = br#"{"error":{"message":"You exceeded your current quota, please check your plan and billing details.","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#;
        let info = classify_openai_error(429, body);
        assert_eq!(info.kind, ErrorKind::Auth);
        assert!(!info.retryable);
    }

    #[test]
    fn openai_invalid_api_key() {
        let body = br#"{"error":{"message":"Incorrect API key provided: sk-abc. You can find your API key at https://platform.openai.com/account/api-keys.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#;
        let info = classify_openai_error(401, body);
        assert_eq!(info.kind, ErrorKind::Auth);
        assert!(!info.retryable);
        assert!(info.message.starts_with("Incorrect API key provided"));
    }

    #[test]
    fn openai_context_length_is_too_large() {
        let body = br#"{"error":{"message":"This model's maximum context length is 8192 tokens.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#;
        let info = classify_openai_error(400, body);
        assert_eq!(info.kind, ErrorKind::TooLarge);
        assert!(!info.retryable);
    }

    #[test]
    fn openai_not_found_and_server_errors() {
        let nf = classify_openai_error(
            404,
            br#"{"error":{"message":"The model `gpt-9` does not exist","type":"invalid_request_error","code":"model_not_found"}}"#,
        );
        assert_eq!(nf.kind, ErrorKind::NotFound);
        assert!(!nf.retryable);
        let overloaded = classify_openai_error(503, b"");
        assert_eq!(overloaded.kind, ErrorKind::Overloaded);
        assert!(overloaded.retryable);
        let bad_gateway = classify_openai_error(502, b"<html>Bad Gateway</html>");
        assert_eq!(bad_gateway.kind, ErrorKind::Server);
        assert!(bad_gateway.retryable);
        assert_eq!(bad_gateway.message, "<html>Bad Gateway</html>");
    }

    #[test]
    fn loose_shapes_and_empty_bodies() {
        assert_eq!(
            classify_openai_error(400, br#"{"error":"bad things"}"#).message,
            "bad things"
        );
        assert_eq!(
            classify_openai_error(422, br#"{"detail":"field required"}"#).message,
            "field required"
        );
        let empty = classify_openai_error(500, b"   ");
        assert_eq!(
            empty.message,
            "upstream returned HTTP 500 with no error message"
        );
        let timeout = classify_openai_error(408, b"timeout");
        assert_eq!(timeout.kind, ErrorKind::Other);
        assert!(timeout.retryable);
    }

    #[test]
    fn long_and_invalid_utf8_bodies_are_capped() {
        let mut body = vec![b'x'; 2000];
        body.push(0xFF);
        let info = classify_openai_error(500, &body);
        assert_eq!(info.message.chars().count(), MAX_ERROR_MESSAGE_CHARS + 1);
        assert!(info.message.ends_with('…'));
    }

    #[test]
    fn status_table() {
        let cases = [
            (400, ErrorKind::InvalidRequest),
            (401, ErrorKind::Auth),
            (402, ErrorKind::Auth),
            (403, ErrorKind::Auth),
            (404, ErrorKind::NotFound),
            (413, ErrorKind::TooLarge),
            (429, ErrorKind::RateLimited),
            (500, ErrorKind::Server),
            (504, ErrorKind::Server),
            (529, ErrorKind::Overloaded),
            (418, ErrorKind::Other),
        ];
        for (status, kind) in cases {
            assert_eq!(ErrorKind::from_status(status), kind, "status {status}");
        }
        assert_eq!(ErrorKind::RateLimited.to_string(), "rate_limited");
    }
}
