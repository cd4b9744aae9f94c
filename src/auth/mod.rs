//! Client keys on the request path: `Authorization: Bearer` -> the key's
//! record and in-memory state (rate limiters, budget ledger). Must not import
//! axum; `api/` maps `AuthError` to the wire.
//!
//! Invariants:
//! - A presented key is hashed first and only hashes are looked up and
//!   compared (in constant time), so timing says nothing about the key.
//! - The hot path does not wait on the database for a key it has seen: the
//!   record is cached; once older than `key_refresh_s` it is still served
//!   while one background task re-reads it. Revocation therefore takes
//!   effect at once on the replica whose admin API revoked the key, and
//!   within `key_refresh_s` (plus one request) everywhere else (CLI,
//!   other replicas). Only the first use of a key (or an unknown key, at most
//!   once per `NEGATIVE_TTL`) reads the database.
//! - Budgets start from the costs recorded in the database when a key is
//!   first used by this process, then count this replica's settled costs.
//!   With shared budgets (scale-out on Postgres) a replica spends only the
//!   leases the shared ledger grants it (`lease.rs`).

pub mod budget;
pub mod issue;
pub mod lease;
pub mod secret;
pub mod state;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{Datelike, TimeZone, Utc};
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::store::keys::KeyRecord;
use crate::store::Store;
pub use lease::{LeaseError, Leases};
pub use state::{KeyState, Limited, Reservation};

/// How long an unknown key is remembered as unknown.
const NEGATIVE_TTL: Duration = Duration::from_secs(5);
/// Longest the first use of a key waits on the database.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(3);

/// An authenticated caller.
#[derive(Clone)]
pub struct Caller {
    pub key: Arc<KeyRecord>,
    pub state: Arc<KeyState>,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing API key")]
    Missing,
    #[error("invalid API key")]
    Invalid,
    #[error("revoked API key")]
    Revoked,
    #[error("the key store is unreachable")]
    Unavailable,
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Missing => ApiError::unauthorized(
                "Missing API key: send `Authorization: Bearer <key>` (create keys with `switchboard keys create`).",
            ),
            AuthError::Invalid => ApiError::unauthorized("Incorrect API key provided."),
            AuthError::Revoked => ApiError::unauthorized("This API key has been revoked."),
            AuthError::Unavailable => ApiError::unavailable(
                "key_store_unavailable",
                "The key store cannot be reached to check this API key; retry later.",
            ),
        }
    }
}

struct Entry {
    key: Option<Arc<KeyRecord>>,
    fetched: Instant,
    refreshing: AtomicBool,
}

pub struct KeyRing {
    store: Store,
    required: bool,
    refresh: Duration,
    entries: moka::sync::Cache<String, Arc<Entry>>,
    states: moka::sync::Cache<String, Arc<KeyState>>,
    /// Shared budgets across replicas; `None` = this replica's own ledger.
    leases: Option<Arc<Leases>>,
}

impl KeyRing {
    pub fn new(store: Store, required: bool, refresh: Duration, leases: Option<Leases>) -> Self {
        Self {
            leases: leases.map(Arc::new),
            store,
            required,
            refresh,
            entries: moka::sync::Cache::new(100_000),
            states: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(Duration::from_secs(3600))
                .build(),
        }
    }

    pub fn required(&self) -> bool {
        self.required
    }

    /// The caller behind an `Authorization` header value. Without
    /// `require_api_keys`, only tokens that look like ours are checked and
    /// anything else is anonymous.
    pub async fn authenticate(
        self: &Arc<Self>,
        authorization: Option<&str>,
    ) -> Result<Option<Caller>, AuthError> {
        let token = authorization
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty());
        let token = match token {
            None if self.required => return Err(AuthError::Missing),
            None => return Ok(None),
            Some(t) if !self.required && !t.starts_with(secret::PREFIX) => return Ok(None),
            Some(t) => t,
        };
        let hash = secret::hash(token);
        let entry = self.entry(&hash).await?;
        let key = entry.key.clone().ok_or(AuthError::Invalid)?;
        if !bool::from(key.key_hash.as_bytes().ct_eq(hash.as_bytes())) {
            return Err(AuthError::Invalid);
        }
        if key.revoked_at.is_some() {
            return Err(AuthError::Revoked);
        }
        let state = self.state(&key).await?;
        Ok(Some(Caller { key, state }))
    }

    async fn entry(self: &Arc<Self>, hash: &str) -> Result<Arc<Entry>, AuthError> {
        if let Some(e) = self.entries.get(hash) {
            let age = e.fetched.elapsed();
            match &e.key {
                Some(_) if age >= self.refresh => {
                    if !e.refreshing.swap(true, Ordering::AcqRel) {
                        let ring = self.clone();
                        let (hash, stale) = (hash.to_owned(), e.clone());
                        tokio::spawn(async move {
                            if ring.fetch(&hash).await.is_err() {
                                // Keep serving what we had; try again next time.
                                stale.refreshing.store(false, Ordering::Release);
                            }
                        });
                    }
                    return Ok(e);
                }
                Some(_) => return Ok(e),
                None if age < NEGATIVE_TTL => return Ok(e),
                None => {}
            }
        }
        self.fetch(hash).await
    }

    async fn fetch(&self, hash: &str) -> Result<Arc<Entry>, AuthError> {
        let found = tokio::time::timeout(LOOKUP_TIMEOUT, self.store.key_by_hash(hash))
            .await
            .map_err(|_| AuthError::Unavailable)?
            .map_err(|e| {
                tracing::warn!(error = %e, "Looking up an API key failed.");
                AuthError::Unavailable
            })?;
        let entry = Arc::new(Entry {
            key: found.map(Arc::new),
            fetched: Instant::now(),
            refreshing: AtomicBool::new(false),
        });
        self.entries.insert(hash.to_owned(), entry.clone());
        Ok(entry)
    }

    async fn state(&self, key: &KeyRecord) -> Result<Arc<KeyState>, AuthError> {
        if let Some(s) = self.states.get(&key.id) {
            return Ok(s);
        }
        let budgeted = key.budget_usd_per_day.is_some() || key.budget_usd_per_month.is_some();
        if budgeted && self.leases.is_some() {
            let state = Arc::new(KeyState::leased(key));
            return Ok(self
                .states
                .entry(key.id.clone())
                .or_insert_with(|| state)
                .into_value());
        }
        let (day, month) = period_starts(Utc::now());
        let spent = async {
            let d = self.store.key_spent_since(&key.id, day).await?;
            let m = self.store.key_spent_since(&key.id, month).await?;
            Ok::<_, crate::store::StoreError>((d, m))
        };
        let (spent_day, spent_month) =
            if key.budget_usd_per_day.is_some() || key.budget_usd_per_month.is_some() {
                tokio::time::timeout(LOOKUP_TIMEOUT, spent)
                    .await
                    .map_err(|_| AuthError::Unavailable)?
                    .map_err(|e| {
                        tracing::warn!(error = %e, "Reading a key's recorded spend failed.");
                        AuthError::Unavailable
                    })?
            } else {
                (0.0, 0.0)
            };
        let state = Arc::new(KeyState::new(key, spent_day, spent_month));
        Ok(self
            .states
            .entry(key.id.clone())
            .or_insert_with(|| state)
            .into_value())
    }

    /// Shared budgets, when on.
    pub fn leases(&self) -> Option<&Arc<Leases>> {
        self.leases.as_ref()
    }

    /// Shared budgets: gives every unused lease back (on shutdown).
    pub async fn give_back_leases(&self) {
        if let Some(leases) = &self.leases {
            let states = self
                .states
                .iter()
                .map(|(id, s)| ((*id).clone(), s))
                .collect();
            leases.give_back(states).await;
        }
    }

    /// Forgets a key at once on this replica (after a revocation here).
    pub fn forget(&self, key_id: &str) {
        let stale: Vec<Arc<String>> = self
            .entries
            .iter()
            .filter(|(_, e)| e.key.as_ref().is_some_and(|k| k.id == key_id))
            .map(|(h, _)| h)
            .collect();
        for h in stale {
            self.entries.invalidate(h.as_str());
        }
    }
}

/// Midnight UTC today and the first of this month.
fn period_starts(now: chrono::DateTime<Utc>) -> (chrono::DateTime<Utc>, chrono::DateTime<Utc>) {
    let day = now
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .map_or(now, |d| Utc.from_utc_datetime(&d));
    let month = now
        .date_naive()
        .with_day(1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map_or(day, |d| Utc.from_utc_datetime(&d));
    (day, month)
}
