//! One arm's learned state: quality, cost and latency models plus drift.
//!
//! Owns: the three outcome models of an arm and how observations update
//! them. Must not import the decision rule, the pacer or the writer.
//! Models (all ridge regressions on the prompt features, see `ridge.rs`):
//! * quality in [0, 1] — linear, prior mean `prior_quality` via the
//!   intercept, residual noise `sigma` learned (prior variance 1/12, the
//!   variance of a uniform reward). Posterior of the mean at x:
//!   `N(q(x), sigma^2 x^T A^-1 x)` (LinUCB / linear Thompson).
//! * cost and latency — linear in log space (costs are multiplicative:
//!   tokens x price), one shared design since both arrive with every
//!   outcome; expected value `exp(mu(x) + s^2 / 2)` (log-normal mean), with
//!   `s^2` capped at 1 so early residuals cannot inflate it wildly.
//! * drift — CUSUM on standardised quality residuals and log-cost
//!   residuals; while an alarm holds the matching model forgets at
//!   `drift.forgetting` and the exploration width is boosted.
//!
//! Models sit behind `Arc`, so an update copies only the model it touches
//! while readers still hold the old snapshot, and writes that copy's
//! matrices in the same pass (`observe_design`).
//! Invariant: all vectors have the snapshot's dimension; numbers finite.
//! Costs: `estimate` O(d^2) (one quadratic form) + O(d); updates O(d^2).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::config::{ArmSpec, PolicyConfig};
use super::drift::{Cusum, DriftEvent, DriftFlags, DriftSignal};
use super::exact;
use super::mirror::Probe;
use super::refresh::{Gram, Model};
use super::ridge::{Design, Noise, Target};
use crate::domain::ModelName;

const COST_FLOOR_USD: f64 = 1e-9;
const LATENCY_FLOOR_S: f64 = 1e-3;
const QUALITY_PRIOR_VAR: f64 = 1.0 / 12.0;
const QUALITY_PRIOR_WEIGHT: f64 = 10.0;
const LOG_PRIOR_VAR: f64 = 0.25;
const LOG_PRIOR_WEIGHT: f64 = 4.0;
const LOG_VAR_CAP: f64 = 1.0;
/// Updates before drift is monitored: the first residuals only measure how
/// far the prior was from the arm, not a change.
const DRIFT_WARMUP: u64 = 20;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct QualityModel {
    pub design: Design,
    pub target: Target,
    pub noise: Noise,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct OutcomeModel {
    pub design: Design,
    pub log_cost: Target,
    pub log_latency: Target,
    pub cost_noise: Noise,
    pub latency_noise: Noise,
}

/// Lifetime counters, for metrics and the receipt.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArmCounts {
    pub outcomes: u64,
    pub errors: u64,
    pub feedback: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArmState {
    pub(crate) name: ModelName,
    #[serde(with = "exact::shared")]
    pub(crate) quality: Arc<QualityModel>,
    #[serde(with = "exact::shared")]
    pub(crate) outcome: Arc<OutcomeModel>,
    pub(crate) quality_drift: Cusum,
    pub(crate) cost_drift: Cusum,
    pub(crate) counts: ArmCounts,
}

/// Point estimates and uncertainty of one arm at one prompt.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Estimate {
    pub quality: f64,
    /// Posterior std of the mean quality at x (before any boost).
    pub quality_sd: f64,
    pub cost_usd: f64,
    pub latency_s: f64,
    pub drift: DriftFlags,
}

/// Scratch buffers the writer reuses across updates (no per-update alloc).
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    px: Vec<f64>,
    gain: Vec<f64>,
    /// Set: a design due an exact re-inversion is noted in `due` for the
    /// writer's owner to compute elsewhere, not refreshed in place
    /// (`refresh.rs`).
    pub defer: bool,
    pub due: Option<(usize, Model)>,
}

impl Scratch {
    fn sized(&mut self, d: usize) -> (&mut [f64], &mut [f64]) {
        self.px.resize(d, 0.0);
        self.gain.resize(d, 0.0);
        (&mut self.px, &mut self.gain)
    }
}

impl ArmState {
    pub(crate) fn new(spec: &ArmSpec, d: usize, cfg: &PolicyConfig) -> Self {
        let q0 = spec.prior_quality.unwrap_or(cfg.prior_quality);
        let c0 = spec
            .prior_cost_usd
            .unwrap_or(cfg.prior_cost_usd)
            .max(COST_FLOOR_USD);
        let l0 = spec
            .prior_latency_s
            .unwrap_or(cfg.prior_latency_s)
            .max(LATENCY_FLOOR_S);
        Self {
            name: spec.name.clone(),
            quality: Arc::new(QualityModel {
                design: Design::new(d, cfg.ridge_lambda),
                target: Target::new(d, q0),
                noise: Noise::new(QUALITY_PRIOR_VAR, QUALITY_PRIOR_WEIGHT),
            }),
            outcome: Arc::new(OutcomeModel {
                design: Design::new(d, cfg.outcome_ridge_lambda),
                log_cost: Target::new(d, c0.ln()),
                log_latency: Target::new(d, l0.ln()),
                cost_noise: Noise::new(LOG_PRIOR_VAR, LOG_PRIOR_WEIGHT),
                latency_noise: Noise::new(LOG_PRIOR_VAR, LOG_PRIOR_WEIGHT),
            }),
            quality_drift: Cusum::default(),
            cost_drift: Cusum::default(),
            counts: ArmCounts::default(),
        }
    }

    pub fn name(&self) -> &ModelName {
        &self.name
    }

    pub fn counts(&self) -> ArmCounts {
        self.counts
    }

    pub fn drift_flags(&self) -> DriftFlags {
        DriftFlags {
            quality: self.quality_drift.active(),
            cost: self.cost_drift.active(),
        }
    }

    /// Readies what `estimate` reads, so no decision builds it (the
    /// quality design's f32 mirror: only its variance enters a decision).
    pub(crate) fn prime(&self) {
        self.quality.design.prime_mirror();
    }

    pub(crate) fn estimate(&self, x: &[f64]) -> Estimate {
        self.estimate_at(x, &Probe::new(x))
    }

    /// `estimate` with `x`'s probe built by the caller: a decision builds
    /// one for all its arms.
    pub(crate) fn estimate_at(&self, x: &[f64], probe: &Probe) -> Estimate {
        let q = &self.quality;
        let o = &self.outcome;
        let quality = q.target.predict(x).clamp(0.0, 1.0);
        let quality_sd = (q.noise.var() * q.design.variance(x, probe)).sqrt();
        let cost_usd = (o.log_cost.predict(x) + 0.5 * o.cost_noise.var().min(LOG_VAR_CAP)).exp();
        let latency_s =
            (o.log_latency.predict(x) + 0.5 * o.latency_noise.var().min(LOG_VAR_CAP)).exp();
        Estimate {
            quality,
            quality_sd,
            cost_usd,
            latency_s,
            drift: self.drift_flags(),
        }
    }

    /// One quality observation (feedback, or 0 for a failed request).
    pub(crate) fn observe_quality(
        &mut self,
        index: usize,
        x: &[f64],
        reward: f64,
        cfg: &PolicyConfig,
        scratch: &mut Scratch,
    ) -> Option<DriftEvent> {
        let gamma = forgetting(cfg, self.quality_drift.active());
        let (px, gain) = scratch.sized(self.quality.design.d);
        let predicted = self.quality.target.predict(x);
        let prior_var = self.quality.noise.var();
        let (q, v, refresh) = observe_design(&mut self.quality, x, gamma, px, gain);
        q.target.observe(x, reward, gamma, gain, predicted);
        let e = reward - predicted;
        // e^2 / (1 + v) is unbiased for sigma^2 under the model (the
        // prequential residual's variance is sigma^2 (1 + x^T A^-1 x)).
        q.noise.observe(e / (1.0 + v).sqrt(), gamma);
        if refresh {
            if scratch.defer {
                scratch.due = Some((index, Model::Quality));
            } else {
                q.design.refresh(&mut [&mut q.target]);
            }
        }
        self.counts.feedback += 1;
        if q.design.updates <= DRIFT_WARMUP {
            return None;
        }
        let z = e / (prior_var * (1.0 + v)).sqrt();
        let d = &cfg.drift;
        self.quality_drift
            .observe(z, d.slack, d.threshold, d.hold)
            .map(|shift| DriftEvent {
                arm: index,
                signal: DriftSignal::Quality,
                shift,
            })
    }

    /// One successful response's cost and latency.
    pub(crate) fn observe_outcome(
        &mut self,
        index: usize,
        x: &[f64],
        cost_usd: f64,
        latency_s: f64,
        cfg: &PolicyConfig,
        scratch: &mut Scratch,
    ) -> Option<DriftEvent> {
        let gamma = forgetting(cfg, self.cost_drift.active());
        let (px, gain) = scratch.sized(self.outcome.design.d);
        let yc = cost_usd.max(COST_FLOOR_USD).ln();
        let yl = latency_s.max(LATENCY_FLOOR_S).ln();
        let o = &self.outcome;
        let (pc, pl) = (o.log_cost.predict(x), o.log_latency.predict(x));
        let prior_var = o.cost_noise.var();
        let (o, v, refresh) = observe_design(&mut self.outcome, x, gamma, px, gain);
        o.log_cost.observe(x, yc, gamma, gain, pc);
        o.log_latency.observe(x, yl, gamma, gain, pl);
        // Standardised prequential residuals (see observe_quality): the
        // prior's mismatch with a new arm's price is explained by the wide
        // intercept prior instead of inflating the noise estimate.
        let scale = 1.0 / (1.0 + v).sqrt();
        o.cost_noise.observe((yc - pc) * scale, gamma);
        o.latency_noise.observe((yl - pl) * scale, gamma);
        if refresh {
            if scratch.defer {
                scratch.due = Some((index, Model::Outcome));
            } else {
                o.design.refresh(&mut [&mut o.log_cost, &mut o.log_latency]);
            }
        }
        self.counts.outcomes += 1;
        let z = (yc - pc) / (prior_var * (1.0 + v)).sqrt();
        let d = &cfg.drift;
        if o.design.updates <= DRIFT_WARMUP {
            return None;
        }
        self.cost_drift
            .observe(z, d.slack, d.threshold, d.hold)
            .map(|shift| DriftEvent {
                arm: index,
                signal: DriftSignal::Cost,
                shift,
            })
    }

    /// A shared handle to `model`, for a refresh computed elsewhere.
    pub(crate) fn gram(&self, model: Model) -> Gram {
        match model {
            Model::Quality => Gram::Quality(Arc::clone(&self.quality)),
            Model::Outcome => Gram::Outcome(Arc::clone(&self.outcome)),
        }
    }

    /// Whether `gram` is this arm's model as it is now (unchanged since the
    /// handle was taken).
    pub(crate) fn holds(&self, gram: &Gram) -> bool {
        match gram {
            Gram::Quality(m) => Arc::ptr_eq(m, &self.quality),
            Gram::Outcome(m) => Arc::ptr_eq(m, &self.outcome),
        }
    }

    /// Applies a re-inversion of `model`'s design, computed for its matrix
    /// as it is now (`None`: not positive definite; the incremental
    /// inverse stays, as in `Design::refresh`).
    pub(crate) fn refresh(&mut self, model: Model, inverse: Option<Vec<f64>>) {
        match model {
            Model::Quality => {
                let q = Arc::make_mut(&mut self.quality);
                q.design.refresh_with(inverse, &mut [&mut q.target]);
            }
            Model::Outcome => {
                let o = Arc::make_mut(&mut self.outcome);
                o.design
                    .refresh_with(inverse, &mut [&mut o.log_cost, &mut o.log_latency]);
            }
        }
    }

    pub(crate) fn record_error(&mut self) {
        self.counts.errors += 1;
    }

    pub(crate) fn is_consistent(&self, d: usize) -> bool {
        let q = &self.quality;
        let o = &self.outcome;
        q.design.d == d
            && o.design.d == d
            && q.design.is_consistent()
            && o.design.is_consistent()
            && q.target.is_consistent(d)
            && o.log_cost.is_consistent(d)
            && o.log_latency.is_consistent(d)
            && q.noise.is_consistent()
            && o.cost_noise.is_consistent()
            && o.latency_noise.is_consistent()
            && self.quality_drift.is_consistent()
            && self.cost_drift.is_consistent()
    }
}

/// A model with a `Design` its updates go through.
trait Designed: Clone {
    fn design(&self) -> &Design;
    fn design_mut(&mut self) -> &mut Design;
    /// This model with `design` in place of its own (everything else cloned).
    fn with_design(&self, design: Design) -> Self;
}

/// `Designed` for a model struct: its `design` field, and the other
/// fields (named here) cloned around a new design.
macro_rules! designed {
    ($model:ty { $($field:ident),* }) => {
        impl Designed for $model {
            fn design(&self) -> &Design {
                &self.design
            }
            fn design_mut(&mut self) -> &mut Design {
                &mut self.design
            }
            fn with_design(&self, design: Design) -> Self {
                Self {
                    design,
                    $($field: self.$field.clone(),)*
                }
            }
        }
    };
}

designed!(QualityModel { target, noise });
designed!(OutcomeModel {
    log_cost,
    log_latency,
    cost_noise,
    latency_noise
});

/// `Design::observe` on `model`, then the model to finish the update on,
/// as with `Arc::make_mut`, except that a model a published snapshot still
/// shares is not deep-copied first: the update writes the new copy's
/// matrices (`Design::observed`) and only the small parts are cloned. Why:
/// after every publish the first update of each model copied its two d x d
/// matrices (160 KB at d = 100) only to overwrite them.
fn observe_design<'m, M: Designed>(
    model: &'m mut Arc<M>,
    x: &[f64],
    gamma: f64,
    px: &mut [f64],
    gain: &mut [f64],
) -> (&'m mut M, f64, bool) {
    let (v, refresh) = match Arc::get_mut(model) {
        Some(m) => m.design_mut().observe(x, gamma, px, gain),
        None => {
            let (design, v, refresh) = model.design().observed(x, gamma, px, gain);
            *model = Arc::new(model.with_design(design));
            (v, refresh)
        }
    };
    // Unshared now, so this does not copy.
    (Arc::make_mut(model), v, refresh)
}

fn forgetting(cfg: &PolicyConfig, drifting: bool) -> f64 {
    if drifting {
        cfg.forgetting.min(cfg.drift.forgetting)
    } else {
        cfg.forgetting
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bandit::config::ArmSpec;

    fn arm(d: usize) -> ArmState {
        let spec = ArmSpec::new(ModelName::parse("m").unwrap());
        ArmState::new(&spec, d, &PolicyConfig::default())
    }

    /// An update on a model a snapshot still holds leaves the snapshot's
    /// model as it was and gives the same state, to the bit, as the update
    /// of an unshared copy.
    #[test]
    fn an_update_of_a_shared_model_is_the_update_of_a_private_one() {
        let cfg = PolicyConfig::default();
        let x = [1.0, 0.0, 0.5, 0.0, -2.0];
        let (mut private, mut shared) = (arm(5), arm(5));
        let mut scratch = Scratch::default();
        for k in 0..30u32 {
            let reward = f64::from(k % 3) / 2.0;
            private.observe_quality(0, &x, reward, &cfg, &mut scratch);
            private.observe_outcome(0, &x, 0.01, 0.5, &cfg, &mut scratch);
            let held = shared.clone();
            shared.observe_quality(0, &x, reward, &cfg, &mut scratch);
            shared.observe_outcome(0, &x, 0.01, 0.5, &cfg, &mut scratch);
            assert!(!Arc::ptr_eq(&held.quality, &shared.quality));
            assert!(!Arc::ptr_eq(&held.outcome, &shared.outcome));
            assert_eq!(held.quality.design.updates, u64::from(k));
            assert_eq!(held.outcome.design.updates, u64::from(k));
        }
        let json = |a: &ArmState| serde_json::to_string(a).unwrap();
        assert_eq!(json(&private), json(&shared));
    }
}
