//! Policies and deltas for the unit tests of `fold` and `slots`.

#![allow(clippy::unwrap_used)]

use crate::bandit::{
    ArmSpec, BudgetConfig, Outcome, PolicyConfig, PolicyDelta, PolicySnapshot, PolicyWriter,
    Quality, RouteSpec,
};
use crate::domain::{ModelName, Reward, Usd};

/// A route of dimension 3 over `arms`.
pub fn spec(arms: &[&str]) -> RouteSpec {
    RouteSpec {
        dimension: 3,
        feature_fingerprint: 7,
        config: PolicyConfig::default(),
        budget: BudgetConfig::default(),
        arms: arms
            .iter()
            .map(|n| ArmSpec::new(ModelName::parse(n).unwrap()))
            .collect(),
    }
}

/// A fresh policy over arms `a` and `b`.
pub fn fresh() -> PolicySnapshot {
    PolicySnapshot::new(&spec(&["a", "b"])).unwrap()
}

/// `n` outcomes and feedbacks on `arm`, applied to `w`.
pub fn teach(w: &mut PolicyWriter, arm: &str, n: usize) {
    for i in 0..n {
        let x = crate::features::Features::from(&[1.0, i as f64 / 10.0, 0.5][..]);
        let name = ModelName::parse(arm).unwrap();
        w.apply_outcome(&Outcome {
            arm: name.clone(),
            x: x.clone(),
            cost_usd: Usd::new(1e-4).unwrap(),
            latency_s: 0.3,
            ok: true,
        })
        .unwrap();
        w.apply_quality(&Quality {
            arm: name,
            x,
            reward: Reward::new(0.7).unwrap(),
        })
        .unwrap();
    }
}

/// What `n` outcomes and feedbacks on `arm` teach on top of `from`.
pub fn learned(from: &PolicySnapshot, arm: &str, n: usize) -> PolicyDelta {
    let mut w = PolicyWriter::new(from.clone());
    teach(&mut w, arm, n);
    w.state().delta_since(from)
}
