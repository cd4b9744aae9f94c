//! Budget pacing by online primal–dual (Lagrangian) control.
//!
//! Owns: the dual variable `lambda >= 0` for the constraint
//! `mean cost per request <= target`. Must not import models or decision
//! code: it sees realised costs and hands out a cost weight.
//!
//! Math (projected dual subgradient, e.g. Agrawal & Devanur 2014 "bandits
//! with concave rewards and convex knapsacks"; Balseiro et al. 2020 "dual
//! mirror descent for online allocation"): with `r_t = cost_t / target`,
//! `lambda <- clamp(lambda + eta (r_t - 1), 0, LAMBDA_MAX)`, and decisions
//! maximise `q - (w + lambda / target) c`. Design choices against the
//! oscillation that makes a pacer waste money (ParetoBandit lands below the
//! single-model hull):
//! * `lambda` is normalised (quality per *target* of spend), so one step
//!   size fits any price level, and it multiplies each arm's *predicted
//!   per-prompt* cost, so at a fixed lambda the policy ranks prompts by
//!   marginal quality per dollar instead of flipping whole arms.
//! * steps are small (`eta` ~ 0.002 quality units): lambda moves slowly
//!   relative to quality gaps, so the arm mix changes only at the margin.
//! * a single very expensive request would kick lambda hard; its normalised
//!   cost is capped per step at `max_cost_ratio` and the excess carried in
//!   `backlog` and paid over the next steps, so the cumulative spend error
//!   is still tracked exactly (sum of applied steps == sum of `r_t - 1`).
//! * warm-up: for the first `warmup` requests the step is scaled by
//!   `sqrt(warmup / n)` so lambda reaches its operating level while the
//!   cost models are still being learned, then settles.
//!   Cost: O(1) per outcome.
//!
//! Invariant: `0 <= lambda <= LAMBDA_MAX`, `backlog >= 0`, both finite.

use serde::{Deserialize, Serialize};

use super::config::PacingConfig;
use super::exact;

/// Upper bound on the normalised dual: a quality gap of 100 per target of
/// spend is already "never pay more"; bounding keeps recovery time bounded.
pub const LAMBDA_MAX: f64 = 100.0;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PacingState {
    #[serde(with = "exact::num")]
    lambda: f64,
    #[serde(with = "exact::num")]
    backlog: f64,
    requests: u64,
    #[serde(with = "exact::num")]
    spend_usd: f64,
}

impl PacingState {
    /// Normalised dual in force (quality units per target of spend).
    pub fn lambda(&self) -> f64 {
        self.lambda
    }

    /// Requests observed and their total spend (for metrics).
    pub fn requests(&self) -> u64 {
        self.requests
    }

    pub fn spend_usd(&self) -> f64 {
        self.spend_usd
    }

    /// The cost weight decisions use: `base + lambda / target` (USD^-1).
    pub fn cost_weight(&self, base: f64, target: Option<f64>) -> f64 {
        match target {
            Some(t) if t > 0.0 => base + self.lambda / t,
            _ => base,
        }
    }

    /// Accounts one realised cost; with no target the dual stays at 0.
    pub fn observe(&mut self, cost_usd: f64, target: Option<f64>, cfg: &PacingConfig) {
        self.requests += 1;
        self.spend_usd += cost_usd;
        let Some(target) = target.filter(|t| *t > 0.0) else {
            self.lambda = 0.0;
            self.backlog = 0.0;
            return;
        };
        let raw = cost_usd / target - 1.0 + self.backlog;
        let step_grad = raw.min(cfg.max_cost_ratio - 1.0);
        self.backlog = raw - step_grad;
        let n = self.requests as f64;
        let boost = (f64::from(cfg.warmup) / n).sqrt().max(1.0);
        self.lambda = (self.lambda + cfg.step * boost * step_grad).clamp(0.0, LAMBDA_MAX);
    }

    /// Sets the dual directly (e.g. carried over from a previous route
    /// config); clamped into range.
    pub fn set_lambda(&mut self, lambda: f64) {
        if lambda.is_finite() {
            self.lambda = lambda.clamp(0.0, LAMBDA_MAX);
        }
    }

    /// What this state learned since `earlier` (an ancestor): requests,
    /// spend and the net move of the dual (see `delta.rs`).
    pub(crate) fn shift_since(&self, earlier: &Self) -> (u64, f64, f64) {
        (
            self.requests.saturating_sub(earlier.requests),
            self.spend_usd - earlier.spend_usd,
            self.lambda - earlier.lambda,
        )
    }

    /// Adds another replica's requests and spend and moves the dual by its
    /// net shift, clamped into range. The spike backlog stays local.
    pub(crate) fn merge(&mut self, requests: u64, spend_usd: f64, lambda_shift: f64) {
        self.requests = self.requests.saturating_add(requests);
        self.spend_usd = (self.spend_usd + spend_usd).max(0.0);
        self.lambda = (self.lambda + lambda_shift).clamp(0.0, LAMBDA_MAX);
    }

    /// Keeps `local`'s spike backlog (a per-replica smoothing of its own
    /// costs, not a shared statistic).
    pub(crate) fn keep_backlog_of(&mut self, local: &Self) {
        self.backlog = local.backlog;
    }

    pub(crate) fn is_consistent(&self) -> bool {
        (0.0..=LAMBDA_MAX).contains(&self.lambda)
            && self.backlog.is_finite()
            && self.backlog >= 0.0
            && self.spend_usd.is_finite()
            && self.spend_usd >= 0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overspend_raises_and_underspend_lowers_lambda() {
        let cfg = PacingConfig {
            warmup: 0,
            ..PacingConfig::default()
        };
        let mut p = PacingState::default();
        for _ in 0..10 {
            p.observe(2e-3, Some(1e-3), &cfg);
        }
        let high = p.lambda();
        assert!(high > 0.0);
        for _ in 0..5 {
            p.observe(0.0, Some(1e-3), &cfg);
        }
        assert!(p.lambda() < high);
        for _ in 0..1000 {
            p.observe(0.0, Some(1e-3), &cfg);
        }
        assert_eq!(p.lambda(), 0.0);
    }

    #[test]
    fn spikes_are_spread_but_fully_accounted() {
        let cfg = PacingConfig {
            warmup: 0,
            max_cost_ratio: 4.0,
            ..PacingConfig::default()
        };
        let mut p = PacingState::default();
        p.observe(0.040, Some(1e-3), &cfg); // r = 40: applies 3, carries 36
        assert!((p.lambda() - 3.0 * cfg.step).abs() < 1e-12);
        for _ in 0..12 {
            p.observe(1e-3, Some(1e-3), &cfg); // on-target requests drain the backlog
        }
        assert!((p.lambda() - 39.0 * cfg.step).abs() < 1e-9);
        assert_eq!(p.backlog, 0.0);
    }
}
