//! The decision interface between the pipeline and a route's policy: given
//! the eligible models, produce a ranking (first = chosen, the rest = the
//! fallback order), the propensity of the choice and the policy version.

use rand::seq::SliceRandom;
use serde_json::json;

use super::catalog::RouteEntry;
use crate::config::PolicyKind;

#[derive(Debug, Clone)]
pub struct Decision {
    /// Catalog model indices, best first; `ranking[0]` is the choice.
    pub ranking: Vec<usize>,
    /// Probability that the policy would have chosen `ranking[0]`.
    pub propensity: f64,
    pub policy_version: String,
    pub features: Option<Vec<f64>>,
    /// Why: per-arm estimates and what narrowed the set.
    pub receipt: serde_json::Value,
}

/// Static policies: `fixed` takes the route's order; every other kind draws
/// uniformly until a learned snapshot serves the route.
pub fn decide_static(route: &RouteEntry, eligible: &[usize]) -> Decision {
    let mut ranking = eligible.to_vec();
    let (propensity, version) = match route.policy {
        PolicyKind::Fixed => (1.0, "fixed"),
        _ => {
            ranking.shuffle(&mut rand::rng());
            (1.0 / eligible.len().max(1) as f64, "uniform")
        }
    };
    Decision {
        ranking,
        propensity,
        policy_version: version.to_owned(),
        features: None,
        receipt: json!({"policy": version}),
    }
}
