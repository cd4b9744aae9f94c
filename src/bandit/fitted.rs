//! Building a snapshot from batch-fitted sufficient statistics.
//!
//! Owns: `LinearFit`, `TargetFit`, `FittedArm` and
//! `PolicySnapshot::from_fitted`. Must not import I/O: the training crate
//! streams the log and hands over plain sums.
//!
//! Math: a batch ridge fit on n rows with Gram `G = sum x x^T`, moments
//! `sum y x`, `sum y^2` is exactly the online posterior after those n
//! updates without forgetting: `A = A_0(lambda) + G`, `b = sum (y - prior) x
//! = sum y x - prior sum x`, `theta = A^-1 b` (see `ridge.rs`). The residual
//! sum of squares comes from the moments, `SSE = sum (y - prior)^2 - 2 theta^T
//! b + theta^T G theta`, and seeds the noise estimate with weight n. So a
//! fitted snapshot is an ordinary snapshot: serving prepares it, decides
//! from it and keeps updating it online. Cost: O(K d^3) (one Cholesky
//! inverse per model), all numbers checked by `validate`.

use std::sync::Arc;

use super::arm::{ArmCounts, ArmState};
use super::linalg;
use super::ridge::{Design, Noise, Target};
use super::snapshot::{PolicySnapshot, RouteSpec, SnapshotError};
use crate::domain::ModelName;
use crate::features::Projection;

/// One regressed quantity's moments over the rows of a `LinearFit`.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetFit {
    /// Centre of the regression (the intercept absorbs the rest).
    pub prior: f64,
    /// `sum y x`, length d.
    pub sum_yx: Vec<f64>,
    /// `sum y^2`.
    pub sum_yy: f64,
}

/// Sufficient statistics of one design (quality, or cost + latency).
#[derive(Debug, Clone, PartialEq)]
pub struct LinearFit {
    /// Ridge precision of the slopes (chosen by the trainer, e.g. by CV).
    pub lambda: f64,
    /// Number of rows.
    pub n: f64,
    /// `sum x x^T`, row-major d x d.
    pub gram: Vec<f64>,
    /// `sum x`, length d.
    pub sum_x: Vec<f64>,
    /// Quality: one target. Outcome: log-cost then log-latency.
    pub targets: Vec<TargetFit>,
}

/// What training learned about one arm; `None` keeps the arm's prior.
#[derive(Debug, Clone, PartialEq)]
pub struct FittedArm {
    pub name: ModelName,
    pub quality: Option<LinearFit>,
    pub outcome: Option<LinearFit>,
    pub counts: ArmCounts,
}

impl LinearFit {
    fn check(&self, d: usize, targets: usize, arm: &ModelName) -> Result<(), SnapshotError> {
        let finite = |v: &[f64]| v.iter().all(|x| x.is_finite());
        let ok = self.lambda.is_finite()
            && self.lambda > 0.0
            && self.n.is_finite()
            && self.n >= 0.0
            && self.gram.len() == d * d
            && self.sum_x.len() == d
            && finite(&self.gram)
            && finite(&self.sum_x)
            && linalg::is_symmetric(&self.gram, d)
            && self.targets.len() == targets
            && self.targets.iter().all(|t| {
                t.sum_yx.len() == d
                    && finite(&t.sum_yx)
                    && t.prior.is_finite()
                    && t.sum_yy.is_finite()
            });
        if ok {
            Ok(())
        } else {
            Err(SnapshotError::CorruptArm(arm.to_string()))
        }
    }

    /// The design and targets, plus each target's residual sum of squares.
    fn solve(
        &self,
        d: usize,
        arm: &ModelName,
    ) -> Result<(Design, Vec<(Target, f64)>), SnapshotError> {
        let mut design = Design::new(d, self.lambda);
        for (a, g) in design.a.entries_mut().iter_mut().zip(&self.gram) {
            *a += g;
        }
        design.set_p(
            linalg::spd_inverse(&design.a.folded(), d)
                .ok_or_else(|| SnapshotError::CorruptArm(arm.to_string()))?,
        );
        design.weight = self.n;
        design.updates = self.n as u64;
        let mut gt = vec![0.0; d];
        let targets = self
            .targets
            .iter()
            .map(|t| {
                let mut target = Target::new(d, t.prior);
                for ((b, yx), x) in target.b.iter_mut().zip(&t.sum_yx).zip(&self.sum_x) {
                    *b = yx - t.prior * x;
                }
                linalg::matvec(design.p(), &target.b, &mut target.theta);
                linalg::matvec(&self.gram, &target.theta, &mut gt);
                let centred_yy =
                    t.sum_yy - 2.0 * t.prior * sum_y(t, &self.sum_x) + t.prior * t.prior * self.n;
                let sse = centred_yy - 2.0 * linalg::dot(&target.theta, &target.b)
                    + linalg::dot(&target.theta, &gt);
                (target, sse.max(0.0))
            })
            .collect();
        Ok((design, targets))
    }
}

/// `sum y` is the bias coordinate of `sum y x` (feature 0 is the constant 1).
fn sum_y(t: &TargetFit, sum_x: &[f64]) -> f64 {
    match (t.sum_yx.first(), sum_x.first()) {
        (Some(&v), Some(_)) => v,
        _ => 0.0,
    }
}

impl PolicySnapshot {
    /// A snapshot whose arms carry batch-fitted posteriors. Arms of `spec`
    /// without a fit (or with `None` parts) start from their prior; a fit
    /// naming an arm `spec` lacks is refused. `label` names the version
    /// (`x-switchboard-policy-version` shows `label.N`). The result passed
    /// `validate` and fits `spec`, so `prepare(spec)` accepts it.
    pub fn from_fitted(
        spec: &RouteSpec,
        label: &str,
        fits: Vec<FittedArm>,
    ) -> Result<Self, SnapshotError> {
        Self::from_fitted_projected(spec, label, None, fits)
    }

    /// `from_fitted` for fits on projected vectors: the snapshot carries
    /// `projection` (`rows x (spec.dimension - 1)`, see `projected.rs`)
    /// and every fit must have its inner dimension `1 + rows`. Serving
    /// still hands it raw vectors.
    pub fn from_fitted_projected(
        spec: &RouteSpec,
        label: &str,
        projection: Option<Projection>,
        fits: Vec<FittedArm>,
    ) -> Result<Self, SnapshotError> {
        let mut s = Self::fresh(spec, projection)?;
        let d = s.inner_dimension();
        for fit in fits {
            let i = s
                .arm_index(fit.name.as_str())
                .ok_or_else(|| SnapshotError::UnknownArm(fit.name.to_string()))?;
            let Some(slot) = s.arms.get_mut(i) else {
                return Err(SnapshotError::UnknownArm(fit.name.to_string()));
            };
            let arm: &mut ArmState = Arc::make_mut(slot);
            if let Some(q) = &fit.quality {
                q.check(d, 1, &fit.name)?;
                let (design, mut targets) = q.solve(d, &fit.name)?;
                let model = Arc::make_mut(&mut arm.quality);
                if let Some((target, sse)) = targets.pop() {
                    model.target = target;
                    model.noise = fitted_noise(&model.noise, sse, q.n);
                }
                model.design = design;
            }
            if let Some(o) = &fit.outcome {
                o.check(d, 2, &fit.name)?;
                let (design, targets) = o.solve(d, &fit.name)?;
                let model = Arc::make_mut(&mut arm.outcome);
                let mut it = targets.into_iter();
                if let (Some((cost, sc)), Some((latency, sl))) = (it.next(), it.next()) {
                    model.log_cost = cost;
                    model.log_latency = latency;
                    model.cost_noise = fitted_noise(&model.cost_noise, sc, o.n);
                    model.latency_noise = fitted_noise(&model.latency_noise, sl, o.n);
                }
                model.design = design;
            }
            arm.counts = fit.counts;
        }
        s.label = label.to_owned();
        s.version = 0;
        s.validate()?;
        Ok(s)
    }

    /// Mean quality, expected cost (USD) and latency (s) of one arm at the
    /// raw `x` (the reward model a doubly robust estimate needs). O(d^2).
    pub fn predict(&self, arm: usize, x: &[f64]) -> Option<(f64, f64, f64)> {
        if x.len() != self.dimension || x.iter().any(|v| !v.is_finite()) {
            return None;
        }
        let e = self.arms.get(arm)?.estimate(&self.project(x));
        Some((e.quality, e.cost_usd, e.latency_s))
    }

    /// The same learned state under a new version label, counting from 0
    /// (used when a stored snapshot is activated).
    pub fn relabelled(mut self, label: &str) -> Self {
        label.clone_into(&mut self.label);
        self.version = 0;
        self
    }
}

/// Keeps the prior's pseudo-counts; adds the fit's residuals with weight n.
fn fitted_noise(prior: &Noise, sse: f64, n: f64) -> Noise {
    Noise {
        prior_var: prior.prior_var,
        prior_weight: prior.prior_weight,
        sum_sq: sse,
        weight: n,
    }
}
