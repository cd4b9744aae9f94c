//! Per-arm models from streamed rows: quality (ridge on the features) and
//! log-cost / log-latency (one shared ridge design), each with its
//! regularisation chosen by cross-validation (`ridge.rs`), turned into a
//! `switchboard::bandit::FittedArm` for `PolicySnapshot::from_fitted`.
//!
//! Memory: per arm and model, one `Moments` per CV fold: O(K F d^2).

use serde::Serialize;
use switchboard::bandit::{ArmCounts, FittedArm, LinearFit, RouteSpec, TargetFit};
use switchboard::domain::ModelName;

use crate::ridge::{choose_lambda, CvChoice, Moments};

/// Cross-validation folds.
pub const FOLDS: usize = 4;
const COST_FLOOR_USD: f64 = 1e-9;
const LATENCY_FLOOR_S: f64 = 1e-3;

struct ArmAccum {
    name: ModelName,
    quality: Vec<Moments>,
    outcome: Vec<Moments>,
    counts: ArmCounts,
}

/// Accumulates the rows of one route.
pub struct Fitter {
    arms: Vec<ArmAccum>,
}

/// What was fitted for one arm, for the report.
#[derive(Debug, Clone, Serialize)]
pub struct ArmFitReport {
    pub arm: String,
    pub quality: Option<CvChoice>,
    pub outcome: Option<CvChoice>,
}

impl Fitter {
    pub fn new(spec: &RouteSpec) -> Self {
        Self::with_dimension(spec, spec.dimension)
    }

    /// For rows of width `d` (projected vectors: `1 + rows` of the
    /// projection) instead of the route's raw dimension.
    pub fn with_dimension(spec: &RouteSpec, d: usize) -> Self {
        Self {
            arms: spec
                .arms
                .iter()
                .map(|a| ArmAccum {
                    name: a.name.clone(),
                    quality: (0..FOLDS).map(|_| Moments::new(d, 1)).collect(),
                    outcome: (0..FOLDS).map(|_| Moments::new(d, 2)).collect(),
                    counts: ArmCounts::default(),
                })
                .collect(),
        }
    }

    /// One observation of arm `arm` at `x`: a quality (feedback, or 0 for
    /// an error) and/or a successful response's cost and latency.
    pub fn add(
        &mut self,
        arm: usize,
        fold: usize,
        x: &[f64],
        quality: Option<f64>,
        outcome: Option<(f64, f64)>,
        error: bool,
    ) {
        let Some(a) = self.arms.get_mut(arm) else {
            return;
        };
        let f = fold % FOLDS;
        if let (Some(q), Some(m)) = (quality, a.quality.get_mut(f)) {
            m.add(x, &[q]);
            a.counts.feedback += 1;
        }
        if let (Some((c, l)), Some(m)) = (outcome, a.outcome.get_mut(f)) {
            m.add(
                x,
                &[c.max(COST_FLOOR_USD).ln(), l.max(LATENCY_FLOOR_S).ln()],
            );
            a.counts.outcomes += 1;
        }
        if error {
            a.counts.errors += 1;
        }
    }

    /// Cross-validates and solves every arm's models. Arms or models
    /// without rows keep their priors (`None`).
    pub fn finish(self) -> (Vec<FittedArm>, Vec<ArmFitReport>) {
        let mut fits = Vec::new();
        let mut reports = Vec::new();
        for mut a in self.arms {
            let (quality, qr) = fit_design(&mut a.quality);
            let (outcome, or) = fit_design(&mut a.outcome);
            reports.push(ArmFitReport {
                arm: a.name.to_string(),
                quality: qr,
                outcome: or,
            });
            fits.push(FittedArm {
                name: a.name,
                quality,
                outcome,
                counts: a.counts,
            });
        }
        (fits, reports)
    }
}

fn fit_design(folds: &mut [Moments]) -> (Option<LinearFit>, Option<CvChoice>) {
    for f in folds.iter_mut() {
        f.symmetrise();
    }
    let Some(first) = folds.first() else {
        return (None, None);
    };
    let mut total = Moments::new(first.sum_x.len(), first.yy.len());
    for f in folds.iter() {
        total.merge(f);
    }
    if total.n < 1.0 {
        return (None, None);
    }
    let Some(choice) = choose_lambda(folds) else {
        return (None, None);
    };
    let means = total.means();
    let fit = LinearFit {
        lambda: choice.lambda,
        n: total.n,
        gram: total.gram.iter().copied().collect(),
        sum_x: total.sum_x.to_vec(),
        targets: (0..total.yy.len())
            .map(|t| TargetFit {
                prior: means[t],
                sum_yx: total.yx.row(t).to_vec(),
                sum_yy: total.yy[t],
            })
            .collect(),
    };
    (Some(fit), Some(choice))
}

/// Deterministic bucket of a request id (FNV-1a): fold and holdout split.
pub fn bucket(id: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}
