//! Discounted ridge regression with an incrementally maintained inverse.
//!
//! Owns: `Design` (the Gram matrix `A = lambda I + sum_s g^(t-s) x_s x_s^T`
//! and `P ~= A^-1`), `Target` (one regressed quantity `theta = P b`) and
//! `Noise` (forgetting-weighted residual variance with a prior).
//! Must not import decision, snapshot or writer code.
//!
//! Prior: `A_0 = diag(lambda0, lambda, ..., lambda)` where index 0 is the
//! bias feature and `lambda0 = INTERCEPT_PRIOR_RATIO * lambda`: as in
//! ordinary ridge practice the intercept is (almost) not shrunk, because an
//! arm's overall level (its price, its average quality) is the most uncertain
//! and most shared part of the model; slopes keep the full prior.
//! Math: forgetting keeps the prior fixed, i.e. `A_t = g A_{t-1} + x x^T +
//! (1 - g) A_0` (discounted ridge / "forgetting factor RLS"). The rank-one
//! part goes through Sherman–Morrison in O(d^2); the small diagonal top-up
//! `(1 - g) A_0` is added to `a` at once but reaches `p` only through an exact
//! Cholesky re-inversion every `refresh_period(d)` updates (O(d^3), amortised
//! O(d^2)), which also clears Sherman–Morrison round-off. Between refreshes
//! `P = (A - pending A_0)^-1`, which only under-states the prior slightly and
//! stays positive definite (the prior mass never falls below g^R A_0).
//! With `theta = P b`, the update `theta += P_new x (y - x^T theta)` is exact
//! for `A <- g A + x x^T, b <- g b + y x` (RLS identity), so it is O(d).
//! `A`'s forgetting itself is applied lazily (`gram.rs`), so an update
//! changes only the rows of x's non-zero entries of `a`; `p`'s update is
//! dense (`p x` is).
//! Invariants: `a`, `p` are `d*d`, symmetric, finite; `b`, `theta` are `d`.

use serde::{Deserialize, Serialize};

use super::exact;
use super::gram::GramMatrix;
use super::linalg;
use super::mirror::{Probe, Upper};

/// Intercept prior precision relative to the slopes' (prior sd 10x wider).
pub(crate) const INTERCEPT_PRIOR_RATIO: f64 = 0.01;

/// Updates between exact re-inversions: amortises O(d^3) to O(d^2).
pub(crate) fn refresh_period(d: usize) -> u32 {
    (2 * d).clamp(32, 1024) as u32
}

/// Entry `(i, i)` of the prior `A_0 = diag(lambda0, lambda, ..., lambda)`.
#[inline]
pub(crate) fn prior_diag(lambda0: f64, lambda: f64, i: usize) -> f64 {
    if i == 0 {
        lambda0
    } else {
        lambda
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Design {
    pub d: usize,
    #[serde(with = "exact::num")]
    pub lambda: f64,
    #[serde(with = "exact::num")]
    pub lambda0: f64,
    /// `A`, its forgetting applied lazily (`gram.rs`).
    pub a: GramMatrix,
    /// Written only by this type's methods, which reset `upper`.
    #[serde(with = "exact::vec")]
    p: Vec<f64>,
    /// The decision's f32 copy of `p` (`mirror.rs`).
    #[serde(skip)]
    upper: Upper,
    /// Share of the prior owed to `p`'s matrix since the last refresh.
    #[serde(with = "exact::num")]
    pub pending: f64,
    pub since_refresh: u32,
    /// Effective (discounted) number of observations.
    #[serde(with = "exact::num")]
    pub weight: f64,
    pub updates: u64,
    /// The model's decay clock: `sum ln g` over its updates (0 without
    /// forgetting). Replicas ship what it moved by with their deltas, so
    /// discounting composes across them (`delta.rs`).
    #[serde(default, with = "exact::num")]
    pub log_decay: f64,
}

impl Design {
    pub fn new(d: usize, lambda: f64) -> Self {
        let lambda0 = lambda * INTERCEPT_PRIOR_RATIO;
        let mut a = vec![0.0; d * d];
        let mut p = vec![0.0; d * d];
        for i in 0..d {
            let l = if i == 0 { lambda0 } else { lambda };
            a[i * d + i] = l;
            p[i * d + i] = 1.0 / l;
        }
        Self {
            d,
            lambda,
            lambda0,
            a: GramMatrix::new(a),
            p,
            upper: Upper::default(),
            pending: 0.0,
            since_refresh: 0,
            weight: 0.0,
            updates: 0,
            log_decay: 0.0,
        }
    }

    /// Entry `(i, i)` of the prior `A_0`.
    #[inline]
    pub fn prior_diag(&self, i: usize) -> f64 {
        prior_diag(self.lambda0, self.lambda, i)
    }

    /// `P`, the (approximate) inverse of `a`.
    pub fn p(&self) -> &[f64] {
        &self.p
    }

    /// Replaces `P` (after an exact inversion of `a`).
    pub fn set_p(&mut self, p: Vec<f64>) {
        self.p = p;
        self.upper = Upper::default();
    }

    /// Builds the decision's f32 copy of `P` ahead of its first use
    /// (`Upper::prime`).
    pub fn prime_mirror(&self) {
        self.upper.prime(&self.p, self.d);
    }

    #[cfg(test)]
    pub fn mirror_is_built(&self) -> bool {
        self.upper.is_built()
    }

    /// `x^T A^-1 x`: the predictive variance factor, `probe` being `x` as
    /// the f32 form reads it. O(d^2).
    #[inline]
    pub fn variance(&self, x: &[f64], probe: &Probe) -> f64 {
        self.upper
            .quad_form(&self.p, probe)
            .unwrap_or_else(|| linalg::quad_form(&self.p, x))
            .max(0.0)
    }

    /// Adds one discounted observation; writes `A_new^-1 x` into `gain`.
    /// `px` is scratch of length d. Returns `x^T A^-1 x` before the update
    /// and whether a refresh is due.
    pub fn observe(
        &mut self,
        x: &[f64],
        gamma: f64,
        px: &mut [f64],
        gain: &mut [f64],
    ) -> (f64, bool) {
        let v = linalg::sherman_morrison(&mut self.p, x, gamma, px, gain).max(0.0);
        let (first, rest) = self.prior_top_up(gamma);
        self.a.discounted_rank_one(x, gamma, first, rest);
        (v, self.count(gamma))
    }

    /// `observe` on a copy of this design: for one a published snapshot
    /// still holds, the copy's matrices are written by the update itself
    /// (one pass each) instead of being copied whole and then updated. The
    /// copy is the same to the bit as `observe` on a clone.
    pub fn observed(
        &self,
        x: &[f64],
        gamma: f64,
        px: &mut [f64],
        gain: &mut [f64],
    ) -> (Self, f64, bool) {
        let (v, inv_g) = linalg::sherman_morrison_gain(&self.p, x, gamma, px, gain);
        let (first, rest) = self.prior_top_up(gamma);
        let mut next = Self {
            a: self.a.discounted_rank_one_into(x, gamma, first, rest),
            p: linalg::sherman_morrison_into(&self.p, px, inv_g),
            upper: Upper::default(),
            ..*self
        };
        let refresh = next.count(gamma);
        (next, v.max(0.0), refresh)
    }

    /// The diagonal `(1 - g) A_0` an update adds to `a`: (first, rest).
    fn prior_top_up(&self, gamma: f64) -> (f64, f64) {
        let share = 1.0 - gamma;
        (share * self.lambda0, share * self.lambda)
    }

    /// An update's bookkeeping (after its matrices changed); returns
    /// whether a refresh is due.
    fn count(&mut self, gamma: f64) -> bool {
        self.upper = Upper::default();
        self.pending = gamma * self.pending + (1.0 - gamma);
        self.weight = gamma * self.weight + 1.0;
        self.updates += 1;
        self.log_decay += gamma.ln();
        self.since_refresh += 1;
        let due = self.since_refresh >= refresh_period(self.d);
        if due {
            // The re-inversion reads `A` as it is, without a copy.
            self.a.fold();
        }
        due
    }

    /// Exact re-inversion of `a`; on success every target's `theta` is
    /// recomputed from `b`. On (never expected) failure, keeps the
    /// Sherman–Morrison inverse, which is still a valid posterior.
    pub fn refresh(&mut self, targets: &mut [&mut Target]) {
        let inverse = linalg::spd_inverse(&self.a.folded(), self.d);
        self.refresh_with(inverse, targets);
    }

    /// `refresh` with `inverse = spd_inverse(a)` computed elsewhere
    /// (`refresh.rs`), for this very `a`.
    pub fn refresh_with(&mut self, inverse: Option<Vec<f64>>, targets: &mut [&mut Target]) {
        self.since_refresh = 0;
        if let Some(p) = inverse {
            self.set_p(p);
            self.pending = 0.0;
            for t in targets.iter_mut() {
                linalg::matvec(&self.p, &t.b, &mut t.theta);
            }
        }
    }

    pub fn is_consistent(&self) -> bool {
        let dd = self.d * self.d;
        self.a.is_consistent(self.d)
            && self.p.len() == dd
            && self.lambda > 0.0
            && self.lambda0 > 0.0
            && self.pending >= 0.0
            && self.weight >= 0.0
            && self.log_decay.is_finite()
            && self.log_decay <= 0.0
            && self.p.iter().all(|v| v.is_finite())
            && (0..self.d).all(|i| self.p[i * self.d + i] > 0.0)
            && linalg::is_symmetric(&self.p, self.d)
    }
}

/// One regressed quantity, centred on `prior` (so the prior mean of the
/// coefficients is zero and the intercept absorbs the prior).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Target {
    #[serde(with = "exact::num")]
    pub prior: f64,
    #[serde(with = "exact::vec")]
    pub b: Vec<f64>,
    #[serde(with = "exact::vec")]
    pub theta: Vec<f64>,
}

impl Target {
    pub fn new(d: usize, prior: f64) -> Self {
        Self {
            prior,
            b: vec![0.0; d],
            theta: vec![0.0; d],
        }
    }

    #[inline]
    pub fn predict(&self, x: &[f64]) -> f64 {
        self.prior + linalg::dot(&self.theta, x)
    }

    /// RLS step; `gain = A_new^-1 x` from `Design::observe` on the same x.
    pub fn observe(&mut self, x: &[f64], y: f64, gamma: f64, gain: &[f64], predicted: f64) {
        let yc = y - self.prior;
        for (b, &xi) in self.b.iter_mut().zip(x) {
            *b = gamma * *b + yc * xi;
        }
        let e = y - predicted;
        for (t, &g) in self.theta.iter_mut().zip(gain) {
            *t += g * e;
        }
    }

    pub fn is_consistent(&self, d: usize) -> bool {
        self.b.len() == d
            && self.theta.len() == d
            && self.prior.is_finite()
            && self.b.iter().chain(&self.theta).all(|v| v.is_finite())
    }
}

/// Residual variance: `(n0 s0^2 + sum g^age e^2) / (n0 + sum g^age)`, a
/// conjugate-style shrinkage toward the prior `s0^2` with `n0` pseudo-counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Noise {
    #[serde(with = "exact::num")]
    pub prior_var: f64,
    #[serde(with = "exact::num")]
    pub prior_weight: f64,
    #[serde(with = "exact::num")]
    pub sum_sq: f64,
    #[serde(with = "exact::num")]
    pub weight: f64,
}

impl Noise {
    pub fn new(prior_var: f64, prior_weight: f64) -> Self {
        Self {
            prior_var,
            prior_weight,
            sum_sq: 0.0,
            weight: 0.0,
        }
    }

    #[inline]
    pub fn var(&self) -> f64 {
        (self.prior_weight * self.prior_var + self.sum_sq) / (self.prior_weight + self.weight)
    }

    pub fn observe(&mut self, e: f64, gamma: f64) {
        self.sum_sq = gamma * self.sum_sq + e * e;
        self.weight = gamma * self.weight + 1.0;
    }

    pub fn is_consistent(&self) -> bool {
        [self.prior_var, self.prior_weight, self.sum_sq, self.weight]
            .iter()
            .all(|v| v.is_finite() && *v >= 0.0)
            && self.prior_weight + self.weight > 0.0
    }
}
