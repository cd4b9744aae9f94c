//! Parsed value types that cross module boundaries.
//!
//! Everything here is validated at construction, so code past `api/` never
//! sees a raw `f64` reward or an unchecked name. No I/O, no axum, no sqlx.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The router's id for one request: returned as the response `id`, every
/// stream chunk's `id` and the `x-switchboard-request-id` header.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RequestId(String);

impl RequestId {
    /// A fresh, time-ordered id (UUIDv7) in OpenAI's `chatcmpl-` style.
    pub fn generate() -> Self {
        Self(format!("chatcmpl-{}", uuid::Uuid::now_v7().simple()))
    }

    /// Accepts an id a client sent back (feedback). Bounded and printable.
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        let ok = !raw.is_empty()
            && raw.len() <= 128
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(DomainError::RequestId)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A model or route name as configured: non-empty, no whitespace or control
/// characters, at most 256 bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ModelName(String);

impl ModelName {
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        let ok = !raw.is_empty()
            && raw.len() <= 256
            && !raw.chars().any(|c| c.is_whitespace() || c.is_control());
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(DomainError::Name(raw.chars().take(64).collect()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ModelName {
    type Error = DomainError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<ModelName> for String {
    fn from(value: ModelName) -> Self {
        value.0
    }
}

impl fmt::Display for ModelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Route names follow the same rules as model names.
pub type RouteName = ModelName;

/// A quality score: finite and in [0, 1].
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize)]
#[serde(transparent)]
pub struct Reward(f64);

impl Reward {
    pub const ZERO: Reward = Reward(0.0);
    pub const ONE: Reward = Reward(1.0);

    pub fn new(value: f64) -> Result<Self, DomainError> {
        if value.is_finite() && (0.0..=1.0).contains(&value) {
            Ok(Self(value))
        } else {
            Err(DomainError::Reward(value))
        }
    }

    pub fn get(self) -> f64 {
        self.0
    }
}

/// An amount in US dollars: finite and non-negative.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default, Serialize)]
#[serde(transparent)]
pub struct Usd(f64);

impl Usd {
    pub const ZERO: Usd = Usd(0.0);

    pub fn new(value: f64) -> Result<Self, DomainError> {
        if value.is_finite() && value >= 0.0 {
            Ok(Self(value))
        } else {
            Err(DomainError::Usd(value))
        }
    }

    pub fn get(self) -> f64 {
        self.0
    }
}

impl std::ops::Add for Usd {
    type Output = Usd;
    fn add(self, rhs: Usd) -> Usd {
        Usd(self.0 + rhs.0)
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DomainError {
    #[error("request id must be 1-128 characters of letters, digits, '-' or '_'")]
    RequestId,
    #[error("name {0:?} must be 1-256 characters with no whitespace")]
    Name(String),
    #[error("reward {0} must be a finite number in [0, 1]")]
    Reward(f64),
    #[error("amount {0} must be a finite, non-negative number of USD")]
    Usd(f64),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reward_rejects_out_of_range_and_nan() {
        assert!(Reward::new(0.5).is_ok());
        assert!(Reward::new(1.01).is_err());
        assert!(Reward::new(-0.1).is_err());
        assert!(Reward::new(f64::NAN).is_err());
    }

    #[test]
    fn request_ids_round_trip_and_reject_junk() {
        let id = RequestId::generate();
        assert_eq!(RequestId::parse(id.as_str()), Ok(id.clone()));
        assert!(RequestId::parse("").is_err());
        assert!(RequestId::parse("a b").is_err());
        assert!(RequestId::parse(&"x".repeat(129)).is_err());
    }

    #[test]
    fn names_reject_whitespace() {
        assert!(ModelName::parse("gpt-4o-mini").is_ok());
        assert!(ModelName::parse("meta-llama/llama-3.1-8b-instruct").is_ok());
        assert!(ModelName::parse("two words").is_err());
        assert!(ModelName::parse("").is_err());
    }
}
