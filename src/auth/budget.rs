//! A key's spend ledger for its daily and monthly budgets (UTC periods).
//!
//! Invariant: `spent + reserved + amount <= limit` is checked and the amount
//! reserved under one lock, so concurrent requests cannot together overshoot
//! a budget by more than what their real costs exceed their reservations.
//! A reservation is always released exactly once, by `settle`.

use chrono::{DateTime, Datelike, NaiveDate, Utc};

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BudgetLimits {
    pub usd_per_day: Option<f64>,
    pub usd_per_month: Option<f64>,
}

/// Why a reservation was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("the {period} budget of ${limit:.4} is exhausted: ${spent:.4} spent, ${reserved:.4} reserved by requests in flight, and this request may cost up to ${asked:.4}")]
pub struct BudgetExhausted {
    pub period: &'static str,
    pub limit: f64,
    pub spent: f64,
    pub reserved: f64,
    pub asked: f64,
}

#[derive(Debug, Clone)]
pub struct Ledger {
    limits: BudgetLimits,
    day: NaiveDate,
    month: (i32, u32),
    spent_day: f64,
    spent_month: f64,
    reserved: f64,
}

impl Ledger {
    /// Starts from the spend already recorded this day and month.
    pub fn new(limits: BudgetLimits, now: DateTime<Utc>, spent_day: f64, spent_month: f64) -> Self {
        Self {
            limits,
            day: now.date_naive(),
            month: (now.year(), now.month()),
            spent_day: finite(spent_day),
            spent_month: finite(spent_month),
            reserved: 0.0,
        }
    }

    fn roll(&mut self, now: DateTime<Utc>) {
        if now.date_naive() != self.day {
            self.day = now.date_naive();
            self.spent_day = 0.0;
        }
        if (now.year(), now.month()) != self.month {
            self.month = (now.year(), now.month());
            self.spent_month = 0.0;
        }
    }

    pub fn reserve(&mut self, now: DateTime<Utc>, amount: f64) -> Result<(), BudgetExhausted> {
        self.roll(now);
        let amount = finite(amount);
        let periods = [
            ("daily", self.limits.usd_per_day, self.spent_day),
            ("monthly", self.limits.usd_per_month, self.spent_month),
        ];
        for (period, limit, spent) in periods {
            if let Some(limit) = limit {
                if spent + self.reserved + amount > limit {
                    return Err(BudgetExhausted {
                        period,
                        limit,
                        spent,
                        reserved: self.reserved,
                        asked: amount,
                    });
                }
            }
        }
        self.reserved += amount;
        Ok(())
    }

    /// Releases a reservation and books what the request really cost.
    pub fn settle(&mut self, now: DateTime<Utc>, reserved: f64, actual: f64) {
        self.roll(now);
        self.reserved = (self.reserved - finite(reserved)).max(0.0);
        let actual = finite(actual);
        self.spent_day += actual;
        self.spent_month += actual;
    }

    pub fn reserved(&self) -> f64 {
        self.reserved
    }
}

/// Non-finite or negative amounts count as "too much", never as a credit.
fn finite(x: f64) -> f64 {
    if x.is_finite() {
        x.max(0.0)
    } else {
        f64::MAX
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn reservations_in_flight_count_against_the_budget() {
        let limits = BudgetLimits {
            usd_per_day: Some(1.0),
            usd_per_month: None,
        };
        let now = at("2026-11-22T10:00:00Z");
        let mut l = Ledger::new(limits, now, 0.5, 0.5);
        assert!(l.reserve(now, 0.3).is_ok());
        let e = l.reserve(now, 0.3).unwrap_err();
        assert_eq!(e.period, "daily");
        assert!((e.reserved - 0.3).abs() < 1e-12);
        l.settle(now, 0.3, 0.1);
        assert!(l.reserve(now, 0.3).is_ok(), "0.6 spent + 0.3 fits in 1.0");
        assert!(l.reserve(now, 0.2).is_err());
    }

    #[test]
    fn a_new_day_resets_the_daily_spend_but_not_the_monthly_one() {
        let limits = BudgetLimits {
            usd_per_day: Some(1.0),
            usd_per_month: Some(1.5),
        };
        let mut l = Ledger::new(limits, at("2026-11-22T23:59:00Z"), 0.9, 0.9);
        assert!(l.reserve(at("2026-11-22T23:59:30Z"), 0.2).is_err());
        let e = l.reserve(at("2026-11-23T00:00:10Z"), 0.7).unwrap_err();
        assert_eq!(e.period, "monthly");
        assert!(l.reserve(at("2026-11-23T00:00:10Z"), 0.5).is_ok());
        assert!(l.reserve(at("2026-12-01T00:00:00Z"), 0.4).is_ok());
    }

    #[test]
    fn nan_and_infinite_amounts_are_refused_not_credited() {
        let limits = BudgetLimits {
            usd_per_day: Some(1.0),
            usd_per_month: None,
        };
        let now = at("2026-11-22T10:00:00Z");
        let mut l = Ledger::new(limits, now, 0.0, 0.0);
        assert!(l.reserve(now, f64::NAN).is_err());
        assert!(l.reserve(now, f64::INFINITY).is_err());
        l.settle(now, 0.0, -5.0);
        assert!(l.reserve(now, 1.5).is_err(), "a negative cost is no credit");
    }
}
