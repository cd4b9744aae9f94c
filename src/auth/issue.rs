//! Creating a key from an operator's spec (admin API and CLI alike):
//! validate, generate, store the hash, return the key once.

use serde::Deserialize;

use super::secret;
use crate::store::keys::KeyRecord;
use crate::store::{Store, StoreError};

/// What an operator asks for. Every field is optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySpec {
    pub name: Option<String>,
    pub tenant: Option<String>,
    pub tier: Option<String>,
    #[serde(default)]
    pub allowed_routes: Vec<String>,
    #[serde(default)]
    pub allowed_models: Vec<String>,
    /// Feature flags (`[[rules]]` `match.flags`, experiments' `key_flag`).
    #[serde(default)]
    pub flags: Vec<String>,
    pub requests_per_minute: Option<u32>,
    pub tokens_per_minute: Option<u32>,
    pub budget_usd_per_day: Option<f64>,
    pub budget_usd_per_month: Option<f64>,
}

#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error("`{0}`: {1}")]
    Invalid(&'static str, String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A created key: the record as stored, and the key itself (shown once).
pub struct Issued {
    pub record: KeyRecord,
    pub key: String,
}

fn check(spec: &KeySpec) -> Result<(), IssueError> {
    let short = |field: &'static str, v: &Option<String>| match v {
        Some(s) if s.is_empty() || s.len() > 128 => {
            Err(IssueError::Invalid(field, "must be 1 to 128 bytes".into()))
        }
        _ => Ok(()),
    };
    short("name", &spec.name)?;
    short("tenant", &spec.tenant)?;
    short("tier", &spec.tier)?;
    for (field, list) in [
        ("allowed_routes", &spec.allowed_routes),
        ("allowed_models", &spec.allowed_models),
    ] {
        if list.len() > 256 || list.iter().any(|s| s.is_empty() || s.len() > 128) {
            return Err(IssueError::Invalid(
                field,
                "at most 256 names of 1 to 128 bytes".into(),
            ));
        }
    }
    check_flags(&spec.flags)?;
    for (field, v) in [
        ("requests_per_minute", spec.requests_per_minute),
        ("tokens_per_minute", spec.tokens_per_minute),
    ] {
        if v == Some(0) {
            return Err(IssueError::Invalid(field, "must be at least 1".into()));
        }
    }
    for (field, v) in [
        ("budget_usd_per_day", spec.budget_usd_per_day),
        ("budget_usd_per_month", spec.budget_usd_per_month),
    ] {
        if v.is_some_and(|x| !x.is_finite() || x < 0.0) {
            return Err(IssueError::Invalid(
                field,
                "must be a finite number of USD, at least 0".into(),
            ));
        }
    }
    Ok(())
}

/// Flags are short names (they appear in config files and metrics-free
/// logs): at most 64 of 1 to 64 bytes of `[A-Za-z0-9_.:-]`, no repeats.
pub fn check_flags(flags: &[String]) -> Result<(), IssueError> {
    let bad = |f: &String| {
        f.is_empty()
            || f.len() > 64
            || !f
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b))
    };
    if flags.len() > 64 || flags.iter().any(bad) {
        return Err(IssueError::Invalid(
            "flags",
            "at most 64 names of 1 to 64 characters from A-Z a-z 0-9 _ . : -".into(),
        ));
    }
    let mut sorted: Vec<&String> = flags.iter().collect();
    sorted.sort();
    if sorted.windows(2).any(|w| w[0] == w[1]) {
        return Err(IssueError::Invalid("flags", "names a flag twice".into()));
    }
    Ok(())
}

/// Replaces a live key's flags (admin API and CLI alike); false if there
/// is no live key with this id.
pub async fn set_flags(store: &Store, id: &str, flags: &[String]) -> Result<bool, IssueError> {
    check_flags(flags)?;
    Ok(store.set_key_flags(id, flags).await?)
}

pub async fn create(store: &Store, spec: KeySpec) -> Result<Issued, IssueError> {
    check(&spec)?;
    let (key, prefix, key_hash) = secret::generate();
    let record = KeyRecord {
        id: format!("key_{}", uuid::Uuid::now_v7().simple()),
        key_hash,
        prefix,
        name: spec.name,
        tenant: spec.tenant,
        tier: spec.tier,
        allowed_routes: spec.allowed_routes,
        allowed_models: spec.allowed_models,
        flags: spec.flags,
        requests_per_minute: spec.requests_per_minute.map(i64::from),
        tokens_per_minute: spec.tokens_per_minute.map(i64::from),
        budget_usd_per_day: spec.budget_usd_per_day,
        budget_usd_per_month: spec.budget_usd_per_month,
        created_at: chrono::Utc::now(),
        revoked_at: None,
    };
    store.insert_key(&record).await?;
    Ok(Issued { record, key })
}

/// A key as lists show it: never the hash, never the key.
pub fn public_view(k: &KeyRecord) -> serde_json::Value {
    serde_json::json!({
        "id": k.id,
        "prefix": k.prefix,
        "name": k.name,
        "tenant": k.tenant,
        "tier": k.tier,
        "allowed_routes": k.allowed_routes,
        "allowed_models": k.allowed_models,
        "flags": k.flags,
        "requests_per_minute": k.requests_per_minute,
        "tokens_per_minute": k.tokens_per_minute,
        "budget_usd_per_day": k.budget_usd_per_day,
        "budget_usd_per_month": k.budget_usd_per_month,
        "created_at": k.created_at,
        "revoked_at": k.revoked_at,
    })
}
