//! Per-arm change detection on standardised prediction residuals.
//!
//! Owns: a two-sided CUSUM (Page 1954) and the "alarm holds for N updates"
//! state that the arm uses to forget faster and explore more. Must not import
//! the models: it sees only standardised residuals `z = e / sd`.
//! Math: `S+ = max(0, S+ + z - k)`, `S- = max(0, S- - z - k)`; alarm when
//! either exceeds `h`, then both reset. With k = 0.5, h = 10 the in-control
//! run length for Gaussian z is in the tens of thousands of updates, while a
//! one-sd shift is flagged after ~20. z is clipped to +-4 so one outlier
//! cannot raise an alarm alone. O(1) per update.
//! Invariant: `pos`, `neg` >= 0 and finite; `hold` counts down to 0.

use serde::{Deserialize, Serialize};

use super::exact;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Shift {
    Up,
    Down,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Cusum {
    #[serde(with = "exact::num")]
    pub pos: f64,
    #[serde(with = "exact::num")]
    pub neg: f64,
    /// Updates left during which the last alarm still holds.
    pub hold: u32,
    /// Alarms raised over the arm's life (for metrics).
    pub alarms: u64,
}

impl Cusum {
    /// Feeds one standardised residual; returns the shift if an alarm fires.
    pub fn observe(&mut self, z: f64, slack: f64, threshold: f64, hold: u32) -> Option<Shift> {
        self.hold = self.hold.saturating_sub(1);
        if !z.is_finite() {
            return None;
        }
        let z = z.clamp(-4.0, 4.0);
        self.pos = (self.pos + z - slack).max(0.0);
        self.neg = (self.neg - z - slack).max(0.0);
        let shift = if self.pos > threshold {
            Shift::Up
        } else if self.neg > threshold {
            Shift::Down
        } else {
            return None;
        };
        self.pos = 0.0;
        self.neg = 0.0;
        self.hold = hold;
        self.alarms += 1;
        Some(shift)
    }

    pub fn active(&self) -> bool {
        self.hold > 0
    }

    pub fn is_consistent(&self) -> bool {
        self.pos.is_finite() && self.neg.is_finite() && self.pos >= 0.0 && self.neg >= 0.0
    }
}

/// What the gateway logs: which arm's which signal moved, and which way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriftEvent {
    pub arm: usize,
    pub signal: DriftSignal,
    pub shift: Shift,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftSignal {
    Quality,
    Cost,
}

/// Whether an arm is currently in a drift response, per signal.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriftFlags {
    pub quality: bool,
    pub cost: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quiet_on_noise_alarms_on_shift() {
        let mut c = Cusum::default();
        // Deterministic zero-mean, unit-variance-ish sequence.
        let mut fired = 0;
        for i in 0..5000 {
            let z = if i % 2 == 0 { 1.0 } else { -1.0 };
            fired += usize::from(c.observe(z, 0.5, 10.0, 5).is_some());
        }
        assert_eq!(fired, 0);
        let mut when = None;
        for i in 0..100 {
            if let Some(s) = c.observe(-1.5, 0.5, 10.0, 5) {
                when = Some((i, s));
                break;
            }
        }
        assert_eq!(when, Some((9, Shift::Down)));
        assert!(c.active());
        for _ in 0..5 {
            c.observe(0.0, 0.5, 10.0, 5);
        }
        assert!(!c.active());
    }
}
