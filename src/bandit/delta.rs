//! Additive deltas of the learned statistics, so replicas learn as one.
//!
//! Owns: `PolicyDelta` (what one replica learned over a segment of its own
//! updates), `PolicySnapshot::delta_since` (cut one from a working copy and
//! an ancestor of it) and `PolicySnapshot::merge_delta` (apply one). Must not
//! import I/O, encodings or the writer: the gateway ships the deltas.
//!
//! Math. Every model's data part evolves by affine maps: with forgetting g,
//! the Gram matrix `S = A - A_0` (see `ridge.rs`) goes `S <- g S + x x^T`,
//! and likewise each target's `b <- g b + y x`, the noise sums and the
//! effective weight. A segment of updates is therefore one affine map
//! `S -> D S + dS`, with `D` the product of its discounts (shipped as
//! `ln D`, the model's decay clock) and `dS` its own discounted sum. Maps
//! compose, `(D2, d2) o (D1, d1) = (D2 D1, D2 d1 + d2)`, so the merged state
//! is the composition of every delta in one global order (the database log
//! position), and every replica that folds the same log reaches the same
//! bits. Without forgetting (`D = 1`) the maps commute and the merge equals
//! one process that saw every update. With forgetting it equals one process
//! that saw the deltas' updates in log order: an observation's weight is
//! `g^(updates after it in the log)`, which differs from its real-time age
//! by at most the updates all replicas make in one flush interval; the total
//! decay and the effective weight (`sum g^k`) are exact either way.
//!
//! Not additive, so kept local: the drift CUSUMs (each replica watches its
//! own residuals; an alarm's faster forgetting does travel, through `D`) and
//! the pacer's spike backlog. The pacer's dual travels as its net shift,
//! clamped on merge. The residual-noise sums are prequential (each residual
//! is taken against the model of the moment), so they add across replicas
//! but depend on order, as they do within one process.
//! After a merge, `A^-1` and every `theta = A^-1 b` are recomputed from the
//! merged A and b by the exact SPD inverse: O(d^3) per touched model.
//! Invariant: a delta of dimension d holds d(d+1)/2 Gram entries per model
//! and d entries per target; `merge_delta` rejects anything else and leaves
//! the snapshot it was called on untouched.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::arm::ArmCounts;
use super::linalg;
use super::ridge::{self, Design, Noise, Target};
use super::snapshot::{PolicySnapshot, SnapshotError};

/// One model's segment: the affine map its updates applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelDelta {
    /// `ln` of the product of the segment's discounts (<= 0).
    pub log_decay: f64,
    pub updates: u64,
    /// Effective-weight gained: `w <- D w + weight`.
    pub weight: f64,
    /// Upper triangle (row-major, `i <= j`) of the Gram gained.
    pub gram: Vec<f64>,
    /// Per target (quality; or log cost, log latency): `b <- D b + db`.
    pub targets: Vec<Vec<f64>>,
    /// Per noise estimate: (sum of squares, weight) gained.
    pub noise: Vec<(f64, f64)>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArmDelta {
    pub arm: String,
    pub quality: Option<ModelDelta>,
    pub outcome: Option<ModelDelta>,
    pub counts: ArmCounts,
}

/// What one replica learned on one route over a segment of its updates.
/// Cut from the arms' statistics, so it lives in the snapshot's inner space:
/// `dimension` is `inner_dimension()` and `feature_fingerprint` is
/// `inner_fingerprint()` (both equal the raw ones without a projection).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyDelta {
    pub dimension: usize,
    pub feature_fingerprint: u64,
    /// Only the arms that learned something.
    pub arms: Vec<ArmDelta>,
    pub requests: u64,
    pub spend_usd: f64,
    pub lambda_shift: f64,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DeltaError {
    #[error("delta has dimension {found}, the policy {expected}")]
    Dimension { expected: usize, found: usize },
    #[error("delta was learned on another feature space")]
    Fingerprint,
    #[error("delta for arm {0:?} has the wrong shape or non-finite numbers")]
    Corrupt(String),
    #[error("merged design of arm {0:?} is not positive definite")]
    NotPositiveDefinite(String),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
}

impl PolicyDelta {
    /// Learning updates the delta carries (outcomes + quality observations).
    pub fn updates(&self) -> u64 {
        self.arms
            .iter()
            .flat_map(|a| [&a.quality, &a.outcome])
            .flatten()
            .map(|m| m.updates)
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.arms.is_empty() && self.requests == 0 && self.lambda_shift == 0.0
    }
}

/// Borrowed view of one model: its design, targets and noise estimates.
struct View<'a> {
    design: &'a Design,
    targets: Vec<&'a Target>,
    noise: Vec<&'a Noise>,
}

struct ViewMut<'a> {
    design: &'a mut Design,
    targets: Vec<&'a mut Target>,
    noise: Vec<&'a mut Noise>,
}

/// Index of `(i, j)`, `i <= j`, in a row-major upper triangle of side d.
fn tri(d: usize, i: usize, j: usize) -> usize {
    i * d - i * (i + 1) / 2 + j
}

fn model_delta(live: &View<'_>, earlier: &View<'_>) -> Option<ModelDelta> {
    let (l, e) = (live.design, earlier.design);
    // Different sizes: not an ancestor (another projection); nothing to cut.
    if l.updates <= e.updates || l.d != e.d {
        return None;
    }
    let d = l.d;
    let log_decay = l.log_decay - e.log_decay;
    let g = log_decay.exp();
    // dS = S_live - g S_earlier with S = A - A_0; A_0 is diagonal. When g is
    // exactly 1 this is a plain difference (no rounding from the prior).
    let mut gram = Vec::with_capacity(d * (d + 1) / 2);
    for i in 0..d {
        for j in i..d {
            let prior = if i == j { l.prior_diag(i) } else { 0.0 };
            let (Some(al), Some(ae)) = (l.a.get(i * d + j), e.a.get(i * d + j)) else {
                return None; // cannot happen: both designs are d x d
            };
            gram.push((al - g * ae) - (1.0 - g) * prior);
        }
    }
    let targets = live
        .targets
        .iter()
        .zip(&earlier.targets)
        .map(|(tl, te)| tl.b.iter().zip(&te.b).map(|(bl, be)| bl - g * be).collect())
        .collect();
    let noise = live
        .noise
        .iter()
        .zip(&earlier.noise)
        .map(|(nl, ne)| (nl.sum_sq - g * ne.sum_sq, nl.weight - g * ne.weight))
        .collect();
    Some(ModelDelta {
        log_decay,
        updates: l.updates - e.updates,
        weight: l.weight - g * e.weight,
        gram,
        targets,
        noise,
    })
}

fn finite(v: &[f64]) -> bool {
    v.iter().all(|x| x.is_finite())
}

/// Applies `m` to one model in place; `arm` names it in errors.
fn merge_model(v: ViewMut<'_>, m: &ModelDelta, arm: &str) -> Result<(), DeltaError> {
    let corrupt = || DeltaError::Corrupt(arm.to_owned());
    let design = v.design;
    let d = design.d;
    let shaped = m.gram.len() == d * (d + 1) / 2
        && m.targets.len() == v.targets.len()
        && m.noise.len() == v.noise.len()
        && m.targets.iter().all(|t| t.len() == d && finite(t))
        && m.noise.iter().all(|(s, w)| s.is_finite() && w.is_finite())
        && finite(&m.gram)
        && m.weight.is_finite()
        && m.log_decay.is_finite()
        && m.log_decay <= 0.0;
    if !shaped {
        return Err(corrupt());
    }
    let g = m.log_decay.exp();
    let (lambda0, lambda) = (design.lambda0, design.lambda);
    let a = design.a.entries_mut();
    for i in 0..d {
        for j in i..d {
            let prior = if i == j {
                ridge::prior_diag(lambda0, lambda, i)
            } else {
                0.0
            };
            let k = tri(d, i, j);
            let v = g * a[i * d + j] + (1.0 - g) * prior + m.gram[k];
            a[i * d + j] = v;
            a[j * d + i] = v;
        }
    }
    design.weight = (g * design.weight + m.weight).max(0.0);
    design.updates = design.updates.saturating_add(m.updates);
    design.log_decay += m.log_decay;
    let p = linalg::spd_inverse(&design.a.folded(), d)
        .ok_or_else(|| DeltaError::NotPositiveDefinite(arm.to_owned()))?;
    design.set_p(p);
    design.pending = 0.0;
    design.since_refresh = 0;
    for (t, db) in v.targets.into_iter().zip(&m.targets) {
        for (b, x) in t.b.iter_mut().zip(db) {
            *b = g * *b + x;
        }
        linalg::matvec(design.p(), &t.b, &mut t.theta);
    }
    for (n, (s, w)) in v.noise.into_iter().zip(&m.noise) {
        n.sum_sq = (g * n.sum_sq + s).max(0.0);
        n.weight = (g * n.weight + w).max(0.0);
    }
    Ok(())
}

fn counts_since(live: ArmCounts, earlier: ArmCounts) -> ArmCounts {
    ArmCounts {
        outcomes: live.outcomes.saturating_sub(earlier.outcomes),
        errors: live.errors.saturating_sub(earlier.errors),
        feedback: live.feedback.saturating_sub(earlier.feedback),
    }
}

impl PolicySnapshot {
    /// What this working state learned since `earlier`, which must be an
    /// ancestor of it (an earlier copy of the same writer's state, or the
    /// state it was last rebuilt on). Arms `earlier` lacks are skipped.
    pub fn delta_since(&self, earlier: &PolicySnapshot) -> PolicyDelta {
        let mut arms = Vec::new();
        for live in &self.arms {
            let Some(old) = earlier.arms.iter().find(|a| a.name == live.name) else {
                continue;
            };
            if Arc::ptr_eq(live, old) {
                continue;
            }
            let (lq, eq) = (&live.quality, &old.quality);
            let quality = model_delta(
                &View {
                    design: &lq.design,
                    targets: vec![&lq.target],
                    noise: vec![&lq.noise],
                },
                &View {
                    design: &eq.design,
                    targets: vec![&eq.target],
                    noise: vec![&eq.noise],
                },
            );
            let (lo, eo) = (&live.outcome, &old.outcome);
            let outcome = model_delta(
                &View {
                    design: &lo.design,
                    targets: vec![&lo.log_cost, &lo.log_latency],
                    noise: vec![&lo.cost_noise, &lo.latency_noise],
                },
                &View {
                    design: &eo.design,
                    targets: vec![&eo.log_cost, &eo.log_latency],
                    noise: vec![&eo.cost_noise, &eo.latency_noise],
                },
            );
            let counts = counts_since(live.counts, old.counts);
            if quality.is_some() || outcome.is_some() || counts != ArmCounts::default() {
                arms.push(ArmDelta {
                    arm: live.name.to_string(),
                    quality,
                    outcome,
                    counts,
                });
            }
        }
        let (requests, spend_usd, lambda_shift) = self.pacing.shift_since(&earlier.pacing);
        PolicyDelta {
            dimension: self.inner_dimension(),
            feature_fingerprint: self.inner_fingerprint(),
            arms,
            requests,
            spend_usd,
            lambda_shift,
        }
    }

    /// This state with `delta` applied after it. Returns the new state and
    /// the names of arms the delta knew but this policy does not (skipped:
    /// a replica on an older or newer route config). `self` is untouched.
    pub fn merge_delta(&self, delta: &PolicyDelta) -> Result<(Self, Vec<String>), DeltaError> {
        let inner = self.inner_dimension();
        if delta.dimension != inner {
            return Err(DeltaError::Dimension {
                expected: inner,
                found: delta.dimension,
            });
        }
        if delta.feature_fingerprint != self.inner_fingerprint() {
            return Err(DeltaError::Fingerprint);
        }
        if !(delta.spend_usd.is_finite() && delta.lambda_shift.is_finite()) {
            return Err(DeltaError::Corrupt(String::from("<pacing>")));
        }
        let mut next = self.clone();
        let mut unknown = Vec::new();
        for ad in &delta.arms {
            let Some(slot) = next.arms.iter_mut().find(|a| a.name.as_str() == ad.arm) else {
                unknown.push(ad.arm.clone());
                continue;
            };
            let arm = Arc::make_mut(slot);
            if let Some(m) = &ad.quality {
                let q = Arc::make_mut(&mut arm.quality);
                let view = ViewMut {
                    design: &mut q.design,
                    targets: vec![&mut q.target],
                    noise: vec![&mut q.noise],
                };
                merge_model(view, m, &ad.arm)?;
            }
            if let Some(m) = &ad.outcome {
                let o = Arc::make_mut(&mut arm.outcome);
                let view = ViewMut {
                    design: &mut o.design,
                    targets: vec![&mut o.log_cost, &mut o.log_latency],
                    noise: vec![&mut o.cost_noise, &mut o.latency_noise],
                };
                merge_model(view, m, &ad.arm)?;
            }
            let c = &mut arm.counts;
            c.outcomes = c.outcomes.saturating_add(ad.counts.outcomes);
            c.errors = c.errors.saturating_add(ad.counts.errors);
            c.feedback = c.feedback.saturating_add(ad.counts.feedback);
        }
        next.pacing
            .merge(delta.requests, delta.spend_usd, delta.lambda_shift);
        next.validate()?;
        Ok((next, unknown))
    }

    /// Takes from `local` (this replica's serving state) what is not shared:
    /// the version counter, each arm's drift CUSUMs and the pacer's backlog.
    pub fn keep_local_state_of(&mut self, local: &PolicySnapshot) {
        self.version = local.version;
        for slot in &mut self.arms {
            if let Some(old) = local.arms.iter().find(|a| a.name == slot.name) {
                if old.quality_drift != slot.quality_drift || old.cost_drift != slot.cost_drift {
                    let arm = Arc::make_mut(slot);
                    arm.quality_drift = old.quality_drift.clone();
                    arm.cost_drift = old.cost_drift.clone();
                }
            }
        }
        self.pacing.keep_backlog_of(&local.pacing);
    }

    /// Sets the version counter (a checkpoint carries the highest one seen).
    pub fn set_version(&mut self, version: u64) {
        self.version = version;
    }
}

#[cfg(test)]
mod tests {
    use super::tri;

    #[test]
    fn upper_triangle_indexing_is_dense() {
        let d = 5;
        let mut k = 0;
        for i in 0..d {
            for j in i..d {
                assert_eq!(tri(d, i, j), k);
                k += 1;
            }
        }
        assert_eq!(k, d * (d + 1) / 2);
    }
}
