//! The immutable policy snapshot decisions read, and its persistence.
//!
//! Owns: `PolicySnapshot` (version, label, config, budget, pacing state and
//! per-arm state), `RouteSpec` (what the gateway configures) and the
//! prepare/validate step. Must not import the writer or any I/O: the
//! gateway reads and writes the JSON text itself.
//! Invariants (enforced by `validate`, which every constructor runs): the
//! inner dimension (`projected.rs`) matches every arm's matrices; a
//! projection, when present, maps the raw vector without its bias; every
//! number is finite; arm names are unique; `fixed_arm`, when set, names an
//! arm; config valid. `dimension` and `feature_fingerprint` always describe
//! the route encoder's raw vector, which is what the snapshot takes as input.
//! Serialisation is bit-exact (see `exact.rs`); arms sit behind `Arc` so a
//! published snapshot shares unchanged arms with the writer's working copy.

use std::collections::HashSet;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::arm::ArmState;
use super::config::{ArmSpec, BudgetConfig, ConfigError, PolicyConfig};
use super::drift::DriftFlags;
use super::exact;
use super::pacing::PacingState;
use super::projected;
use crate::domain::ModelName;
use crate::features::Projection;

/// A route's policy as configured: everything that is not learned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    /// `Encoder::dimension()` of the route's feature spec.
    pub dimension: usize,
    /// `Encoder::fingerprint()`: learned weights only apply to the same
    /// feature space.
    pub feature_fingerprint: u64,
    pub config: PolicyConfig,
    #[serde(default)]
    pub budget: BudgetConfig,
    pub arms: Vec<ArmSpec>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("snapshot JSON: {0}")]
    Json(String),
    #[error("snapshot has dimension {found} but the features have {expected}")]
    Dimension { expected: usize, found: usize },
    #[error("snapshot was learned on a different feature space (fingerprint {found:#x}, expected {expected:#x})")]
    Fingerprint { expected: u64, found: u64 },
    #[error("snapshot arm {0:?} is not configured on this route")]
    UnknownArm(String),
    #[error("arm {0:?} is listed twice")]
    DuplicateArm(String),
    #[error("a route needs at least one arm")]
    NoArms,
    #[error("arm {0:?} has inconsistent state (wrong sizes or non-finite numbers)")]
    CorruptArm(String),
    #[error("pacing state is out of range or non-finite")]
    CorruptPacing,
    #[error("fixed_arm {0:?} is not an arm of this route")]
    FixedArm(String),
    #[error("snapshot projection: {0}")]
    Projection(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySnapshot {
    pub(crate) version: u64,
    pub(crate) label: String,
    pub(crate) dimension: usize,
    pub(crate) feature_fingerprint: u64,
    pub(crate) config: PolicyConfig,
    pub(crate) budget: BudgetConfig,
    pub(crate) pacing: PacingState,
    #[serde(with = "exact::shared_vec")]
    pub(crate) arms: Vec<Arc<ArmState>>,
    /// Learned map from the raw features to the arms' inner space (see
    /// `projected.rs`). Absent in older snapshots, and then not written, so
    /// they load and serialise exactly as before.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "projected")]
    pub(crate) projection: Option<Arc<Projection>>,
}

impl RouteSpec {
    pub fn validate(&self) -> Result<(), SnapshotError> {
        self.config.validate()?;
        self.budget.validate()?;
        if self.arms.is_empty() {
            return Err(SnapshotError::NoArms);
        }
        let mut seen = HashSet::new();
        for a in &self.arms {
            a.validate()?;
            if !seen.insert(a.name.as_str()) {
                return Err(SnapshotError::DuplicateArm(a.name.to_string()));
            }
        }
        if let Some(f) = &self.config.fixed_arm {
            if !seen.contains(f.as_str()) {
                return Err(SnapshotError::FixedArm(f.to_string()));
            }
        }
        Ok(())
    }
}

impl PolicySnapshot {
    /// A fresh policy: every arm at its prior, pacing dual at 0.
    pub fn new(spec: &RouteSpec) -> Result<Self, SnapshotError> {
        Self::fresh(spec, None)
    }

    /// A fresh policy whose arms live in `projection`'s space (or the raw
    /// one without it).
    pub(crate) fn fresh(
        spec: &RouteSpec,
        projection: Option<Projection>,
    ) -> Result<Self, SnapshotError> {
        spec.validate()?;
        if let Some(p) = &projection {
            projected::check(p, spec.dimension)?;
        }
        let inner = projection.as_ref().map_or(spec.dimension, |p| 1 + p.rows);
        let arms = spec
            .arms
            .iter()
            .map(|a| Arc::new(ArmState::new(a, inner, &spec.config)))
            .collect();
        let s = Self {
            version: 0,
            label: String::new(),
            dimension: spec.dimension,
            feature_fingerprint: spec.feature_fingerprint,
            config: spec.config.clone(),
            budget: spec.budget,
            pacing: PacingState::default(),
            arms,
            projection: projection.map(Arc::new),
        };
        s.validate()?;
        Ok(s)
    }

    /// Parses and validates a persisted snapshot (self-consistency only;
    /// call `prepare` to check it against the current route config).
    pub fn from_json(text: &str) -> Result<Self, SnapshotError> {
        let s: Self = serde_json::from_str(text).map_err(|e| SnapshotError::Json(e.to_string()))?;
        s.validate()?;
        Ok(s)
    }

    pub fn to_json(&self) -> Result<String, SnapshotError> {
        serde_json::to_string(self).map_err(|e| SnapshotError::Json(e.to_string()))
    }

    /// Adapts a loaded snapshot to the route as configured now: same
    /// feature space required; arms are reordered to the config's order;
    /// configured arms missing from the snapshot start from their prior;
    /// snapshot arms not configured are rejected (retire an arm by making it
    /// ineligible, so its statistics survive); config and budget are taken
    /// from `spec` (they are not learned). Learned state is kept as is.
    pub fn prepare(self, spec: &RouteSpec) -> Result<Self, SnapshotError> {
        spec.validate()?;
        if self.dimension != spec.dimension {
            return Err(SnapshotError::Dimension {
                expected: spec.dimension,
                found: self.dimension,
            });
        }
        if self.feature_fingerprint != spec.feature_fingerprint {
            return Err(SnapshotError::Fingerprint {
                expected: spec.feature_fingerprint,
                found: self.feature_fingerprint,
            });
        }
        self.validate()?;
        if let Some(a) = self
            .arms
            .iter()
            .find(|a| !spec.arms.iter().any(|s| s.name == a.name))
        {
            return Err(SnapshotError::UnknownArm(a.name.to_string()));
        }
        // A new arm joins the models' (possibly projected) space.
        let inner = self.inner_dimension();
        let arms = spec
            .arms
            .iter()
            .map(|s| match self.arms.iter().find(|a| a.name == s.name) {
                Some(a) => Arc::clone(a),
                None => Arc::new(ArmState::new(s, inner, &spec.config)),
            })
            .collect();
        let s = Self {
            config: spec.config.clone(),
            budget: spec.budget,
            arms,
            ..self
        };
        s.validate()?;
        Ok(s)
    }

    /// Adapts a live snapshot to a route reconfigured while serving: like
    /// `prepare`, except that arms the spec no longer lists are dropped
    /// (the operator removed the model) instead of refused. Arms kept keep
    /// their learned state; new ones start from their prior.
    pub fn reshape(mut self, spec: &RouteSpec) -> Result<Self, SnapshotError> {
        self.arms
            .retain(|a| spec.arms.iter().any(|s| s.name == a.name));
        if self.arms.is_empty() {
            return Err(SnapshotError::NoArms);
        }
        // The old config may name a removed arm (`fixed_arm`); `prepare`
        // takes the spec's config anyway.
        self.config = spec.config.clone();
        self.prepare(spec)
    }

    /// Full self-consistency check. O(K d^2) (+ O(k d) for a projection).
    pub fn validate(&self) -> Result<(), SnapshotError> {
        self.config.validate()?;
        self.budget.validate()?;
        if self.arms.is_empty() {
            return Err(SnapshotError::NoArms);
        }
        if let Some(p) = &self.projection {
            projected::check(p, self.dimension)?;
        }
        let inner = self.inner_dimension();
        let mut seen = HashSet::new();
        for a in &self.arms {
            if !seen.insert(a.name.as_str()) {
                return Err(SnapshotError::DuplicateArm(a.name.to_string()));
            }
            if !a.is_consistent(inner) {
                return Err(SnapshotError::CorruptArm(a.name.to_string()));
            }
        }
        if let Some(f) = &self.config.fixed_arm {
            if !seen.contains(f.as_str()) {
                return Err(SnapshotError::FixedArm(f.to_string()));
            }
        }
        if !self.pacing.is_consistent() {
            return Err(SnapshotError::CorruptPacing);
        }
        Ok(())
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    pub fn dimension(&self) -> usize {
        self.dimension
    }

    pub fn feature_fingerprint(&self) -> u64 {
        self.feature_fingerprint
    }

    pub fn config(&self) -> &PolicyConfig {
        &self.config
    }

    pub fn budget(&self) -> &BudgetConfig {
        &self.budget
    }

    pub fn pacing(&self) -> &PacingState {
        &self.pacing
    }

    pub fn arm_count(&self) -> usize {
        self.arms.len()
    }

    pub fn arm(&self, index: usize) -> Option<&ArmState> {
        self.arms.get(index).map(|a| &**a)
    }

    pub fn arm_name(&self, index: usize) -> Option<&ModelName> {
        self.arms.get(index).map(|a| &a.name)
    }

    /// Index of an arm by name (linear scan: routes have a handful of arms).
    pub fn arm_index(&self, name: &str) -> Option<usize> {
        self.arms.iter().position(|a| a.name.as_str() == name)
    }

    /// Per-arm drift response currently in force, for logs and metrics.
    pub fn drift_flags(&self) -> Vec<(ModelName, DriftFlags)> {
        self.arms
            .iter()
            .map(|a| (a.name.clone(), a.drift_flags()))
            .collect()
    }
}
