//! Policy configuration: algorithm choice, priors, exploration, forgetting,
//! drift and pacing knobs, objective weights and budget.
//!
//! Owns: the serde shapes (defaults + `deny_unknown_fields`) and `validate`.
//! Must not import the decision or update code: config is plain data.
//! Invariant: a config that passed `validate` keeps every number finite and
//! in the range its doc states, so the math modules never re-check them.

use serde::{Deserialize, Serialize};

use crate::domain::ModelName;

/// Which selection rule reads the shared statistics. All algorithms learn
/// the same per-arm models, so switching algorithm needs no relearning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// Disjoint LinUCB (Li et al. 2010) on the quality model.
    #[default]
    Linucb,
    /// Linear Thompson sampling (Agrawal & Goyal 2013), Gaussian posterior.
    Thompson,
    EpsilonGreedy,
    /// Uniform over eligible arms (baseline).
    Random,
    /// Always `fixed_arm` when eligible (baseline).
    Fixed,
}

macro_rules! defaults {
    ($($name:ident: $ty:ty = $val:expr;)*) => { $(fn $name() -> $ty { $val })* };
}

defaults! {
    d_alpha: f64 = 1.0;
    d_posterior_scale: f64 = 1.0;
    d_ridge: f64 = 4.0;
    d_outcome_ridge: f64 = 0.1;
    d_forgetting: f64 = 0.9999;
    d_floor: f64 = 0.01;
    d_epsilon: f64 = 0.05;
    d_cap: f64 = 0.1;
    d_prior_quality: f64 = 0.5;
    d_prior_cost: f64 = 1e-3;
    d_prior_latency: f64 = 2.0;
    d_drift_threshold: f64 = 10.0;
    d_drift_slack: f64 = 0.5;
    d_drift_forgetting: f64 = 0.95;
    d_drift_hold: u32 = 50;
    d_drift_boost: f64 = 2.0;
    d_pacing_step: f64 = 0.002;
    d_pacing_spike: f64 = 4.0;
    d_pacing_warmup: u32 = 200;
}

/// Drift response: two-sided CUSUM on standardised residuals per arm.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriftConfig {
    /// CUSUM alarm level h, in residual standard deviations.
    #[serde(default = "d_drift_threshold")]
    pub threshold: f64,
    /// CUSUM slack k (half the shift to detect), in standard deviations.
    #[serde(default = "d_drift_slack")]
    pub slack: f64,
    /// Forgetting factor used while an alarm holds (faster decay).
    #[serde(default = "d_drift_forgetting")]
    pub forgetting: f64,
    /// Updates an alarm holds for.
    #[serde(default = "d_drift_hold")]
    pub hold: u32,
    /// Multiplier on the exploration bonus / posterior width while it holds.
    #[serde(default = "d_drift_boost")]
    pub exploration_boost: f64,
}

impl Default for DriftConfig {
    fn default() -> Self {
        Self {
            threshold: d_drift_threshold(),
            slack: d_drift_slack(),
            forgetting: d_drift_forgetting(),
            hold: d_drift_hold(),
            exploration_boost: d_drift_boost(),
        }
    }
}

/// Primal–dual budget pacing (see `pacing.rs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PacingConfig {
    /// Dual step in quality units per unit of normalised overspend.
    #[serde(default = "d_pacing_step")]
    pub step: f64,
    /// Largest normalised cost (cost / target) one request moves the dual
    /// by; the excess is carried forward, so accounting stays exact.
    #[serde(default = "d_pacing_spike")]
    pub max_cost_ratio: f64,
    /// Requests during which steps are enlarged (by sqrt(warmup / n)).
    #[serde(default = "d_pacing_warmup")]
    pub warmup: u32,
}

impl Default for PacingConfig {
    fn default() -> Self {
        Self {
            step: d_pacing_step(),
            max_cost_ratio: d_pacing_spike(),
            warmup: d_pacing_warmup(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    #[serde(default)]
    pub algorithm: Algorithm,
    /// LinUCB bonus, in units of the arm's estimated reward noise std.
    #[serde(default = "d_alpha")]
    pub alpha: f64,
    /// Thompson posterior width multiplier (1 = the Bayesian posterior).
    #[serde(default = "d_posterior_scale")]
    pub posterior_scale: f64,
    /// Ridge prior precision for the quality model's slopes, relative to
    /// the reward noise: prior sd of a slope = sigma / sqrt(lambda). With
    /// sigma ~ 0.2 and features scaled to [0, 1], 4 says "one feature moving
    /// quality by more than ~0.1 is a priori unlikely". (The intercept is
    /// barely shrunk, see `ridge.rs`.)
    #[serde(default = "d_ridge")]
    pub ridge_lambda: f64,
    /// Ridge prior precision for the log-cost / log-latency model.
    #[serde(default = "d_outcome_ridge")]
    pub outcome_ridge_lambda: f64,
    /// Per-update discount of past statistics in [0.5, 1]; 1 = never forget.
    /// The default keeps an effective window of ~10k updates per arm (about
    /// 100 per parameter at d ~ 100); abrupt changes are handled by `drift`.
    #[serde(default = "d_forgetting")]
    pub forgetting: f64,
    /// Share of decisions spread uniformly over eligible arms so every
    /// propensity is at least `exploration_floor / K` (off-policy evaluation).
    #[serde(default = "d_floor")]
    pub exploration_floor: f64,
    /// Uniform-exploration share for `epsilon_greedy`.
    #[serde(default = "d_epsilon")]
    pub epsilon: f64,
    /// Default cap on the share of non-greedy decisions (0 = always greedy).
    /// Prompts are diverse contexts, under which greedy linear policies
    /// already learn at near-optimal rates (Bastani, Bayati & Khosravi 2021,
    /// "Mostly exploration-free algorithms for contextual bandits"); a small
    /// cap keeps the optimism/posterior sampling for new or drifting arms
    /// while bounding what exploration costs on the rest of the traffic.
    #[serde(default = "d_cap")]
    pub exploration_cap: f64,
    #[serde(default)]
    pub fixed_arm: Option<ModelName>,
    /// Prior mean quality of an arm with no feedback.
    #[serde(default = "d_prior_quality")]
    pub prior_quality: f64,
    /// Prior expected cost of an arm with no observations (ArmSpec overrides).
    #[serde(default = "d_prior_cost")]
    pub prior_cost_usd: f64,
    #[serde(default = "d_prior_latency")]
    pub prior_latency_s: f64,
    #[serde(default)]
    pub drift: DriftConfig,
    #[serde(default)]
    pub pacing: PacingConfig,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            algorithm: Algorithm::default(),
            alpha: d_alpha(),
            posterior_scale: d_posterior_scale(),
            ridge_lambda: d_ridge(),
            outcome_ridge_lambda: d_outcome_ridge(),
            forgetting: d_forgetting(),
            exploration_floor: d_floor(),
            epsilon: d_epsilon(),
            exploration_cap: d_cap(),
            fixed_arm: None,
            prior_quality: d_prior_quality(),
            prior_cost_usd: d_prior_cost(),
            prior_latency_s: d_prior_latency(),
            drift: DriftConfig::default(),
            pacing: PacingConfig::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("policy config: {0}")]
pub struct ConfigError(pub String);

fn check(ok: bool, msg: impl FnOnce() -> String) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(ConfigError(msg()))
    }
}

fn finite_in(name: &str, v: f64, lo: f64, hi: f64, lo_open: bool) -> Result<(), ConfigError> {
    let lower = if lo_open { v > lo } else { v >= lo };
    check(v.is_finite() && lower && v <= hi, || {
        let b = if lo_open { "(" } else { "[" };
        format!("{name} = {v} must be a finite number in {b}{lo}, {hi}]")
    })
}

impl PolicyConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        finite_in("alpha", self.alpha, 0.0, 100.0, false)?;
        finite_in("posterior_scale", self.posterior_scale, 0.0, 100.0, false)?;
        finite_in("ridge_lambda", self.ridge_lambda, 0.0, 1e6, true)?;
        finite_in(
            "outcome_ridge_lambda",
            self.outcome_ridge_lambda,
            0.0,
            1e6,
            true,
        )?;
        finite_in("forgetting", self.forgetting, 0.5, 1.0, false)?;
        finite_in("exploration_floor", self.exploration_floor, 0.0, 1.0, false)?;
        finite_in("epsilon", self.epsilon, 0.0, 1.0, false)?;
        finite_in("exploration_cap", self.exploration_cap, 0.0, 1.0, false)?;
        finite_in("prior_quality", self.prior_quality, 0.0, 1.0, false)?;
        finite_in("prior_cost_usd", self.prior_cost_usd, 0.0, 1e3, true)?;
        finite_in("prior_latency_s", self.prior_latency_s, 0.0, 1e4, true)?;
        let d = &self.drift;
        finite_in("drift.threshold", d.threshold, 0.0, 1e6, true)?;
        finite_in("drift.slack", d.slack, 0.0, 100.0, false)?;
        finite_in("drift.forgetting", d.forgetting, 0.5, 1.0, false)?;
        finite_in(
            "drift.exploration_boost",
            d.exploration_boost,
            1.0,
            100.0,
            false,
        )?;
        let p = &self.pacing;
        finite_in("pacing.step", p.step, 0.0, 10.0, false)?;
        finite_in("pacing.max_cost_ratio", p.max_cost_ratio, 1.0, 1e6, false)?;
        check(
            self.algorithm != Algorithm::Fixed || self.fixed_arm.is_some(),
            || "algorithm = \"fixed\" needs fixed_arm".into(),
        )
    }
}

/// Trade-off at decision time: utility = quality - cost_weight * usd
/// - latency_weight * seconds. Weights are quality units per USD / second.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Objective {
    #[serde(default)]
    pub cost_weight: f64,
    #[serde(default)]
    pub latency_weight: f64,
}

impl Objective {
    pub fn validate(&self) -> Result<(), ConfigError> {
        finite_in("cost_weight", self.cost_weight, 0.0, 1e12, false)?;
        finite_in("latency_weight", self.latency_weight, 0.0, 1e6, false)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetConfig {
    /// Mean spend per request the pacer steers to (a cap: spending less is
    /// fine when nothing is worth buying).
    #[serde(default)]
    pub target_usd_per_request: Option<f64>,
}

impl BudgetConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        match self.target_usd_per_request {
            Some(t) => finite_in("target_usd_per_request", t, 0.0, 1e6, true),
            None => Ok(()),
        }
    }
}

/// One arm of a route as configured. Price-derived priors are optional: the
/// gateway knows list prices and can pass a typical request's cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArmSpec {
    pub name: ModelName,
    #[serde(default)]
    pub prior_cost_usd: Option<f64>,
    #[serde(default)]
    pub prior_latency_s: Option<f64>,
    #[serde(default)]
    pub prior_quality: Option<f64>,
}

impl ArmSpec {
    pub fn new(name: ModelName) -> Self {
        Self {
            name,
            prior_cost_usd: None,
            prior_latency_s: None,
            prior_quality: None,
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let n = self.name.as_str();
        if let Some(c) = self.prior_cost_usd {
            finite_in(&format!("arm {n} prior_cost_usd"), c, 0.0, 1e3, true)?;
        }
        if let Some(l) = self.prior_latency_s {
            finite_in(&format!("arm {n} prior_latency_s"), l, 0.0, 1e4, true)?;
        }
        if let Some(q) = self.prior_quality {
            finite_in(&format!("arm {n} prior_quality"), q, 0.0, 1.0, false)?;
        }
        Ok(())
    }
}
