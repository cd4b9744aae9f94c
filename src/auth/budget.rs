//! A key's spend ledger for its daily and monthly budgets (UTC periods).
//!
//! Invariant: `spent + reserved + amount <= cap` is checked and the amount
//! reserved under one lock, so concurrent requests cannot together overshoot
//! a budget by more than what their real costs exceed their reservations.
//! A reservation is always released exactly once, by `settle`.
//! The cap is the limit itself on a single replica (`Allowance::Local`,
//! `spent` starting from the recorded spend), or, with shared budgets, the
//! lease this replica was granted (`Allowance::Leased`, see
//! `store::leases`): then a shortfall is not a refusal but a request for
//! more lease, answered by the caller.

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BudgetLimits {
    pub usd_per_day: Option<f64>,
    pub usd_per_month: Option<f64>,
}

/// Why a reservation was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("the {period} budget of ${limit:.4} is exhausted: ${spent:.4} spent{scope}, ${reserved:.4} reserved by requests in flight, and this request may cost up to ${asked:.4}")]
pub struct BudgetExhausted {
    pub period: &'static str,
    pub limit: f64,
    pub spent: f64,
    pub reserved: f64,
    pub asked: f64,
    /// "" on one replica; shared budgets count other replicas' leases.
    pub scope: &'static str,
}

/// A budget period: the day or the month (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Day,
    Month,
}

/// Where the cap on this replica's spend comes from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Allowance {
    /// The whole limit (one replica; spend recorded before counts).
    Local,
    /// What the shared ledger granted this replica this period.
    Leased { day: f64, month: f64 },
}

/// Why `reserve` did not reserve.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    Exhausted(BudgetExhausted),
    /// Shared budgets: this replica's lease is short by this much.
    NeedLease {
        period: Period,
        short: f64,
    },
}

#[derive(Debug, Clone)]
pub struct Ledger {
    limits: BudgetLimits,
    day: NaiveDate,
    month: (i32, u32),
    spent_day: f64,
    spent_month: f64,
    reserved: f64,
    allowance: Allowance,
    /// Shared budgets: the period's total granted to all replicas as last
    /// reported, and when. Others' leases only grow until given back, so a
    /// request that would not fit even with all the rest is refused without
    /// asking the ledger, for `RECHECK_S` (then leases may have come back).
    cluster: [Option<(f64, DateTime<Utc>)>; 2],
}

/// Seconds a reported cluster total is relied on.
const RECHECK_S: i64 = 5;

impl Period {
    pub fn name(self) -> &'static str {
        match self {
            Period::Day => "daily",
            Period::Month => "monthly",
        }
    }

    fn slot(self) -> usize {
        match self {
            Period::Day => 0,
            Period::Month => 1,
        }
    }

    /// The shared ledger's key for this period at `now`, and its start.
    pub fn key(self, now: DateTime<Utc>) -> (String, DateTime<Utc>) {
        let date = now.date_naive();
        let start = match self {
            Period::Day => date,
            Period::Month => date.with_day(1).unwrap_or(date),
        };
        let at = start
            .and_hms_opt(0, 0, 0)
            .map_or(now, |t| Utc.from_utc_datetime(&t));
        let key = match self {
            Period::Day => format!("day:{}", start.format("%Y-%m-%d")),
            Period::Month => format!("month:{}", start.format("%Y-%m")),
        };
        (key, at)
    }
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
            allowance: Allowance::Local,
            cluster: [None; 2],
        }
    }

    /// A shared budget: nothing granted yet, nothing spent here yet.
    pub fn leased(limits: BudgetLimits, now: DateTime<Utc>) -> Self {
        Self {
            allowance: Allowance::Leased {
                day: 0.0,
                month: 0.0,
            },
            ..Self::new(limits, now, 0.0, 0.0)
        }
    }

    pub fn limits(&self) -> BudgetLimits {
        self.limits
    }

    fn roll(&mut self, now: DateTime<Utc>) {
        if now.date_naive() != self.day {
            self.day = now.date_naive();
            self.spent_day = 0.0;
            self.cluster[0] = None;
            if let Allowance::Leased { day, .. } = &mut self.allowance {
                *day = 0.0;
            }
        }
        if (now.year(), now.month()) != self.month {
            self.month = (now.year(), now.month());
            self.spent_month = 0.0;
            self.cluster[1] = None;
            if let Allowance::Leased { month, .. } = &mut self.allowance {
                *month = 0.0;
            }
        }
    }

    pub fn reserve(&mut self, now: DateTime<Utc>, amount: f64) -> Result<(), Refusal> {
        self.roll(now);
        let amount = finite(amount);
        for period in [Period::Day, Period::Month] {
            let Some(limit) = self.limit(period) else {
                continue;
            };
            let spent = self.spent(period);
            let refused = |spent: f64, scope| {
                Refusal::Exhausted(BudgetExhausted {
                    period: period.name(),
                    limit,
                    spent,
                    reserved: self.reserved,
                    asked: amount,
                    scope,
                })
            };
            let need = spent + self.reserved + amount;
            match self.allowance {
                Allowance::Local if need > limit => return Err(refused(spent, "")),
                Allowance::Local => {}
                Allowance::Leased { .. } => {
                    let cap = self.granted(period);
                    if need <= cap {
                        continue;
                    }
                    // Others hold the rest, or this request alone is too big.
                    let others = self.cluster[period.slot()]
                        .filter(|(_, at)| (now - *at).num_seconds() < RECHECK_S)
                        .map(|(t, _)| (t - cap).max(0.0));
                    if let Some(others) = others.filter(|o| need + o > limit) {
                        return Err(refused(spent + others, " (or leased to other replicas)"));
                    }
                    if amount > limit {
                        return Err(refused(spent, ""));
                    }
                    return Err(Refusal::NeedLease {
                        period,
                        short: need - cap,
                    });
                }
            }
        }
        self.reserved += amount;
        Ok(())
    }

    fn limit(&self, period: Period) -> Option<f64> {
        match period {
            Period::Day => self.limits.usd_per_day,
            Period::Month => self.limits.usd_per_month,
        }
    }

    fn spent(&self, period: Period) -> f64 {
        match period {
            Period::Day => self.spent_day,
            Period::Month => self.spent_month,
        }
    }

    fn granted(&self, period: Period) -> f64 {
        match (self.allowance, period) {
            (Allowance::Local, p) => self.limit(p).unwrap_or(f64::MAX),
            (Allowance::Leased { day, .. }, Period::Day) => day,
            (Allowance::Leased { month, .. }, Period::Month) => month,
        }
    }

    /// Shared budgets: adds a grant for the period current at `now`;
    /// `total` is what all replicas hold after it.
    pub fn grant(&mut self, now: DateTime<Utc>, period: Period, amount: f64, total: f64) {
        self.roll(now);
        let amount = finite(amount);
        match (&mut self.allowance, period) {
            (Allowance::Leased { day, .. }, Period::Day) => *day += amount,
            (Allowance::Leased { month, .. }, Period::Month) => *month += amount,
            (Allowance::Local, _) => return,
        }
        self.cluster[period.slot()] = Some((total, now));
    }

    /// Shared budgets: lease held here and not spent or reserved, per
    /// period with a limit (to top up early, or give back on shutdown).
    pub fn unused(&mut self, now: DateTime<Utc>) -> Vec<(Period, f64)> {
        self.roll(now);
        if self.allowance == Allowance::Local {
            return Vec::new();
        }
        [Period::Day, Period::Month]
            .into_iter()
            .filter(|p| self.limit(*p).is_some())
            .map(|p| {
                (
                    p,
                    (self.granted(p) - self.spent(p) - self.reserved).max(0.0),
                )
            })
            .collect()
    }

    /// Gives the unused lease back: the caller returns it to the ledger.
    pub fn release_unused(&mut self, now: DateTime<Utc>) -> Vec<(Period, f64)> {
        let unused = self.unused(now);
        for (p, amount) in &unused {
            match (&mut self.allowance, p) {
                (Allowance::Leased { day, .. }, Period::Day) => *day -= amount,
                (Allowance::Leased { month, .. }, Period::Month) => *month -= amount,
                (Allowance::Local, _) => {}
            }
        }
        unused
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

    fn refused(r: Result<(), Refusal>) -> BudgetExhausted {
        match r {
            Err(Refusal::Exhausted(e)) => e,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

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
        let e = refused(l.reserve(now, 0.3));
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
        let e = refused(l.reserve(at("2026-11-23T00:00:10Z"), 0.7));
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

    #[test]
    fn a_lease_caps_spend_until_more_is_granted_and_a_dry_period_refuses() {
        let limits = BudgetLimits {
            usd_per_day: Some(1.0),
            usd_per_month: None,
        };
        let now = at("2026-11-22T10:00:00Z");
        let mut l = Ledger::leased(limits, now);
        assert_eq!(
            l.reserve(now, 0.3),
            Err(Refusal::NeedLease {
                period: Period::Day,
                short: 0.3
            })
        );
        l.grant(now, Period::Day, 0.5, 0.5);
        assert!(l.reserve(now, 0.3).is_ok());
        assert!(matches!(
            l.reserve(now, 0.3),
            Err(Refusal::NeedLease { .. })
        ));
        // The rest went to other replicas: the budget is dry, refused at once.
        l.grant(now, Period::Day, 0.0, 1.0);
        let e = refused(l.reserve(now, 0.3));
        assert!((e.spent - 0.5).abs() < 1e-12, "others hold 0.5: {e}");
        assert!(e.to_string().contains("other replicas"));
        // ... until the ledger is worth asking again.
        let later = at("2026-11-22T10:00:06Z");
        assert!(matches!(
            l.reserve(later, 0.3),
            Err(Refusal::NeedLease { .. })
        ));
        l.settle(later, 0.3, 0.1);
        assert_eq!(l.unused(later), vec![(Period::Day, 0.4)]);
        assert_eq!(l.release_unused(later), vec![(Period::Day, 0.4)]);
        assert_eq!(l.unused(later), vec![(Period::Day, 0.0)]);
        // A new day starts with no lease.
        let tomorrow = at("2026-11-23T00:00:01Z");
        assert!(matches!(
            l.reserve(tomorrow, 0.1),
            Err(Refusal::NeedLease { .. })
        ));
        assert_eq!(Period::Day.key(tomorrow).0, "day:2026-11-23");
        assert_eq!(Period::Month.key(tomorrow).0, "month:2026-11");
    }
}
