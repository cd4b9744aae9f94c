//! What the router keeps in memory per key: its request and token rate
//! limiters (`governor`, GCRA, one per key per replica) and its budget
//! ledger. `Reservation` is the worst-case cost held for one request.
//!
//! Invariant: a `Reservation` is released exactly once — by `settle` with the
//! real cost, or on drop with cost 0 (the request ended before any answer).

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::Utc;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use super::budget::{BudgetLimits, Ledger, Period, Refusal};
use crate::store::keys::KeyRecord;

/// A rate limit was hit: which one, and when to retry.
#[derive(Debug, Clone, PartialEq)]
pub struct Limited {
    pub what: &'static str,
    pub per_minute: u32,
    pub retry_after: Duration,
}

pub struct KeyState {
    requests: Option<(DefaultDirectRateLimiter, u32)>,
    tokens: Option<(DefaultDirectRateLimiter, u32)>,
    ledger: Mutex<Ledger>,
    /// Shared budgets: a background top-up of the lease is under way.
    topping_up: AtomicBool,
    /// Shared budgets: requests short of lease ask the ledger one at a time
    /// (the next one often finds the previous grant enough).
    lease_turn: tokio::sync::Mutex<()>,
}

fn limiter(per_minute: Option<i64>) -> Option<(DefaultDirectRateLimiter, u32)> {
    let n = u32::try_from(per_minute?).ok()?;
    let nz = NonZeroU32::new(n)?;
    Some((RateLimiter::direct(Quota::per_minute(nz)), n))
}

fn limits(key: &KeyRecord) -> BudgetLimits {
    BudgetLimits {
        usd_per_day: key.budget_usd_per_day,
        usd_per_month: key.budget_usd_per_month,
    }
}

impl KeyState {
    pub fn new(key: &KeyRecord, spent_day: f64, spent_month: f64) -> Self {
        let ledger = Ledger::new(limits(key), Utc::now(), spent_day, spent_month);
        Self::with_ledger(key, ledger)
    }

    /// A key whose budget is shared by replicas through leases.
    pub fn leased(key: &KeyRecord) -> Self {
        Self::with_ledger(key, Ledger::leased(limits(key), Utc::now()))
    }

    fn with_ledger(key: &KeyRecord, ledger: Ledger) -> Self {
        Self {
            requests: limiter(key.requests_per_minute),
            tokens: limiter(key.tokens_per_minute),
            ledger: Mutex::new(ledger),
            topping_up: AtomicBool::new(false),
            lease_turn: tokio::sync::Mutex::new(()),
        }
    }

    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        // The ledger holds plain numbers: a panic elsewhere cannot leave it torn.
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes one request from the per-minute request allowance.
    pub fn check_request(&self) -> Result<(), Limited> {
        let Some((lim, n)) = &self.requests else {
            return Ok(());
        };
        lim.check().map_err(|not_until| Limited {
            what: "requests",
            per_minute: *n,
            retry_after: not_until.wait_time_from(DefaultClock::default().now()),
        })
    }

    /// Takes `tokens` (the prompt's estimate) from the per-minute token
    /// allowance; a prompt larger than the whole allowance is refused.
    pub fn check_tokens(&self, tokens: u32) -> Result<(), Limited> {
        let Some((lim, n)) = &self.tokens else {
            return Ok(());
        };
        let refused = |retry_after| Limited {
            what: "tokens",
            per_minute: *n,
            retry_after,
        };
        let Some(t) = NonZeroU32::new(tokens) else {
            return Ok(());
        };
        match lim.check_n(t) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(refused(
                not_until.wait_time_from(DefaultClock::default().now()),
            )),
            Err(_) => Err(refused(Duration::from_secs(60))),
        }
    }

    /// Books tokens used after the fact (the completion); best effort: an
    /// allowance already spent stays spent, the next request waits.
    pub fn charge_tokens(&self, tokens: u32) {
        if let (Some((lim, _)), Some(t)) = (&self.tokens, NonZeroU32::new(tokens)) {
            let _ = lim.check_n(t);
        }
    }

    pub fn reserve(self: &Arc<Self>, amount: f64) -> Result<Reservation, Refusal> {
        self.ledger().reserve(Utc::now(), amount)?;
        Ok(Reservation {
            state: self.clone(),
            amount,
            open: true,
        })
    }

    /// USD currently held by requests in flight.
    pub fn reserved(&self) -> f64 {
        self.ledger().reserved()
    }

    pub fn limits(&self) -> BudgetLimits {
        self.ledger().limits()
    }

    /// Shared budgets: books a grant of the ledger (see `Ledger::grant`).
    pub fn grant(&self, period: Period, amount: f64, total: f64) {
        self.ledger().grant(Utc::now(), period, amount, total);
    }

    /// Shared budgets: lease not yet spent or reserved, per period.
    pub fn unused(&self) -> Vec<(Period, f64)> {
        self.ledger().unused(Utc::now())
    }

    /// Shared budgets: takes the unused lease out, to give it back.
    pub fn release_unused(&self) -> Vec<(Period, f64)> {
        self.ledger().release_unused(Utc::now())
    }

    /// Waits for this key's turn to ask the shared ledger for more.
    pub async fn lease_turn(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.lease_turn.lock().await
    }

    /// Claims the key's one background top-up; false if one runs.
    pub fn start_top_up(&self) -> bool {
        !self.topping_up.swap(true, Ordering::AcqRel)
    }

    pub fn end_top_up(&self) {
        self.topping_up.store(false, Ordering::Release);
    }
}

/// The worst-case cost held for one request until it settles.
pub struct Reservation {
    state: Arc<KeyState>,
    amount: f64,
    open: bool,
}

impl Reservation {
    pub fn amount(&self) -> f64 {
        self.amount
    }

    pub fn settle(mut self, actual_usd: f64) {
        self.release(actual_usd);
    }

    fn release(&mut self, actual_usd: f64) {
        if std::mem::take(&mut self.open) {
            self.state
                .ledger()
                .settle(Utc::now(), self.amount, actual_usd);
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.release(0.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(budget: f64, rpm: Option<i64>) -> KeyRecord {
        KeyRecord {
            id: "key_t".into(),
            key_hash: String::new(),
            prefix: String::new(),
            name: None,
            tenant: None,
            tier: None,
            allowed_routes: vec![],
            allowed_models: vec![],
            flags: vec![],
            requests_per_minute: rpm,
            tokens_per_minute: None,
            budget_usd_per_day: Some(budget),
            budget_usd_per_month: None,
            created_at: Utc::now(),
            revoked_at: None,
        }
    }

    #[test]
    fn a_dropped_reservation_is_released_and_a_settled_one_books_its_cost() {
        let s = Arc::new(KeyState::new(&key(1.0, None), 0.0, 0.0));
        let r = s.reserve(0.6).unwrap();
        assert!(s.reserve(0.6).is_err(), "0.6 is held");
        drop(r);
        assert_eq!(s.reserved(), 0.0);
        s.reserve(0.6).unwrap().settle(0.5);
        assert!(s.reserve(0.6).is_err(), "0.5 spent + 0.6 > 1.0");
        assert!(s.reserve(0.5).is_ok());
    }

    #[test]
    fn the_request_limiter_refuses_past_its_quota_with_a_wait() {
        let s = KeyState::new(&key(1.0, Some(2)), 0.0, 0.0);
        assert!(s.check_request().is_ok());
        assert!(s.check_request().is_ok());
        let l = s.check_request().unwrap_err();
        assert_eq!((l.what, l.per_minute), ("requests", 2));
        assert!(l.retry_after > Duration::ZERO);
    }
}
