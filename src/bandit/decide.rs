//! The decision rule: from a snapshot, features and eligible arms to a
//! chosen arm with an exact propensity and a receipt.
//!
//! Owns: utility, the per-algorithm exploration distribution, the mixing
//! with the greedy arm and the uniform floor, and sampling. Must not import
//! the writer or mutate anything: decisions only read a snapshot.
//!
//! For each eligible arm at x: `utility = q - w_c c - w_l l` with
//! `w_c = cost_weight + lambda / target` (pacing), and an exploration width
//! `s = sigma sqrt(x^T A^-1 x)` (x boost while the arm is drifting). Quality
//! is bounded by 1, so the optimistic quality is capped there: LinUCB's
//! index uses `min(q + alpha s, 1)` and Thompson draws `min(q~, 1)`. This
//! matters for cost: an expensive, little-tried arm is not explored merely
//! because its bonus exceeds what any answer could be worth.
//! Arms whose expected cost exceeds `max_cost_usd` are excluded (if none is
//! left, the cheapest expected arm is taken with propensity 1). Over the
//! K affordable arms, with greedy arm g = argmax utility:
//! `pi(a) = (1 - F) [kappa pi_e(a) + (1 - kappa) 1[a = g]] + f_a`
//! where `pi_e` is one-hot on argmax(utility + alpha s) for LinUCB (Li et
//! al. 2010), `P(a wins)` under independent `N(utility, (v s)^2)` for linear
//! Thompson sampling (Agrawal & Goyal 2013; see `normal.rs`), uniform for
//! epsilon-greedy. `f_a = eps w_a / K` is the floor (`F` its total), so every
//! eligible arm keeps a positive propensity for off-policy evaluation; `w_a`
//! is 1, or `target / cost_a` for an arm dearer than the budget's per-request
//! target: uniform floor traffic to an arm costing 40x the target would
//! spend budget the pacer must then claw back from good decisions, and this
//! bounds floor spend by `eps * target` per request. `kappa` is the largest
//! share that keeps the non-greedy probability within `exploration_cap`
//! whatever `pi_e` is. The arm is then drawn from `pi`,
//! so the logged propensity is exactly the probability it was chosen with.
//! Thompson draws it by the mixture's parts instead — the floor, then with
//! share `kappa` one posterior draw per contender (the largest wins), else
//! the greedy arm — and integrates `P(a wins)` for the chosen arm alone
//! (`normal.rs`; mean error ~5e-5): one integral instead of one per
//! contender. The receipt's other probabilities wait in `Receipt::complete`
//! for whoever shows or stores them.
//! Baselines (random, fixed) ignore cap and floor.
//! Cost: O(K d^2) for the K quadratic forms, plus O(K) (LinUCB) or
//! O(C) normal CDFs per quadrature node (Thompson, C contenders); a few
//! small allocations for the receipt.

use rand::Rng;
use rand_distr::StandardNormal;
use serde::Serialize;

use super::config::{Algorithm, Objective};
use super::drift::DriftFlags;
use super::mirror::Probe;
use super::normal::{self, Capped};
use super::snapshot::PolicySnapshot;
use crate::domain::Usd;

/// Everything a decision needs besides the snapshot.
#[derive(Debug, Clone, Copy)]
pub struct DecisionRequest<'a> {
    pub features: &'a [f64],
    /// Indices into the snapshot's arms; arms not listed are never chosen.
    pub eligible: &'a [usize],
    pub objective: Objective,
    pub max_cost_usd: Option<Usd>,
    /// Max share of non-greedy decisions; `None` = the config's default.
    pub exploration_cap: Option<f64>,
    /// Uniform share (propensity floor = share / K); `None` = config's.
    pub exploration_floor: Option<f64>,
}

impl<'a> DecisionRequest<'a> {
    pub fn new(features: &'a [f64], eligible: &'a [usize], objective: Objective) -> Self {
        Self {
            features,
            eligible,
            objective,
            max_cost_usd: None,
            exploration_cap: None,
            exploration_floor: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ArmReceipt {
    pub arm: usize,
    pub quality: f64,
    pub cost_usd: f64,
    pub latency_s: f64,
    /// Exploration width used (LinUCB bonus or Thompson posterior sd).
    pub bonus: f64,
    /// Mean utility `q - w_c c - w_l l` (without the bonus).
    pub utility: f64,
    pub probability: f64,
    pub affordable: bool,
    pub drift: DriftFlags,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Receipt {
    pub snapshot_version: u64,
    pub algorithm: Algorithm,
    /// Normalised pacing dual in force (quality per target of spend).
    pub pacing_lambda: f64,
    /// Effective cost weight `cost_weight + lambda / target` (per USD).
    pub cost_weight: f64,
    /// No eligible arm fitted `max_cost_usd`; the cheapest was taken.
    pub budget_fallback: bool,
    pub arms: Vec<ArmReceipt>,
    /// Thompson: what the other arms' probabilities are computed from,
    /// until `complete` runs (a decision computes only its own arm's).
    #[serde(skip)]
    pending: Option<Box<Pending>>,
}

/// Every algorithm's choice distribution: `pi(row) = floor[row] + rest
/// (kappa pi_e(row) + (1 - kappa) 1[row = greedy])`, `rest = 1 - sum floor`.
#[derive(Debug, Clone, PartialEq)]
struct Mixture {
    floor: Vec<f64>,
    rest: f64,
    kappa: f64,
    greedy: usize,
}

impl Mixture {
    /// `pi(row)` given the exploration distribution's value there.
    fn at(&self, row: usize, explore: f64) -> f64 {
        let g = if row == self.greedy { 1.0 } else { 0.0 };
        self.rest * (self.kappa * explore + (1.0 - self.kappa) * g)
            + self.floor.get(row).copied().unwrap_or(0.0)
    }
}

/// The mixture a Thompson decision was drawn from, with `pi_e = P_win`.
#[derive(Debug, Clone, PartialEq)]
struct Pending {
    /// Affordable rows and their capped utility draws.
    rows: Vec<usize>,
    arms: Vec<Capped>,
    /// Positions in `arms` that can win (`normal::contenders`).
    contenders: Vec<usize>,
    mixture: Mixture,
    /// The row drawn and its `P_win` as integrated for the logged
    /// propensity (`complete` reuses it rather than integrating again).
    chosen: Option<(usize, f64)>,
}

impl Pending {
    /// `P_win` of one row (0 for a row that cannot win).
    fn win(&self, row: usize) -> f64 {
        self.rows
            .iter()
            .position(|&r| r == row)
            .filter(|j| self.contenders.contains(j))
            .map_or(0.0, |j| {
                normal::win_probability(&self.arms, &self.contenders, j).clamp(0.0, 1.0)
            })
    }
}

impl Receipt {
    /// Fills in every arm's probability. A Thompson decision computes only
    /// the chosen arm's on the request path (one integral instead of one
    /// per contender); whoever shows or stores the receipt completes it.
    /// Idempotent; a no-op for the other algorithms.
    pub fn complete(&mut self) {
        let Some(p) = self.pending.take() else {
            return;
        };
        let mut explore = vec![0.0; p.arms.len()];
        let drawn = p
            .chosen
            .and_then(|(c, win)| Some((p.rows.iter().position(|&r| r == c)?, win)));
        match drawn {
            // The drawn row keeps the probability it was logged with (its
            // own integral, unnormalised); the others share the rest in
            // proportion, so the listed probabilities sum to one although
            // each integral carries its quadrature error.
            Some((j, logged)) => {
                for &a in p.contenders.iter().filter(|&&a| a != j) {
                    explore[a] = normal::win_probability(&p.arms, &p.contenders, a);
                }
                let rest: f64 = explore.iter().sum();
                let scale = if rest > 0.0 {
                    (1.0 - logged) / rest
                } else {
                    0.0
                };
                explore.iter_mut().for_each(|e| *e *= scale);
                explore[j] = logged;
            }
            None => normal::max_probabilities(&p.arms, &mut explore),
        }
        let chosen = p.chosen.map(|(row, _)| row);
        for (&row, e) in p.rows.iter().zip(explore) {
            if chosen != Some(row) {
                if let Some(r) = self.arms.get_mut(row) {
                    r.probability = p.mixture.at(row, e);
                }
            }
        }
    }

    /// Whether some arms' probabilities still wait for `complete`.
    pub fn is_complete(&self) -> bool {
        self.pending.is_none()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    /// Index into the snapshot's arms.
    pub arm: usize,
    pub propensity: f64,
    /// The chosen arm is the one with the highest mean utility.
    pub greedy: bool,
    pub receipt: Receipt,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecideError {
    #[error("features have {found} entries, the policy expects {expected}")]
    Dimension { expected: usize, found: usize },
    #[error("no eligible arm")]
    NoEligibleArm,
    #[error("eligible arm index {0} is out of range")]
    UnknownArm(usize),
    #[error("eligible arm index {0} is listed twice")]
    DuplicateArm(usize),
    #[error("non-finite feature value")]
    NonFinite,
    #[error("objective: {0}")]
    Objective(String),
}

/// Probabilities over `req.eligible` (same order), the greedy position and
/// the receipt rows. Shared by `decide` and `probabilities`.
struct Plan {
    greedy: usize,
    receipt: Receipt,
}

/// Draws a Thompson decision's row from its mixture and returns it with its
/// `P_win` (its probability is `mixture.at(row, win)`): the floor by `u`, then the exploration share `kappa` by an
/// actual posterior draw per contender, else the greedy row.
fn draw_thompson<R: Rng + ?Sized>(p: &Pending, rng: &mut R) -> (usize, f64) {
    let m = &p.mixture;
    let mut u: f64 = rng.random();
    let mut row = None;
    for (i, &f) in m.floor.iter().enumerate() {
        if u < f {
            row = Some(i);
            break;
        }
        u -= f;
    }
    let row = row.unwrap_or_else(|| {
        if rng.random::<f64>() < m.kappa {
            let mut best = (f64::NEG_INFINITY, m.greedy, 0u32);
            for &j in &p.contenders {
                let d = p.arms[j].draw(rng.sample(StandardNormal));
                // Point masses (caps, sd 0) can tie: pick uniformly.
                if d > best.0 {
                    best = (d, p.rows[j], 1);
                } else if d == best.0 {
                    best.2 += 1;
                    if rng.random_range(0..best.2) == 0 {
                        best.1 = p.rows[j];
                    }
                }
            }
            best.1
        } else {
            m.greedy
        }
    });
    (row, p.win(row))
}

impl PolicySnapshot {
    /// Chooses an arm. Never returns an ineligible arm.
    pub fn decide<R: Rng + ?Sized>(
        &self,
        req: &DecisionRequest<'_>,
        rng: &mut R,
    ) -> Result<Decision, DecideError> {
        let mut plan = self.plan(req)?;
        if let Some(mut p) = plan.receipt.pending.take() {
            let (row, win) = draw_thompson(&p, rng);
            let propensity = p.mixture.at(row, win);
            p.chosen = Some((row, win));
            if let Some(r) = plan.receipt.arms.get_mut(row) {
                r.probability = propensity;
            }
            plan.receipt.pending = Some(p);
            return Ok(Decision {
                arm: plan.receipt.arms.get(row).map_or(0, |r| r.arm),
                propensity,
                greedy: row == plan.greedy,
                receipt: plan.receipt,
            });
        }
        let rows = &plan.receipt.arms;
        let u: f64 = rng.random();
        let mut acc = 0.0;
        let mut pick = None;
        for (i, r) in rows.iter().enumerate() {
            if r.probability > 0.0 {
                acc += r.probability;
                pick = Some(i);
                if u < acc {
                    break;
                }
            }
        }
        let pos = pick.unwrap_or(plan.greedy);
        let row = rows.get(pos).ok_or(DecideError::NoEligibleArm)?;
        Ok(Decision {
            arm: row.arm,
            propensity: row.probability,
            greedy: pos == plan.greedy,
            receipt: plan.receipt,
        })
    }

    /// `(arm index, probability)` for every eligible arm; sums to 1.
    pub fn probabilities(
        &self,
        req: &DecisionRequest<'_>,
    ) -> Result<Vec<(usize, f64)>, DecideError> {
        let mut receipt = self.plan(req)?.receipt;
        receipt.complete();
        Ok(receipt
            .arms
            .iter()
            .map(|r| (r.arm, r.probability))
            .collect())
    }

    fn check(&self, req: &DecisionRequest<'_>) -> Result<(), DecideError> {
        if req.features.len() != self.dimension {
            return Err(DecideError::Dimension {
                expected: self.dimension,
                found: req.features.len(),
            });
        }
        if req.features.iter().any(|v| !v.is_finite()) {
            return Err(DecideError::NonFinite);
        }
        req.objective
            .validate()
            .map_err(|e| DecideError::Objective(e.to_string()))?;
        if req.eligible.is_empty() {
            return Err(DecideError::NoEligibleArm);
        }
        for (i, &a) in req.eligible.iter().enumerate() {
            if a >= self.arms.len() {
                return Err(DecideError::UnknownArm(a));
            }
            if req.eligible[..i].contains(&a) {
                return Err(DecideError::DuplicateArm(a));
            }
        }
        Ok(())
    }

    fn plan(&self, req: &DecisionRequest<'_>) -> Result<Plan, DecideError> {
        self.check(req)?;
        let cfg = &self.config;
        // Raw features in, the models' (possibly projected) space out.
        let projected = self.project(req.features);
        let x: &[f64] = &projected;
        let target = self.budget.target_usd_per_request;
        let wc = self.pacing.cost_weight(req.objective.cost_weight, target);
        let wl = req.objective.latency_weight;
        let max_cost = req.max_cost_usd.map(Usd::get);
        let width_scale = match cfg.algorithm {
            Algorithm::Linucb => cfg.alpha,
            Algorithm::Thompson => cfg.posterior_scale,
            _ => 0.0,
        };
        let mut rows = Vec::with_capacity(req.eligible.len());
        let probe = Probe::new(x);
        for &i in req.eligible {
            let Some(arm) = self.arms.get(i) else {
                return Err(DecideError::UnknownArm(i));
            };
            let e = arm.estimate_at(x, &probe);
            let boost = if e.drift.quality || e.drift.cost {
                cfg.drift.exploration_boost
            } else {
                1.0
            };
            let width = width_scale * boost * e.quality_sd;
            rows.push(ArmReceipt {
                arm: i,
                quality: e.quality,
                cost_usd: e.cost_usd,
                latency_s: e.latency_s,
                // Rewards are bounded by 1, so optimism never claims more:
                // the LinUCB index is min(q + alpha s, 1) (Thompson caps
                // its draws the same way, in `normal.rs`).
                bonus: if cfg.algorithm == Algorithm::Linucb {
                    width.min(1.0 - e.quality)
                } else {
                    width
                },
                utility: e.quality - wc * e.cost_usd - wl * e.latency_s,
                probability: 0.0,
                affordable: max_cost.is_none_or(|m| e.cost_usd <= m),
                drift: e.drift,
            });
        }
        let mut receipt = Receipt {
            snapshot_version: self.version,
            algorithm: cfg.algorithm,
            pacing_lambda: self.pacing.lambda(),
            cost_weight: wc,
            budget_fallback: false,
            arms: rows,
            pending: None,
        };
        let rows = &mut receipt.arms;
        if !rows.iter().any(|r| r.affordable) {
            let cheapest = argmax(
                rows.iter()
                    .map(|r| -r.cost_usd)
                    .collect::<Vec<_>>()
                    .as_slice(),
                |_| true,
            );
            receipt.budget_fallback = true;
            if let Some(r) = rows.get_mut(cheapest) {
                r.probability = 1.0;
            }
            return Ok(Plan {
                greedy: cheapest,
                receipt,
            });
        }
        let utilities: Vec<f64> = rows.iter().map(|r| r.utility).collect();
        let ok = |i: usize| rows.get(i).is_some_and(|r| r.affordable);
        let greedy = argmax(&utilities, ok);
        let k = rows.iter().filter(|r| r.affordable).count() as f64;
        let cap = req
            .exploration_cap
            .unwrap_or(cfg.exploration_cap)
            .clamp(0.0, 1.0);
        let floor = req
            .exploration_floor
            .unwrap_or(cfg.exploration_floor)
            .clamp(0.0, 1.0);
        // Floor weights: uniform, except that with a budget an arm dearer
        // than the per-request target gets target / cost of its share, so
        // floor traffic never spends more than `floor * target` per request.
        let weights: Vec<f64> = rows
            .iter()
            .map(|r| match (r.affordable, target) {
                (false, _) => 0.0,
                (true, Some(t)) if r.cost_usd > t => t / r.cost_usd,
                (true, _) => 1.0,
            })
            .collect();
        let mut explore = vec![0.0; rows.len()];
        let mut floor_share = floor;
        let kappa = 1.0;
        match cfg.algorithm {
            Algorithm::Linucb => {
                let scores: Vec<f64> = rows.iter().map(|r| r.utility + r.bonus).collect();
                if let Some(p) = explore.get_mut(argmax(&scores, ok)) {
                    *p = 1.0;
                }
            }
            // Drawn in `decide` (only the chosen arm's probability is
            // needed there); see `Pending`.
            Algorithm::Thompson => {}
            Algorithm::EpsilonGreedy => floor_share = floor.max(cfg.epsilon),
            Algorithm::Random | Algorithm::Fixed => {
                let fixed = cfg.fixed_arm.as_ref().and_then(|f| {
                    rows.iter().position(|r| {
                        r.affordable && self.arms.get(r.arm).is_some_and(|a| &a.name == f)
                    })
                });
                for (i, (r, p)) in rows.iter().zip(explore.iter_mut()).enumerate() {
                    *p = match (cfg.algorithm, fixed) {
                        (Algorithm::Random, _) if r.affordable => 1.0 / k,
                        (Algorithm::Fixed, Some(f)) if i == f => 1.0,
                        (Algorithm::Fixed, None) if i == greedy => 1.0,
                        _ => 0.0,
                    };
                }
                // Baselines are what they are: no floor, no cap (below).
            }
        }
        let (floor_mass, kappa) = match cfg.algorithm {
            Algorithm::Random | Algorithm::Fixed => (vec![0.0; rows.len()], kappa),
            // Epsilon-greedy explores through the floor mass alone.
            Algorithm::EpsilonGreedy => (mixing(floor_share, cap, k, &weights, greedy).0, 0.0),
            Algorithm::Linucb | Algorithm::Thompson => {
                mixing(floor_share, cap, k, &weights, greedy)
            }
        };
        let mixture = Mixture {
            rest: 1.0 - floor_mass.iter().sum::<f64>(),
            floor: floor_mass,
            kappa,
            greedy,
        };
        if cfg.algorithm == Algorithm::Thompson {
            let rows_t: Vec<usize> = (0..rows.len()).filter(|&i| ok(i)).collect();
            let arms: Vec<Capped> = rows_t
                .iter()
                .map(|&i| {
                    let r = &rows[i];
                    Capped {
                        mean: r.utility,
                        sd: r.bonus,
                        cap: r.utility + (1.0 - r.quality),
                    }
                })
                .collect();
            let mut contenders = Vec::with_capacity(arms.len());
            normal::contenders(&arms, &mut contenders);
            receipt.pending = Some(Box::new(Pending {
                rows: rows_t,
                arms,
                contenders,
                mixture,
                chosen: None,
            }));
            return Ok(Plan { greedy, receipt });
        }
        for (i, (r, &pe)) in rows.iter_mut().zip(&explore).enumerate() {
            if r.affordable {
                r.probability = mixture.at(i, pe);
            }
        }
        Ok(Plan { greedy, receipt })
    }
}

/// Per-arm floor mass `eps w_a / K` and the exploration share `kappa`, with
/// `eps <= cap K / (K - 1)` and `kappa` the largest value keeping
/// `non-greedy floor mass + (1 - floor total) kappa <= cap`.
fn mixing(floor: f64, cap: f64, k: f64, weights: &[f64], greedy: usize) -> (Vec<f64>, f64) {
    if k <= 1.0 {
        return (vec![0.0; weights.len()], 0.0);
    }
    let eps = floor.min(cap * k / (k - 1.0)).min(1.0);
    let mass: Vec<f64> = weights.iter().map(|w| eps * w / k).collect();
    let total: f64 = mass.iter().sum();
    let non_greedy = total - mass.get(greedy).copied().unwrap_or(0.0);
    let kappa = if total < 1.0 {
        ((cap - non_greedy) / (1.0 - total)).clamp(0.0, 1.0)
    } else {
        0.0
    };
    (mass, kappa)
}

/// First index of the maximum among indices accepted by `ok`.
fn argmax(v: &[f64], ok: impl Fn(usize) -> bool) -> usize {
    let mut best: Option<usize> = None;
    for (i, &x) in v.iter().enumerate() {
        if ok(i) && best.is_none_or(|b| v.get(b).is_none_or(|&bv| x > bv)) {
            best = Some(i);
        }
    }
    best.unwrap_or(0)
}
