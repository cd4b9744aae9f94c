//! What went wrong upstream, classified once so that retry, fallback and the
//! client's status code all follow from the kind.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// No TCP/TLS connection could be made.
    Connect,
    /// The upstream went silent past the read timeout or the deadline.
    Timeout,
    /// 429.
    RateLimited,
    /// 529 / "overloaded".
    Overloaded,
    /// Any other 5xx.
    Server,
    /// 401/403: the router's key for this provider is wrong.
    Auth,
    /// 404: the upstream does not know the model.
    NotFound,
    /// 400/422: the request itself is at fault; another model would refuse it too.
    InvalidRequest,
    /// 413.
    TooLarge,
    /// A malformed body, or a stream that broke or ended early.
    Protocol,
}

impl FailureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Connect => "connect",
            FailureKind::Timeout => "timeout",
            FailureKind::RateLimited => "rate_limited",
            FailureKind::Overloaded => "overloaded",
            FailureKind::Server => "server_error",
            FailureKind::Auth => "auth",
            FailureKind::NotFound => "not_found",
            FailureKind::InvalidRequest => "invalid_request",
            FailureKind::TooLarge => "too_large",
            FailureKind::Protocol => "protocol",
        }
    }

    /// Worth another attempt on the same model.
    pub fn retryable(self) -> bool {
        matches!(
            self,
            FailureKind::Connect
                | FailureKind::Timeout
                | FailureKind::RateLimited
                | FailureKind::Overloaded
                | FailureKind::Server
        )
    }

    /// The client's request is at fault: no other model will do better.
    pub fn is_client_fault(self) -> bool {
        matches!(self, FailureKind::InvalidRequest | FailureKind::TooLarge)
    }

    /// Counts against the model's circuit breaker.
    pub fn is_model_health_failure(self) -> bool {
        !self.is_client_fault()
    }

    pub fn from_status(status: u16) -> Self {
        match status {
            429 => FailureKind::RateLimited,
            529 | 503 => FailureKind::Overloaded,
            401 | 403 => FailureKind::Auth,
            404 => FailureKind::NotFound,
            413 => FailureKind::TooLarge,
            400 | 422 => FailureKind::InvalidRequest,
            408 | 504 => FailureKind::Timeout,
            s if s >= 500 => FailureKind::Server,
            _ => FailureKind::Protocol,
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{kind:?} from upstream (status {status:?}): {message}")]
pub struct UpstreamError {
    pub kind: FailureKind,
    pub status: Option<u16>,
    /// Safe to show a client: the upstream's own message, never a key.
    pub message: String,
    /// From `Retry-After` / `retry-after-ms` on 429 and 503.
    pub retry_after: Option<Duration>,
}

impl UpstreamError {
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            status: None,
            message: message.into(),
            retry_after: None,
        }
    }

    /// Classifies a transport error from reqwest without leaking the URL's secrets.
    pub fn from_reqwest(e: reqwest::Error) -> Self {
        let kind = if e.is_timeout() {
            FailureKind::Timeout
        } else if e.is_connect() {
            FailureKind::Connect
        } else if e.is_decode() || e.is_body() {
            FailureKind::Protocol
        } else {
            FailureKind::Connect
        };
        let e = e.without_url();
        let mut message = e.to_string();
        if let Some(source) = std::error::Error::source(&e) {
            message = format!("{message}: {source}");
        }
        Self::new(kind, message)
    }
}

/// Parses `retry-after-ms` (OpenAI) or `Retry-After` in seconds.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(ms) = get("retry-after-ms").and_then(|v| v.trim().parse::<f64>().ok()) {
        if ms.is_finite() && ms >= 0.0 {
            return Some(Duration::from_secs_f64(ms / 1000.0));
        }
    }
    get("retry-after")
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
}

impl From<super::error_kind::ErrorKind> for FailureKind {
    fn from(k: super::error_kind::ErrorKind) -> Self {
        use super::error_kind::ErrorKind as K;
        match k {
            K::InvalidRequest => FailureKind::InvalidRequest,
            K::Auth => FailureKind::Auth,
            K::NotFound => FailureKind::NotFound,
            K::TooLarge => FailureKind::TooLarge,
            K::RateLimited => FailureKind::RateLimited,
            K::Overloaded => FailureKind::Overloaded,
            K::Server => FailureKind::Server,
            K::Other => FailureKind::Protocol,
        }
    }
}

impl UpstreamError {
    /// An HTTP error response, classified by the provider's own rules.
    pub fn from_info(
        info: super::error_kind::UpstreamErrorInfo,
        status: u16,
        retry_after: Option<Duration>,
    ) -> Self {
        Self {
            kind: info.kind.into(),
            status: Some(status),
            message: info.message,
            retry_after,
        }
    }
}
