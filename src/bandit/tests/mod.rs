//! Behavioural tests of the bandit on synthetic worlds with known answers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod api;
mod delta;
mod learning;
mod projected;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

use super::*;
use crate::domain::{ModelName, Reward, Usd};
use crate::features::Features;

pub(super) fn name(i: usize) -> ModelName {
    ModelName::parse(&format!("arm-{i}")).unwrap()
}

pub(super) fn spec(d: usize, k: usize, config: PolicyConfig, budget: BudgetConfig) -> RouteSpec {
    RouteSpec {
        dimension: d,
        feature_fingerprint: 42,
        config,
        budget,
        arms: (0..k).map(|i| ArmSpec::new(name(i))).collect(),
    }
}

/// A context: bias 1 then d-1 features in [-1, 1] (like the encoder's scale).
pub(super) fn context(rng: &mut StdRng, d: usize) -> Vec<f64> {
    let mut x = vec![1.0];
    x.extend((1..d).map(|_| rng.random_range(-1.0..1.0)));
    x
}

pub(super) fn noise(rng: &mut StdRng, sd: f64) -> f64 {
    sd * rng.sample::<f64, _>(StandardNormal)
}

/// A successful response's outcome for `arm` (latency 0.5 s).
pub(super) fn outcome(arm: usize, x: &[f64], cost: f64) -> Outcome {
    Outcome {
        arm: name(arm),
        x: Features::from(x),
        cost_usd: Usd::new(cost).unwrap(),
        latency_s: 0.5,
        ok: true,
    }
}

/// Feedback for `arm`, clamped into [0, 1].
pub(super) fn quality(arm: usize, x: &[f64], reward: f64) -> Quality {
    Quality {
        arm: name(arm),
        x: Features::from(x),
        reward: Reward::new(reward.clamp(0.0, 1.0)).unwrap(),
    }
}

/// Feeds one full observation (outcome + quality) for `arm`.
pub(super) fn feed(w: &mut PolicyWriter, arm: usize, x: &[f64], reward: f64, cost: f64) {
    w.apply_outcome(&outcome(arm, x, cost)).unwrap();
    w.apply_quality(&quality(arm, x, reward)).unwrap();
}
