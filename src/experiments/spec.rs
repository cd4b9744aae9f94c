//! The configuration shapes of experiments and arm lifecycles (DESIGN.md
//! `[[experiments]]`; `[routes.onboard.<model>]`, `[routes.retire.<model>]`).
//! Pure data with serde defaults; cross-checks live in `config/validate.rs`.

use serde::{Deserialize, Serialize};

use crate::domain::ModelName;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExperimentKind {
    /// A share of the route's traffic goes to the candidate: a model, or a
    /// policy version (which then decides for that share).
    Canary,
    /// A split between the route and a candidate route, or the route's
    /// policy and a candidate policy version. Promoting a route candidate is
    /// the blue-green switch: all of the route's traffic, in one step.
    Ab,
    /// A share of requests is also sent to the candidate model in the
    /// background; its answer is recorded, never returned.
    Shadow,
    /// A candidate policy version decides on live traffic without acting;
    /// its would-be choices are logged and scored off-policy.
    ShadowPolicy,
}

impl ExperimentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ExperimentKind::Canary => "canary",
            ExperimentKind::Ab => "ab",
            ExperimentKind::Shadow => "shadow",
            ExperimentKind::ShadowPolicy => "shadow_policy",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "canary" => Some(Self::Canary),
            "ab" => Some(Self::Ab),
            "shadow" => Some(Self::Shadow),
            "shadow_policy" => Some(Self::ShadowPolicy),
            _ => None,
        }
    }

    /// Canary and A/B change which model answers; the shadow kinds never do.
    pub fn acts(self) -> bool {
        matches!(self, ExperimentKind::Canary | ExperimentKind::Ab)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StickyBy {
    /// `switchboard.user` / `x-switchboard-user`: a user always lands in
    /// the same arm (requests without a user are assigned at random).
    User,
}

/// Automatic promotion and rollback of a policy-version candidate.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AutoPromote {
    pub enabled: bool,
    /// Rewarded requests each arm needs before any verdict.
    pub min_samples: u64,
    /// Two-sided confidence level of the online intervals.
    pub confidence: f64,
}

impl Default for AutoPromote {
    fn default() -> Self {
        Self {
            enabled: false,
            min_samples: 200,
            confidence: 0.95,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentConfig {
    pub name: String,
    pub route: ModelName,
    pub kind: ExperimentKind,
    /// A model (canary, shadow), a route (ab), or a policy version.
    pub candidate: String,
    /// Share of the route's requests in the candidate arm, in [0, 1].
    pub share: f64,
    #[serde(default)]
    pub sticky_by: Option<StickyBy>,
    /// Policy-version candidates only.
    #[serde(default)]
    pub auto_promote: Option<AutoPromote>,
    /// Only requests whose client key carries this feature flag take part;
    /// the others are served as if the experiment did not exist.
    #[serde(default)]
    pub key_flag: Option<String>,
}

/// A model entering a route: its prior and a capped forced exploration.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OnboardConfig {
    /// Prior mean quality until feedback arrives: optimistic (near 1) to be
    /// tried early, or an offline evaluation's score.
    #[serde(default)]
    pub prior_quality: Option<f64>,
    /// Most decisions that may be forced onto the model.
    #[serde(default = "default_quota")]
    pub explore_quota: u64,
    /// Probability that an eligible request is forced onto it while the
    /// quota lasts.
    #[serde(default = "default_explore_share")]
    pub explore_share: f64,
}

fn default_quota() -> u64 {
    200
}
fn default_explore_share() -> f64 {
    0.05
}

impl Default for OnboardConfig {
    fn default() -> Self {
        Self {
            prior_quality: None,
            explore_quota: default_quota(),
            explore_share: default_explore_share(),
        }
    }
}

/// A model leaving a route: its share annealed to zero over the window,
/// then it leaves the arm set (its history stays in the store).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetireConfig {
    pub window_s: u64,
}
