//! A decision's receipt (why this model) as plain data. The request path
//! fills it from the bandit's own receipt without building any JSON; it is
//! rendered once, as text, when the request's row is written, and as the
//! one-line `x-switchboard-decision` form only when a client asks for it.
//! The rendering happens on the outbox writer's thread, after the answer
//! has gone (`RenderJson`).
//! (Building a `serde_json::Value` per arm and the summary string on every
//! request cost ~7 % of the router's CPU on a bandit route.)
//!
//! The stored JSON has the same keys and values as before: the version,
//! algorithm, choice, propensity, pacing, every arm's estimates with its
//! model name, the exclusions, plus `rule` / `experiment` when those applied.

use std::fmt::Write as _;
use std::sync::Arc;

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;
use serde_json::Value;

use super::eligible::Exclusion;
use crate::bandit::{ArmReceipt, Decision as BanditDecision, Receipt as BanditReceipt};
use crate::domain::ModelName;
use crate::store::{JsonText, RenderJson};

#[derive(Debug, Clone)]
pub enum Receipt {
    /// No policy decided (a model asked by name, a rule's pin): small and
    /// already JSON, with its one-line form.
    Fixed {
        json: Value,
        summary: String,
    },
    Policy(Box<PolicyReceipt>),
}

/// What the route's policy saw and did.
#[derive(Debug, Clone)]
pub struct PolicyReceipt {
    pub policy_version: String,
    /// The snapshot's arm names, by arm position (shared, not copied).
    pub arm_names: Arc<[ModelName]>,
    pub chosen: usize,
    pub propensity: f64,
    pub greedy: bool,
    pub bandit: BanditReceipt,
    pub excluded: Vec<Exclusion>,
    /// The first matching rule's index, if one narrowed the route.
    pub rule: Option<usize>,
    /// An experiment that took the request: `{name, arm}`.
    pub experiment: Option<Value>,
}

impl Receipt {
    pub fn fixed(json: Value, summary: String) -> Self {
        Self::Fixed { json, summary }
    }

    pub fn policy(
        d: BanditDecision,
        policy_version: String,
        arm_names: Arc<[ModelName]>,
        excluded: &[Exclusion],
    ) -> Self {
        Self::Policy(Box::new(PolicyReceipt {
            policy_version,
            arm_names,
            chosen: d.arm,
            propensity: d.propensity,
            greedy: d.greedy,
            bandit: d.receipt,
            excluded: excluded.to_vec(),
            rule: None,
            experiment: None,
        }))
    }

    pub fn as_policy_mut(&mut self) -> Option<&mut PolicyReceipt> {
        match self {
            Self::Policy(p) => Some(p),
            Self::Fixed { .. } => None,
        }
    }

    /// The policy's own probability of `model` (0 if it was not an arm).
    pub fn policy_probability(&mut self, model: &str) -> f64 {
        let Self::Policy(p) = self else { return 0.0 };
        p.bandit.complete();
        p.bandit
            .arms
            .iter()
            .find(|a| p.name(a.arm) == model)
            .map_or(0.0, |a| a.probability)
    }

    /// The one-line form for `x-switchboard-decision` (estimates only: it
    /// needs no completed probabilities).
    pub fn summary(&self) -> String {
        let p = match self {
            Self::Fixed { summary, .. } => return summary.clone(),
            Self::Policy(p) => p,
        };
        let mut s = format!(
            "chosen={};p={:.4};greedy={};lambda={:.4}",
            p.name(p.chosen),
            p.propensity,
            p.greedy,
            p.bandit.pacing_lambda
        );
        for a in &p.bandit.arms {
            let _ = write!(
                s,
                ";{}:q={:.3},c={:.6},u={:.4},b={:.3}",
                p.name(a.arm),
                a.quality,
                a.cost_usd,
                a.utility,
                a.bonus
            );
        }
        s
    }
}

/// The stored form (the `requests.decision` column), rendered by the
/// outbox writer (`store::LazyJson`) so that no request waits for it. A
/// Thompson receipt gets its other arms' probabilities here, off the
/// decision itself, on a copy.
impl RenderJson for Receipt {
    fn render(&self) -> Option<JsonText> {
        let rendered = match self {
            Self::Policy(p) if !p.bandit.is_complete() => {
                let mut p = p.clone();
                p.bandit.complete();
                JsonText::of(&Self::Policy(p))
            }
            _ => JsonText::of(self),
        };
        rendered
            .map_err(|e| tracing::error!(error = %e, "A decision receipt did not serialise."))
            .ok()
    }
}

impl PolicyReceipt {
    fn name(&self, arm: usize) -> &str {
        self.arm_names.get(arm).map_or("?", ModelName::as_str)
    }
}

impl Serialize for Receipt {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let p = match self {
            Self::Fixed { json, .. } => return json.serialize(s),
            Self::Policy(p) => p,
        };
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("algorithm", &p.bandit.algorithm)?;
        let arms: Vec<NamedArm<'_>> = p
            .bandit
            .arms
            .iter()
            .map(|arm| NamedArm {
                arm,
                model: p.name(arm.arm),
            })
            .collect();
        m.serialize_entry("arms", &arms)?;
        m.serialize_entry("budget_fallback", &p.bandit.budget_fallback)?;
        m.serialize_entry("chosen", p.name(p.chosen))?;
        m.serialize_entry("effective_cost_weight", &p.bandit.cost_weight)?;
        m.serialize_entry("excluded", &p.excluded)?;
        if let Some(e) = &p.experiment {
            m.serialize_entry("experiment", e)?;
        }
        m.serialize_entry("greedy", &p.greedy)?;
        m.serialize_entry("pacing_lambda", &p.bandit.pacing_lambda)?;
        m.serialize_entry("policy_version", &p.policy_version)?;
        m.serialize_entry("propensity", &p.propensity)?;
        if let Some(i) = p.rule {
            m.serialize_entry("rule", &i)?;
        }
        m.end()
    }
}

/// One arm's estimates with its model's name.
#[derive(Serialize)]
struct NamedArm<'a> {
    #[serde(flatten)]
    arm: &'a ArmReceipt,
    model: &'a str,
}
